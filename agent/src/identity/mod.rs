//! Who a process is: resolved at first sight and kept until the process is gone, so that a
//! process that exits mid-call still gets its identity.
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

#[derive(Default)]
pub struct ProcessCache {
    entries: HashMap<u32, ProcessInfo>,
}

impl ProcessCache {
    /// Resolves `pid` if not known yet.
    pub fn observe(&mut self, pid: u32) {
        self.entries.entry(pid).or_insert_with(|| ProcessInfo::read(pid));
    }

    pub fn get(&mut self, pid: u32) -> ProcessInfo {
        self.entries.entry(pid).or_insert_with(|| ProcessInfo::read(pid)).clone()
    }

    /// After exec the same pid is a new program.
    pub fn invalidate(&mut self, pid: u32) {
        self.entries.remove(&pid);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
