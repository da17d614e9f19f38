//! What tokentap's per-call metrics must add up to: each call as the server logged it and the
//! agent recorded it ([`MeteredCall`]), its price from the agent's built-in table
//! (`agent/pricing/prices.toml`), and the per-series comparison with what a collector received
//! ([`call_mismatches`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::clients::ClientRun;
use crate::collector::{matches, port_attr, Snapshot, CALL_COUNTERS, TOKEN_BOUNDS};
use crate::expect::{Expected, Tokens};
use crate::server::{LlmServer, ServerEntry};
use crate::{env, Case};

/// One price-table entry, USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
    pub reasoning: f64,
}

/// The agent's built-in table (`agent/pricing/prices.toml`): `[[model]]` entries of
/// `key = value` lines, as `(provider, model, price)`.
pub fn builtin_prices() -> Vec<(String, String, Price)> {
    let path = env::workspace_dir().join("agent/pricing/prices.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut entries: Vec<BTreeMap<String, String>> = Vec::new();
    let mut in_model = false;
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim(); // no `[[model]]` value holds a '#'
        if line.starts_with('[') {
            in_model = line == "[[model]]";
            if in_model {
                entries.push(BTreeMap::new());
            }
        } else if let (true, Some((k, v))) = (in_model, line.split_once('=')) {
            let e = entries.last_mut().expect("an entry");
            e.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
        }
    }
    entries
        .into_iter()
        .map(|e| {
            let num = |k: &str| e.get(k).map(|v| v.parse::<f64>().unwrap_or_else(|_| panic!("price {k} = {v}")));
            let (input, output) = (num("input").expect("input price"), num("output").expect("output price"));
            let price = Price {
                input,
                output,
                cached_input: num("cached_input").unwrap_or(input),
                reasoning: num("reasoning").unwrap_or(output),
            };
            (e["provider"].clone(), e["model"].clone(), price)
        })
        .collect()
}

/// The price of `model`: its exact (lower-cased) entry, else the one without a `-YYYY-MM-DD`,
/// `-YYYYMMDD` or `-latest` snapshot suffix.
pub fn price_for(provider: &str, model: &str) -> Option<Price> {
    let table = builtin_prices();
    let find = |m: &str| table.iter().find(|(p, n, _)| p == provider && n == m).map(|e| e.2);
    let m = model.trim().to_lowercase();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let base = if let Some(b) = m.strip_suffix("-latest") {
        b
    } else if m.is_ascii() && m.len() > 11 && m.as_bytes()[m.len() - 11] == b'-' && {
        let d: Vec<&str> = m[m.len() - 10..].split('-').collect();
        d.len() == 3 && digits(d[0], 4) && digits(d[1], 2) && digits(d[2], 2)
    } {
        &m[..m.len() - 11]
    } else if m.is_ascii() && m.len() > 9 && m.as_bytes()[m.len() - 9] == b'-' && digits(&m[m.len() - 8..], 8) {
        &m[..m.len() - 9]
    } else {
        &m
    };
    find(&m).or_else(|| find(base))
}

/// One call as the metrics must count it: the server's usage, the agent's (checked) record for
/// identity and attribution.
#[derive(Debug, Clone)]
pub struct MeteredCall {
    pub provider: String,
    /// `gen_ai.operation.name`: "chat" (chat completions, Responses API, Anthropic messages)
    /// or "embeddings".
    pub operation: String,
    pub request_model: String,
    pub response_model: String,
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub reasoning: u64,
    pub usage_source: String,
    pub duration_s: f64,
    /// Streaming calls only.
    pub ttfc_s: Option<f64>,
    /// `tokentap.team` … `process.executable.name`.
    pub attribution: Map<String, Value>,
}

impl MeteredCall {
    pub fn new(entry: &ServerEntry, record: &Value) -> MeteredCall {
        let exp = Expected::from_entry(entry, 0);
        let exact = |t: Tokens| match t {
            Tokens::Exact(n) => n,
            Tokens::Approx { .. } => panic!("metric checks need calls with reported usage"),
        };
        let mut attribution = Map::new();
        let team = record["team"].as_str().unwrap_or("unattributed");
        attribution.insert("tokentap.team".into(), team.into());
        for (field, key) in [
            ("cost_center", "tokentap.cost_center"),
            ("product", "tokentap.product"),
            ("tenant", "tokentap.tenant"),
            ("app", "tokentap.app"),
            ("k8s_namespace", "k8s.namespace.name"),
            ("k8s_workload", "tokentap.k8s.workload.name"),
            ("k8s_workload_kind", "tokentap.k8s.workload.kind"),
            ("user", "user.name"),
            ("systemd_unit", "tokentap.systemd.unit"),
        ] {
            if let Some(v) = record[field].as_str() {
                attribution.insert(key.into(), v.into());
            }
        }
        let exe = record["exe"].as_str().unwrap_or("");
        attribution.insert("process.executable.name".into(), exe.rsplit('/').next().unwrap_or(exe).into());
        MeteredCall {
            provider: exp.provider,
            operation: if exp.operation == "embeddings" { "embeddings" } else { "chat" }.into(),
            request_model: exp.request_model,
            response_model: exp.response_model,
            input: exact(exp.input_tokens),
            output: exact(exp.output_tokens),
            cached: exp.cached_input_tokens,
            reasoning: exp.reasoning_tokens,
            usage_source: exp.usage_source,
            duration_s: record["duration_ms"].as_f64().expect("duration_ms") / 1000.0,
            ttfc_s: record["time_to_first_chunk_ms"].as_f64().map(|ms| ms / 1000.0),
            attribution,
        }
    }

    /// Attributes of every usage metric (histograms add `gen_ai.token.type` / `error.type`).
    /// The issue puts `tokentap.usage_source` with the attribution attributes, on all of them.
    pub fn attrs(&self, port: u16) -> Map<String, Value> {
        let mut a = self.attribution.clone();
        a.insert("tokentap.usage_source".into(), self.usage_source.as_str().into());
        for (k, v) in [
            ("gen_ai.operation.name", &self.operation),
            ("gen_ai.provider.name", &self.provider),
            ("gen_ai.request.model", &self.request_model),
            ("gen_ai.response.model", &self.response_model),
        ] {
            a.insert(k.into(), v.as_str().into());
        }
        a.insert("server.address".into(), "127.0.0.1".into());
        a.insert("server.port".into(), port.into());
        a
    }

    /// Attributes of the counters: the same as the histograms'.
    pub fn counter_attrs(&self, port: u16) -> Map<String, Value> {
        self.attrs(port)
    }

    /// USD by the built-in table (priced under the response model); None: unpriced.
    pub fn cost(&self) -> Option<f64> {
        let p = price_for(&self.provider, &self.response_model)?;
        let (i, c, o, r) = (self.input as f64, self.cached as f64, self.output as f64, self.reasoning as f64);
        Some(((i - c) * p.input + c * p.cached_input + (o - r) * p.output + r * p.reasoning) / 1e6)
    }
}

/// Waits for exactly one record per client run (one LLM call each, in order), checks each
/// against the server's log and its client, and returns the calls.
pub fn checked_calls(case: &Case, server: &LlmServer, runs: &[ClientRun]) -> Vec<MeteredCall> {
    let recs = case.wait_records(server, runs.len());
    let entries = server.entries();
    assert_eq!(entries.len(), runs.len(), "one LLM call per client run");
    let mut calls = Vec::new();
    for ((e, r), run) in entries.iter().zip(&recs).zip(runs) {
        let exp = Expected::from_entry(e, server.port).with_process(run.pid, run.comm.as_deref(), run.exe.as_deref());
        case.check(r, &exp);
        calls.push(MeteredCall::new(e, r));
    }
    calls
}

/// An attribute set as JSON with sorted keys (whatever map order serde_json was built with).
fn key(a: &Map<String, Value>) -> String {
    serde_json::to_string(&a.iter().collect::<BTreeMap<_, _>>()).unwrap_or_default()
}

fn point_key(p: &Value) -> String {
    p["attributes"].as_object().map(key).unwrap_or_default()
}

fn close(got: f64, want: f64, abs: f64) -> bool {
    (got - want).abs() <= abs + 1e-9 * want.abs()
}

/// Every difference between the metrics for `port` and what `calls` add up to: per series
/// (exact attribute sets) the counters' latest values, and the histograms' count, sum, min/max
/// and (tokens) buckets.
pub fn call_mismatches(s: &Snapshot, port: u16, calls: &[MeteredCall]) -> Vec<String> {
    let filter = [port_attr(port)];
    let mut bad = Vec::new();
    if !s.points.iter().any(|p| matches(p, "tokentap.requests", &filter)) {
        let seen: BTreeSet<String> = s.points.iter().map(|p| p["attributes"]["server.port"].to_string()).collect();
        bad.push(format!(
            "no tokentap.requests point for server.port {port} (an int); server.port values seen: {seen:?}"
        ));
    }
    let mut want: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
    for c in calls {
        let k = key(&c.counter_attrs(port));
        let mut add = |name: &'static str, v: f64| *want.entry(name).or_default().entry(k.clone()).or_default() += v;
        add("tokentap.requests", 1.0);
        add("tokentap.tokens.input", c.input as f64);
        add("tokentap.tokens.output", c.output as f64);
        add("tokentap.tokens.cached_input", c.cached as f64);
        add("tokentap.tokens.reasoning", c.reasoning as f64);
        match c.cost() {
            Some(usd) => add("tokentap.cost", usd),
            None => add("tokentap.calls.unpriced", 1.0),
        }
    }
    let wanted_keys: BTreeSet<String> = want.values().flat_map(|m| m.keys().cloned()).collect();
    for name in CALL_COUNTERS {
        let empty = BTreeMap::new();
        let w = want.get(name).unwrap_or(&empty);
        let got: BTreeMap<String, f64> =
            s.latest(name, &filter).iter().map(|p| (point_key(p), p["value"].as_f64().unwrap_or(f64::NAN))).collect();
        for (k, v) in w {
            let g = got.get(k).copied().unwrap_or(0.0);
            if !close(g, *v, 0.0) {
                bad.push(format!("{name} = {g} for {k}, want {v}"));
            }
        }
        for (k, g) in got.iter().filter(|(k, _)| !w.contains_key(*k)) {
            if *g != 0.0 || !wanted_keys.contains(k) {
                bad.push(format!("{name}: unexpected series {k} = {g}"));
            }
        }
    }
    // Histograms: series → (observations, optional).
    let mut hist: BTreeMap<&str, BTreeMap<String, (Vec<f64>, bool)>> = BTreeMap::new();
    for c in calls {
        let mut obs = |name: &'static str, a: Map<String, Value>, v: f64, optional: bool| {
            let e = hist.entry(name).or_default().entry(key(&a)).or_insert((Vec::new(), true));
            e.0.push(v);
            e.1 &= optional;
        };
        for (ty, v) in [("input", c.input), ("output", c.output)] {
            let mut a = c.attrs(port);
            a.insert("gen_ai.token.type".into(), ty.into());
            // Embeddings have no output tokens: an observation of 0 may or may not be recorded.
            obs("gen_ai.client.token.usage", a, v as f64, c.operation == "embeddings" && ty == "output");
        }
        obs("gen_ai.client.operation.duration", c.attrs(port), c.duration_s, false);
        if let Some(t) = c.ttfc_s {
            obs("gen_ai.client.operation.time_to_first_chunk", c.attrs(port), t, false);
        }
    }
    for name in
        ["gen_ai.client.token.usage", "gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk"]
    {
        let empty = BTreeMap::new();
        let w = hist.get(name).unwrap_or(&empty);
        let got: BTreeMap<String, &Value> = s.latest(name, &filter).into_iter().map(|p| (point_key(p), p)).collect();
        for (k, (vals, optional)) in w {
            let Some(p) = got.get(k) else {
                if !optional {
                    bad.push(format!("{name}: no series {k}"));
                }
                continue;
            };
            let tokens = name == "gen_ai.client.token.usage";
            let abs = if tokens { 0.0 } else { 1e-3 * vals.len() as f64 };
            let sum: f64 = vals.iter().sum();
            if p["count"].as_u64() != Some(vals.len() as u64) || !close(p["sum"].as_f64().unwrap_or(f64::NAN), sum, abs)
            {
                bad.push(format!(
                    "{name} count {} sum {} for {k}, want {} and {sum}",
                    p["count"],
                    p["sum"],
                    vals.len()
                ));
            }
            if tokens {
                let mut buckets = vec![0u64; TOKEN_BOUNDS.len() + 1];
                for v in vals {
                    buckets[TOKEN_BOUNDS.iter().position(|b| v <= b).unwrap_or(TOKEN_BOUNDS.len())] += 1;
                }
                if p["bucket_counts"] != Value::from(buckets.clone()) {
                    bad.push(format!("{name} bucket_counts {} for {k}, want {buckets:?}", p["bucket_counts"]));
                }
                let (min, max) = vals.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
                let mm_ok = |f: &str, want: f64| p[f].is_null() || p[f].as_f64() == Some(want);
                if !mm_ok("min", min) || !mm_ok("max", max) {
                    bad.push(format!("{name} min {} max {} for {k}, want {min} and {max}", p["min"], p["max"]));
                }
            }
        }
        for k in got.keys().filter(|k| !w.contains_key(*k)) {
            bad.push(format!("{name}: unexpected series {k}"));
        }
    }
    bad
}
