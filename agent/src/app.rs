//! `tokentap run`: wires capture → streams → usage → output in one event loop.
//!
//! One thread owns everything (no locks): parsing is cheap next to a uprobe hit, and a single
//! owner keeps connection state, identity cache and output ordered.
use std::{path::PathBuf, time::Instant};

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
    capture::{self, Capture, CaptureError, DataRecord, LoadOptions, ProcRecord},
    clock::Clock,
    config::Config,
    discovery::Discovery,
    identity::{self, Resolver},
    mapping_source::{MappingSource, Reload},
    output::{jsonl::JsonLines, summary::Summary},
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
    #[error("kubernetes: {0}")]
    Kube(#[from] identity::kube::KubeError),
    #[error("cannot open usage log {path}: {source}")]
    UsageLog { path: PathBuf, source: std::io::Error },
    #[error("event loop: {0}")]
    Io(#[from] std::io::Error),
}

enum Sink {
    Log(JsonLines),
    Summary(Summary),
}

struct Agent {
    capture: Capture,
    tracker: Tracker,
    discovery: Discovery,
    identity: Resolver,
    mapping: MappingSource,
    node: Option<String>,
    clock: Clock,
    stats: Stats,
    sink: Sink,
    body_cap: usize,
    idle_ns: u64,
}

pub async fn run(config: Config) -> Result<(), AppError> {
    // Configuration mistakes first: they need no privileges to report.
    let mapping = MappingSource::open(config.attribution.mapping_file.as_deref())?;
    privileges::check()?;
    let pods = identity::kube::start(&config.kubernetes).await?;
    let node = pods.as_ref().map(|p| p.node_name().to_string());
    let (mut capture, rings) = Capture::load(&LoadOptions {
        call_cap: config.capture.call_cap_bytes,
        ring_bytes: config.capture.ring_buffer_bytes,
    })?;
    let mut discovery = Discovery::new();
    discovery.scan_standard_dirs(&mut capture);
    discovery.scan_all_processes(&mut capture);
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
            extra_ai_hosts: config.endpoints.extra_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }),
        discovery,
        identity: Resolver::new(pods),
        mapping,
        node,
        clock: Clock::new(),
        stats: Stats::default(),
        sink,
        body_cap: config.capture.max_body_bytes,
        idle_ns: config.capture.idle_timeout_secs * 1_000_000_000,
    };
    agent.stats.libraries_attached = agent.discovery.attached.len();
    tracing::info!(
        libraries = agent.discovery.attached.len(),
        usage_log = ?config.output.usage_log,
        mapping_rules = agent.mapping.mapping().rule_count(),
        kubernetes = agent.identity.pods().is_some(),
        "tokentap: capture ready"
    );

    // SAFETY: each RingBuf owns its map fd and keeps it open, unchanged, for its lifetime.
    let mut data = unsafe { AsyncFd::register(rings.data) }.map_err(std::io::Error::from)?;
    let mut proc = unsafe { AsyncFd::register(rings.proc) }.map_err(std::io::Error::from)?;
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
            }
            guard = data.readable_mut() => {
                let mut guard = guard?;
                agent.drain_data(guard.get_inner_mut());
                guard.clear_ready();
            }
            guard = proc.readable_mut() => {
                let mut guard = guard?;
                // Data first: a process's last reads precede its exit notice.
                agent.drain_data(data.get_mut());
                agent.drain_proc(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => {
                agent.tick();
                if last_summary.elapsed() >= summary_every {
                    last_summary = Instant::now();
                    agent.show_summary();
                }
            }
        }
    }
    agent.drain_data(data.get_mut());
    agent.stats.kernel = agent.capture.counters();
    agent.show_summary();
    tracing::info!(stats = %agent.stats.line(), "tokentap: stopped");
    Ok(())
}

impl Agent {
    fn drain_data(&mut self, ring: &mut RingBuf<MapData>) {
        let mut out = Output::default();
        while let Some(item) = ring.next() {
            match capture::decode_data(&item) {
                Ok(DataRecord::Chunk(chunk)) => {
                    self.identity.observe(chunk.id.tgid, self.clock.monotonic_now_ns());
                    self.tracker.on_chunk(&chunk, &mut out);
                }
                Ok(DataRecord::Close { id, ts_ns }) => self.tracker.on_close(id, ts_ns, &mut out),
                Err(e) => self.stats.failure(e.reason()),
            }
            drop(item);
            self.apply(&mut out);
        }
    }

    fn drain_proc(&mut self, ring: &mut RingBuf<MapData>) {
        let mut out = Output::default();
        while let Some(item) = ring.next() {
            let record = capture::decode_proc(&item);
            drop(item);
            match record {
                Ok(ProcRecord::Exec { tgid, ts_ns }) => {
                    self.identity.on_exec(tgid, ts_ns, self.clock.monotonic_now_ns());
                    self.discovery.on_exec(tgid, Instant::now());
                }
                Ok(ProcRecord::Exit { tgid }) => {
                    let now = self.clock.monotonic_now_ns();
                    self.tracker.on_exit(tgid, now, &mut out);
                    self.apply(&mut out);
                    self.discovery.on_exit(tgid);
                    self.identity.remove(tgid);
                }
                Ok(ProcRecord::LibOpen { tgid, path }) => {
                    self.discovery.on_lib_open(&mut self.capture, tgid, &path);
                    self.stats.libraries_attached = self.discovery.attached.len();
                }
                Err(e) => self.stats.failure(e.reason()),
            }
        }
    }

    fn apply(&mut self, out: &mut Output) {
        for (id, v) in out.verdicts.drain(..) {
            match v {
                Verdict::Track => self.capture.set_verdict(id, verdict::TRACK),
                Verdict::Ignore => {
                    self.stats.connections_ignored += 1;
                    self.capture.set_verdict(id, verdict::IGNORE);
                }
            }
        }
        for id in out.forget.drain(..) {
            self.capture.forget(id);
        }
        self.stats.cut_responses += std::mem::take(&mut out.cut_responses);
        for reason in out.failures.drain(..) {
            self.stats.failure(reason);
        }
        for tracked in out.exchanges.drain(..) {
            let workload = self.identity.workload(tracked.origin.id.tgid, self.clock.monotonic_now_ns());
            // Header values are read here, in memory, and only a rule's mapped label survives.
            let head = &tracked.exchange.request_head;
            let attribution =
                self.mapping.mapping().attribute(&workload, &|name: &str| head.header_str(name).map(String::from));
            if attribution.rule.is_none() {
                self.stats.unattributed += 1;
            }
            let who = usage::Attributed { workload: &workload, attribution: &attribution, node: self.node.as_deref() };
            match usage::build(&tracked, &who, &self.clock, self.body_cap) {
                Ok(record) => {
                    self.stats.records += 1;
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
                }
                Err(e) => self.stats.failure(e.reason()),
            }
        }
    }

    fn report_reload(&mut self, outcome: Reload) {
        let file = self.mapping.path().map(|p| p.display().to_string()).unwrap_or_default();
        match outcome {
            Reload::Unchanged => {}
            Reload::Loaded { rules } => tracing::info!(file, rules, "mapping reloaded"),
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
        self.tracker.expire_idle(now, self.idle_ns, &mut out);
        self.apply(&mut out);
        self.discovery.tick(&mut self.capture, Instant::now());
        self.stats.libraries_attached = self.discovery.attached.len();
        self.stats.library_attach_failures = self.discovery.failures;
        let kernel = self.capture.counters();
        let lost = (kernel.data_lost + kernel.proc_lost)
            .saturating_sub(self.stats.kernel.data_lost + self.stats.kernel.proc_lost);
        if lost > 0 {
            tracing::warn!(lost, "capture events lost (ring buffer full, or user memory unreadable); consider raising capture.ring_buffer_bytes");
        }
        self.stats.kernel = kernel;
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
