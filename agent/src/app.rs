//! `tokentap run`: wires capture → streams → usage → output in one event loop.
//!
//! One thread owns everything (no locks): parsing is cheap next to a uprobe hit, and a single
//! owner keeps connection state, identity cache and output ordered.
use std::{path::PathBuf, sync::Arc, time::Instant};

use aya::maps::{MapData, RingBuf};
use thiserror::Error;
use tokentap_common::verdict;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    time::{interval, Duration, MissedTickBehavior},
};

use crate::{
    attribution::MappingError,
    capture::{
        self,
        event::{ConnId, DataChunk},
        Capture, CaptureError, DataRecord, Hold, LoadOptions, ProcRecord,
    },
    clock::Clock,
    completeness::CallOutcome,
    config::Config,
    discovery::Discovery,
    enforce::enforcer::Enforcer,
    export::{health::HealthSnapshot, ExportError, Exporter, ResourceInfo},
    identity::{self, Resolver},
    ledger::writer::{Ledger, LedgerHealth, Settings as LedgerSettings},
    mapping_source::{MappingSource, Reload},
    output::{jsonl::JsonLines, summary::Summary},
    pricing::{PricingError, PricingTable, Tokens},
    privileges::{self, PrivilegeError},
    stats::Stats,
    streams::{Output, Tracker, TrackerConfig, Verdict},
    usage,
};

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    Policy(#[from] crate::enforce::policy::PolicyError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("export: {0}")]
    Export(#[from] ExportError),
    #[error("kubernetes: {0}")]
    Kube(#[from] identity::kube::KubeError),
    #[error("cannot open usage log {path}: {source}")]
    UsageLog { path: PathBuf, source: std::io::Error },
    #[error("cannot start the ledger writer: {0}")]
    Ledger(std::io::Error),
    #[error("event loop: {0}")]
    Io(#[from] std::io::Error),
}

enum Sink {
    Log(JsonLines),
    Summary(Summary),
}

/// How long an exit notice waits before the process's connections and identity are dropped
/// (see [`Agent::drain`]): far longer than a BPF program holds a ring reservation.
const EXIT_GRACE_NS: u64 = 20_000_000;

struct Agent {
    capture: Capture,
    tracker: Tracker,
    discovery: Discovery,
    identity: Resolver,
    mapping: MappingSource,
    pricing: PricingTable,
    exporter: Option<Exporter>,
    /// The durable ledger's writer thread (`[ledger] enabled`).
    ledger: Option<Ledger>,
    /// Kept past the writer's shutdown for the last health push.
    ledger_health: Option<Arc<LedgerHealth>>,
    last_export_warning: Option<Instant>,
    node: Option<String>,
    clock: Clock,
    stats: Stats,
    sink: Sink,
    body_cap: usize,
    idle_ns: u64,
    /// Exit notices read but not handled yet, with the monotonic time each was read.
    pending_exits: Vec<(u32, u64)>,
    /// Entitlements enforced (`[enforcement] policy_file`); see `app_enforce.rs`.
    enforcer: Option<Enforcer>,
    /// Processes stopped at a write, decided once the data ring is drained.
    pending_holds: Vec<Hold>,
}

#[path = "app_enforce.rs"]
mod app_enforce;

pub async fn run(config: Config) -> Result<(), AppError> {
    // Configuration mistakes first: they need no privileges to report.
    let mapping = MappingSource::open(config.attribution.mapping_file.as_deref())?;
    // Before the ledger writer starts: the windows are rebuilt from what it holds.
    let ledger_path = config.ledger.enabled.then_some(config.ledger.path.as_path());
    // A pod's host name changes with every restart: in Kubernetes the node's name is this
    // node's stable field in the cluster counters.
    let mut enforcement = config.enforcement.clone();
    if let Some(redis) = enforcement.redis.as_mut().filter(|r| r.node.is_none()) {
        if config.kubernetes.is_enabled() {
            redis.node = config.kubernetes.resolved_node_name();
        }
    }
    let enforcer = Enforcer::start(&enforcement, ledger_path)?;
    let pricing = match &config.pricing.override_file {
        Some(file) => PricingTable::builtin().merged(PricingTable::load(file)?),
        None => PricingTable::builtin(),
    };
    privileges::check()?;
    let pods = identity::kube::start(&config.kubernetes).await?;
    let node = pods.as_ref().map(|p| p.node_name().to_string());
    let host = hostname();
    let resource = ResourceInfo {
        host_name: host.clone(),
        node_name: node.clone(),
        cluster_name: config.kubernetes.cluster_name.clone(),
    };
    let exporter = Exporter::start(&config.export, &resource).await?;
    // Started before capture, so the ledger's state is logged first; a ledger that cannot be
    // written is reported by the writer and never stops metering.
    let ledger = if config.ledger.enabled {
        let settings = LedgerSettings::new(&config.ledger, host.as_deref().unwrap_or(""), pricing.as_of());
        Some(Ledger::start(settings).map_err(AppError::Ledger)?)
    } else {
        None
    };
    let (mut capture, rings) = Capture::load(&LoadOptions {
        call_cap: config.capture.call_cap_bytes,
        ring_bytes: config.capture.ring_buffer_bytes,
        plain_ports: config.capture.plain_http.kernel_ports(),
        // Only with a policy: off, no enforcement hook is attached.
        enforce: enforcer.is_some(),
    })?;
    let mut discovery = Discovery::new();
    discovery.scan_standard_dirs(&mut capture);
    discovery.scan_all_processes(&mut capture);
    discovery.scan_known_runtimes(&mut capture);
    let sink = match &config.output.usage_log {
        Some(path) => {
            Sink::Log(JsonLines::open(path).map_err(|source| AppError::UsageLog { path: path.clone(), source })?)
        }
        None => Sink::Summary(Summary::default()),
    };
    let mut agent = Agent {
        capture,
        tracker: Tracker::new(TrackerConfig {
            call_cap: config.capture.call_cap_bytes,
            body_cap: config.capture.max_body_bytes,
            extra_ai_hosts: (config.endpoints.extra_hosts.iter())
                .chain(&config.capture.plain_http.hosts)
                .map(|h| h.to_ascii_lowercase())
                .chain(config.capture.plain_http.paths.iter().cloned())
                .collect(),
            // Request starts and stream progress feed the enforcement's reservations and cuts.
            call_hooks: config.enforcement.policy_file.is_some(),
        }),
        discovery,
        identity: Resolver::new(pods),
        mapping,
        pricing,
        exporter,
        ledger_health: ledger.as_ref().map(|l| l.health.clone()),
        ledger,
        last_export_warning: None,
        node,
        clock: Clock::new(),
        stats: Stats::default(),
        sink,
        body_cap: config.capture.max_body_bytes,
        idle_ns: config.capture.idle_timeout_secs * 1_000_000_000,
        pending_exits: Vec::new(),
        enforcer,
        pending_holds: Vec::new(),
    };
    agent.stats.libraries_attached = agent.discovery.attached.len();
    tracing::info!(
        libraries = agent.discovery.attached.len(),
        usage_log = ?config.output.usage_log,
        ledger = ?agent.ledger.as_ref().map(|l| &l.path),
        mapping_rules = agent.mapping.mapping().rule_count(),
        kubernetes = agent.identity.pods().is_some(),
        prices = agent.pricing.len(),
        prometheus = ?agent.exporter.as_ref().and_then(|e| e.prometheus_addr),
        "tokentap: capture ready"
    );

    // SAFETY: each RingBuf owns its map fd and keeps it open, unchanged, for its lifetime.
    let mut data = unsafe { AsyncFd::register(rings.data) }.map_err(std::io::Error::from)?;
    let mut proc = unsafe { AsyncFd::register(rings.proc) }.map_err(std::io::Error::from)?;
    let mut libs = unsafe { AsyncFd::register(rings.libs) }.map_err(std::io::Error::from)?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let summary_every = Duration::from_secs(config.output.summary_interval_secs);
    let mut last_summary = Instant::now();

    loop {
        tokio::select! {
            biased;
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                let outcome = agent.mapping.reload();
                agent.report_reload(outcome);
                agent.reload_policy();
            }
            // Readiness is cleared before draining, not after: the kernel wakes a ring's reader
            // only when a record lands in a ring the reader had emptied, so a record committed
            // between the drain's last read and a later clear would wait for the next event.
            guard = data.readable_mut() => {
                let mut guard = guard?;
                guard.clear_ready();
                agent.drain(guard.get_inner_mut(), proc.get_mut());
            }
            guard = proc.readable_mut() => {
                let mut guard = guard?;
                guard.clear_ready();
                agent.drain(data.get_mut(), guard.get_inner_mut());
            }
            // Library opens only lead to attaching probes: no order to keep with the rest.
            guard = libs.readable_mut() => {
                let mut guard = guard?;
                guard.clear_ready();
                let now = agent.clock.monotonic_now_ns();
                agent.drain_proc(guard.get_inner_mut(), now);
            }
            _ = tick.tick() => {
                // A backstop: whatever a missed wakeup left in the rings waits a second at most.
                let now = agent.clock.monotonic_now_ns();
                agent.drain_proc(libs.get_mut(), now);
                agent.drain(data.get_mut(), proc.get_mut());
                agent.tick();
                if last_summary.elapsed() >= summary_every {
                    last_summary = Instant::now();
                    agent.show_summary();
                }
            }
        }
    }
    // No process may stay held once the agent is gone: verdicts first, then the last holds.
    agent.stop_enforcing();
    agent.drain(data.get_mut(), proc.get_mut());
    agent.drain_data(data.get_mut(), proc.get_mut());
    agent.stats.kernel = agent.capture.counters();
    agent.show_summary();
    // The last batch is committed before the final health push reports the ledger's state.
    if let Some(ledger) = agent.ledger.take() {
        ledger.shutdown();
    }
    if let Some(exporter) = agent.exporter.take() {
        agent.push_health();
        // The final flush blocks; keep it off the runtime's thread.
        let _ = std::thread::spawn(move || exporter.shutdown()).join();
    }
    tracing::info!(stats = %agent.stats.line(), "tokentap: stopped");
    Ok(())
}

impl Agent {
    /// Reads the data ring; `proc` is read too whenever a process shows up for the first time.
    fn drain_data(&mut self, ring: &mut RingBuf<MapData>, proc: &mut RingBuf<MapData>) {
        let mut out = Output::default();
        while let Some(item) = ring.next() {
            let record = capture::decode_data(&item);
            // A process's exec notice precedes its first record in time, but not in the reading
            // when a long drain of this ring (a burst) delays the next read of the notices: a
            // short-lived client would be parsed, and its call recorded, before the notice that
            // names it is read. So its notices are read first.
            if let Ok(
                DataRecord::Chunk(DataChunk { id, .. })
                | DataRecord::ServerName { id, .. }
                | DataRecord::Peer { id, .. },
            ) = &record
            {
                if !self.identity.knows(id.tgid) {
                    self.drain_proc(proc, self.clock.monotonic_now_ns());
                }
            }
            match record {
                Ok(DataRecord::Chunk(chunk)) => {
                    self.identity.observe(chunk.id.tgid, chunk.cgroup_id, self.clock.monotonic_now_ns());
                    self.tracker.on_chunk(&chunk, &mut out);
                }
                Ok(DataRecord::Close { id, ts_ns }) => {
                    self.check_lost(&[id]);
                    self.tracker.on_close(id, ts_ns, &mut out);
                    self.enforce_closed(id);
                }
                // Both come before the connection's first byte: resolving the process now
                // gives short-lived clients the best chance to be named before they exit.
                Ok(DataRecord::ServerName { id, cgroup_id, ts_ns, name }) => {
                    self.identity.observe(id.tgid, cgroup_id, self.clock.monotonic_now_ns());
                    self.tracker.on_server_name(id, ts_ns, name);
                }
                Ok(DataRecord::Peer { id, cgroup_id, ts_ns, addr }) => {
                    self.identity.observe(id.tgid, cgroup_id, self.clock.monotonic_now_ns());
                    self.tracker.on_peer(id, ts_ns, addr);
                }
                Err(e) => self.stats.failure(e.reason()),
            }
            drop(item);
            self.apply(&mut out);
        }
    }

    /// Process notices, then data, then exits. An exec is handled before the data that follows
    /// it, so a short-lived client is named while it exists (or by what the kernel saw of it);
    /// an exit after all its data. A process's last records precede its exit notice in time, but
    /// the data ring's reader stops at a record another CPU has reserved and not yet committed,
    /// so they can still be unread when the exit notice is: an exit is handled only once it has
    /// waited [`EXIT_GRACE_NS`] and a drain of the data ring has run since (at the latest on the
    /// next tick).
    fn drain(&mut self, data: &mut RingBuf<MapData>, proc: &mut RingBuf<MapData>) {
        let now = self.clock.monotonic_now_ns();
        self.drain_proc(proc, now);
        self.drain_data(data, proc);
        // After the data: a held request is judged with every earlier response settled.
        self.decide_holds();
        let ripe = now.saturating_sub(EXIT_GRACE_NS);
        let due: Vec<u32> = self.pending_exits.iter().filter(|(_, seen)| *seen <= ripe).map(|(t, _)| *t).collect();
        self.pending_exits.retain(|(_, seen)| *seen > ripe);
        for tgid in due {
            self.handle_exit(tgid);
        }
    }

    fn handle_exit(&mut self, tgid: u32) {
        let mut out = Output::default();
        let now = self.clock.monotonic_now_ns();
        self.check_lost(&self.tracker.connections_of(tgid));
        self.tracker.on_exit(tgid, now, &mut out);
        self.apply(&mut out);
        self.discovery.on_exit(tgid);
        self.enforce_exit(tgid);
        self.identity.remove(tgid, now);
        self.capture.enforcement().forget_process(tgid);
    }

    /// Handles exec and library notices; queues exits (read at `now`).
    fn drain_proc(&mut self, ring: &mut RingBuf<MapData>, now: u64) {
        while let Some(item) = ring.next() {
            let record = capture::decode_proc(&item);
            drop(item);
            match record {
                Ok(ProcRecord::Exec { tgid, ts_ns, seen }) => {
                    // A new process that reused an exited one's pid: the old one ends first.
                    if let Some(i) = self.pending_exits.iter().position(|(t, _)| *t == tgid) {
                        self.pending_exits.remove(i);
                        self.handle_exit(tgid);
                    }
                    self.identity.on_exec(tgid, ts_ns, self.clock.monotonic_now_ns(), &seen);
                    // At once: a program's first TLS call may follow its exec within milliseconds.
                    self.discovery.consider_executable(&mut self.capture, tgid);
                    self.discovery.on_exec(tgid, Instant::now());
                }
                Ok(ProcRecord::Exit { tgid }) => self.pending_exits.push((tgid, now)),
                Ok(ProcRecord::LibOpen { tgid, path }) => {
                    self.discovery.on_lib_open(&mut self.capture, tgid, &path);
                    self.stats.libraries_attached = self.discovery.attached.len();
                }
                Ok(ProcRecord::Held(hold)) => self.pending_holds.push(hold),
                Ok(ProcRecord::Acted(acted)) => self.enforce_acted(&acted),
                Err(e) => self.stats.failure(e.reason()),
            }
        }
    }

    /// Before connections end: the kernel's loss marks of calls no chunk reported (the last
    /// reads of a process whose records could not be shipped).
    fn check_lost(&mut self, ids: &[ConnId]) {
        for &id in ids {
            if self.capture.take_lost(id) {
                self.tracker.mark_lost(id);
            }
        }
    }

    fn apply(&mut self, out: &mut Output) {
        for (id, v) in out.verdicts.drain(..) {
            match v {
                Verdict::Track => {
                    self.capture.set_verdict(id, verdict::TRACK);
                    self.enforce_tracked(id);
                }
                Verdict::Ignore => {
                    self.stats.connections_ignored += 1;
                    self.capture.set_verdict(id, verdict::IGNORE);
                }
            }
        }
        for id in out.forget.drain(..) {
            self.capture.forget(id);
        }
        // Call hooks: reservations, stream cuts, calls that ended without a record.
        self.enforce_calls(out);
        self.stats.cut_responses += std::mem::take(&mut out.cut_responses);
        for (reason, library) in out.failures.drain(..) {
            self.stats.failure(reason);
            self.stats.completeness.add(library, CallOutcome::Unparseable);
        }
        for tracked in out.exchanges.drain(..) {
            let now = self.clock.monotonic_now_ns();
            let workload = self.identity.workload(tracked.origin.id.tgid, tracked.origin.cgroup_id, now);
            // Header values are read here, in memory, and only a rule's mapped label survives.
            let head = &tracked.exchange.request_head;
            let attribution =
                self.mapping.mapping().attribute(&workload, &|name: &str| head.header_str(name).map(String::from));
            if attribution.rule.is_none() {
                self.stats.unattributed(identity::unattributed_reason(&workload));
            }
            let who = usage::Attributed { workload: &workload, attribution: &attribution, node: self.node.as_deref() };
            match usage::build(&tracked, &who, &self.clock, self.body_cap) {
                Ok(mut record) => {
                    let model = record.response_model.as_deref().or(record.request_model.as_deref()).unwrap_or("");
                    let tokens = Tokens {
                        input: record.input_tokens,
                        output: record.output_tokens,
                        cached_input: record.cached_input_tokens,
                        reasoning: record.reasoning_tokens,
                    };
                    record.cost = self.pricing.cost(record.provider, model, tokens);
                    record.cost_usd = record.cost.as_ref().map(|c| c.usd);
                    if let Some(exporter) = &mut self.exporter {
                        exporter.record(&record);
                    }
                    self.stats.records += 1;
                    self.stats
                        .completeness
                        .add(tracked.origin.library, CallOutcome::of_record(record.truncated, record.usage_source));
                    self.stats.estimated_records += u64::from(record.usage_source == "estimated");
                    self.stats.truncated_records += u64::from(record.truncated);
                    match &mut self.sink {
                        Sink::Log(log) => {
                            if let Err(e) = log.write(&record) {
                                self.stats.output_errors += 1;
                                tracing::warn!(error = %e, "usage log write failed");
                            }
                        }
                        Sink::Summary(summary) => summary.add(&record),
                    }
                    self.enforce_record(&tracked, &workload, &attribution, &record);
                    if let Some(ledger) = &self.ledger {
                        ledger.record(record);
                    }
                }
                Err(e) => {
                    self.stats.failure(e.reason());
                    self.stats.completeness.add(tracked.origin.library, CallOutcome::Unparseable);
                    // Still a call (to an AI endpoint, with a status and an owner): counted as one,
                    // with no tokens and no cost.
                    if self.exporter.is_some() || self.ledger.is_some() || self.enforcer.is_some() {
                        let record = usage::base_record(&tracked, &who, &self.clock);
                        self.enforce_record(&tracked, &workload, &attribution, &record);
                        if let Some(exporter) = &mut self.exporter {
                            exporter.record_unparsed(&record);
                        }
                        if let Some(ledger) = &self.ledger {
                            ledger.record(record);
                        }
                    }
                }
            }
        }
    }

    /// Hands the exporter's health instruments a fresh view of the counters.
    fn push_health(&mut self) {
        let Some(exporter) = &mut self.exporter else { return };
        exporter.update_health(HealthSnapshot {
            data_events_lost: self.stats.kernel.data_lost,
            proc_events_lost: self.stats.kernel.proc_lost,
            calls_truncated: self.stats.kernel.calls_truncated,
            parse_failures: self.stats.parse_failures.clone(),
            libraries_attached: self.stats.libraries_attached as u64,
            folded: Default::default(),
            unattributed: self.stats.unattributed.clone(),
            completeness: self.stats.completeness.clone(),
            unprobed_executables: self.stats.unprobed_executables as u64,
            ledger: self.ledger_health.as_ref().map(|h| h.snapshot()),
            enforcement: self.stats.enforcement_events(self.enforcer.is_some()),
        });
    }

    fn report_reload(&mut self, outcome: Reload) {
        let file = self.mapping.path().map(|p| p.display().to_string()).unwrap_or_default();
        match outcome {
            Reload::Unchanged => {}
            Reload::Loaded(rules) => {
                tracing::info!(file, rules, "mapping reloaded");
                if let Some(e) = self.enforcer.as_mut() {
                    e.mapping_changed();
                }
            }
            Reload::Rejected(e) => {
                self.stats.mapping_rejections += 1;
                tracing::error!("mapping not reloaded, the previous one stays in force: {e}");
            }
        }
    }

    fn tick(&mut self) {
        let outcome = self.mapping.reload_if_changed();
        self.report_reload(outcome);
        let now = self.clock.monotonic_now_ns();
        let mut out = Output::default();
        self.check_lost(&self.tracker.idle_connections(now, self.idle_ns));
        self.tracker.expire_idle(now, self.idle_ns, &mut out);
        self.apply(&mut out);
        self.discovery.tick(&mut self.capture, Instant::now());
        self.stats.libraries_attached = self.discovery.attached.len();
        self.stats.library_attach_failures = self.discovery.failures;
        self.stats.unprobed_executables = self.discovery.unprobed_executables;
        let kernel = self.capture.counters();
        // A hold or its notice failed since the last tick: a process may be stopped unheard of.
        let enforce_failed = kernel.enforce_failed > self.stats.kernel.enforce_failed;
        let lost = (kernel.data_lost + kernel.proc_lost)
            .saturating_sub(self.stats.kernel.data_lost + self.stats.kernel.proc_lost);
        if lost > 0 {
            tracing::warn!(lost, "capture events lost (ring buffer full, or user memory unreadable); consider raising capture.ring_buffer_bytes");
        }
        self.stats.kernel = kernel;
        for (library, lost) in kernel.calls_lost {
            self.stats.completeness.set_lost(library, lost);
        }
        self.enforce_tick(enforce_failed);
        self.push_health();
        self.warn_on_export_failures();
    }

    /// One warning a minute at most while exports fail (the collector is down or refusing).
    fn warn_on_export_failures(&mut self) {
        let Some(exporter) = &self.exporter else { return };
        let failed = exporter.exports.failed.load(std::sync::atomic::Ordering::Relaxed);
        if failed > self.stats.export_failures {
            let due = self.last_export_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
            if due {
                self.last_export_warning = Some(Instant::now());
                tracing::warn!(failed, "OTLP exports are failing; totals are kept and sent once the collector answers");
            }
            self.stats.export_failures = failed;
        }
    }

    fn show_summary(&mut self) {
        let footer = self.stats.line();
        if let Sink::Summary(summary) = &mut self.sink {
            if let Some(table) = summary.render_if_changed(&footer) {
                print!("{table}");
            }
        }
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer outlives the call and its length is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned()).filter(|h| !h.is_empty())
}
