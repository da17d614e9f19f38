//! OTLP metrics over gRPC, and the Prometheus endpoint, end to end: real clients call the fake
//! LLM server, the agent exports to a real collector (rotel, see `tokentap_tests::collector`),
//! and every value is compared, per series, with the server's own usage log.
//!
//! One agent for this binary, exporting every second to a gRPC port chosen up front where
//! nothing listens at first: the first test to run makes the "collector down" calls
//! ([`DownPhase`]), lets exports fail, and only then starts the collector on that port, which
//! every test shares from then on. Tests run one at a time (they share one agent on 2 cores).
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokentap_tests::collector::{free_ports, port_attr, Collector, CALL_COUNTERS, METRICS_TIMEOUT, TOKEN_BOUNDS};
use tokentap_tests::metered::{call_mismatches, checked_calls, price_for, MeteredCall};
use tokentap_tests::{agent, clients, env, require_bpf, Case, ClientRun, LlmServer, ServerOpts};

/// curl's calls get every attribution attribute; the Python clients' none (team "unattributed").
const MAPPING: &str = r#"
[[rule]]
name = "curl-metered"
[rule.match]
exe_name = "curl"
[rule.set]
team = "ops"
cost_center = "cc-7"
product = "metering"
tenant = "acme"
app = "curl-app"
"#;

/// Calls made while nothing listened on the collector's port.
struct DownPhase {
    case: Case,
    server: LlmServer,
    runs: Vec<ClientRun>,
    /// Agent status and whether the port still refused connections just before rotel started.
    agent_status: String,
    port_was_closed: bool,
}

struct World {
    collector: Collector,
    prom_port: u16,
    down: DownPhase,
}

static WORLD: OnceLock<Result<World, String>> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// The shared world (built by the first test) and this test's turn.
fn world() -> (MutexGuard<'static, ()>, &'static World) {
    let turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let w = WORLD.get_or_init(|| {
        std::panic::catch_unwind(build_world).map_err(|e| {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            format!("building the OTLP test world failed: {}", msg.unwrap_or_default())
        })
    });
    match w {
        Ok(w) => (turn, w),
        Err(e) => panic!("{e}"),
    }
}

fn build_world() -> World {
    let ports = free_ports(3);
    let (grpc, http, prom) = (ports[0], ports[1], ports[2]);
    let dir = env::temp_subdir("otlp-config");
    let mapping = dir.join("mapping.toml");
    std::fs::write(&mapping, MAPPING).expect("write mapping");
    agent::configure(&format!(
        "[attribution]\nmapping_file = \"{}\"\n\n[export]\notlp_endpoint = \"http://127.0.0.1:{grpc}\"\n\
         otlp_protocol = \"grpc\"\nexport_interval_secs = 1\nprometheus_listen = \"127.0.0.1:{prom}\"\n",
        mapping.display()
    ));
    let a = agent::agent();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let runs = vec![case.curl_chat(&server, &[]), case.openai(&server, "chat")];
    case.wait_records(&server, runs.len());
    // Two export intervals and more with these calls in the agent's state, all failing.
    std::thread::sleep(Duration::from_millis(2500));
    let port_was_closed = std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err();
    let agent_status = a.status();
    let collector = Collector::start_on(grpc, http);
    World { collector, prom_port: prom, down: DownPhase { case, server, runs, agent_status, port_was_closed } }
}

fn exe_name(run: &ClientRun) -> String {
    let exe = run.exe.as_deref().expect("client exe");
    exe.rsplit('/').next().unwrap_or(exe).to_string()
}

/// The end of every test: nothing secret in the agent's output nor in the exported metrics.
fn finish(w: &World, case: &Case, server: &LlmServer) {
    case.finish(server);
    w.collector.assert_private(&case.secrets());
}

#[test]
fn grpc_export_matches_the_server_usage_exactly() {
    if !require_bpf() {
        return;
    }
    let (_turn, w) = world();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let runs = vec![
        case.openai(&server, "chat"),
        case.curl_chat(&server, &[]),
        case.openai(&server, "responses"),
        case.openai(&server, "chat_stream_usage"),
        case.openai(&server, "embeddings"),
        case.anthropic(&server, "messages"),
    ];
    let calls = checked_calls(&case, &server, &runs);
    // Attribution as the mapping says (the metric checks take it from the records).
    let curl = &calls[1].attribution;
    let want = json!({"tokentap.team": "ops", "tokentap.cost_center": "cc-7", "tokentap.product": "metering",
        "tokentap.tenant": "acme", "tokentap.app": "curl-app", "process.executable.name": "curl", "user.name": "root"});
    assert_eq!(Value::Object(curl.clone()), want, "curl's attribution");
    for (c, run) in calls.iter().zip(&runs).filter(|(_, r)| r.what != "curl") {
        let want =
            json!({"tokentap.team": "unattributed", "process.executable.name": exe_name(run), "user.name": "root"});
        assert_eq!(Value::Object(c.attribution.clone()), want, "{}'s attribution", run.what);
        assert!(exe_name(run).starts_with("python"), "python client exe");
    }
    let ops: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
    assert_eq!(ops, ["chat", "chat", "chat", "chat", "embeddings", "chat"], "gen_ai.operation.name per call");
    assert!(calls.iter().all(|c| c.cost().is_some()), "every model here is in the price table");

    let snap = w.collector.wait_exact("gRPC export of 6 calls", &case.secrets(), |s| {
        let mut bad = s.shape_mismatches();
        bad.extend(call_mismatches(s, server.port, &calls));
        bad
    });
    // Spot checks of the totals (call_mismatches compared every series already).
    let port = [port_attr(server.port)];
    let sum = |f: fn(&MeteredCall) -> u64| calls.iter().map(f).sum::<u64>() as f64;
    assert_eq!(snap.counter_total("tokentap.requests", &port), 6.0);
    assert_eq!(snap.counter_total("tokentap.tokens.input", &port), sum(|c| c.input));
    assert_eq!(snap.counter_total("tokentap.tokens.output", &port), sum(|c| c.output));
    let input = [port_attr(server.port), ("gen_ai.token.type", json!("input"))];
    let hist = snap.latest("gen_ai.client.token.usage", &input);
    assert_eq!(hist.iter().filter_map(|p| p["count"].as_u64()).sum::<u64>(), 6);
    assert_eq!(hist.iter().filter_map(|p| p["sum"].as_f64()).sum::<f64>(), sum(|c| c.input));
    let libs = snap.latest("tokentap.agent.libraries.attached", &[]);
    assert!(libs.iter().any(|p| p["value"].as_f64().unwrap_or(0.0) >= 1.0), "libraries.attached gauge >= 1");
    // Completeness: every call above was metered from provider-reported usage through OpenSSL
    // (the agent is shared by this binary's tests, so its total is at least these six).
    w.collector.wait_exact("capture.calls metered via openssl >= 6", &case.secrets(), |s| {
        let metered = [("tokentap.tls.library", json!("openssl")), ("tokentap.outcome", json!("metered"))];
        let total = s.counter_total("tokentap.capture.calls", &metered);
        if total >= 6.0 {
            vec![]
        } else {
            vec![format!("tokentap.capture.calls{{openssl,metered}} = {total}")]
        }
    });
    finish(w, &case, &server);
}

#[test]
fn collector_down_at_first_gets_the_totals_exactly_once_when_it_comes_up() {
    if !require_bpf() {
        return;
    }
    let (_turn, w) = world();
    let d = &w.down;
    assert!(d.port_was_closed, "the collector port was taken before rotel started: the phase proves nothing");
    assert_eq!(d.agent_status, "running", "the agent must keep running while the collector is down");
    // The usage log is independent of the exporter: both calls recorded exactly.
    let calls = checked_calls(&d.case, &d.server, &d.runs);
    let snap = w.collector.wait_exact("totals made while the collector was down", &d.case.secrets(), |s| {
        call_mismatches(s, d.server.port, &calls)
    });
    // Every call happened before rotel started, so every point it ever got for this port holds
    // the final total: nothing arrived partially, nothing twice.
    for name in CALL_COUNTERS {
        for series in snap.series(name, &[port_attr(d.server.port)]) {
            let values: Vec<f64> = series.iter().filter_map(|p| p["value"].as_f64()).collect();
            let last = *values.last().expect("a point");
            assert!(values.iter().all(|v| *v == last), "{name}: values {values:?} differ from the total {last}");
        }
    }
    assert_eq!(snap.counter_total("tokentap.requests", &[port_attr(d.server.port)]), 2.0);
    let failures = snap.counter_total("tokentap.agent.export.failures", &[]);
    assert!(failures >= 1.0, "tokentap.agent.export.failures = {failures}, want >= 1 after failed exports");
    let stderr = std::fs::read_to_string(&agent::agent().stderr).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "the agent panicked");
    finish(w, &d.case, &d.server);
}

/// One curl chat completion with `model`.
#[test]
fn cost_follows_the_price_table_and_unknown_models_count_as_unpriced() {
    if !require_bpf() {
        return;
    }
    let (_turn, w) = world();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let unknown = format!("tokentap-unknown-model-{}", env::random_hex(3));
    let runs = vec![case.curl_chat_model(&server, "gpt-4o-mini", &[]), case.curl_chat_model(&server, &unknown, &[])];
    let calls = checked_calls(&case, &server, &runs);
    let (priced, unpriced) = (&calls[0], &calls[1]);
    assert_eq!(priced.response_model, "gpt-4o-mini-2024-07-18", "the server answers with the dated snapshot");
    assert_eq!(unpriced.response_model, unknown, "the server echoes an unknown model");
    assert!(priced.cached > 0 && priced.reasoning > 0, "the call must exercise every price");
    let p = price_for("openai", "gpt-4o-mini").expect("gpt-4o-mini in agent/pricing/prices.toml");
    let (i, c, o, r) = (priced.input as f64, priced.cached as f64, priced.output as f64, priced.reasoning as f64);
    let usd = ((i - c) * p.input + c * p.cached_input + (o - r) * p.output + r * p.reasoning) / 1e6;
    assert_eq!(priced.cost(), Some(usd));
    assert_eq!(unpriced.cost(), None);

    let snap = w.collector.wait_exact("cost and unpriced calls", &case.secrets(), |s| {
        let mut bad = s.shape_mismatches();
        bad.extend(call_mismatches(s, server.port, &calls));
        bad
    });
    let port = port_attr(server.port);
    let total = snap.counter_total("tokentap.cost", std::slice::from_ref(&port));
    assert!((total - usd).abs() <= 1e-9 * usd, "tokentap.cost = {total}, want {usd}");
    for pt in snap.latest("tokentap.cost", std::slice::from_ref(&port)) {
        assert_eq!(pt["value_type"], "double", "tokentap.cost is a double counter");
    }
    let model = |m: &str| [port.clone(), ("gen_ai.response.model", json!(m))];
    assert_eq!(snap.counter_total("tokentap.calls.unpriced", &model(&unknown)), 1.0);
    assert_eq!(snap.counter_total("tokentap.calls.unpriced", &model("gpt-4o-mini-2024-07-18")), 0.0);
    assert_eq!(snap.counter_total("tokentap.cost", &model(&unknown)), 0.0, "an unpriced call costs nothing");
    finish(w, &case, &server);
}

/// Label (or `# TYPE`) name/value pairs.
type Pairs = Vec<(String, String)>;

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Pairs,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

/// Samples and `# TYPE` lines (family → type); `None` on a line it cannot read.
fn parse_prometheus(text: &str) -> Option<(Vec<Sample>, Pairs)> {
    let (mut samples, mut types) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (f, ty) = t.split_once(' ')?;
            types.push((f.to_string(), ty.trim().to_string()));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' '])?;
        let (name, mut rest) = line.split_at(name_end);
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            (labels, rest) = parse_labels(r)?;
        }
        let v = rest.split_whitespace().next()?;
        let value = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().ok()?,
        };
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    Some((samples, types))
}

/// `a="x",b="y"}…` → the labels and what follows the `}`.
fn parse_labels(mut rest: &str) -> Option<(Pairs, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, r) = rest.split_once("=\"")?;
        let (mut val, mut chars) = (String::new(), r.char_indices());
        let end = loop {
            match chars.next()? {
                (i, '"') => break i + 1,
                (_, '\\') => val.push(match chars.next()?.1 {
                    'n' => '\n',
                    other => other,
                }),
                (_, c) => val.push(c),
            }
        };
        labels.push((key.trim().to_string(), val));
        rest = &r[end..];
    }
}

/// GET /metrics with curl (plain HTTP); the body, or why not.
fn scrape(port: u16, dir: &std::path::Path) -> Result<String, String> {
    let out = dir.join(format!("metrics-{}.txt", env::random_hex(3)));
    let mut cmd = Command::new(clients::curl_path());
    cmd.args(["-sS", "--max-time", "10", "-w", "%{http_code}", "-o"]);
    cmd.arg(&out).arg(format!("http://127.0.0.1:{port}/metrics"));
    env::no_proxy(&mut cmd);
    let o = cmd.output().map_err(|e| format!("run curl: {e}"))?;
    let code = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if code != "200" {
        return Err(format!("GET /metrics: HTTP {code:?}, {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    std::fs::read_to_string(&out).map_err(|e| format!("read scrape: {e}"))
}

fn prometheus_mismatches(text: &str, port: u16, calls: &[MeteredCall]) -> Vec<String> {
    let Some((samples, types)) = parse_prometheus(text) else {
        return vec!["unparsable Prometheus text".into()];
    };
    let p = port.to_string();
    let mine = |name: &str, ty: Option<&str>| -> Vec<&Sample> {
        let ty_ok = |s: &Sample| ty.is_none_or(|t| s.label("gen_ai_token_type") == Some(t));
        samples.iter().filter(|s| s.name == name && s.label("server_port") == Some(p.as_str()) && ty_ok(s)).collect()
    };
    let total = |name: &str, ty: Option<&str>| mine(name, ty).iter().map(|s| s.value).sum::<f64>();
    let n = calls.len() as f64;
    let sum = |f: fn(&MeteredCall) -> u64| calls.iter().map(f).sum::<u64>() as f64;
    let streaming = calls.iter().filter(|c| c.ttfc_s.is_some()).count() as f64;
    let duration: f64 = calls.iter().map(|c| c.duration_s).sum();
    let mut bad = Vec::new();
    for (name, ty, want) in [
        ("tokentap_requests_total", None, n),
        ("tokentap_tokens_input_total", None, sum(|c| c.input)),
        ("tokentap_tokens_output_total", None, sum(|c| c.output)),
        ("tokentap_tokens_cached_input_total", None, sum(|c| c.cached)),
        ("tokentap_tokens_reasoning_total", None, sum(|c| c.reasoning)),
        ("gen_ai_client_token_usage_count", Some("input"), n),
        ("gen_ai_client_token_usage_sum", Some("input"), sum(|c| c.input)),
        ("gen_ai_client_token_usage_count", Some("output"), n),
        ("gen_ai_client_token_usage_sum", Some("output"), sum(|c| c.output)),
        ("gen_ai_client_operation_duration_seconds_count", None, n),
        ("gen_ai_client_operation_time_to_first_chunk_seconds_count", None, streaming),
    ] {
        let got = total(name, ty);
        if got != want {
            bad.push(format!("{name}{{server_port=\"{p}\", token type {ty:?}}} = {got}, want {want}"));
        }
    }
    let got = total("gen_ai_client_operation_duration_seconds_sum", None);
    if (got - duration).abs() > 1e-3 * n {
        bad.push(format!("gen_ai_client_operation_duration_seconds_sum = {got}, want {duration}"));
    }
    // Buckets of the input token histogram: every series has each bound and +Inf, and summed
    // over series the cumulative counts match the calls.
    let buckets = mine("gen_ai_client_token_usage_bucket", Some("input"));
    let mut les: Vec<f64> = TOKEN_BOUNDS.to_vec();
    les.push(f64::INFINITY);
    let series = mine("gen_ai_client_token_usage_count", Some("input")).len();
    for le in &les {
        let at: Vec<&&Sample> = buckets
            .iter()
            .filter(|s| s.label("le").and_then(|v| v.replace("+Inf", "inf").parse::<f64>().ok()) == Some(*le))
            .collect();
        let want = calls.iter().filter(|c| c.input as f64 <= *le).count() as f64;
        let got: f64 = at.iter().map(|s| s.value).sum();
        if at.len() != series || got != want {
            bad.push(format!("le=\"{le}\": {} sample(s) = {got}, want {series} = {want}", at.len()));
        }
    }
    if buckets.len() != series * les.len() {
        bad.push(format!(
            "{} input bucket samples, want {} (bounds {:?} and +Inf)",
            buckets.len(),
            series * les.len(),
            TOKEN_BOUNDS
        ));
    }
    for s in mine("tokentap_requests_total", None) {
        for l in ["gen_ai_operation_name", "gen_ai_provider_name", "tokentap_team", "process_executable_name"] {
            if s.label(l).is_none() {
                bad.push(format!("tokentap_requests_total without label {l}"));
            }
        }
        for l in ["process_pid", "k8s_pod_name"] {
            if s.label(l).is_some() {
                bad.push(format!("tokentap_requests_total with label {l}"));
            }
        }
    }
    let has_type = |f: &str, t: &str| types.iter().any(|(n, ty)| n == f && ty == t);
    for (f, t) in
        [("gen_ai_client_token_usage", "histogram"), ("gen_ai_client_operation_duration_seconds", "histogram")]
    {
        if !has_type(f, t) {
            bad.push(format!("no `# TYPE {f} {t}`"));
        }
    }
    if !has_type("tokentap_requests_total", "counter") && !has_type("tokentap_requests", "counter") {
        bad.push("no `# TYPE tokentap_requests[_total] counter`".into());
    }
    bad
}

#[test]
fn prometheus_endpoint_serves_the_same_totals() {
    if !require_bpf() {
        return;
    }
    let (_turn, w) = world();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let runs = vec![case.curl_chat(&server, &[]), case.openai(&server, "chat_stream_usage")];
    let calls = checked_calls(&case, &server, &runs);
    let deadline = Instant::now() + METRICS_TIMEOUT;
    let text = loop {
        let (text, bad) = match scrape(w.prom_port, &server.dir) {
            Ok(t) => {
                let bad = prometheus_mismatches(&t, server.port, &calls);
                (t, bad)
            }
            Err(e) => (String::new(), vec![e]),
        };
        if bad.is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline && agent::agent().status() == "running",
            "Prometheus endpoint 127.0.0.1:{} not as expected within {}s:\n  {}",
            w.prom_port,
            METRICS_TIMEOUT.as_secs(),
            env::redact(&bad.join("\n  "), &case.secrets())
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let secrets = case.secrets();
    let leaked: Vec<usize> =
        (0..secrets.len()).filter(|i| !secrets[*i].is_empty() && text.contains(&secrets[*i])).collect();
    assert!(leaked.is_empty(), "PRIVACY VIOLATION: the scrape contains secret(s) #{leaked:?}");
    finish(w, &case, &server);
}
