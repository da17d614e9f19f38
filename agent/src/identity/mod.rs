//! Who a process is: resolved at first sight and kept until the process is gone, so that a
//! process that exits mid-call still gets its identity.
//!
//! Nothing here may depend on the process still being alive when the agent gets to its records
//! (a short-lived client while the agent lags behind a burst): what `/proc` cannot tell any more,
//! the kernel's exec notice (comm, executed file, uid) and the cgroup id carried by every record
//! ([`cgroup_ids`]) tell instead. Calls that still end up unattributed are counted by
//! [`unattributed_reason`].
pub mod cgroup;
pub mod cgroup_ids;
pub mod kube;
pub mod model;
pub mod users;

use std::collections::HashMap;

use crate::capture::event::ExecSeen;

use self::{
    cgroup_ids::CgroupPaths,
    kube::PodCache,
    model::{CgroupInfo, Workload},
    users::Users,
};

/// What `/proc` says about a process, read once, at first sight, while it surely exists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    pub comm: String,
    pub exe: String,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub cgroup: CgroupInfo,
    /// The cgroup v2 path, which `cgroup.path` may not be (on a hybrid host a v1 controller's
    /// path can name the container): what the process's cgroup id is checked against.
    pub cgroup_v2: Option<String>,
}

impl ProcessInfo {
    pub fn read(pid: u32, users: &mut Users) -> ProcessInfo {
        let proc = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok();
        let comm = proc("comm").map(|s| s.trim_end().to_string()).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
        let uid = proc("status").as_deref().and_then(users::uid_from_status);
        let user = uid.and_then(|uid| users.name(pid, uid));
        let text = proc("cgroup");
        let cgroup = text.as_deref().and_then(cgroup::from_proc_cgroup).unwrap_or_default();
        let cgroup_v2 = text.as_deref().and_then(cgroup::v2_path);
        ProcessInfo { comm, exe, uid, user, cgroup, cgroup_v2 }
    }
}

/// Joins what `/proc` said with what the Kubernetes API says now (labels can change while a
/// process lives; the pod may also have been listed only after the process was first seen).
pub fn workload(pid: u32, info: &ProcessInfo, pods: Option<&PodCache>) -> Workload {
    let mut w = Workload {
        pid,
        comm: info.comm.clone(),
        exe: info.exe.clone(),
        uid: info.uid,
        user: info.user.clone(),
        cgroup: info.cgroup.clone(),
        pod: None,
        container: None,
    };
    let Some(pods) = pods else { return w };
    if let Some((pod, container)) = info.cgroup.container_id.as_deref().and_then(|id| pods.find_container(id)) {
        w.pod = Some(pod);
        w.container = Some(container);
    } else if let Some(pod) = info.cgroup.pod_uid.as_deref().and_then(|uid| pods.get(uid)) {
        w.container = info.cgroup.container_id.as_deref().and_then(|id| pod.container_by_id(id)).cloned();
        w.pod = Some(pod);
    }
    w
}

/// Why a call no mapping rule attributed was left unattributed, for the
/// `tokentap.calls.unattributed` counter: the identity the rules saw was incomplete (the
/// process was gone and no exec notice named it; its cgroup could not be found), or it was
/// complete and no rule matched it.
pub fn unattributed_reason(w: &Workload) -> &'static str {
    if w.comm.is_empty() && w.exe.is_empty() {
        "process_gone_no_exec"
    } else if w.cgroup.path.is_empty() {
        "cgroup_unknown"
    } else {
        "no_rule_matched"
    }
}

/// What is cached per pid: the identity, the monotonic time it was read, and the cgroup id of
/// the record or exec notice it was read for (0: unknown). A call from another cgroup id (the
/// process was moved since) is named by that id's cgroup instead.
#[derive(Debug, Clone)]
struct Entry {
    info: ProcessInfo,
    read_ns: u64,
    cgroup_id: u64,
    /// comm/exe/uid came from the exec notice of this time, not from `/proc`: a later exec's
    /// notice (`sh -c '… exec curl'`) names the process better.
    named_at_exec: Option<u64>,
}

/// Identities cached per pid with the monotonic time each was read, so that an exec notice
/// handled after the new program's traffic (data is drained before process events) does not
/// discard an identity read after that exec.
pub struct Resolver {
    entries: HashMap<u32, Entry>,
    /// Identities of processes whose exit was handled, with the monotonic time of the exit:
    /// a data record can still follow the exit notice (the data ring's reader stops at a record
    /// another CPU has reserved but not yet committed, so a process's last chunks may be read a
    /// drain after its exit), and by then `/proc` has nothing left to say about it.
    departed: HashMap<u32, (Entry, u64)>,
    users: Users,
    pods: Option<PodCache>,
    cgroups: CgroupPaths,
}

/// How long a departed process's identity is kept for its late records.
const DEPARTED_NS: u64 = 5_000_000_000;

impl Resolver {
    pub fn new(pods: Option<PodCache>) -> Resolver {
        Resolver::with_cgroups(pods, CgroupPaths::new())
    }

    pub fn with_cgroups(pods: Option<PodCache>, cgroups: CgroupPaths) -> Resolver {
        Resolver { entries: HashMap::new(), departed: HashMap::new(), users: Users::new(), pods, cgroups }
    }

    pub fn pods(&self) -> Option<&PodCache> {
        self.pods.as_ref()
    }

    /// Resolves `pid` if not known yet; `cgroup_id` is the one of the record that shows it
    /// (0: not carried), `now_ns` the monotonic time of the read.
    pub fn observe(&mut self, pid: u32, cgroup_id: u64, now_ns: u64) {
        if self.entries.contains_key(&pid) {
            return;
        }
        // A late record of a process that exited moments ago. A new process that reused the
        // pid is told apart by its exec notice (an identity read before an exec is replaced).
        if let Some((entry, _)) =
            self.departed.remove(&pid).filter(|(_, gone_ns)| now_ns.saturating_sub(*gone_ns) < DEPARTED_NS)
        {
            self.entries.insert(pid, entry);
            return;
        }
        let entry = self.read(pid, cgroup_id, now_ns);
        self.entries.insert(pid, entry);
    }

    /// `/proc` now; the cgroup by its id when `/proc` has no cgroup to tell (the process is
    /// gone). Resolved at once: the cgroup itself may be gone by the time the call completes.
    fn read(&mut self, pid: u32, cgroup_id: u64, now_ns: u64) -> Entry {
        let mut info = ProcessInfo::read(pid, &mut self.users);
        if info.cgroup.path.is_empty() {
            if let Some(cgroup) = self.cgroups.info(cgroup_id, now_ns) {
                info.cgroup = cgroup;
            }
        } else if cgroup_id != 0 && info.cgroup_v2.is_some() {
            // What `/proc` said of this cgroup names the cgroup's later gone processes alike
            // (a hybrid host's v1 paths included), once it is sure to be this id's cgroup (the
            // process was not moved between its record and this read).
            if self.cgroups.resolve(cgroup_id, now_ns) == info.cgroup_v2 {
                self.cgroups.learn(cgroup_id, info.cgroup.clone(), now_ns);
            }
        }
        Entry { info, read_ns: now_ns, cgroup_id, named_at_exec: None }
    }

    /// The workload behind a call made from cgroup `cgroup_id` (the id in its records).
    pub fn workload(&mut self, pid: u32, cgroup_id: u64, now_ns: u64) -> Workload {
        self.observe(pid, cgroup_id, now_ns);
        let entry = &self.entries[&pid];
        let moved = cgroup_id != 0 && entry.cgroup_id != 0 && entry.cgroup_id != cgroup_id;
        if !moved && !entry.info.cgroup.path.is_empty() {
            return workload(pid, &entry.info, self.pods.as_ref());
        }
        let mut info = entry.info.clone();
        if let Some(cgroup) = self.cgroups.info(cgroup_id, now_ns) {
            info.cgroup = cgroup;
        }
        workload(pid, &info, self.pods.as_ref())
    }

    /// The workload a cgroup stands for, from its v2 path alone (no process in it seen yet):
    /// classified as a process's would be and joined with its pod, comm/exe/user unknown.
    pub fn cgroup_workload(&self, path: &str) -> Workload {
        let info =
            ProcessInfo { cgroup: cgroup::classify(path), cgroup_v2: Some(path.to_string()), ..Default::default() };
        workload(0, &info, self.pods.as_ref())
    }

    /// `pid` exec'd a new program at `exec_ns`: an identity read before then is stale. The new
    /// one is read right away. A short-lived client can be gone already (the agent handles
    /// notices after the data they precede): then what the kernel saw at the exec names it.
    pub fn on_exec(&mut self, pid: u32, exec_ns: u64, now_ns: u64, seen: &ExecSeen) {
        if self.entries.get(&pid).is_none_or(|e| e.read_ns < exec_ns) {
            let entry = self.read(pid, seen.cgroup_id, now_ns);
            self.entries.insert(pid, entry);
        }
        if let Some(Entry { info, named_at_exec, .. }) = self.entries.get_mut(&pid) {
            // A zombie's /proc still has its comm but no exe any more.
            let unnamed = info.comm.is_empty() || info.exe.is_empty();
            if unnamed || named_at_exec.is_some_and(|t| t < exec_ns) {
                *named_at_exec = Some(exec_ns);
                info.comm = seen.comm.clone();
                // The executed name may be a symlink; /proc/PID/exe would name its target.
                info.exe = std::fs::canonicalize(&seen.filename)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| seen.filename.clone());
                info.uid = Some(seen.uid);
                info.user = self.users.name(pid, seen.uid);
            }
        }
    }

    /// `pid` exited at `now_ns`: its identity is kept a few seconds for late records.
    pub fn remove(&mut self, pid: u32, now_ns: u64) {
        self.departed.retain(|_, (_, gone_ns)| now_ns.saturating_sub(*gone_ns) < DEPARTED_NS);
        if let Some(entry) = self.entries.remove(&pid) {
            self.departed.insert(pid, (entry, now_ns));
        }
    }

    /// Whether `pid` has an identity already (alive, or departed moments ago).
    pub fn knows(&self, pid: u32) -> bool {
        self.entries.contains_key(&pid) || self.departed.contains_key(&pid)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[path = "resolver_tests.rs"]
mod tests;
