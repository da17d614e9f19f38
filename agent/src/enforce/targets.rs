//! From budgets to kernel verdicts: which cgroups and processes must be held, signalled or
//! denied, and the steps that move the installed verdicts to the desired ones.
use std::collections::{BTreeMap, HashMap};

use super::budget::{Budgets, Level};
use super::policy::{Action, Labels, MatchKey};
use super::steps::{Step, Verdict, Who};

/// A process the engine has seen make (or start) an AI call.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcInfo {
    pub cgroup_id: u64,
    pub cgroup_path: String,
    pub comm: String,
    /// Its attribution; `provider` and `model` unknown (a process may call several).
    pub labels: Labels,
}

/// A cgroup whose processes made AI calls: kept after they exit, so a new process started in
/// an exhausted team's cgroup is held from its first write.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupInfo {
    pub path: String,
    /// The labels of the last process seen in it.
    pub labels: Labels,
}

/// The verdict that `labels` (a process or cgroup at `cgroup_path`) must be under, and the
/// entitlement that calls for it. Observe entitlements and exempt cgroups never count.
pub fn verdict_for<K: Eq + std::hash::Hash + Clone>(
    budgets: &Budgets<K>,
    labels: &Labels,
    cgroup_path: &str,
) -> Option<(Verdict, usize)> {
    let mut best: Option<(Verdict, usize)> = None;
    for i in budgets.matching(labels) {
        let e = &budgets.counters()[i].entitlement;
        if !e.action.is_hard() || e.exempts(cgroup_path) {
            continue;
        }
        let v = match budgets.level(i) {
            Level::Free => continue,
            Level::Gate => Verdict::Gate,
            // A limit on one provider or model cannot deny the whole process (it may call
            // others): its requests are judged one by one at the hold instead.
            Level::Exhausted if narrower_than_process(&e.matcher.0) => Verdict::Gate,
            Level::Exhausted => match e.action {
                Action::Signal => Verdict::Signal(e.signal),
                _ => Verdict::Deny,
            },
        };
        if best.is_none_or(|(b, _)| v > b) {
            best = Some((v, i));
        }
    }
    best
}

fn narrower_than_process(conds: &[(MatchKey, crate::attribution::glob::Glob)]) -> bool {
    conds.iter().any(|(k, _)| matches!(k, MatchKey::Provider | MatchKey::Model))
}

/// Whether a process may be acted on at all: never init or the agent itself.
pub fn guarded(tgid: u32) -> bool {
    tgid <= 1 || tgid == std::process::id()
}

/// The verdicts every known target must be under. A cgroup takes the strictest of its own
/// (last seen) labels and its live processes; a process whose own verdict is milder gets a
/// process entry (checked first by the kernel), `Free` when it must not be touched.
pub fn desired<K: Eq + std::hash::Hash + Clone>(
    budgets: &Budgets<K>,
    procs: &HashMap<u32, ProcInfo>,
    cgroups: &HashMap<u64, CgroupInfo>,
) -> BTreeMap<Who, Verdict> {
    let mut by_cgroup: BTreeMap<u64, Option<Verdict>> = BTreeMap::new();
    for (&id, c) in cgroups {
        by_cgroup.insert(id, verdict_for(budgets, &c.labels, &c.path).map(|(v, _)| v));
    }
    let mut per_proc: Vec<(u32, u64, Option<Verdict>)> = Vec::new();
    for (&tgid, p) in procs {
        if guarded(tgid) {
            continue;
        }
        let v = verdict_for(budgets, &p.labels, &p.cgroup_path).map(|(v, _)| v);
        let slot = by_cgroup.entry(p.cgroup_id).or_default();
        *slot = (*slot).max(v);
        per_proc.push((tgid, p.cgroup_id, v));
    }
    let mut out = BTreeMap::new();
    for (&id, v) in &by_cgroup {
        if let Some(v) = v {
            out.insert(Who::Cgroup(id), *v);
        }
    }
    for (tgid, cg, v) in per_proc {
        let cgroup_v = by_cgroup.get(&cg).copied().flatten();
        if cgroup_v.is_some() && v < cgroup_v {
            out.insert(Who::Process(tgid), v.unwrap_or(Verdict::Free));
        }
    }
    out
}

/// The steps from `installed` to `want`; entering DENY also destroys the target's existing
/// AI connections, so a keep-alive connection cannot carry another request.
pub fn diff(installed: &BTreeMap<Who, Verdict>, want: &BTreeMap<Who, Verdict>) -> Vec<Step> {
    let mut steps = Vec::new();
    for (&who, &v) in want {
        let before = installed.get(&who).copied();
        if before == Some(v) {
            continue;
        }
        steps.push(Step::Set(who, v));
        if v == Verdict::Deny {
            steps.push(match who {
                Who::Cgroup(id) => Step::DestroyCgroup(id),
                Who::Process(tgid) => Step::DestroyProcess(tgid),
            });
        }
    }
    for &who in installed.keys() {
        if !want.contains_key(&who) {
            steps.push(Step::Clear(who));
        }
    }
    steps
}
