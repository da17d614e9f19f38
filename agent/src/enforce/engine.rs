//! The enforcement engine: budgets, the processes and cgroups they apply to, and the verdicts
//! installed in the kernel. Each event returns the steps to carry out, in order; nothing here
//! touches the kernel, so every decision is unit-tested.
use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

use super::budget::{Budgets, Level, Usage};
use super::policy::{Action, Labels, Policy};
use super::steps::{Step, Verdict, Who};
use super::targets::{self, CgroupInfo, ProcInfo};
use crate::capture::event::ConnId;

/// What a reservation is held under: a request held at its write (provisional, before it is
/// parsed), or a parsed call (connection + per-connection sequence or HTTP/2 stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResKey {
    Hold(ConnId),
    Call(ConnId, u64),
}

impl ResKey {
    fn conn(&self) -> ConnId {
        match self {
            ResKey::Hold(c) | ResKey::Call(c, _) => *c,
        }
    }
}

/// One logged action (never a payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionEvent {
    pub entitlement: String,
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
    /// `deny`, `signal`, `cut`, or `would_block` (observe).
    pub action: &'static str,
}

/// A call in flight, for cut decisions.
#[derive(Debug, Clone)]
struct CallInfo {
    labels: Labels,
    input_tokens: u64,
}

pub struct Engine {
    pub budgets: Budgets<ResKey>,
    procs: HashMap<u32, ProcInfo>,
    cgroups: HashMap<u64, CgroupInfo>,
    installed: BTreeMap<Who, Verdict>,
    calls: HashMap<ResKey, CallInfo>,
    /// Actions since the last `take_actions` (logged by the caller, counted in metrics).
    actions: Vec<ActionEvent>,
    /// Entitlement names that crossed their warning threshold since the last take.
    warnings: Vec<String>,
}

impl Engine {
    pub fn new(policy: &Policy, hold_at: f64, default_max_output_tokens: u64, now: Timestamp) -> Engine {
        Engine {
            budgets: Budgets::new(policy, hold_at, default_max_output_tokens, now),
            procs: HashMap::new(),
            cgroups: HashMap::new(),
            installed: BTreeMap::new(),
            calls: HashMap::new(),
            actions: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.budgets.counters().is_empty()
    }

    /// A process seen calling (or about to call) an AI endpoint, with its attribution.
    pub fn observe(&mut self, tgid: u32, info: ProcInfo) {
        self.cgroups.insert(info.cgroup_id, CgroupInfo { path: info.cgroup_path.clone(), labels: info.labels.clone() });
        self.procs.insert(tgid, info);
    }

    /// A cgroup known from the ledger (calls before a restart), so it is held from the start.
    pub fn observe_cgroup(&mut self, id: u64, info: CgroupInfo) {
        self.cgroups.entry(id).or_insert(info);
    }

    pub fn knows(&self, tgid: u32) -> bool {
        self.procs.contains_key(&tgid)
    }

    pub fn knows_cgroup(&self, id: u64) -> bool {
        self.cgroups.contains_key(&id)
    }

    /// Whether an entitlement with a hard action is past its hold threshold (gated or
    /// exhausted): then a cgroup the engine never met may need a verdict before its first call.
    pub fn gated(&self) -> bool {
        let c = self.budgets.counters();
        (0..c.len()).any(|i| c[i].entitlement.action.is_hard() && self.budgets.level(i) != Level::Free)
    }

    /// A cgroup found in the tree, attributed from its path alone: a target from now on if a
    /// hard entitlement matches it (and does not exempt it). Returns whether it was taken.
    pub fn adopt_cgroup(&mut self, id: u64, info: CgroupInfo) -> bool {
        let hard = self.budgets.matching(&info.labels).into_iter().any(|i| {
            let e = &self.budgets.counters()[i].entitlement;
            e.action.is_hard() && !e.exempts(&info.path)
        });
        if hard {
            self.cgroups.entry(id).or_insert(info);
        }
        hard
    }

    /// The processes and cgroups that are targets, for the sweep of stopped processes.
    pub fn target_procs(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.procs.iter().map(|(&tgid, p)| (tgid, p.cgroup_id))
    }

    pub fn target_cgroups(&self) -> impl Iterator<Item = u64> + '_ {
        self.cgroups.keys().copied()
    }

    /// The verdict the kernel applies to `tgid` in cgroup `cgroup_id` (process entry first).
    pub fn verdict_of(&self, tgid: u32, cgroup_id: u64) -> Option<Verdict> {
        self.installed.get(&Who::Process(tgid)).or_else(|| self.installed.get(&Who::Cgroup(cgroup_id))).copied()
    }

    pub fn installed(&self) -> &BTreeMap<Who, Verdict> {
        &self.installed
    }

    pub fn take_actions(&mut self) -> Vec<ActionEvent> {
        std::mem::take(&mut self.actions)
    }

    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Recomputes the kernel verdicts; the steps install the difference. `commit` tells the
    /// engine they were carried out (the caller's map writes).
    pub fn recompute(&mut self) -> Vec<Step> {
        for i in self.budgets.take_warnings() {
            self.warnings.push(self.budgets.counters()[i].entitlement.name.clone());
        }
        let want = targets::desired(&self.budgets, &self.procs, &self.cgroups);
        let steps = targets::diff(&self.installed, &want);
        self.installed = want;
        steps
    }

    fn log(&mut self, entitlement: &str, tgid: u32, action: &'static str) {
        let (comm, cgroup) = match self.procs.get(&tgid) {
            Some(p) => (p.comm.clone(), p.cgroup_path.clone()),
            None => (String::new(), String::new()),
        };
        self.actions.push(ActionEvent { entitlement: entitlement.to_string(), pid: tgid, comm, cgroup, action });
    }

    /// A process stopped at a write on `conn` (its data ring already drained, so earlier
    /// responses are settled). `provider` is the connection's, when known. Always ends with
    /// the process resumed.
    pub fn on_hold(&mut self, conn: ConnId, provider: Option<&str>, now: Timestamp) -> Vec<Step> {
        let tgid = conn.tgid;
        self.budgets.roll(now);
        let mut steps = Vec::new();
        let Some(p) = self.procs.get(&tgid) else {
            // The caller observes a held process first; one it could not resolve is let go
            // (never left stopped).
            steps.push(Step::Pass(conn));
            steps.push(Step::Resume(tgid));
            return steps;
        };
        let mut labels = p.labels.clone();
        labels.provider = provider.map(str::to_string);
        let path = p.cgroup_path.clone();
        if !targets::guarded(tgid) {
            for i in self.budgets.matching(&labels) {
                let c = &self.budgets.counters()[i];
                let e = &c.entitlement;
                if !e.action.is_hard() || e.exempts(&path) || !c.refuses() {
                    continue;
                }
                let (name, action, signal) = (e.name.clone(), e.action, e.signal);
                match action {
                    Action::Signal => {
                        self.log(&name, tgid, "signal");
                        steps.push(Step::Signal(tgid, signal));
                    }
                    _ => {
                        // The held connection only: other threads' calls in flight go on
                        // (the process's other AI connections went when the budget was
                        // exhausted, if it is).
                        self.log(&name, tgid, "deny");
                        steps.push(Step::DestroyConn(conn));
                    }
                }
                steps.extend(self.recompute());
                steps.push(Step::Resume(tgid));
                return steps;
            }
        }
        steps.push(Step::Pass(conn));
        let estimate = self.budgets.estimate(0, None, 0);
        self.budgets.reserve(ResKey::Hold(conn), &labels, estimate, None);
        steps.extend(self.recompute());
        steps.push(Step::Resume(tgid));
        steps
    }

    /// A parsed request: its estimate replaces the provisional reservation of its hold.
    /// Observe entitlements that would have refused it record a would-block.
    pub fn on_request(&mut self, call: ResKey, labels: &Labels, estimate: Usage, now: Timestamp) -> Vec<Step> {
        self.budgets.roll(now);
        self.would_block(call.conn().tgid, labels);
        self.budgets.reserve(call, labels, estimate, Some(&ResKey::Hold(call.conn())));
        self.calls.insert(call, CallInfo { labels: labels.clone(), input_tokens: estimate.input_tokens });
        self.recompute()
    }

    fn would_block(&mut self, tgid: u32, labels: &Labels) {
        let path = self.procs.get(&tgid).map(|p| p.cgroup_path.clone()).unwrap_or_default();
        let names: Vec<String> = self
            .budgets
            .matching(labels)
            .into_iter()
            .map(|i| &self.budgets.counters()[i])
            .filter(|c| c.entitlement.action == Action::Observe && !c.entitlement.exempts(&path) && c.refuses())
            .map(|c| c.entitlement.name.clone())
            .collect();
        for name in names {
            self.log(&name, tgid, "would_block");
        }
    }

    /// Output so far of a streaming response: past a `cut` entitlement's limit (what is
    /// settled plus this call's usage so far), its connection is destroyed.
    pub fn on_progress(&mut self, call: ResKey, output_so_far: u64) -> Vec<Step> {
        let Some(info) = self.calls.get(&call).cloned() else { return Vec::new() };
        let tgid = call.conn().tgid;
        if targets::guarded(tgid) {
            return Vec::new();
        }
        let path = self.procs.get(&tgid).map(|p| p.cgroup_path.clone()).unwrap_or_default();
        let so_far = Usage::call(info.input_tokens, output_so_far, 0);
        for i in self.budgets.matching(&info.labels) {
            let c = &self.budgets.counters()[i];
            let e = &c.entitlement;
            if e.action != Action::Cut || e.exempts(&path) {
                continue;
            }
            if c.used() + so_far.amount(e.limit.kind) > c.limit() {
                let name = e.name.clone();
                self.log(&name, tgid, "cut");
                self.calls.remove(&call);
                return vec![Step::DestroyConn(call.conn())];
            }
        }
        Vec::new()
    }

    /// A usage record: counted, its reservations dropped (`call` when the request was parsed,
    /// and the hold's on its connection).
    pub fn on_record(
        &mut self,
        conn: ConnId,
        call: Option<ResKey>,
        labels: &Labels,
        usage: Usage,
        ts: Timestamp,
    ) -> Vec<Step> {
        if call.is_none() {
            // No parsed-request event for this call: observe judges it at its record.
            self.would_block(conn.tgid, labels);
        }
        self.budgets.release(&ResKey::Hold(conn));
        if let Some(k) = call {
            self.calls.remove(&k);
        }
        self.budgets.settle(call.as_ref(), labels, usage, ts);
        self.recompute()
    }

    /// Calls that will never complete (connection closed, idle, process gone).
    pub fn on_ended(&mut self, call: ResKey) -> Vec<Step> {
        self.calls.remove(&call);
        self.budgets.release(&call);
        self.budgets.release(&ResKey::Hold(call.conn()));
        self.recompute()
    }

    /// A connection that ended: every reservation on it is released.
    pub fn on_conn_closed(&mut self, conn: ConnId) -> Vec<Step> {
        self.budgets.release_where(|k| k.conn() == conn);
        self.calls.retain(|k, _| k.conn() != conn);
        self.recompute()
    }

    /// A process that exited: its reservations go, and its process entry.
    pub fn on_exit(&mut self, tgid: u32) -> Vec<Step> {
        self.procs.remove(&tgid);
        self.budgets.release_where(|k| k.conn().tgid == tgid);
        self.calls.retain(|k, _| k.conn().tgid != tgid);
        self.recompute()
    }

    /// Rolls windows over and recomputes (each tick).
    pub fn tick(&mut self, now: Timestamp) -> Vec<Step> {
        self.budgets.roll(now);
        self.recompute()
    }

    /// A new policy (hot reload): counters of unchanged entitlements survive, the verdicts
    /// follow at once (a lifted limit frees its targets in these steps).
    pub fn replace_policy(&mut self, policy: &Policy, now: Timestamp) -> (Vec<String>, Vec<Step>) {
        let kept = self.budgets.replace_policy(policy, now);
        self.budgets.roll(now);
        (kept, self.recompute())
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
