//! The agent's own health as metrics: read by observable instruments from a snapshot the event
//! loop refreshes every tick (the exporter's thread must not touch the loop's state).
use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc, Mutex},
};

use opentelemetry::{metrics::Meter, KeyValue};

use super::otlp::ExportCounts;
use crate::{completeness::Completeness, ledger::writer::LedgerHealthSnapshot};

#[derive(Debug, Default, Clone)]
pub struct HealthSnapshot {
    pub data_events_lost: u64,
    pub proc_events_lost: u64,
    pub calls_truncated: u64,
    pub parse_failures: BTreeMap<&'static str, u64>,
    pub libraries_attached: u64,
    pub folded: BTreeMap<&'static str, u64>,
    /// Unattributed calls by reason (see `identity::unattributed_reason`).
    pub unattributed: BTreeMap<&'static str, u64>,
    pub completeness: Completeness,
    pub unprobed_executables: u64,
    /// `None` when the ledger is disabled (its instruments then report nothing).
    pub ledger: Option<LedgerHealthSnapshot>,
    /// What enforcement did in the kernel and for it, by event; empty without a policy.
    pub enforcement: BTreeMap<&'static str, u64>,
}

pub type SharedHealth = Arc<Mutex<HealthSnapshot>>;

fn read(h: &SharedHealth) -> HealthSnapshot {
    h.lock().map(|g| g.clone()).unwrap_or_default()
}

/// Registers the health instruments; they live as long as the meter provider.
pub fn register(meter: &Meter, health: &SharedHealth, exports: &Arc<ExportCounts>) {
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.agent.events.lost")
        .with_unit("{event}")
        .with_description("Capture events lost between kernel and agent (ring buffer full or unreadable memory)")
        .with_callback(move |o| {
            let s = read(&h);
            o.observe(s.data_events_lost, &[KeyValue::new("tokentap.ring", "data")]);
            o.observe(s.proc_events_lost, &[KeyValue::new("tokentap.ring", "proc")]);
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.agent.calls.truncated")
        .with_unit("{call}")
        .with_description("TLS library calls larger than the per-call capture cap")
        .with_callback(move |o| o.observe(read(&h).calls_truncated, &[]))
        .build();
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.agent.parse_failures")
        .with_unit("{failure}")
        .with_description("Traffic the agent could not parse, by reason")
        .with_callback(move |o| {
            for (reason, n) in read(&h).parse_failures {
                o.observe(n, &[KeyValue::new("tokentap.reason", reason)]);
            }
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_gauge("tokentap.agent.libraries.attached")
        .with_unit("{library}")
        .with_description("TLS library files probed")
        .with_callback(move |o| o.observe(read(&h).libraries_attached, &[]))
        .build();
    let e = exports.clone();
    meter
        .u64_observable_counter("tokentap.agent.export.failures")
        .with_unit("{export}")
        .with_description("OTLP exports that failed (retried with the next interval's cumulative totals)")
        .with_callback(move |o| o.observe(e.failed.load(Ordering::Relaxed), &[]))
        .build();
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.agent.attribute_values.folded")
        .with_unit("{value}")
        .with_description("Attribute values folded into \"other\" by the cardinality cap, by attribute")
        .with_callback(move |o| {
            for (key, n) in read(&h).folded {
                o.observe(n, &[KeyValue::new("tokentap.attribute", key)]);
            }
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.capture.calls")
        .with_unit("{call}")
        .with_description(
            "AI calls by capture outcome (metered, estimated, unparseable, truncated, lost) per TLS stack",
        )
        .with_callback(move |o| {
            for (library, outcome, n) in read(&h).completeness.iter() {
                o.observe(
                    n,
                    &[
                        KeyValue::new("tokentap.tls.library", library),
                        KeyValue::new("tokentap.outcome", outcome.as_str()),
                    ],
                );
            }
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.enforcement.events")
        .with_unit("{event}")
        .with_description(
            "Enforcement in the kernel and for it, by event: held (a write stopped for a decision), \
             signalled (a signal sent by the write probe), connect_refused (an AI connect refused), \
             failed (a hold or signal the kernel could not complete: the signal refused or the notice not queued), stopped_resumed (a stopped target \
             resumed by the sweep after a lost notice), cgroup_discovered (a new cgroup of a gated team \
             made a target before its first call)",
        )
        .with_callback(move |o| {
            for (event, n) in read(&h).enforcement {
                o.observe(n, &[KeyValue::new("tokentap.event", event)]);
            }
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.calls.unattributed")
        .with_unit("{call}")
        .with_description(
            "Calls no mapping rule attributed (team \"unattributed\"), by reason: no_rule_matched, or an \
             identity the agent could not complete (process_gone_no_exec, cgroup_unknown)",
        )
        .with_callback(move |o| {
            for (reason, n) in read(&h).unattributed {
                o.observe(n, &[KeyValue::new("tokentap.reason", reason)]);
            }
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_gauge("tokentap.agent.executables.unprobed")
        .with_unit("{executable}")
        .with_description("Executables with a TLS stack of their own that got no probes: their calls are not metered")
        .with_callback(move |o| o.observe(read(&h).unprobed_executables, &[]))
        .build();
    register_ledger(meter, health);
}

fn register_ledger(meter: &Meter, health: &SharedHealth) {
    let h = health.clone();
    meter
        .u64_observable_gauge("tokentap.agent.ledger.healthy")
        .with_description("1 while the usage ledger is written, 0 while it cannot be (records wait in memory)")
        .with_callback(move |o| {
            if let Some(l) = read(&h).ledger {
                o.observe(u64::from(l.healthy), &[]);
            }
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.agent.ledger.records.written")
        .with_unit("{record}")
        .with_description("Usage records committed to the ledger")
        .with_callback(move |o| {
            if let Some(l) = read(&h).ledger {
                o.observe(l.records_written, &[]);
            }
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.agent.ledger.records.dropped")
        .with_unit("{record}")
        .with_description("Usage records that never reached the ledger (pending records full, or left at shutdown)")
        .with_callback(move |o| {
            if let Some(l) = read(&h).ledger {
                o.observe(l.records_dropped, &[]);
            }
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_gauge("tokentap.agent.ledger.records.pending")
        .with_unit("{record}")
        .with_description("Usage records waiting in memory to be committed to the ledger")
        .with_callback(move |o| {
            if let Some(l) = read(&h).ledger {
                o.observe(l.records_pending, &[]);
            }
        })
        .build();
    let h = health.clone();
    meter
        .u64_observable_counter("tokentap.agent.ledger.commits.failed")
        .with_unit("{attempt}")
        .with_description("Failed attempts to open the ledger or commit a batch to it")
        .with_callback(move |o| {
            if let Some(l) = read(&h).ledger {
                o.observe(l.commits_failed, &[]);
            }
        })
        .build();
}
