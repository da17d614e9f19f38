//! The arithmetic of reports from Prometheus, on answers shaped like the real API's.
use std::collections::HashSet;

use super::*;
use crate::report::prometheus::api::parse;

const H0: i64 = 1_732_780_800; // 2024-11-28T08:00:00Z
const H0_MS: i64 = H0 * 1000;

fn samples(points: &[(i64, f64)]) -> Samples {
    points.iter().copied().collect()
}

#[test]
fn a_drop_is_a_restart_and_the_new_value_counts_in_full() {
    let s = samples(&[(H0_MS + 1000, 6.0), (H0_MS + 2000, 8.0), (H0_MS + 3000, 2.0), (H0_MS + 4000, 3.0)]);
    let got = hourly_increase(Some(5.0), &s, H0_MS, H0_MS + HOUR_MS, None);
    assert_eq!(got, BTreeMap::from([(H0, 1.0 + 2.0 + 2.0 + 1.0)]));
}

#[test]
fn the_baseline_is_subtracted_and_a_series_born_in_the_period_starts_from_zero() {
    let s = samples(&[(H0_MS + 1000, 10.0), (H0_MS + 5000, 12.0)]);
    assert_eq!(hourly_increase(Some(10.0), &s, H0_MS, H0_MS + HOUR_MS, None), BTreeMap::from([(H0, 2.0)]));
    assert_eq!(hourly_increase(None, &s, H0_MS, H0_MS + HOUR_MS, None), BTreeMap::from([(H0, 12.0)]));
}

#[test]
fn samples_outside_the_period_do_not_count_and_edges_belong_to_the_hour_they_close() {
    // A sample at `from` is the baseline's; one at `to` closes the last hour; later ones are out.
    let s = samples(&[(H0_MS, 4.0), (H0_MS + HOUR_MS, 6.0), (H0_MS + HOUR_MS + 1, 9.0), (H0_MS + 2 * HOUR_MS, 10.0)]);
    assert_eq!(hourly_increase(Some(4.0), &s, H0_MS, H0_MS + HOUR_MS, None), BTreeMap::from([(H0, 2.0)]));
    let two_hours = hourly_increase(Some(4.0), &s, H0_MS, H0_MS + 2 * HOUR_MS, None);
    assert_eq!(two_hours, BTreeMap::from([(H0, 2.0), (H0 + 3600, 4.0)]));
    assert_eq!(hour_of(H0_MS + 1), H0);
    assert_eq!(hour_of(H0_MS), H0 - 3600);
}

/// Two hourly chunk answers whose windows both hold the sample on their shared edge.
#[test]
fn chunks_that_overlap_on_an_edge_count_its_sample_once() {
    let series = r#"{"__name__":"tokentap_requests_total","tokentap_team":"pay","tokentap_usage_source":"reported","instance":"a:1","job":"tt"}"#;
    let chunk1 = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{series},
        "values":[[{},"1"],[{},"3"],[{},"5"]]}}]}}}}"#,
        H0,
        H0 + 1800,
        H0 + 3600
    );
    let chunk2 = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{series},
        "values":[[{},"5"],[{},"7"]]}}]}}}}"#,
        H0 + 3600,
        H0 + 5400
    );
    let mut all = HashMap::new();
    merge(&mut all, parse(chunk1.as_bytes(), None).unwrap());
    merge(&mut all, parse(chunk2.as_bytes(), None).unwrap());
    assert_eq!(all.len(), 1);
    let got = rows(&all, &HashMap::new(), H0_MS - HOUR_MS, H0_MS + 2 * HOUR_MS);
    let calls: Vec<(i64, u64)> = got.iter().map(|r| (r.hour, r.counters.calls)).collect();
    // Born in the period: 1 (its first value) + 2 + 2 in the hour before H0+1h, then 2.
    assert_eq!(calls, vec![(H0 - 3600, 1), (H0, 4), (H0 + 3600, 2)]);
    assert_eq!(got.iter().map(|r| r.counters.calls).sum::<u64>(), 7, "the last value, counted once");
}

#[test]
fn rows_sum_agents_and_metrics_under_the_same_keys() {
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[
        {{"metric":{{"__name__":"tokentap_requests_total","tokentap_team":"pay","gen_ai_request_model":"gpt-4o-mini",
          "gen_ai_response_model":"gpt-4o-mini-2024-07-18","tokentap_usage_source":"estimated","instance":"a:1",
          "user_name":"root","tokentap_systemd_unit":"llm.service","gen_ai_provider_name":"openai"}},
          "values":[[{t1},"2"]]}},
        {{"metric":{{"__name__":"tokentap_requests_total","tokentap_team":"pay","gen_ai_request_model":"gpt-4o-mini",
          "gen_ai_response_model":"gpt-4o-mini-2024-07-18","tokentap_usage_source":"reported","instance":"b:1",
          "user_name":"root","tokentap_systemd_unit":"llm.service","gen_ai_provider_name":"openai"}},
          "values":[[{t1},"3"]]}},
        {{"metric":{{"__name__":"tokentap_requests_failed_total","tokentap_team":"pay","gen_ai_request_model":"gpt-4o-mini",
          "tokentap_usage_source":"none","instance":"b:1"}},
          "values":[[{t1},"1"]]}},
        {{"metric":{{"__name__":"tokentap_tokens_input_total","tokentap_team":"pay","gen_ai_request_model":"gpt-4o-mini",
          "gen_ai_response_model":"gpt-4o-mini-2024-07-18","tokentap_usage_source":"reported","instance":"b:1",
          "user_name":"root","tokentap_systemd_unit":"llm.service","gen_ai_provider_name":"openai"}},
          "values":[[{t0},"100"],[{t1},"130"]]}},
        {{"metric":{{"__name__":"tokentap_cost_total","tokentap_team":"pay","gen_ai_request_model":"gpt-4o-mini",
          "gen_ai_response_model":"gpt-4o-mini-2024-07-18","tokentap_usage_source":"reported","instance":"b:1",
          "user_name":"root","tokentap_systemd_unit":"llm.service","gen_ai_provider_name":"openai"}},
          "values":[[{t0},"0.1"],[{t1},"0.30000000000000004"]]}},
        {{"metric":{{"__name__":"tokentap_agent_parse_failures_total","instance":"b:1"}},"values":[[{t1},"9"]]}}
        ]}}}}"#,
        t0 = H0 + 10,
        t1 = H0 + 20
    );
    let mut all = HashMap::new();
    merge(&mut all, parse(body.as_bytes(), None).unwrap());
    let mut baselines = HashMap::new();
    let input_labels = all.keys().find(|l| l["__name__"] == "tokentap_tokens_input_total").unwrap().clone();
    baselines.insert(input_labels, 90.0);
    let got = rows(&all, &baselines, H0_MS, H0_MS + HOUR_MS);
    let full = got.iter().find(|r| r.keys.get(Dim::Unit).is_some()).expect("the attributed row");
    assert_eq!(full.keys.get(Dim::Model), Some("gpt-4o-mini-2024-07-18"), "response model first");
    assert_eq!(full.keys.get(Dim::User), Some("root"));
    assert_eq!(full.keys.get(Dim::Provider), Some("openai"));
    assert_eq!(full.counters.calls, 5, "two agents' series add up");
    assert_eq!(full.counters.estimated_calls, 2);
    assert_eq!(full.counters.input_tokens, 40, "130 - the baseline 90");
    assert_eq!(full.counters.cost, Pico(300_000_000_000), "0.3 USD from a float sum");
    let failed = got.iter().find(|r| r.counters.errors == 1).expect("the failed call's row");
    assert_eq!(failed.keys.get(Dim::Model), Some("gpt-4o-mini"), "request model when no response model");
    assert_eq!(got.iter().map(|r| r.counters.calls).sum::<u64>(), 5, "non-usage metrics are ignored");
    assert!(got.iter().all(|r| r.hour == H0 && r.priced.is_none()));
}

/// A restarted agent whose counter is already above its old value at the first scrape: only
/// its start time shows the restart.
#[test]
fn a_new_agent_start_time_is_a_restart_even_when_the_counter_did_not_drop() {
    let series = |name: &str, extra: &str, values: &str| {
        format!(r#"{{"metric":{{"__name__":"{name}","instance":"a:1","job":"tt"{extra}}},"values":[{values}]}}"#)
    };
    let (t1, t2, t3) = (H0 + 10, H0 + 20, H0 + 30);
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{},{}]}}}}"#,
        series("tokentap_requests_total", r#","tokentap_team":"pay""#, &format!(r#"[{t1},"2"],[{t2},"5"],[{t3},"6"]"#)),
        series(START_TIME, "", &format!(r#"[{t1},"100.5"],[{t2},"200.25"],[{t3},"200.25"]"#)),
    );
    let mut all = HashMap::new();
    merge(&mut all, parse(body.as_bytes(), None).unwrap());
    // The baseline: 1 call before the period, under the first start time.
    let mut baselines = HashMap::new();
    let req = all.keys().find(|l| l["__name__"] == "tokentap_requests_total").unwrap().clone();
    let start = all.keys().find(|l| l["__name__"] == START_TIME).unwrap().clone();
    baselines.insert(req, 1.0);
    baselines.insert(start, 100.5);
    let got = rows(&all, &baselines, H0_MS, H0_MS + HOUR_MS);
    // 2 - 1, then a restart: 5 in full (not 5 - 2), then 1.
    assert_eq!(got.iter().map(|r| r.counters.calls).sum::<u64>(), 1 + 5 + 1);
    // Without the start-time series, the same samples look like no restart.
    all.retain(|l, _| l["__name__"] != START_TIME);
    let got = rows(&all, &baselines, H0_MS, H0_MS + HOUR_MS);
    assert_eq!(got.iter().map(|r| r.counters.calls).sum::<u64>(), 5);
}

#[test]
fn series_belong_to_the_agent_whose_labels_they_carry() {
    let l = |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    let starts = vec![
        (l(&[("__name__", START_TIME), ("instance", "a:1"), ("job", "tt")]), samples(&[(1, 1.0)])),
        (l(&[("__name__", START_TIME), ("instance", "b:1"), ("job", "tt")]), samples(&[(1, 2.0)])),
    ];
    let series = l(&[("__name__", "tokentap_cost_total"), ("instance", "b:1"), ("job", "tt"), ("tokentap_team", "x")]);
    assert_eq!(agent_of(&series, &starts).and_then(|s| s.get(&1)), Some(&2.0));
    assert!(agent_of(&l(&[("instance", "c:1")]), &starts).is_none());
}

#[test]
fn a_baseline_from_an_earlier_run_of_a_running_agent_is_dropped() {
    let l = |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    let start_a = l(&[("__name__", START_TIME), ("instance", "a:1")]);
    let start_b = l(&[("__name__", START_TIME), ("instance", "b:1")]);
    // a is up at the period start and exports `busy`, not `rare` (last seen in its previous run).
    let busy = l(&[("__name__", "tokentap_requests_total"), ("instance", "a:1"), ("tokentap_team", "busy")]);
    let rare = l(&[("__name__", "tokentap_requests_total"), ("instance", "a:1"), ("tokentap_team", "rare")]);
    // b was down at the period start (Prometheus or the agent): its start time decides later.
    let on_b = l(&[("__name__", "tokentap_requests_total"), ("instance", "b:1"), ("tokentap_team", "rare")]);
    let mut baselines: HashMap<Labels, f64> = [
        (start_a.clone(), 2.0),
        (start_b.clone(), 1.0),
        (busy.clone(), 10.0),
        (rare.clone(), 4.0),
        (on_b.clone(), 3.0),
    ]
    .into_iter()
    .collect();
    let recent: HashSet<Labels> = [start_a.clone(), busy.clone()].into_iter().collect();
    current_run_baselines(&mut baselines, &recent);
    assert_eq!(baselines.get(&busy), Some(&10.0));
    assert_eq!(baselines.get(&rare), None, "counted from 0 by the current run");
    assert_eq!(baselines.get(&on_b), Some(&3.0));
    assert_eq!(baselines.get(&start_a), Some(&2.0));
    // The current run's first sample of `rare`, 4 (not above the old 4): all 4 are the period's.
    let s = samples(&[(H0_MS + 1000, 4.0)]);
    let starts = samples(&[(H0_MS, 2.0), (H0_MS + 1000, 2.0)]);
    let got = hourly_increase(baselines.get(&rare).copied(), &s, H0_MS, H0_MS + HOUR_MS, Some(&starts));
    assert_eq!(got, BTreeMap::from([(H0, 4.0)]));
}
