//! Who a process is: resolved at first sight and kept until the process is gone, so that a
//! process that exits mid-call still gets its identity.
pub mod cgroup;
pub mod kube;
pub mod model;
pub mod users;

use std::collections::HashMap;

use crate::capture::event::ExecSeen;

use self::{
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
}

impl ProcessInfo {
    pub fn read(pid: u32, users: &mut Users) -> ProcessInfo {
        let proc = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok();
        let comm = proc("comm").map(|s| s.trim_end().to_string()).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
        let uid = proc("status").as_deref().and_then(users::uid_from_status);
        let user = uid.and_then(|uid| users.name(pid, uid));
        let cgroup = proc("cgroup").as_deref().and_then(cgroup::from_proc_cgroup).unwrap_or_default();
        ProcessInfo { comm, exe, uid, user, cgroup }
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

/// Identities cached per pid with the monotonic time each was read, so that an exec notice
/// handled after the new program's traffic (data is drained before process events) does not
/// discard an identity read after that exec.
pub struct Resolver {
    entries: HashMap<u32, (ProcessInfo, u64)>,
    /// Identities of processes whose exit was handled, with the monotonic time of the exit:
    /// a data record can still follow the exit notice (the data ring's reader stops at a record
    /// another CPU has reserved but not yet committed, so a process's last chunks may be read a
    /// drain after its exit), and by then `/proc` has nothing left to say about it.
    departed: HashMap<u32, (ProcessInfo, u64, u64)>,
    users: Users,
    pods: Option<PodCache>,
}

/// How long a departed process's identity is kept for its late records.
const DEPARTED_NS: u64 = 5_000_000_000;

impl Resolver {
    pub fn new(pods: Option<PodCache>) -> Resolver {
        Resolver { entries: HashMap::new(), departed: HashMap::new(), users: Users::new(), pods }
    }

    pub fn pods(&self) -> Option<&PodCache> {
        self.pods.as_ref()
    }

    /// Resolves `pid` if not known yet; `now_ns` is the monotonic time of the read.
    pub fn observe(&mut self, pid: u32, now_ns: u64) {
        if self.entries.contains_key(&pid) {
            return;
        }
        // A late record of a process that exited moments ago. A new process that reused the
        // pid is told apart by its exec notice (an identity read before an exec is replaced).
        if let Some((info, read_ns, _)) =
            self.departed.remove(&pid).filter(|(_, _, gone_ns)| now_ns.saturating_sub(*gone_ns) < DEPARTED_NS)
        {
            self.entries.insert(pid, (info, read_ns));
            return;
        }
        let info = ProcessInfo::read(pid, &mut self.users);
        self.entries.insert(pid, (info, now_ns));
    }

    pub fn workload(&mut self, pid: u32, now_ns: u64) -> Workload {
        self.observe(pid, now_ns);
        let info = &self.entries[&pid].0;
        workload(pid, info, self.pods.as_ref())
    }

    /// `pid` exec'd a new program at `exec_ns`: an identity read before then is stale. The new
    /// one is read right away. A short-lived client can be gone already (the agent handles
    /// notices after the data they precede): then what the kernel saw at the exec names it.
    pub fn on_exec(&mut self, pid: u32, exec_ns: u64, now_ns: u64, seen: &ExecSeen) {
        if self.entries.get(&pid).is_none_or(|(_, read_ns)| *read_ns < exec_ns) {
            let info = ProcessInfo::read(pid, &mut self.users);
            self.entries.insert(pid, (info, now_ns));
        }
        if let Some((info, _)) = self.entries.get_mut(&pid) {
            if info.comm.is_empty() && info.exe.is_empty() {
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
        self.departed.retain(|_, (_, _, gone_ns)| now_ns.saturating_sub(*gone_ns) < DEPARTED_NS);
        if let Some((info, read_ns)) = self.entries.remove(&pid) {
            self.departed.insert(pid, (info, read_ns, now_ns));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_gone_before_its_exec_notice_is_named_by_what_the_kernel_saw() {
        let mut cache = Resolver::new(None);
        // No such pid: its /proc entry is gone, as for a client that exited already. Its data
        // was parsed first (observe), so an empty identity is cached before the exec notice.
        let gone = u32::MAX - 7;
        cache.observe(gone, 50);
        let seen = ExecSeen { comm: "curl".into(), filename: "/bin/sh".into(), uid: 0 };
        cache.on_exec(gone, 40, 60, &seen);
        let w = cache.workload(gone, 70);
        assert_eq!(w.comm, "curl");
        let sh = std::fs::canonicalize("/bin/sh").unwrap().display().to_string();
        assert_eq!(w.exe, sh, "the executed file, its symlinks resolved as /proc/PID/exe would");
        assert_eq!(w.uid, Some(0));
    }

    #[test]
    fn identity_read_after_exec_survives_a_late_exec_notice() {
        let me = std::process::id();
        let mut cache = Resolver::new(None);
        cache.observe(me, 200);
        cache.entries.get_mut(&me).unwrap().0.comm = "marker".into();
        cache.on_exec(me, 100, 300, &ExecSeen::default());
        assert_eq!(cache.workload(me, 300).comm, "marker");
        cache.on_exec(me, 250, 300, &ExecSeen::default());
        let w = cache.workload(me, 300);
        assert_ne!(w.comm, "marker");
        assert!(!w.exe.is_empty());
        assert_eq!(w.uid, Some(unsafe { libc::getuid() }));
        assert!(!w.cgroup.path.is_empty(), "this process has a cgroup");
        cache.remove(me, 400);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_late_record_of_a_departed_process_keeps_its_identity() {
        // No such pid: /proc says nothing, as for a process whose exit was already handled.
        let gone = u32::MAX - 9;
        let mut cache = Resolver::new(None);
        let seen = ExecSeen { comm: "python".into(), filename: "/bin/sh".into(), uid: 0 };
        cache.on_exec(gone, 10, 20, &seen);
        cache.remove(gone, 1_000);
        assert!(cache.is_empty());
        assert_eq!(cache.workload(gone, 2_000).comm, "python", "a late chunk, read after the exit");
        cache.remove(gone, 3_000);
        // Long after: a new process with that pid is read afresh (here: nothing to read).
        assert_eq!(cache.workload(gone, 3_000 + DEPARTED_NS).comm, "");
    }
}
