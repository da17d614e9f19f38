//! From raw counter samples to report rows, without extrapolation: per series, the sum of the
//! differences between consecutive samples, starting from the last sample before the period
//! (or 0 for a series born in it), where a restart of the agent (a new
//! `tokentap_agent_start_time_seconds`, or, without it, a drop of the value) means the new value
//! was counted from 0. `increase()`/`rate()` are not used: they extrapolate to the window's edges and
//! give fractional calls.
use std::collections::{BTreeMap, HashMap, HashSet};

use super::api::{Labels, Samples};
use crate::money::{Pico, PICO_PER_USD};
use crate::report::rows::{Counters, Dim, Keys, Row};

pub const HOUR_MS: i64 = 3_600_000;

/// The agents' start-time gauge: a new value is a restart.
pub const START_TIME: &str = "tokentap_agent_start_time_seconds";

/// What a counter adds to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Calls,
    Errors,
    Input,
    Output,
    Cached,
    Reasoning,
    Cost,
}

/// The agents' counters (Prometheus names, [docs/metrics.md](../../../../docs/metrics.md)).
pub const METRICS: [(&str, Field); 7] = [
    ("tokentap_requests_total", Field::Calls),
    ("tokentap_requests_failed_total", Field::Errors),
    ("tokentap_tokens_input_total", Field::Input),
    ("tokentap_tokens_output_total", Field::Output),
    ("tokentap_tokens_cached_input_total", Field::Cached),
    ("tokentap_tokens_reasoning_total", Field::Reasoning),
    ("tokentap_cost_total", Field::Cost),
];

/// Report keys from labels (the Prometheus names of the usage attributes); the model is the
/// response model, else the request model, as in the ledger.
pub fn keys(labels: &Labels) -> Keys {
    let get = |name: &str| labels.get(name).filter(|v| !v.is_empty()).cloned();
    let mut k = Keys::default();
    for (dim, label) in [
        (Dim::Team, "tokentap_team"),
        (Dim::CostCenter, "tokentap_cost_center"),
        (Dim::Product, "tokentap_product"),
        (Dim::Tenant, "tokentap_tenant"),
        (Dim::App, "tokentap_app"),
        (Dim::Namespace, "k8s_namespace_name"),
        (Dim::Workload, "tokentap_k8s_workload_name"),
        (Dim::Provider, "gen_ai_provider_name"),
        (Dim::User, "user_name"),
        (Dim::Unit, "tokentap_systemd_unit"),
    ] {
        k.set(dim, get(label));
    }
    k.set(Dim::Model, get("gen_ai_response_model").or_else(|| get("gen_ai_request_model")));
    k
}

/// The hour (unix seconds) a sample at `ts_ms` counts in: chunks are `(H, H + 1 h]`, the
/// windows a range selector evaluated at `H + 1 h` reads.
pub fn hour_of(ts_ms: i64) -> i64 {
    (ts_ms - 1).div_euclid(HOUR_MS) * 3600
}

/// Increase of one counter per hour over the samples in `(from_ms, to_ms]`, from `baseline`
/// (the last value at or before `from_ms`; `None`: the series was born in the period and
/// counted from 0). A restart means the new value counts in full: the agent's start time
/// (`starts`, its samples with the baseline at `from_ms`) changed since the previous sample, or
/// the value dropped.
pub fn hourly_increase(
    baseline: Option<f64>,
    samples: &Samples,
    from_ms: i64,
    to_ms: i64,
    starts: Option<&Samples>,
) -> BTreeMap<i64, f64> {
    let start_at = |ts: i64| starts.and_then(|s| s.range(..=ts).next_back().map(|(_, v)| *v));
    let mut out = BTreeMap::new();
    let mut prev = baseline.unwrap_or(0.0);
    let mut prev_ts = from_ms;
    for (&ts, &v) in samples.range(from_ms + 1..=to_ms) {
        let restarted = match (start_at(prev_ts), start_at(ts)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        let inc = if v >= prev && !restarted { v - prev } else { v };
        prev = v;
        prev_ts = ts;
        if inc > 0.0 {
            *out.entry(hour_of(ts)).or_insert(0.0) += inc;
        }
    }
    out
}

/// The start-time series of the agent that exported `labels`: the one whose labels (`instance`,
/// `job`, … without `__name__`) all appear on the series, the most specific if several do.
pub fn agent_of<'a>(labels: &Labels, starts: &'a [(Labels, Samples)]) -> Option<&'a Samples> {
    starts
        .iter()
        .filter(|(id, _)| id.iter().all(|(k, v)| k == "__name__" || labels.get(k) == Some(v)))
        .max_by_key(|(id, _)| id.len())
        .map(|(_, s)| s)
}

/// Drops the baselines that belong to an earlier run of their agent. An agent exports every
/// series of its run at every scrape, so when the agent was scraped just before the period
/// (`recent` holds its start-time series) but a counter series was not, that series' last value
/// is from a run before the current one, and the current run counted it from 0. (Its first
/// sample in the period shows no new start time, so without this it would be read as an
/// increase over the old run's value.)
pub fn current_run_baselines(baselines: &mut HashMap<Labels, f64>, recent: &HashSet<Labels>) {
    let up: Vec<&Labels> = recent.iter().filter(|l| l.get("__name__").is_some_and(|n| n == START_TIME)).collect();
    baselines.retain(|labels, _| {
        if recent.contains(labels) || labels.get("__name__").is_some_and(|n| n == START_TIME) {
            return true;
        }
        let agent_up = up.iter().any(|id| id.iter().all(|(k, v)| k == "__name__" || labels.get(k) == Some(v)));
        !agent_up
    });
}

/// Adds one answer's series to `all`: a sample two overlapping windows both returned (range
/// selectors include their left edge in Prometheus 2) is the same timestamp, kept once.
pub fn merge(all: &mut HashMap<Labels, Samples>, answer: Vec<(Labels, Samples)>) {
    for (labels, samples) in answer {
        all.entry(labels).or_default().extend(samples);
    }
}

static EMPTY: Samples = Samples::new();

#[derive(Default)]
struct Sums {
    calls: f64,
    errors: f64,
    input: f64,
    output: f64,
    cached: f64,
    reasoning: f64,
    estimated: f64,
    cost_usd: f64,
}

/// Rows (one per hour and key values) from every series' samples and baselines. The agents'
/// start-time series among them tell restarts apart.
pub fn rows(series: &HashMap<Labels, Samples>, baselines: &HashMap<Labels, f64>, from_ms: i64, to_ms: i64) -> Vec<Row> {
    let starts: Vec<(Labels, Samples)> = series
        .iter()
        .chain(baselines.keys().filter(|l| !series.contains_key(*l)).map(|l| (l, &EMPTY)))
        .filter(|(l, _)| l.get("__name__").is_some_and(|n| n == START_TIME))
        .map(|(l, s)| {
            let mut s = s.clone();
            if let Some(b) = baselines.get(l) {
                s.insert(from_ms, *b);
            }
            (l.clone(), s)
        })
        .collect();
    let mut acc: BTreeMap<(i64, Keys), Sums> = BTreeMap::new();
    for (labels, samples) in series {
        let name = labels.get("__name__").map(String::as_str).unwrap_or("");
        let Some(&(_, field)) = METRICS.iter().find(|(m, _)| *m == name) else { continue };
        let estimated = labels.get("tokentap_usage_source").is_some_and(|s| s == "estimated");
        let keys = keys(labels);
        let agent = agent_of(labels, &starts);
        for (hour, inc) in hourly_increase(baselines.get(labels).copied(), samples, from_ms, to_ms, agent) {
            let s = acc.entry((hour, keys.clone())).or_default();
            match field {
                Field::Calls => {
                    s.calls += inc;
                    if estimated {
                        s.estimated += inc;
                    }
                }
                Field::Errors => s.errors += inc,
                Field::Input => s.input += inc,
                Field::Output => s.output += inc,
                Field::Cached => s.cached += inc,
                Field::Reasoning => s.reasoning += inc,
                Field::Cost => s.cost_usd += inc,
            }
        }
    }
    // Counts are whole numbers held exactly by floats (below 2^53); rounding only undoes the
    // float type. The cost is a float sum: rounded to the pico-USD.
    let n = |x: f64| x.round().max(0.0) as u64;
    acc.into_iter()
        .map(|((hour, keys), s)| Row {
            hour,
            keys,
            priced: None,
            counters: Counters {
                calls: n(s.calls),
                errors: n(s.errors),
                input_tokens: n(s.input),
                output_tokens: n(s.output),
                cached_input_tokens: n(s.cached),
                reasoning_tokens: n(s.reasoning),
                estimated_calls: n(s.estimated),
                cost: Pico((s.cost_usd * PICO_PER_USD as f64).round() as i128),
            },
        })
        .collect()
}

#[cfg(test)]
#[path = "increase_tests.rs"]
mod tests;
