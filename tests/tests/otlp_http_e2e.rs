//! OTLP metrics over HTTP/protobuf, end to end: the same per-series checks as the gRPC tests
//! (`otlp_e2e.rs`), with the agent exporting to the collector's HTTP receiver. One agent for
//! this binary, configured once the collector listens.
use std::sync::OnceLock;

use tokentap_tests::collector::{port_attr, Collector};
use tokentap_tests::metered::{call_mismatches, checked_calls};
use tokentap_tests::{agent, require_bpf, Case, ServerOpts};

fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    let c = COLLECTOR.get_or_init(Collector::start);
    agent::configure(&format!(
        "[export]\notlp_endpoint = \"{}\"\notlp_protocol = \"http/protobuf\"\nexport_interval_secs = 1\n",
        c.http_endpoint()
    ));
    c
}

#[test]
fn http_protobuf_export_matches_the_server_usage_exactly() {
    if !require_bpf() {
        return;
    }
    let c = collector();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let runs = vec![
        case.openai(&server, "chat_stream_usage"),
        case.curl_chat(&server, &[]),
        case.openai(&server, "embeddings"),
        case.anthropic(&server, "messages_stream"),
    ];
    let calls = checked_calls(&case, &server, &runs);
    let snap = c.wait_exact("HTTP/protobuf export of 4 calls", &case.secrets(), |s| {
        let mut bad = s.shape_mismatches();
        bad.extend(call_mismatches(s, server.port, &calls));
        bad
    });
    let port = [port_attr(server.port)];
    assert_eq!(snap.counter_total("tokentap.requests", &port), 4.0);
    let input: u64 = calls.iter().map(|c| c.input).sum();
    assert_eq!(snap.counter_total("tokentap.tokens.input", &port), input as f64);
    let ttfc = snap.latest("gen_ai.client.operation.time_to_first_chunk", &port);
    assert_eq!(ttfc.iter().filter_map(|p| p["count"].as_u64()).sum::<u64>(), 2, "two streaming calls");
    assert!(calls.iter().all(|c| c.attribution["tokentap.team"] == "unattributed"), "no mapping: unattributed");
    case.finish(&server);
    c.assert_private(&case.secrets());
}

/// OTLP/HTTP JSON (as rotel 0.0.1-alpha10 reads it: times as strings, counts as numbers) for one `tokentap.requests` point and one token histogram point at `t`.
fn otlp_json(t: u64, requests: u64, observations: &[u64]) -> serde_json::Value {
    use tokentap_tests::collector::TOKEN_BOUNDS;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let kv = |k: &str, v: serde_json::Value| serde_json::json!({"key": k, "value": v});
    let attrs = vec![kv("server.port", serde_json::json!({"intValue": "4242"}))];
    let mut buckets = vec![0u64; TOKEN_BOUNDS.len() + 1];
    for v in observations {
        buckets[TOKEN_BOUNDS.iter().position(|b| *v as f64 <= *b).unwrap_or(TOKEN_BOUNDS.len())] += 1;
    }
    let point = |extra: serde_json::Value| {
        let mut p = serde_json::json!({"attributes": attrs, "startTimeUnixNano": "1", "timeUnixNano": t.to_string()});
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        p
    };
    serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [kv("service.name", serde_json::json!({"stringValue": "tokentap"})),
                                    kv("host.name", serde_json::json!({"stringValue": host.trim()}))]},
        "scopeMetrics": [{"scope": {"name": "selftest"}, "metrics": [
            {"name": "tokentap.requests", "unit": "{request}", "sum": {"aggregationTemporality": 2, "isMonotonic": true,
                "dataPoints": [point(serde_json::json!({"asInt": requests}))]}},
            {"name": "gen_ai.client.token.usage", "unit": "{token}", "histogram": {"aggregationTemporality": 2,
                "dataPoints": [point(serde_json::json!({"count": observations.len(),
                    "sum": observations.iter().sum::<u64>() as f64,
                    "bucketCounts": buckets,
                    "explicitBounds": TOKEN_BOUNDS}))]}}
        ]}]
    }]})
}

/// The collector fixture itself (no agent, no BPF): OTLP/HTTP JSON posted with curl comes back
/// from `Collector::snapshot` as the latest cumulative values, in the spec's shape.
#[test]
fn collector_fixture_reads_back_what_it_received() {
    let c = Collector::start();
    for (t, requests, obs) in [(2_000u64, 1u64, vec![300u64]), (3_000, 3, vec![300, 5, 70_000])] {
        let body = otlp_json(t, requests, &obs).to_string();
        let out = std::process::Command::new(tokentap_tests::clients::curl_path())
            .args([
                "-sS",
                "--noproxy",
                "*",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data-binary", &body, &format!("{}/v1/metrics", c.http_endpoint())])
            .output()
            .expect("run curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "POST /v1/metrics");
    }
    let snap = c.wait_received("selftest points", |s| {
        let mut bad = s.shape_mismatches();
        let total = s.counter_total("tokentap.requests", &[port_attr(4242)]);
        if total != 3.0 {
            bad.push(format!("tokentap.requests = {total}, want the latest value 3"));
        }
        bad
    });
    let h = snap.latest_histogram("gen_ai.client.token.usage", &[port_attr(4242)]).expect("a histogram point");
    assert_eq!((h["count"].as_u64(), h["sum"].as_f64()), (Some(3), Some(70_305.0)));
    assert_eq!(h["bucket_counts"], serde_json::json!([0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0]));
    assert_eq!(snap.series("tokentap.requests", &[]).len(), 1, "one series, two points");
    assert_eq!(snap.points.len(), 4);
}
