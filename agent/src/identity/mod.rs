//! Who a process is: resolved at first sight and kept until the process is gone, so that a
//! process that exits mid-call still gets its identity.
pub mod cgroup;
pub mod kube;
pub mod model;
pub mod users;

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    pub comm: String,
    pub exe: String,
}

impl ProcessInfo {
    pub fn read(pid: u32) -> ProcessInfo {
        let comm =
            std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim_end().to_string()).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
        ProcessInfo { comm, exe }
    }
}

/// Cached identities with the monotonic time each was read, so that an exec notice handled
/// after the new program's traffic (data is drained before process events) does not discard
/// an identity read after that exec.
#[derive(Default)]
pub struct ProcessCache {
    entries: HashMap<u32, (ProcessInfo, u64)>,
}

impl ProcessCache {
    /// Resolves `pid` if not known yet; `now_ns` is the monotonic time of the read.
    pub fn observe(&mut self, pid: u32, now_ns: u64) {
        self.entries.entry(pid).or_insert_with(|| (ProcessInfo::read(pid), now_ns));
    }

    pub fn get(&mut self, pid: u32, now_ns: u64) -> ProcessInfo {
        self.entries.entry(pid).or_insert_with(|| (ProcessInfo::read(pid), now_ns)).0.clone()
    }

    /// `pid` exec'd a new program at `exec_ns`: an identity read before then is stale. The new
    /// one is read right away, while the process surely exists.
    pub fn on_exec(&mut self, pid: u32, exec_ns: u64, now_ns: u64) {
        if self.entries.get(&pid).is_none_or(|(_, read_ns)| *read_ns < exec_ns) {
            self.entries.insert(pid, (ProcessInfo::read(pid), now_ns));
        }
    }

    pub fn remove(&mut self, pid: u32) {
        self.entries.remove(&pid);
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
    fn identity_read_after_exec_survives_a_late_exec_notice() {
        let me = std::process::id();
        let mut cache = ProcessCache::default();
        cache.observe(me, 200);
        cache.entries.get_mut(&me).unwrap().0.comm = "marker".into();
        cache.on_exec(me, 100, 300);
        assert_eq!(cache.get(me, 300).comm, "marker");
        cache.on_exec(me, 250, 300);
        assert_ne!(cache.get(me, 300).comm, "marker");
        assert!(!cache.get(me, 300).exe.is_empty());
        cache.remove(me);
        assert!(cache.is_empty());
    }
}
