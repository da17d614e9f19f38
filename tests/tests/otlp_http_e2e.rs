//! OTLP metrics over HTTP/protobuf, end to end: the same per-series checks as the gRPC tests
//! (`otlp_e2e.rs`), with the agent exporting to the collector's HTTP receiver. Here the export
//! is configured only by the standard `OTEL_*` environment variables, and the config file
//! carries a pricing override. One agent for this binary, started once the collector listens.
use std::sync::OnceLock;

use serde_json::json;
use tokentap_tests::collector::{port_attr, Collector};
use tokentap_tests::metered::{call_mismatches, checked_calls};
use tokentap_tests::{agent, env, require_bpf, Case, ServerOpts};

/// A model only the override file prices, with prices exact in binary floating point.
const OVERRIDE_MODEL: &str = "tokentap-override-model";
const OVERRIDE: [f64; 4] = [2.0, 8.0, 0.5, 16.0]; // input, output, cached_input, reasoning per 1M

fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    let c = COLLECTOR.get_or_init(|| {
        let c = Collector::start();
        let dir = env::temp_subdir("pricing");
        let prices = dir.join("prices.toml");
        let [input, output, cached, reasoning] = OVERRIDE;
        std::fs::write(
            &prices,
            format!(
                "as_of = \"2026-11-01\"\nsource = \"e2e test\"\n\n[[model]]\nprovider = \"openai\"\nmodel = \"{OVERRIDE_MODEL}\"\n\
                 input = {input:?}\noutput = {output:?}\ncached_input = {cached:?}\nreasoning = {reasoning:?}\n"
            ),
        )
        .expect("write override");
        let endpoint = c.http_endpoint();
        agent::configure_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=e2e"),
        ]);
        agent::configure(&format!("[pricing]\noverride_file = \"{}\"\n", prices.display()));
        c
    });
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
    let resource = &snap.points.iter().find(|p| p["name"] == "tokentap.requests").expect("a point")["resource"];
    assert_eq!(resource["deployment.environment.name"], "e2e", "OTEL_RESOURCE_ATTRIBUTES reaches the resource");
    case.finish(&server);
    c.assert_private(&case.secrets());
}

#[test]
fn override_file_prices_win_over_the_shipped_table() {
    if !require_bpf() {
        return;
    }
    let c = collector();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let run = case.curl_chat_model(&server, OVERRIDE_MODEL, &[]);
    let calls = checked_calls(&case, &server, &[run]);
    let call = &calls[0];
    assert_eq!(call.response_model, OVERRIDE_MODEL, "the server echoes the model");
    let [p_in, p_out, p_cached, p_reason] = OVERRIDE;
    let (i, k, o, r) = (call.input as f64, call.cached as f64, call.output as f64, call.reasoning as f64);
    let usd = ((i - k) * p_in + k * p_cached + (o - r) * p_out + r * p_reason) / 1e6;
    let model = [port_attr(server.port), ("gen_ai.response.model", json!(OVERRIDE_MODEL))];
    let snap = c.wait_received("cost of the overridden model", |s| {
        let total = s.counter_total("tokentap.cost", &model);
        if (total - usd).abs() > 1e-9 * usd {
            vec![format!("tokentap.cost = {total}, want {usd}")]
        } else {
            vec![]
        }
    });
    assert_eq!(snap.counter_total("tokentap.calls.unpriced", &model), 0.0, "an overridden model is priced");
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
