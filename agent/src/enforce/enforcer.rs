//! The enforcer: the engine's decisions carried out in the kernel (verdict maps, passes, AI
//! peers) and by the actuators (resume, signal, destroy connections), the policy kept live,
//! and every action logged — entitlement, pid, comm, cgroup, action; never a payload.
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::actuate::{self, Owner};
use super::budget::Usage;
use super::cluster::{self, Cluster, ClusterConfig};
use super::engine::{ActionEvent, Engine, ResKey};
use super::kernel::{KernelEnforcement, Mode, Target};
use super::policy::{Labels, PolicyError};
use super::policy_source::{PolicySource, Reload};
use super::steps::{Step, Verdict, Who};
use super::targets::{CgroupInfo, ProcInfo};
use super::{backstop, cgroups, labels, seed, sock_diag, status_file};
use crate::attribution::Attribution;
use crate::capture::event::ConnId;
use crate::config::EnforcementConfig;
use crate::export::Exporter;
use crate::identity::model::Workload;
use crate::streams::calls::CallKey;
use crate::usage::UsageRecord;

/// Counters for metrics and the final summary.
#[derive(Debug, Default, Clone)]
pub struct EnforceStats {
    /// (entitlement, action) → count.
    pub actions: BTreeMap<(String, &'static str), u64>,
    /// entitlement → warnings (once per window at `warn_at`).
    pub warnings: BTreeMap<String, u64>,
    pub holds: u64,
    pub policy_rejections: u64,
    /// Steps the kernel or an actuator refused (a map full, a process gone).
    pub step_failures: u64,
    /// Cgroups made targets by the tree walk, before any of their processes called.
    pub cgroups_discovered: u64,
    /// Stopped target processes resumed by the sweep after a lost HELD notice.
    pub stopped_resumed: u64,
}

pub struct Enforcer {
    engine: Engine,
    source: PolicySource,
    pub status_file: PathBuf,
    host: String,
    ai_peers: HashSet<SocketAddr>,
    pub stats: EnforceStats,
    /// Shared counters of `scope = "cluster"` entitlements (`[enforcement.redis]`).
    cluster: Option<Cluster>,
    /// Actions and warnings per entitlement since start (the status file's counts).
    tally: status_file::Tally,
    /// (entitlement, action or `None` for a warning) not yet handed to the exporter.
    metric_events: Vec<(String, Option<&'static str>)>,
    last_status_error: Option<std::time::Instant>,
    discovery: backstop::Discovery,
}

fn key(call: CallKey) -> ResKey {
    ResKey::Call(call.conn, call.seq)
}

fn who_to_target(w: Who) -> Target {
    match w {
        Who::Cgroup(id) => Target::Cgroup(id),
        Who::Process(tgid) => Target::Process(tgid),
    }
}

fn verdict_to_mode(v: Verdict) -> Mode {
    match v {
        Verdict::Free => Mode::Free,
        Verdict::Gate => Mode::Gate,
        Verdict::Signal(s) => Mode::Signal(s),
        Verdict::Deny => Mode::Deny,
    }
}

impl Enforcer {
    /// `None` without a policy file. The policy is read now (an invalid one refuses the
    /// start) and the current windows are rebuilt from the ledger.
    pub fn start(config: &EnforcementConfig, ledger: Option<&Path>) -> Result<Option<Enforcer>, PolicyError> {
        let Some(file) = &config.policy_file else { return Ok(None) };
        let source = PolicySource::open(Some(file))?;
        let now = Timestamp::now();
        let mut engine = Engine::new(source.policy(), config.hold_at, config.default_max_output_tokens, now);
        if let Some(ledger) = ledger {
            match seed::from_ledger(&mut engine.budgets, ledger, now) {
                Ok(s) => {
                    let ids: HashSet<u64> = s.cgroups.keys().copied().collect();
                    let paths = actuate::cgroup2_root().map(|r| cgroups::paths_of(&r, &ids)).unwrap_or_default();
                    for (id, labels) in s.cgroups {
                        // A cgroup gone since is not a target; one that exists is held from now.
                        if let Some(path) = paths.get(&id) {
                            engine.observe_cgroup(id, CgroupInfo { path: path.clone(), labels });
                        }
                    }
                    tracing::info!(
                        calls = s.calls,
                        rollup_hours = s.rollup_hours,
                        "enforcement: windows rebuilt from the ledger"
                    );
                }
                // Enforcing from zero is the only alternative to not running at all; say so.
                Err(e) => tracing::error!("enforcement: the ledger could not be read, budgets start from zero: {e}"),
            }
        }
        tracing::info!(
            policy = %file.display(),
            entitlements = source.policy().entitlements.len(),
            "enforcement: policy loaded"
        );
        let cluster = match &config.redis {
            Some(r) => Some(
                Cluster::start(ClusterConfig::from_config(r))
                    .map_err(|e| PolicyError::Read { file: "[enforcement.redis]".into(), reason: e.to_string() })?,
            ),
            None => None,
        };
        Ok(Some(Enforcer {
            engine,
            source,
            status_file: config.status_file.clone(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string(),
            ai_peers: HashSet::new(),
            stats: EnforceStats::default(),
            cluster,
            tally: Default::default(),
            metric_events: Vec::new(),
            last_status_error: None,
            discovery: Default::default(),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A process seen at an AI call (tracked connection, hold, record): a target from now on.
    pub fn observe(&mut self, tgid: u32, cgroup_id: u64, workload: &Workload, attribution: &Attribution) {
        let info = ProcInfo {
            cgroup_id,
            cgroup_path: workload.cgroup.path.clone(),
            comm: workload.comm.clone(),
            labels: labels::of_process(attribution, workload, None),
        };
        self.engine.observe(tgid, info);
    }

    pub fn knows(&self, tgid: u32) -> bool {
        self.engine.knows(tgid)
    }

    /// A connection judged AI traffic: its peer becomes an endpoint that denied targets
    /// cannot connect to.
    pub fn on_tracked(&mut self, id: ConnId, kernel: &mut KernelEnforcement) {
        if let Some(s) = kernel.socket_of(id) {
            if self.ai_peers.insert(s.peer) {
                if let Err(e) = kernel.add_ai_peer(s.peer) {
                    self.stats.step_failures += 1;
                    tracing::warn!("enforcement: {e}");
                }
            }
        }
    }

    /// A process held at a write (the data ring already drained). Always resumes it.
    pub fn on_hold(&mut self, id: ConnId, kernel: &mut KernelEnforcement) {
        self.stats.holds += 1;
        // A keep-alive connection's socket is known by now: its peer is an AI endpoint, so a
        // refusal destroys it even if it was never tracked before.
        self.on_tracked(id, kernel);
        // The other nodes' latest usage before the decision (memory only, no Redis I/O).
        self.exchange_cluster();
        let steps = self.engine.on_hold(id, None, Timestamp::now());
        self.carry_out(steps, kernel);
    }

    /// A parsed request: its estimate (input counted, output capped by its maximum or the
    /// default) replaces the provisional reservation of its hold.
    pub fn on_request(
        &mut self,
        call: CallKey,
        labels: &Labels,
        input_tokens: u64,
        max_output_tokens: Option<u64>,
        kernel: &mut KernelEnforcement,
    ) {
        let estimate = self.engine.budgets.estimate(input_tokens, max_output_tokens, 0);
        let steps = self.engine.on_request(key(call), labels, estimate, Timestamp::now());
        self.carry_out(steps, kernel);
    }

    pub fn on_progress(&mut self, call: CallKey, output_tokens_so_far: u64, kernel: &mut KernelEnforcement) {
        let steps = self.engine.on_progress(key(call), output_tokens_so_far);
        self.carry_out(steps, kernel);
    }

    pub fn on_ended(&mut self, call: CallKey, kernel: &mut KernelEnforcement) {
        let steps = self.engine.on_ended(key(call));
        self.carry_out(steps, kernel);
    }

    pub fn on_record(&mut self, call: CallKey, record: &UsageRecord, kernel: &mut KernelEnforcement) {
        let usage = Usage::call(
            record.input_tokens,
            record.output_tokens,
            record.cost.as_ref().map_or(0, |c| c.amount.0.max(0) as u128),
        );
        let ts = record.ts.parse().unwrap_or_else(|_| Timestamp::now());
        let steps = self.engine.on_record(call.conn, Some(key(call)), &labels::of_record(record), usage, ts);
        self.carry_out(steps, kernel);
        // Published at once: other nodes see this call one sync later, not one tick later.
        if self.exchange_cluster() {
            let steps = self.engine.tick(Timestamp::now());
            self.carry_out(steps, kernel);
        }
    }

    pub fn on_conn_closed(&mut self, conn: ConnId, kernel: &mut KernelEnforcement) {
        let steps = self.engine.on_conn_closed(conn);
        self.carry_out(steps, kernel);
    }

    pub fn on_exit(&mut self, tgid: u32, kernel: &mut KernelEnforcement) {
        let steps = self.engine.on_exit(tgid);
        kernel.forget_process(tgid);
        self.carry_out(steps, kernel);
    }

    /// Each tick: the policy file re-read if it changed, windows rolled over, verdicts
    /// recomputed, the status file written.
    pub fn tick(&mut self, kernel: &mut KernelEnforcement, exporter: Option<&mut Exporter>) {
        let outcome = self.source.reload_if_changed();
        self.reloaded(outcome, kernel);
        let now = Timestamp::now();
        let steps = self.engine.tick(now);
        self.carry_out(steps, kernel);
        // After the roll: a new window's remote share is known before its first decision.
        if self.exchange_cluster() {
            let steps = self.engine.tick(now);
            self.carry_out(steps, kernel);
        }
        let status = status_file::render(&self.engine, now, &self.host, &self.tally);
        if let Err(e) = status.write_atomic(&self.status_file) {
            // Once a minute at most: a full disk must not flood the log.
            if self.last_status_error.is_none_or(|t| t.elapsed().as_secs() >= 60) {
                self.last_status_error = Some(std::time::Instant::now());
                tracing::warn!("enforcement: {e}");
            }
        }
        if let Some(exporter) = exporter {
            for (entitlement, action) in self.metric_events.drain(..) {
                match action {
                    Some(action) => exporter.quota_action(&entitlement, action),
                    None => exporter.quota_warning(&entitlement),
                }
            }
            exporter.update_quota(&status);
            if let Some(h) = self.cluster_health() {
                exporter.update_redis(h.operations, h.failures, h.up);
            }
        } else {
            self.metric_events.clear();
        }
    }

    /// While a hard entitlement is gated or exhausted (each tick, and at once when one gets
    /// there): the cgroups of the tree the engine has not met, attributed by `labels_of` from
    /// their path alone, become targets when a hard entitlement matches them, so a new cgroup
    /// of an exhausted team has its verdict before its first call. `tick`: called by the tick.
    pub fn discover_cgroups(
        &mut self,
        tick: bool,
        kernel: &mut KernelEnforcement,
        mut labels_of: impl FnMut(&str) -> Labels,
    ) {
        if !self.discovery.due(self.engine.gated(), tick) {
            return;
        }
        let Some(root) = actuate::cgroup2_root() else { return };
        let mut found = Vec::new();
        for (id, path) in cgroups::all(&root) {
            if self.engine.knows_cgroup(id) || self.discovery.skip.contains(&id) {
                continue;
            }
            let labels = labels_of(&path);
            if self.engine.adopt_cgroup(id, CgroupInfo { path: path.clone(), labels }) {
                found.push(path);
            } else {
                self.discovery.skip.insert(id);
            }
        }
        if found.is_empty() {
            return;
        }
        self.stats.cgroups_discovered += found.len() as u64;
        for path in &found {
            tracing::info!(cgroup = %path, "enforcement: a new cgroup of a gated entitlement is a target");
        }
        let steps = self.engine.recompute();
        self.carry_out(steps, kernel);
    }

    /// The mapping changed: cgroups judged no target may be one now.
    pub fn mapping_changed(&mut self) {
        self.discovery.reset();
    }

    /// A HELD notice was lost (the kernel's `enforce_failed` grew): the stopped processes
    /// among the targets (their processes and every process in a target cgroup) are resumed,
    /// a denied one after its AI connections are destroyed, so nothing is left stopped.
    pub fn sweep_stopped(&mut self) {
        let mut cgroup_of: std::collections::HashMap<u32, u64> = self.engine.target_procs().collect();
        let cgroups: HashSet<u64> = self.engine.target_cgroups().collect();
        if let Some(root) = actuate::cgroup2_root() {
            for (pid, id) in backstop::processes_in(&root, &cgroups) {
                cgroup_of.entry(pid).or_insert(id);
            }
        }
        let peers = self.ai_peers.clone();
        let engine = &self.engine;
        let resumed = backstop::resume_stopped(
            &cgroup_of,
            |pid, cgroup| engine.verdict_of(pid, cgroup) == Some(Verdict::Deny),
            |pid| {
                let _ = actuate::destroy_connections(Owner::Process(pid), |a| peers.contains(&a));
            },
        );
        if resumed > 0 {
            self.stats.stopped_resumed += resumed;
            tracing::warn!(
                resumed,
                "enforcement: hold notices were lost (event ring full); stopped target processes resumed"
            );
        }
    }

    /// Publishes this node's cluster usage and takes the other nodes'; true if it changed.
    fn exchange_cluster(&mut self) -> bool {
        self.cluster.as_ref().is_some_and(|c| cluster::exchange(c, &mut self.engine.budgets))
    }

    /// Redis health (operations, failures, up) when cluster counters are configured.
    pub fn cluster_health(&self) -> Option<cluster::Health> {
        self.cluster.as_ref().map(|c| c.health())
    }

    /// SIGHUP.
    pub fn reload(&mut self, kernel: &mut KernelEnforcement) {
        let outcome = self.source.reload();
        self.reloaded(outcome, kernel);
    }

    fn reloaded(&mut self, outcome: Reload, kernel: &mut KernelEnforcement) {
        let file = self.source.path().map(|p| p.display().to_string()).unwrap_or_default();
        match outcome {
            Reload::Unchanged => {}
            Reload::Loaded(entitlements) => {
                let (kept, steps) = self.engine.replace_policy(self.source.policy(), Timestamp::now());
                self.discovery.reset();
                tracing::info!(file, entitlements, kept = kept.len(), "enforcement: policy reloaded");
                self.carry_out(steps, kernel);
            }
            Reload::Rejected(e) => {
                self.stats.policy_rejections += 1;
                tracing::error!("enforcement: policy not reloaded, the previous one stays in force: {e}");
            }
        }
    }

    /// Removes every verdict (the agent is stopping: nothing may be held without it).
    pub fn shutdown(&mut self, kernel: &mut KernelEnforcement) {
        for (target, _) in kernel.targets() {
            kernel.clear(target);
        }
    }

    fn carry_out(&mut self, steps: Vec<Step>, kernel: &mut KernelEnforcement) {
        for event in self.engine.take_actions() {
            self.log_action(&event);
        }
        for name in self.engine.take_warnings() {
            tracing::warn!(entitlement = %name, "enforcement: warning threshold reached");
            self.tally.entry(name.clone()).or_default().1 += 1;
            self.metric_events.push((name.clone(), None));
            *self.stats.warnings.entry(name).or_default() += 1;
        }
        let peers = self.ai_peers.clone();
        let is_ai = move |a: SocketAddr| peers.contains(&a);
        for step in steps {
            let result: Result<(), String> = match step {
                Step::Set(who, v) => kernel.set(who_to_target(who), verdict_to_mode(v)).map_err(|e| e.to_string()),
                Step::Clear(who) => {
                    kernel.clear(who_to_target(who));
                    Ok(())
                }
                Step::Pass(id) => kernel.grant_pass(id).map_err(|e| e.to_string()),
                Step::DestroyProcess(tgid) => {
                    actuate::destroy_connections(Owner::Process(tgid), &is_ai).map(|_| ()).map_err(|e| e.to_string())
                }
                Step::DestroyCgroup(id) => {
                    actuate::destroy_connections(Owner::Cgroup(id), &is_ai).map(|_| ()).map_err(|e| e.to_string())
                }
                Step::DestroyConn(id) => match kernel.socket_of(id) {
                    Some(s) => sock_diag::SockDiag::open()
                        .and_then(|d| d.destroy(s.local, s.peer))
                        .or_else(|e| if e.raw_os_error() == Some(libc::ENOENT) { Ok(()) } else { Err(e) })
                        .map_err(|e| e.to_string()),
                    // Its socket is not known yet (a new connection's first write): every AI
                    // connection of the process goes, so the held request cannot leave.
                    None => actuate::destroy_connections(Owner::Process(id.tgid), &is_ai)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                },
                Step::Signal(tgid, sig) => actuate::send_signal(tgid, sig).map_err(|e| e.to_string()),
                Step::Resume(tgid) => match actuate::resume(tgid) {
                    // Gone or guarded: nothing is left stopped either way.
                    Err(actuate::ActError::Gone(_)) => Ok(()),
                    r => r.map_err(|e| e.to_string()),
                },
            };
            if let Err(e) = result {
                self.stats.step_failures += 1;
                tracing::warn!(?step, "enforcement: step failed: {e}");
            }
        }
    }

    fn log_action(&mut self, a: &ActionEvent) {
        if a.action == "would_block" {
            tracing::info!(
                entitlement = %a.entitlement, pid = a.pid, comm = %a.comm, cgroup = %a.cgroup,
                action = a.action, "enforcement: would block (observe)"
            );
        } else {
            tracing::warn!(
                entitlement = %a.entitlement, pid = a.pid, comm = %a.comm, cgroup = %a.cgroup,
                action = a.action, "enforcement: action"
            );
        }
        *self.stats.actions.entry((a.entitlement.clone(), a.action)).or_default() += 1;
        self.tally.entry(a.entitlement.clone()).or_default().0 += 1;
        // The metric's action label is the policy's (`observe` for a would-block).
        let action = if a.action == "would_block" { "observe" } else { a.action };
        self.metric_events.push((a.entitlement.clone(), Some(action)));
    }
}
