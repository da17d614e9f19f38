//! Fleet-wide reports from Prometheus, end to end: a real Prometheus scrapes two real agents
//! (one of them stopped and restarted mid-way), real clients in systemd-unit cgroups make calls
//! that a mapping file gives to two teams, and `tokentap report --prometheus URL --by team
//! --format json` must give, per team, exactly what the agents metered: the two agents' ledgers
//! merged (`report --ledger A --ledger B`) and their usage logs (checked against the fake
//! server's own log) — calls, errors, tokens, estimated calls, cost to the cent — across the
//! restart's counter reset and with no extrapolation.
//!
//! Both agents meter every process on the machine, so each call counts once per agent that was
//! running. After the restart, some of the restarted agent's series count fewer calls than
//! before it (the counter drops) and some exactly as many (1 before, 1 after: no drop, so only
//! the agent's new `tokentap_agent_start_time_seconds` shows the restart).
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokentap_tests::{
    agent::agent_bin,
    certs, clients,
    collector::free_ports,
    env,
    fleet::{FleetAgent, Prometheus},
    kube::Cgroup,
    require_bpf, Case, LlmServer, ServerOpts,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// curl, provider-reported usage.
    Reported,
    /// The OpenAI SDK streaming without usage: tokentap counts the tokens.
    Estimated,
    /// curl without an API key: HTTP 401.
    Failed,
}

struct World {
    case: Case,
    server: LlmServer,
    tag: String,
    cgroups: BTreeMap<&'static str, Cgroup>,
}

impl World {
    fn team(&self, t: &str) -> String {
        format!("prom-{}-{t}", self.tag)
    }

    fn call(&self, team: &str, kind: Kind) {
        let prefix = self.cgroups[team].prefix();
        match kind {
            Kind::Estimated => {
                self.case.openai_with(&self.server, "chat_stream_no_usage", &prefix);
            }
            Kind::Reported | Kind::Failed => {
                // Models priced well above a cent per call, so that "to the cent" means something.
                let model = if team == "alpha" { "gpt-4o" } else { "o4-mini" };
                let status = curl_chat(&self.case, &self.server, &prefix, model, kind == Kind::Reported);
                assert_eq!(status, if kind == Kind::Reported { "200" } else { "401" }, "curl HTTP status");
            }
        }
    }
}

/// One chat completion of `model` with curl behind `prefix`; with or without the API key. Returns the
/// HTTP status.
fn curl_chat(case: &Case, server: &LlmServer, prefix: &[std::ffi::OsString], model: &str, auth: bool) -> String {
    let tag = env::random_hex(4);
    let headers = server.dir.join(format!("curl-headers-{tag}"));
    let body = server.dir.join(format!("curl-body-{tag}.json"));
    let resp = server.dir.join(format!("curl-response-{tag}"));
    let auth_line = if auth { format!("Authorization: Bearer {}\n", case.api_key) } else { String::new() };
    std::fs::write(&headers, format!("{auth_line}Content-Type: application/json\n")).unwrap();
    let req = json!({"model": model, "messages": [{"role": "user", "content": case.prompt()}]});
    std::fs::write(&body, serde_json::to_vec(&req).unwrap()).unwrap();
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..])
        .arg(clients::curl_path())
        .args(["--http1.1", "-sS", "--cacert"])
        .arg(&certs().ca)
        .args(["-w", "%{http_code}\n", "-H"])
        .arg(format!("@{}", headers.display()))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg("-o")
        .arg(&resp)
        .arg(format!("{}/v1/chat/completions", server.origin()));
    let run = clients::run(cmd, "curl", &server.dir);
    case.expect_ok(&run);
    run.stdout.trim().to_string()
}

/// What a report counts per team.
#[derive(Debug, Default, Clone, PartialEq)]
struct Totals {
    calls: u64,
    errors: u64,
    input: u64,
    output: u64,
    cached: u64,
    reasoning: u64,
    estimated: u64,
    cents: i64,
}

/// Per team, over `records` for `port` (a failed call: status >= 400 or a provider error).
fn totals(records: &[Value], port: u16) -> BTreeMap<String, (Totals, f64)> {
    let mut out: BTreeMap<String, (Totals, f64)> = BTreeMap::new();
    for r in records.iter().filter(|r| r["server_port"] == port) {
        let (t, usd) = out.entry(r["team"].as_str().unwrap_or("").to_string()).or_default();
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        t.calls += 1;
        t.errors += u64::from(!r["error_type"].is_null() || n("http_status") >= 400);
        t.input += n("input_tokens");
        t.output += n("output_tokens");
        t.cached += n("cached_input_tokens");
        t.reasoning += n("reasoning_tokens");
        t.estimated += u64::from(r["usage_source"] == "estimated");
        *usd += r["cost_usd"].as_f64().unwrap_or(0.0);
    }
    for (t, usd) in out.values_mut() {
        t.cents = (*usd * 100.0).round() as i64;
    }
    out
}

/// Waits until run `run` of `agent` has written `n` records for `port` (then a short settle,
/// so a spurious extra record would show).
fn wait_records(agent: &FleetAgent, run: usize, port: u16, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<Value> = agent.records(run).into_iter().filter(|r| r["server_port"] == port).collect();
        if got.len() >= n {
            std::thread::sleep(Duration::from_millis(500));
            let got: Vec<Value> = agent.records(run).into_iter().filter(|r| r["server_port"] == port).collect();
            assert_eq!(got.len(), n, "agent {} run {}: records for port {port}", agent.name, run + 1);
            return got;
        }
        assert!(Instant::now() < deadline, "agent {} run {}: {} of {n} records", agent.name, run + 1, got.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until Prometheus's latest samples of `agent`'s counters for our teams equal what its
/// current run metered (`want`), then two more scrape intervals (the counters of one call are
/// updated one after another: a scrape can fall between them).
fn wait_scraped(prom: &Prometheus, agent: &FleetAgent, tag: &str, want: &BTreeMap<String, (Totals, f64)>) {
    let instance = format!("127.0.0.1:{}", agent.metrics_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut got: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (metric, slot) in [("tokentap_requests_total", 0), ("tokentap_tokens_input_total", 1)] {
            let q = format!(
                "sum by (tokentap_team) ({metric}{{instance=\"{instance}\",tokentap_team=~\"prom-{tag}-.*\"}})"
            );
            for s in prom.query(&q) {
                let team = s["metric"]["tokentap_team"].as_str().unwrap_or("").to_string();
                let v = s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(-1.0) as u64;
                let e = got.entry(team).or_default();
                if slot == 0 {
                    e.0 = v;
                } else {
                    e.1 = v;
                }
            }
        }
        let wanted: BTreeMap<String, (u64, u64)> = want
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("prom-{tag}-")))
            .map(|(k, (t, _))| (k.clone(), (t.calls, t.input)))
            .collect();
        if got == wanted {
            std::thread::sleep(Duration::from_millis(2500));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped agent {}'s final values: {got:?}, want {wanted:?}",
            agent.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Unix seconds as RFC 3339 (UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `tokentap report ARGS --by team --format json` for [from, to): team → totals.
fn report(args: &[&str], from: u64, to: u64) -> BTreeMap<String, Totals> {
    let out = Command::new(agent_bin())
        .arg("report")
        .args(args)
        .args(["--by", "team", "--format", "json", "--from", &rfc3339(from), "--to", &rfc3339(to)])
        .output()
        .expect("run tokentap report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tokentap report {args:?} failed ({}): {stderr}", out.status);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("report JSON: {e}"));
    let mut got = BTreeMap::new();
    for g in v["groups"].as_array().expect("groups") {
        let n = |k: &str| g[k].as_u64().unwrap_or_else(|| panic!("group field {k}: {}", g[k]));
        let usd = g["cost_usd"].as_f64().or_else(|| g["cost_usd"].as_str().and_then(|s| s.parse().ok()));
        let t = Totals {
            calls: n("calls"),
            errors: n("errors"),
            input: n("input_tokens"),
            output: n("output_tokens"),
            cached: n("cached_input_tokens"),
            reasoning: n("reasoning_tokens"),
            estimated: n("estimated_calls"),
            cents: (usd.expect("cost_usd") * 100.0).round() as i64,
        };
        got.insert(g["team"].as_str().unwrap_or("").to_string(), t);
    }
    got
}

fn assert_private(dir: &Path, secrets: &[String]) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let data = std::fs::read(entry.path()).unwrap_or_default();
        for (i, s) in secrets.iter().enumerate() {
            let leaked = !s.is_empty() && data.windows(s.len()).any(|w| w == s.as_bytes());
            assert!(!leaked, "PRIVACY VIOLATION: secret #{i} in {}", entry.path().display());
        }
    }
}

#[test]
fn report_from_prometheus_equals_what_two_agents_metered_across_a_restart() {
    if !require_bpf() {
        return;
    }
    let started = now_secs();
    let dir = env::temp_subdir("prom-report");
    let tag = env::random_hex(4);
    let mut cgroups = BTreeMap::new();
    for team in ["alpha", "beta"] {
        cgroups.insert(team, Cgroup::create(&format!("system.slice/ttprom-{tag}-{team}.service")));
    }
    let mapping = dir.join("mapping.toml");
    let mut rules = String::new();
    for team in ["alpha", "beta"] {
        rules.push_str(&format!(
            "[[rule]]\nname = \"{team}\"\n[rule.match]\nsystemd_unit = \"ttprom-{tag}-{team}.service\"\n\
             [rule.set]\nteam = \"prom-{tag}-{team}\"\ncost_center = \"cc-{team}\"\n\n"
        ));
    }
    std::fs::write(&mapping, rules).unwrap();
    let ports = free_ports(2);
    let config = |port: u16| {
        format!(
            "[attribution]\nmapping_file = \"{}\"\n\n[export]\nprometheus_listen = \"127.0.0.1:{port}\"\n",
            mapping.display()
        )
    };
    let prom = Prometheus::start(&dir, &ports);
    let mut a = FleetAgent::start("agent-a", &dir, ports[0], &config(ports[0]));
    let b = FleetAgent::start("agent-b", &dir, ports[1], &config(ports[1]));
    let w = World { case: Case::new(), server: LlmServer::start(ServerOpts::default()), tag, cgroups };
    let port = w.server.port;
    let (alpha, beta) = (w.team("alpha"), w.team("beta"));
    use Kind::*;
    let plan: [&[(&str, Kind, usize)]; 3] = [
        // Both agents up.
        &[
            ("alpha", Reported, 3),
            ("alpha", Estimated, 2),
            ("alpha", Failed, 2),
            ("beta", Reported, 2),
            ("beta", Estimated, 1),
            ("beta", Failed, 1),
        ],
        // Agent a stopped: only b meters these.
        &[("alpha", Reported, 1), ("alpha", Failed, 1), ("beta", Reported, 1)],
        // Agent a restarted: alpha's series drop; beta's estimated and failed series do not
        // (1 call before, 1 after).
        &[
            ("alpha", Reported, 1),
            ("alpha", Estimated, 1),
            ("alpha", Failed, 1),
            ("beta", Reported, 1),
            ("beta", Estimated, 1),
            ("beta", Failed, 1),
        ],
    ];
    let mut made = [0usize; 3];
    let mut entries_seen = 0;
    let mut reported_truth = [Totals::default(), Totals::default(), Totals::default()];
    for (phase, calls) in plan.iter().enumerate() {
        match phase {
            1 => {
                let recs = wait_records(&a, 0, port, made[0]);
                wait_scraped(&prom, &a, &w.tag, &totals(&recs, port));
                wait_scraped(&prom, &b, &w.tag, &totals(&wait_records(&b, 0, port, made[0]), port));
                a.stop();
            }
            2 => {
                a.restart();
            }
            _ => {}
        }
        for &(team, kind, n) in *calls {
            for _ in 0..n {
                w.call(team, kind);
                made[phase] += 1;
            }
        }
        // The server's log: provider-reported usage of this phase's successful calls.
        let entries = w.server.entries();
        for e in &entries[entries_seen..] {
            if let Some(u) = e.usage() {
                let t = &mut reported_truth[phase];
                t.calls += 1;
                t.input += u["prompt_tokens"].as_u64().unwrap();
                t.output += u["completion_tokens"].as_u64().unwrap();
                t.cached += u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
                t.reasoning += u["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap_or(0);
            }
        }
        entries_seen = entries.len();
    }
    // Everything metered and scraped before the report.
    let a1 = wait_records(&a, 0, port, made[0]);
    let a2 = wait_records(&a, 1, port, made[2]);
    let b1 = wait_records(&b, 0, port, made.iter().sum());
    wait_scraped(&prom, &a, &w.tag, &totals(&a2, port));
    wait_scraped(&prom, &b, &w.tag, &totals(&b1, port));

    // The agents' records against the server's ground truth: reported usage exactly.
    let reported = |recs: &[Value]| {
        let mut t = Totals::default();
        for r in recs.iter().filter(|r| r["usage_source"] == "reported" && r["http_status"] == 200) {
            t.calls += 1;
            t.input += r["input_tokens"].as_u64().unwrap();
            t.output += r["output_tokens"].as_u64().unwrap();
            t.cached += r["cached_input_tokens"].as_u64().unwrap();
            t.reasoning += r["reasoning_tokens"].as_u64().unwrap();
        }
        t
    };
    assert_eq!(reported(&a1), reported_truth[0], "agent a, first run, vs the server's log");
    assert_eq!(reported(&a2), reported_truth[2], "agent a, second run, vs the server's log");
    let mut all = reported_truth[0].clone();
    for t in &reported_truth[1..] {
        all.calls += t.calls;
        all.input += t.input;
        all.output += t.output;
        all.cached += t.cached;
        all.reasoning += t.reasoning;
    }
    assert_eq!(reported(&b1), all, "agent b vs the server's log");

    // What the agents metered, per team, summed over agents and runs.
    let mut metered: Vec<Value> = a1.clone();
    metered.extend(a2.iter().cloned());
    metered.extend(b1.iter().cloned());
    let want = totals(&metered, port);
    // Every call was metered by each agent running at the time (calls, failures and estimates
    // counted over the server port: a short-lived client whose identity an agent could not read
    // is `unattributed`, which the report must then show the same way).
    let count = |kind: Kind, phases: &[usize]| -> u64 {
        phases.iter().flat_map(|p| plan[*p].iter()).filter(|(_, k, _)| *k == kind).map(|c| c.2 as u64).sum()
    };
    let seen = |k: Kind| count(k, &[0, 2]) + count(k, &[0, 1, 2]);
    let sum = want.values().fold(Totals::default(), |mut acc, (t, _)| {
        acc.calls += t.calls;
        acc.errors += t.errors;
        acc.estimated += t.estimated;
        acc
    });
    assert_eq!(sum.calls, seen(Reported) + seen(Estimated) + seen(Failed), "calls metered");
    assert_eq!(sum.errors, seen(Failed), "failed calls metered");
    assert_eq!(sum.estimated, seen(Estimated), "estimated calls metered");
    for name in [&alpha, &beta] {
        assert!(want.get(name.as_str()).is_some_and(|(t, _)| t.calls > 0), "no call attributed to {name}");
    }

    let got = report(&["--prometheus", &prom.url()], started - 5, now_secs() + 1);
    for name in [&alpha, &beta] {
        assert_eq!(
            got.get(name.as_str()),
            Some(&want[name.as_str()].0),
            "team {name}: report --prometheus vs the agents"
        );
    }
    let mut secrets = w.case.secrets();
    secrets.extend(w.server.entries().iter().filter_map(|e| e.marker().map(String::from)));
    for agent in [&a, &b] {
        assert_private(&agent.dir, &secrets);
    }
    drop(a);
    drop(b);
    drop(prom);
}
