//! Metric attributes from a usage record, with bounded cardinality: per attribute key at most
//! `max_values` distinct values; later new values are folded into `other`, and counted, so a
//! runaway label (a model name per request, a tenant per customer) cannot grow memory or the
//! backend's series without bound.
use std::collections::{BTreeMap, HashMap, HashSet};

use opentelemetry::KeyValue;

use crate::usage::UsageRecord;

pub const OTHER: &str = "other";

pub struct Labels {
    max_values: usize,
    seen: HashMap<&'static str, HashSet<String>>,
    /// Values folded into `other`, per attribute key.
    pub folded: BTreeMap<&'static str, u64>,
    include_pid: bool,
    include_pod: bool,
}

/// The attribute sets one record is recorded with.
pub struct RecordLabels {
    /// Operation, provider, models, server, usage source and attribution.
    pub common: Vec<KeyValue>,
}

impl Labels {
    pub fn new(max_values: usize, include_pid: bool, include_pod: bool) -> Labels {
        Labels { max_values, seen: HashMap::new(), folded: BTreeMap::new(), include_pid, include_pod }
    }

    /// `value`, or `other` once `key` has `max_values` distinct values.
    pub fn bounded(&mut self, key: &'static str, value: &str) -> String {
        let seen = self.seen.entry(key).or_default();
        if seen.contains(value) {
            return value.to_string();
        }
        if seen.len() >= self.max_values {
            *self.folded.entry(key).or_default() += 1;
            return OTHER.to_string();
        }
        seen.insert(value.to_string());
        value.to_string()
    }

    fn push(&mut self, out: &mut Vec<KeyValue>, key: &'static str, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            let v = self.bounded(key, v);
            out.push(KeyValue::new(key, v));
        }
    }

    pub fn for_record(&mut self, r: &UsageRecord) -> RecordLabels {
        let mut kv = Vec::with_capacity(20);
        kv.push(KeyValue::new("gen_ai.operation.name", semconv_operation(r.operation)));
        kv.push(KeyValue::new("gen_ai.provider.name", r.provider));
        self.push(&mut kv, "gen_ai.request.model", r.request_model.as_deref());
        self.push(&mut kv, "gen_ai.response.model", r.response_model.as_deref());
        self.push(&mut kv, "server.address", Some(&r.server_address));
        kv.push(KeyValue::new("server.port", i64::from(r.server_port)));
        kv.push(KeyValue::new("tokentap.usage_source", r.usage_source));
        self.attribution(&mut kv, r);
        RecordLabels { common: kv }
    }

    fn attribution(&mut self, kv: &mut Vec<KeyValue>, r: &UsageRecord) {
        self.push(kv, "tokentap.team", Some(&r.team));
        self.push(kv, "tokentap.cost_center", r.cost_center.as_deref());
        self.push(kv, "tokentap.product", r.product.as_deref());
        self.push(kv, "tokentap.tenant", r.tenant.as_deref());
        self.push(kv, "tokentap.app", r.app.as_deref());
        self.push(kv, "k8s.namespace.name", r.k8s_namespace.as_deref());
        self.push(kv, "tokentap.k8s.workload.name", r.k8s_workload.as_deref());
        self.push(kv, "tokentap.k8s.workload.kind", r.k8s_workload_kind.as_deref());
        self.push(kv, "k8s.container.name", r.k8s_container.as_deref());
        let exe_name = r.exe.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or(&r.comm);
        self.push(kv, "process.executable.name", Some(exe_name));
        // Reports group by user and unit (`--by user`, `--by unit`): bounded like every key.
        self.push(kv, "user.name", r.user.as_deref());
        self.push(kv, "tokentap.systemd.unit", r.systemd_unit.as_deref());
        if self.include_pod {
            self.push(kv, "k8s.pod.name", r.k8s_pod.as_deref());
        }
        if self.include_pid {
            kv.push(KeyValue::new("process.pid", i64::from(r.pid)));
        }
    }
}

/// `gen_ai.operation.name` well-known values: the Responses API and Anthropic Messages are
/// chat operations in the conventions' terms.
pub fn semconv_operation(operation: &str) -> &'static str {
    match operation {
        "embeddings" => "embeddings",
        _ => "chat",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_fold_into_other_and_are_counted() {
        let mut l = Labels::new(2, false, false);
        assert_eq!(l.bounded("tokentap.tenant", "a"), "a");
        assert_eq!(l.bounded("tokentap.tenant", "b"), "b");
        assert_eq!(l.bounded("tokentap.tenant", "a"), "a", "known values stay");
        assert_eq!(l.bounded("tokentap.tenant", "c"), OTHER);
        assert_eq!(l.bounded("tokentap.tenant", "d"), OTHER);
        assert_eq!(l.bounded("tokentap.team", "c"), "c", "the cap is per key");
        assert_eq!(l.folded.get("tokentap.tenant"), Some(&2));
    }

    #[test]
    fn operations_map_to_well_known_values() {
        assert_eq!(semconv_operation("messages"), "chat");
        assert_eq!(semconv_operation("responses"), "chat");
        assert_eq!(semconv_operation("embeddings"), "embeddings");
    }
}
