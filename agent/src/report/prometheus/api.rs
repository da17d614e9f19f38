//! The parts of the Prometheus HTTP API answer (`/api/v1/query`) that reports read: raw samples
//! per series. Compatible backends (VictoriaMetrics, Thanos, Mimir) answer in the same shape.
use std::collections::BTreeMap;

use serde_json::Value;

/// A series' labels, `__name__` included (so the same labels under two metrics are two
/// series, and two agents' `instance`/`job` make two series too).
pub type Labels = BTreeMap<String, String>;

/// Samples of one series: timestamp in milliseconds → value.
pub type Samples = BTreeMap<i64, f64>;

/// `data.result` of a successful answer: labels → samples (one sample per series for a vector
/// answer, all samples in the window for a matrix). `name` is set as `__name__` on series that
/// lack it (functions such as `last_over_time` drop it).
pub fn parse(body: &[u8], name: Option<&str>) -> Result<Vec<(Labels, Samples)>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON ({e})"))?;
    if v.get("status").and_then(Value::as_str) != Some("success") {
        return Err(api_error(&v));
    }
    let data = v.get("data").ok_or("answer has no data")?;
    let kind = data.get("resultType").and_then(Value::as_str).unwrap_or("");
    let result = data.get("result").and_then(Value::as_array).ok_or("answer has no data.result list")?;
    let mut out = Vec::with_capacity(result.len());
    for series in result {
        let mut labels = Labels::new();
        if let Some(m) = series.get("metric").and_then(Value::as_object) {
            for (k, v) in m {
                if let Some(s) = v.as_str() {
                    labels.insert(k.clone(), s.to_string());
                }
            }
        }
        if let Some(n) = name {
            labels.entry("__name__".to_string()).or_insert_with(|| n.to_string());
        }
        let mut samples = Samples::new();
        let points: Vec<&Value> = match kind {
            "matrix" => series.get("values").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default(),
            "vector" => series.get("value").into_iter().collect(),
            other => return Err(format!("unexpected resultType {other:?} (want matrix or vector)")),
        };
        for p in points {
            let (ts, value) = sample(p).ok_or("a sample is not [timestamp, \"value\"]")?;
            // Stale markers and NaNs carry no count.
            if value.is_finite() {
                samples.insert(ts, value);
            }
        }
        out.push((labels, samples));
    }
    Ok(out)
}

/// `[1732780800.123, "42"]` → (ms, value).
fn sample(p: &Value) -> Option<(i64, f64)> {
    let a = p.as_array()?;
    let ts = a.first()?.as_f64()?;
    let value = a.get(1)?.as_str()?.parse::<f64>().ok()?;
    Some(((ts * 1000.0).round() as i64, value))
}

/// The API's own error (`errorType`, `error`), short.
pub fn api_error(v: &Value) -> String {
    let kind = v.get("errorType").and_then(Value::as_str).unwrap_or("unknown");
    let msg = v.get("error").and_then(Value::as_str).unwrap_or("no message");
    format!("query failed ({kind}): {}", summary(msg.as_bytes()))
}

/// At most 200 characters of a body, on one line: errors never carry a whole answer.
pub fn summary(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(200).collect();
    if one_line.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_answers_give_samples_per_series() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"tokentap_requests_total","tokentap_team":"a","instance":"h1:9"},
             "values":[[1732780800,"1"],[1732780801.5,"3"]]},
            {"metric":{"__name__":"tokentap_requests_total","tokentap_team":"a","instance":"h2:9"},
             "values":[[1732780800,"7"],[1732780802,"NaN"]]}]}}"#;
        let got = parse(body, None).unwrap();
        assert_eq!(got.len(), 2, "two agents' series stay apart");
        assert_eq!(got[0].1, Samples::from([(1732780800000, 1.0), (1732780801500, 3.0)]));
        assert_eq!(got[1].1.len(), 1, "NaN dropped");
        assert_eq!(got[1].0["instance"], "h2:9");
    }

    #[test]
    fn vector_answers_get_the_metric_name_back() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"tokentap_team":"a"},"value":[1732780800,"2.5"]}]}}"#;
        let got = parse(body, Some("tokentap_cost_total")).unwrap();
        assert_eq!(got[0].0["__name__"], "tokentap_cost_total");
        assert_eq!(got[0].1, Samples::from([(1732780800000, 2.5)]));
    }

    #[test]
    fn errors_are_short_and_name_the_api_error() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert_eq!(parse(body, None).unwrap_err(), "query failed (bad_data): parse error at char 3");
        assert!(parse(b"<html>", None).unwrap_err().starts_with("answer is not JSON"));
        let long = "x".repeat(5000);
        assert_eq!(summary(long.as_bytes()).chars().count(), 201);
        let bad = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,2]]}]}}"#;
        assert!(parse(bad, None).unwrap_err().contains("not [timestamp"));
    }
}
