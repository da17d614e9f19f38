//! Two backstops for what the event-driven path cannot see.
//!
//! - New cgroups: targets are learned when a process is seen at an AI call, so a brand-new
//!   cgroup (a new pod of an exhausted team) would have no verdict at its first call. While a
//!   hard entitlement is gated or exhausted, the tick walks the cgroup tree and attributes the
//!   cgroups the engine has not met from their path alone; [`Discovery`] says when to walk and
//!   remembers the cgroups no hard entitlement matched, so each is attributed once.
//! - Lost HELD notices: a process stopped by the hold whose notice did not fit the event ring
//!   is heard of by nobody. When the kernel's `enforce_failed` counter grows, the stopped
//!   processes among the targets are found ([`stopped_among`]) and resumed.
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::actuate;

/// When to walk the tree for new cgroups, and which cgroups were already judged no target.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Cgroups attributed and matched by no hard entitlement (forgotten when the gate lifts,
    /// the policy or the mapping changes: they may match then).
    pub skip: HashSet<u64>,
    was_gated: bool,
}

impl Discovery {
    /// Whether to walk now: on every tick while gated, and at once when the gate comes on.
    pub fn due(&mut self, gated: bool, tick: bool) -> bool {
        let entering = gated && !self.was_gated;
        self.was_gated = gated;
        if !gated {
            self.skip.clear();
        }
        gated && (tick || entering)
    }

    /// The policy or the mapping changed: every cgroup is judged again.
    pub fn reset(&mut self) {
        self.skip.clear();
        self.was_gated = false;
    }
}

/// The scheduler state letter of `/proc/PID/stat` (`T`: stopped); None when gone.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_state(&stat)
}

/// The state follows `comm`'s closing parenthesis (comm may hold spaces and parentheses).
fn parse_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// The processes (thread-group leaders) whose cgroup v2 id is in `cgroups`, with that id,
/// under the cgroup2 mount `root`: one pass over `/proc`.
pub fn processes_in(root: &Path, cgroups: &HashSet<u64>) -> Vec<(u32, u64)> {
    if cgroups.is_empty() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
            let id = std::fs::metadata(root.join(path.trim_start_matches('/'))).ok()?.ino();
            cgroups.contains(&id).then_some((pid, id))
        })
        .collect()
}

/// The processes of `pids` that are stopped now (deduplicated, in order).
pub fn stopped_among(pids: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut seen = HashSet::new();
    pids.into_iter().filter(|&p| seen.insert(p) && state(p) == Some('T')).collect()
}

/// Resumes the stopped processes among `targets` (pid → cgroup id), guards applied; one that
/// `denied` says is under a deny has its request never judged, so `destroy` (its AI
/// connections) runs first and the pending write fails. Returns how many were resumed.
pub fn resume_stopped(
    targets: &HashMap<u32, u64>,
    denied: impl Fn(u32, u64) -> bool,
    mut destroy: impl FnMut(u32),
) -> u64 {
    let mut resumed = 0;
    for pid in stopped_among(targets.keys().copied()) {
        if actuate::guard(pid).is_err() {
            continue;
        }
        if denied(pid, targets[&pid]) {
            destroy(pid);
        }
        if actuate::resume(pid).is_ok() {
            resumed += 1;
        }
    }
    resumed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn walks_while_gated_at_each_tick_and_at_once_on_entering() {
        let mut d = Discovery::default();
        assert!(!d.due(false, true), "nothing gated: no walk");
        assert!(d.due(true, false), "entering the gate: a walk at once");
        assert!(!d.due(true, false), "still gated, not a tick: no second walk");
        assert!(d.due(true, true), "every tick while gated");
        d.skip.insert(7);
        assert!(!d.due(false, true));
        assert!(d.skip.is_empty(), "the gate lifted: cgroups are judged again next time");
        d.skip.insert(7);
        d.reset();
        assert!(d.skip.is_empty() && d.due(true, false));
    }

    #[test]
    fn reads_the_state_after_comm() {
        assert_eq!(parse_state("77 (a (b) c) T 1 77 77 0 -1 4194304 0 0"), Some('T'));
        assert_eq!(parse_state("5 (sleep) S 1 5"), Some('S'));
        assert_eq!(parse_state("garbage"), None);
    }

    fn wait_state(pid: u32, want: char) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if state(pid) == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// A real stopped child: found by the sweep and running again after `resume`.
    #[test]
    fn a_stopped_process_is_found_and_resumed() {
        let child = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let pid = child.id();
        let running = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        // SAFETY: our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        assert!(wait_state(pid, 'T'), "the child stopped");
        assert_eq!(stopped_among([pid, running.id(), pid, 1]), vec![pid], "only the stopped one, once");
        let targets = HashMap::from([(pid, 7), (running.id(), 7), (1, 7), (std::process::id(), 7)]);
        let mut destroyed = Vec::new();
        let resumed = resume_stopped(&targets, |p, cg| p == pid && cg == 7, |p| destroyed.push(p));
        assert_eq!((resumed, destroyed), (1, vec![pid]), "the stopped one, its connections first under a deny");
        assert!(wait_state(pid, 'S'), "running again: {:?}", state(pid));
        assert!(stopped_among([pid]).is_empty());
        if let Some(root) = actuate::cgroup2_root() {
            let me = std::process::id();
            if let Some(id) = actuate::cgroup_id_of(me) {
                assert!(processes_in(&root, &HashSet::from([id])).contains(&(me, id)));
            }
        }
        for mut c in [child, running] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
