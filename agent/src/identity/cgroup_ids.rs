//! cgroup id → cgroup v2 path, without any pid.
//!
//! Every kernel record carries the caller's cgroup id (`bpf_get_current_cgroup_id`): the kernfs
//! id of its cgroup2 directory, which is also that directory's inode number. A process may be
//! gone before the agent reads `/proc/PID/cgroup` (a short-lived client while the agent lags),
//! but its cgroup usually is not, and the id names it for good: kernfs ids are not reused while
//! the kernel runs. So a path, once learned, stays true for that id.
//!
//! Resolution, cheapest first:
//! 1. the cache (kept for [`RETAIN_NS`] after its last use, so calls of a removed cgroup's last
//!    processes, parsed after the removal, still find it);
//! 2. `open_by_handle_at` on the cgroup2 mount with the id as a kernfs file handle: O(1)
//!    whatever the tree's depth (what systemd and bpftool do), then the fd's path;
//! 3. a walk of the whole cgroup2 tree, at most once per [`WALK_EVERY_NS`] (where handles are
//!    refused: no `CAP_DAC_READ_SEARCH`, or a kernel without kernfs export).
use super::{cgroup::classify, model::CgroupInfo};
use std::{
    collections::HashMap,
    os::unix::{ffi::OsStrExt, fs::DirEntryExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

/// How long an id's path is kept after it was last used.
pub const RETAIN_NS: u64 = 600_000_000_000;
/// Least time between two walks of the tree (misses in a burst share one walk).
pub const WALK_EVERY_NS: u64 = 1_000_000_000;
/// `FILEID_KERNFS`: the handle type kernfs (cgroup2) encodes, the 8 bytes being the node id.
const FILEID_KERNFS: i32 = 0xfe;

/// The first cgroup2 mount in a `/proc/self/mountinfo` text: its mount point, and the cgroup
/// path its root stands for (`/` unless a subtree was bind-mounted).
pub fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        let mut fields = pre.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((PathBuf::from(unescape(point)), unescape(root)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup path of `dir` under a mount at `point` whose root is cgroup path `root`.
fn cgroup_path(point: &Path, root: &str, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(point).ok()?;
    let mut path = root.trim_end_matches('/').to_string();
    for c in rel.components() {
        path.push('/');
        path.push_str(&c.as_os_str().to_string_lossy());
    }
    Some(if path.is_empty() { "/".to_string() } else { path })
}

struct Entry {
    path: String,
    last_used_ns: u64,
}

/// What `/proc/PID/cgroup` of a live process in the cgroup said, classified.
struct Learned {
    info: CgroupInfo,
    last_used_ns: u64,
}

pub struct CgroupPaths {
    /// Mount point and the cgroup path of its root; None without a cgroup2 mount.
    mount: Option<(PathBuf, String)>,
    /// The mount's root directory, for `open_by_handle_at`; None once handles were refused.
    mount_fd: Option<std::fs::File>,
    known: HashMap<u64, Entry>,
    learned: HashMap<u64, Learned>,
    last_walk_ns: Option<u64>,
    last_prune_ns: u64,
}

impl CgroupPaths {
    /// The cgroup2 mount of this host's `/proc/self/mountinfo`.
    pub fn new() -> CgroupPaths {
        let mount = std::fs::read_to_string("/proc/self/mountinfo").ok().as_deref().and_then(cgroup2_mount);
        CgroupPaths::at(mount, true)
    }

    /// A tree mounted at `mount` (point, cgroup path of its root); `handles`: try
    /// `open_by_handle_at` first (only a cgroup2 mount answers kernfs handles).
    pub fn at(mount: Option<(PathBuf, String)>, handles: bool) -> CgroupPaths {
        let mount_fd = mount.as_ref().filter(|_| handles).and_then(|(p, _)| std::fs::File::open(p).ok());
        CgroupPaths {
            mount,
            mount_fd,
            known: HashMap::new(),
            learned: HashMap::new(),
            last_walk_ns: None,
            last_prune_ns: 0,
        }
    }

    /// The cgroup path of `id`, e.g. `/kubepods.slice/…/cri-containerd-<id>.scope`; None when
    /// the id names no cgroup the agent can find (removed before it was ever resolved).
    pub fn resolve(&mut self, id: u64, now_ns: u64) -> Option<String> {
        self.prune(now_ns);
        if id == 0 {
            return None;
        }
        if let Some(e) = self.known.get_mut(&id) {
            e.last_used_ns = now_ns;
            return Some(e.path.clone());
        }
        // With handles, a miss is a cgroup that is gone: no walk would find it.
        let found = self.by_handle(id);
        let path = if found.is_none() && self.mount_fd.is_none() { self.walk(id, now_ns) } else { found }?;
        self.known.insert(id, Entry { path: path.clone(), last_used_ns: now_ns });
        Some(path)
    }

    /// The workload `id`'s cgroup stands for: as `/proc/PID/cgroup` of a live process in it
    /// said (see [`CgroupPaths::learn`]), else as its path classifies.
    pub fn info(&mut self, id: u64, now_ns: u64) -> Option<CgroupInfo> {
        if let Some(l) = self.learned.get_mut(&id) {
            l.last_used_ns = now_ns;
            return Some(l.info.clone());
        }
        self.resolve(id, now_ns).map(|p| classify(&p))
    }

    /// `/proc/PID/cgroup` of a live process in cgroup `id` gave `info`: its gone processes
    /// get the same, so that a rule cannot tell a live process from a gone one. (Only on hybrid
    /// hosts can it differ from the v2 path's classification, where a v1 controller's path
    /// names the container.)
    pub fn learn(&mut self, id: u64, info: CgroupInfo, now_ns: u64) {
        self.learned.insert(id, Learned { info, last_used_ns: now_ns });
    }

    /// Paths cached now.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Whether ids are resolved by file handle (else by walking the tree).
    pub fn uses_handles(&self) -> bool {
        self.mount_fd.is_some()
    }

    fn by_handle(&mut self, id: u64) -> Option<String> {
        let (point, root) = self.mount.as_ref()?;
        let fd = self.mount_fd.as_ref()?;
        match open_by_id(fd, id) {
            Ok(dir) => {
                let at = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir))).ok()?;
                // Removed between the open and the read: the walk will not find it either.
                if at.as_os_str().as_bytes().ends_with(b" (deleted)") {
                    return None;
                }
                cgroup_path(point, root, &at)
            }
            // Refused outright (no privilege, no kernfs export, not a cgroup2 mount): stop
            // trying, the walk serves. A stale or unknown id is just a miss.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP | libc::EINVAL)) => {
                tracing::debug!(error = %e, "cgroup ids: file handles refused, walking the tree instead");
                self.mount_fd = None;
                None
            }
            Err(_) => None,
        }
    }

    /// Walks the tree (rate-limited), caching every directory found; returns `id`'s path.
    fn walk(&mut self, id: u64, now_ns: u64) -> Option<String> {
        if self.last_walk_ns.is_some_and(|t| now_ns.saturating_sub(t) < WALK_EVERY_NS) {
            return None;
        }
        self.last_walk_ns = Some(now_ns);
        let (point, root) = self.mount.clone()?;
        let top = std::fs::metadata(&point).ok()?;
        let mut stack = vec![(point.clone(), top.ino())];
        while let Some((dir, ino)) = stack.pop() {
            if let Some(path) = cgroup_path(&point, &root, &dir) {
                // A renamed cgroup keeps its id: the path is updated. The time of last use is
                // not (refreshing it would keep every live cgroup forever).
                match self.known.get_mut(&ino) {
                    Some(e) => e.path = path,
                    None => {
                        self.known.insert(ino, Entry { path, last_used_ns: now_ns });
                    }
                }
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), e.ino()));
                }
            }
        }
        self.known.get(&id).map(|e| e.path.clone())
    }

    /// Drops paths unused for [`RETAIN_NS`] (checked once a minute): a live cgroup is found
    /// again when needed; a removed one is no longer waited for.
    fn prune(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_prune_ns) < 60_000_000_000 {
            return;
        }
        self.last_prune_ns = now_ns;
        self.known.retain(|_, e| now_ns.saturating_sub(e.last_used_ns) < RETAIN_NS);
        self.learned.retain(|_, e| now_ns.saturating_sub(e.last_used_ns) < RETAIN_NS);
    }
}

impl Default for CgroupPaths {
    fn default() -> Self {
        CgroupPaths::new()
    }
}

/// `struct file_handle` with room for a kernfs id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// Opens the cgroup directory whose kernfs id is `id`, on the mount whose root `mount` is.
fn open_by_id(mount: &std::fs::File, id: u64) -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut handle = KernfsHandle { handle_bytes: 8, handle_type: FILEID_KERNFS, id };
    // SAFETY: `handle` is a valid `struct file_handle` with `handle_bytes` bytes after its
    // header; the mount fd is open for the call's duration; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &mut handle as *mut KernfsHandle,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd, owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd as i32) })
}

/// For tests and diagnostics: the id of the cgroup directory at `path` (its inode).
pub fn id_of(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

#[cfg(test)]
#[path = "cgroup_ids_tests.rs"]
mod tests;
