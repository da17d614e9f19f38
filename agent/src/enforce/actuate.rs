//! What user space does to a process once it has decided: resume it, signal it, or destroy its
//! connections to AI endpoints. Every action goes through the guards: never init, never the
//! agent itself, never a kernel thread.
use std::{collections::HashSet, fs, io, net::SocketAddr, path::PathBuf};

use thiserror::Error;

use super::sockets::{self, SocketInfo};

/// `PF_KTHREAD` in `/proc/PID/stat`'s flags field.
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ActError {
    #[error("pid {0} is init: never acted on")]
    Init(u32),
    #[error("pid {0} is the agent itself: never acted on")]
    Agent(u32),
    #[error("pid {0} is a kernel thread: never acted on")]
    KernelThread(u32),
    #[error("pid {0} is gone")]
    Gone(u32),
    #[error("signalling pid {pid} failed: {errno}")]
    Os { pid: u32, errno: i32 },
}

/// Refuses the processes no action may touch.
pub fn guard(tgid: u32) -> Result<(), ActError> {
    if tgid <= 1 {
        return Err(ActError::Init(tgid));
    }
    if tgid == std::process::id() {
        return Err(ActError::Agent(tgid));
    }
    let stat = fs::read_to_string(format!("/proc/{tgid}/stat")).map_err(|_| ActError::Gone(tgid))?;
    if is_kernel_thread(&stat) {
        return Err(ActError::KernelThread(tgid));
    }
    Ok(())
}

/// `flags` is the 9th field; `comm` (the 2nd) may hold spaces and parentheses, so fields are
/// counted after its closing parenthesis.
fn is_kernel_thread(stat: &str) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    // rest: " S ppid pgrp session tty tpgid flags ..." → flags is the 7th word.
    rest.split_whitespace().nth(6).and_then(|f| f.parse::<u64>().ok()).is_some_and(|f| f & PF_KTHREAD != 0)
}

fn kill(tgid: u32, sig: i32) -> Result<(), ActError> {
    // SAFETY: kill(2) with a positive pid checked by `guard`: signals exactly that process.
    if unsafe { libc::kill(tgid as libc::pid_t, sig) } == 0 {
        return Ok(());
    }
    match io::Error::last_os_error().raw_os_error().unwrap_or(0) {
        libc::ESRCH => Err(ActError::Gone(tgid)),
        errno => Err(ActError::Os { pid: tgid, errno }),
    }
}

/// Lets a held process run again (SIGCONT).
pub fn resume(tgid: u32) -> Result<(), ActError> {
    guard(tgid)?;
    kill(tgid, libc::SIGCONT)
}

/// Sends `sig` to a process, unless a guard refuses it.
pub fn send_signal(tgid: u32, sig: i32) -> Result<(), ActError> {
    guard(tgid)?;
    kill(tgid, sig)
}

/// Whose connections to destroy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Process(u32),
    /// Every process whose cgroup v2 id (its directory's inode) is this one.
    Cgroup(u64),
}

/// Destroys the owner's TCP connections whose peer `is_ai` says is an AI endpoint
/// (`SOCK_DESTROY`): the kernel aborts each socket, so the owner's pending or next write fails
/// with `ECONNABORTED` (then `EPIPE`) and the peer receives a reset. Returns how many were
/// destroyed. Sockets in another network namespace than the agent's are not reached.
pub fn destroy_connections(owner: Owner, is_ai: impl Fn(SocketAddr) -> bool) -> io::Result<usize> {
    let pids = match owner {
        Owner::Process(tgid) => {
            guard(tgid).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
            vec![tgid]
        }
        Owner::Cgroup(id) => processes_in_cgroup(id),
    };
    let mut seen = HashSet::new();
    let mut targets: Vec<SocketInfo> = Vec::new();
    for pid in pids {
        if guard(pid).is_err() {
            continue;
        }
        for s in sockets::process_sockets(pid) {
            if is_ai(s.peer) && seen.insert(s.inode) {
                targets.push(s);
            }
        }
    }
    if targets.is_empty() {
        return Ok(0);
    }
    let diag = super::sock_diag::SockDiag::open()?;
    let mut destroyed = 0;
    for s in targets {
        match diag.destroy(s.local, s.peer) {
            Ok(()) => destroyed += 1,
            // Closed in the meantime: nothing left to destroy.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(destroyed)
}

/// The cgroup v2 mount point (from `/proc/self/mountinfo`).
pub fn cgroup2_root() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next() == Some("cgroup2")).then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The cgroup v2 id of a process: the inode of its cgroup directory.
pub fn cgroup_id_of(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = cgroup2_root()?.join(path.trim_start_matches('/'));
    fs::metadata(dir).ok().map(|m| m.ino())
}

/// Processes (thread-group leaders) in the cgroup with this id.
pub fn processes_in_cgroup(id: u64) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| cgroup_id_of(pid) == Some(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_refuse_init_agent_and_kernel_threads() {
        assert_eq!(send_signal(1, 0), Err(ActError::Init(1)));
        assert_eq!(send_signal(0, 0), Err(ActError::Init(0)));
        let me = std::process::id();
        assert_eq!(send_signal(me, 0), Err(ActError::Agent(me)));
        // kthreadd is pid 2 wherever the kernel has its own pid namespace view.
        if fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert_eq!(send_signal(2, 0), Err(ActError::KernelThread(2)));
        }
    }

    #[test]
    fn reads_kernel_thread_flag() {
        assert!(is_kernel_thread("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0"));
        assert!(!is_kernel_thread("77 (a (b) c) S 1 77 77 0 -1 4194304 0 0"));
        assert!(!is_kernel_thread("garbage"));
    }

    #[test]
    fn finds_own_cgroup() {
        let me = std::process::id();
        if let Some(id) = cgroup_id_of(me) {
            assert!(processes_in_cgroup(id).contains(&me));
        }
    }
}
