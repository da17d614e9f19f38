//! Enforcement metrics: each entitlement's budget as gauges (from the latest quota status),
//! warnings and actions as counters, and the cluster counters' Redis traffic. Entitlement names
//! come from the policy, so their number is bounded by it.
use std::sync::{Arc, Mutex};

use opentelemetry::{
    metrics::{Counter, Meter},
    KeyValue,
};

use crate::enforce::status::QuotaStatus;

/// One entitlement's budget, as the gauges report it.
#[derive(Debug, Clone, PartialEq)]
struct Budget {
    attrs: [KeyValue; 3],
    limit: f64,
    used: f64,
    reserved: f64,
    remaining: f64,
}

/// Totals of the cluster counters' Redis client, since the agent started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Redis {
    operations: u64,
    failures: u64,
    up: bool,
    /// No cluster entitlement uses Redis: its instruments report nothing.
    configured: bool,
}

#[derive(Default)]
struct Shared {
    budgets: Vec<Budget>,
    redis: Redis,
}

pub struct QuotaInstruments {
    shared: Arc<Mutex<Shared>>,
    warnings: Counter<u64>,
    actions: Counter<u64>,
}

fn snapshot<T>(shared: &Arc<Mutex<Shared>>, f: impl FnOnce(&Shared) -> T) -> Option<T> {
    shared.lock().ok().map(|s| f(&s))
}

impl QuotaInstruments {
    pub fn register(meter: &Meter) -> QuotaInstruments {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let gauge = |name: &'static str, description: &'static str, pick: fn(&Budget) -> f64| {
            let s = shared.clone();
            meter
                .f64_observable_gauge(name)
                .with_description(description)
                .with_callback(move |o| {
                    for (v, attrs) in
                        snapshot(&s, |s| s.budgets.iter().map(|b| (pick(b), b.attrs.clone())).collect::<Vec<_>>())
                            .unwrap_or_default()
                    {
                        o.observe(v, &attrs);
                    }
                })
                .build();
        };
        gauge("tokentap.quota.limit", "An entitlement's limit in its window, in tokentap.quota.unit", |b| b.limit);
        gauge("tokentap.quota.used", "Settled usage of an entitlement in its current window", |b| b.used);
        gauge("tokentap.quota.reserved", "Usage reserved by an entitlement's calls in flight", |b| b.reserved);
        gauge("tokentap.quota.remaining", "What an entitlement has left: limit - used - reserved, at least 0", |b| {
            b.remaining
        });
        let s = shared.clone();
        meter
            .u64_observable_counter("tokentap.enforcement.redis.operations")
            .with_unit("{operation}")
            .with_description("Redis commands and scripts the cluster counters ran")
            .with_callback(move |o| {
                if let Some(r) = snapshot(&s, |s| s.redis).filter(|r| r.configured) {
                    o.observe(r.operations, &[]);
                }
            })
            .build();
        let s = shared.clone();
        meter
            .u64_observable_counter("tokentap.enforcement.redis.failures")
            .with_unit("{operation}")
            .with_description("Redis operations of the cluster counters that failed (the fail mode then applies)")
            .with_callback(move |o| {
                if let Some(r) = snapshot(&s, |s| s.redis).filter(|r| r.configured) {
                    o.observe(r.failures, &[]);
                }
            })
            .build();
        let s = shared.clone();
        meter
            .u64_observable_gauge("tokentap.enforcement.redis.up")
            .with_description("1 while the cluster counters reach Redis, 0 while they cannot")
            .with_callback(move |o| {
                if let Some(r) = snapshot(&s, |s| s.redis).filter(|r| r.configured) {
                    o.observe(u64::from(r.up), &[]);
                }
            })
            .build();
        QuotaInstruments {
            shared,
            warnings: meter
                .u64_counter("tokentap.quota.warnings")
                .with_unit("{warning}")
                .with_description("Entitlements crossing their warn_at fraction")
                .build(),
            actions: meter
                .u64_counter("tokentap.quota.actions")
                .with_unit("{action}")
                .with_description("Actions taken on exhausted entitlements (observe: would have been taken)")
                .build(),
        }
    }

    /// The gauges report this status's entitlements from now on (and no others).
    pub fn update(&self, status: &QuotaStatus) {
        let budgets = status
            .entitlements
            .iter()
            .map(|e| Budget {
                attrs: [
                    KeyValue::new("tokentap.entitlement", e.name.clone()),
                    KeyValue::new("tokentap.quota.scope", e.scope.clone()),
                    KeyValue::new("tokentap.quota.unit", e.unit.clone()),
                ],
                limit: e.limit,
                used: e.used,
                reserved: e.reserved,
                remaining: e.remaining,
            })
            .collect();
        if let Ok(mut s) = self.shared.lock() {
            s.budgets = budgets;
        }
    }

    pub fn warning(&self, entitlement: &str) {
        self.warnings.add(1, &[KeyValue::new("tokentap.entitlement", entitlement.to_string())]);
    }

    /// `action`: observe, signal, deny or cut.
    pub fn action(&self, entitlement: &str, action: &str) {
        self.actions.add(
            1,
            &[
                KeyValue::new("tokentap.entitlement", entitlement.to_string()),
                KeyValue::new("tokentap.quota.action", action.to_string()),
            ],
        );
    }

    /// Totals since the agent started, and whether Redis answered last time.
    pub fn redis(&self, operations: u64, failures: u64, up: bool) {
        if let Ok(mut s) = self.shared.lock() {
            s.redis = Redis { operations, failures, up, configured: true };
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;
    use prometheus::proto::MetricFamily;

    use super::*;
    use crate::enforce::status::{EntitlementStatus, State};

    fn entitlement(name: &str, unit: &str, limit: f64, used: f64) -> EntitlementStatus {
        EntitlementStatus {
            name: name.into(),
            scope: "cluster".into(),
            limit_kind: "total_tokens".into(),
            unit: unit.into(),
            limit,
            used,
            reserved: 10.0,
            remaining: (limit - used - 10.0).max(0.0),
            window_start: "2026-11-28T00:00:00Z".into(),
            window_end: "2026-11-29T00:00:00Z".into(),
            state: State::Ok,
            action: "deny".into(),
            actions_taken: 0,
            warnings: 0,
            overrun: 0.0,
        }
    }

    /// `(labels, value)` of every series of `family` (counters and gauges alike).
    fn series(families: &[MetricFamily], family: &str) -> Vec<(Vec<(String, String)>, f64)> {
        let Some(f) = families.iter().find(|f| f.name() == family) else { return Vec::new() };
        f.get_metric()
            .iter()
            .map(|m| {
                let labels = m
                    .get_label()
                    .iter()
                    .filter(|l| !l.name().starts_with("otel_"))
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                // The other kind is unset (0).
                let v = m.get_counter().get_value() + m.get_gauge().get_value();
                (labels, v)
            })
            .collect()
    }

    /// Through a real SDK pipeline (the Prometheus reader the agent also uses).
    #[test]
    fn instruments_report_the_latest_status_and_counts() {
        let registry = ::prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter().with_registry(registry.clone()).build().unwrap();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        let q = QuotaInstruments::register(&provider.meter("tokentap"));
        assert!(series(&registry.gather(), "tokentap_enforcement_redis_up").is_empty(), "nothing before Redis is used");

        let mut status = QuotaStatus {
            written_at: "2026-11-28T10:00:00Z".into(),
            host: "h".into(),
            entitlements: vec![entitlement("blue", "tokens", 1000.0, 400.0), entitlement("red", "usd", 5.0, 1.0)],
        };
        q.update(&status);
        q.warning("blue");
        q.action("blue", "deny");
        q.action("blue", "deny");
        q.action("red", "observe");
        q.redis(42, 2, true);
        let families = registry.gather();
        let used = series(&families, "tokentap_quota_used");
        let blue = vec![
            ("tokentap_entitlement".to_string(), "blue".to_string()),
            ("tokentap_quota_scope".to_string(), "cluster".to_string()),
            ("tokentap_quota_unit".to_string(), "tokens".to_string()),
        ];
        assert!(used.contains(&(blue.clone(), 400.0)), "{used:?}");
        assert_eq!(used.len(), 2);
        assert!(series(&families, "tokentap_quota_limit").contains(&(blue.clone(), 1000.0)));
        assert!(series(&families, "tokentap_quota_reserved").contains(&(blue.clone(), 10.0)));
        assert!(series(&families, "tokentap_quota_remaining").contains(&(blue, 590.0)));
        let actions = series(&families, "tokentap_quota_actions_total");
        let deny = vec![
            ("tokentap_entitlement".to_string(), "blue".to_string()),
            ("tokentap_quota_action".to_string(), "deny".to_string()),
        ];
        assert!(actions.contains(&(deny, 2.0)), "{actions:?}");
        assert_eq!(actions.len(), 2);
        assert_eq!(series(&families, "tokentap_quota_warnings_total").len(), 1);
        assert_eq!(series(&families, "tokentap_enforcement_redis_operations_total")[0].1, 42.0);
        assert_eq!(series(&families, "tokentap_enforcement_redis_failures_total")[0].1, 2.0);
        assert_eq!(series(&families, "tokentap_enforcement_redis_up")[0].1, 1.0);

        // An entitlement gone from the policy is no longer reported.
        status.entitlements.remove(1);
        q.update(&status);
        assert_eq!(series(&registry.gather(), "tokentap_quota_used").len(), 1);
    }
}
