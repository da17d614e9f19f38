//! Finding every TLS stack on the host, once per file: shared libraries (at start in the
//! standard directories and every running process, containers included, later as processes
//! open them) and executables with a TLS stack of their own (at start and at each exec).
pub mod exe;
pub mod procmaps;

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::capture::{probes, Capture, TlsLibrary};

/// Directories whose TLS library files (libssl, libgnutls) are probed up front, so that any process started later
/// that loads one is covered from its first call, with no race against its startup.
pub const STANDARD_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/local/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// How long after an exec the new process's maps are looked at again (its loader needs time).
const EXEC_RESCANS: &[Duration] = &[Duration::from_millis(200), Duration::from_secs(2)];

#[derive(Debug, Clone)]
pub struct AttachedLibrary {
    pub path: PathBuf,
    pub library: TlsLibrary,
    pub probes: usize,
    pub missing_optional: Vec<&'static str>,
}

pub struct Discovery {
    /// (device, inode, size, mtime) of every file already considered: uprobes live on the
    /// inode, so one attach covers every process and container that maps the same file. Size
    /// and mtime let a file that failed while still being written be tried again once complete.
    seen: HashSet<(u64, u64, u64, i64)>,
    attached_inodes: HashSet<(u64, u64)>,
    pub attached: Vec<AttachedLibrary>,
    pub failures: usize,
    /// (device, inode) of every executable already inspected.
    executables_seen: HashSet<(u64, u64)>,
    /// Executables with probes, and which stack.
    pub attached_executables: Vec<(PathBuf, exe::ExeProbes)>,
    /// Executables with a TLS stack of their own that got no probes (each logged once).
    pub unprobed_executables: usize,
    rescans: HashMap<u32, Vec<Instant>>,
}

impl Default for Discovery {
    fn default() -> Self {
        Self::new()
    }
}

impl Discovery {
    pub fn new() -> Self {
        Discovery {
            seen: HashSet::new(),
            attached_inodes: HashSet::new(),
            attached: Vec::new(),
            failures: 0,
            executables_seen: HashSet::new(),
            attached_executables: Vec::new(),
            unprobed_executables: 0,
            rescans: HashMap::new(),
        }
    }

    /// Probes `path` (as the agent sees it) unless its file is already probed.
    pub fn consider(&mut self, capture: &mut Capture, path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if !meta.is_file() || !self.seen.insert((meta.dev(), meta.ino(), meta.size(), meta.mtime())) {
            return;
        }
        if self.attached_inodes.contains(&(meta.dev(), meta.ino())) {
            return;
        }
        // The file name tells the library: the same name in a container or a vendored copy.
        let (library, table) = match procmaps::library_kind(path) {
            Some(procmaps::LibraryKind::OpenSsl) => (TlsLibrary::OpenSsl, probes::OPENSSL),
            Some(procmaps::LibraryKind::GnuTls) => (TlsLibrary::GnuTls, probes::GNUTLS),
            None => return,
        };
        match capture.attach_library(path, table) {
            Ok((probes, missing_optional)) => {
                self.attached_inodes.insert((meta.dev(), meta.ino()));
                let name = match library {
                    TlsLibrary::GnuTls => "GnuTLS",
                    _ => "OpenSSL",
                };
                tracing::info!(library = %path.display(), probes, ?missing_optional, "attached {name} probes");
                self.attached.push(AttachedLibrary { path: path.to_path_buf(), library, probes, missing_optional });
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(library = %path.display(), error = %e, "not probing this library");
            }
        }
    }

    pub fn scan_standard_dirs(&mut self, capture: &mut Capture) {
        for dir in STANDARD_DIRS {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| procmaps::is_tls_library(p)).collect();
            paths.sort();
            for path in paths {
                self.consider(capture, &path);
            }
        }
    }

    pub fn scan_process(&mut self, capture: &mut Capture, pid: u32) {
        self.consider_executable(capture, pid);
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return };
        for path in procmaps::tls_library_paths(&maps) {
            self.consider(capture, &stable_path(pid, &path));
        }
    }

    pub fn scan_all_processes(&mut self, capture: &mut Capture) {
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        let me = std::process::id();
        for entry in entries.filter_map(|e| e.ok()) {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if pid != me {
                    self.scan_process(capture, pid);
                }
            }
        }
    }

    /// A process opened a `libssl.so*` or `libgnutls.so*` file: probe it now, before the library's first call.
    pub fn on_lib_open(&mut self, capture: &mut Capture, pid: u32, path: &str) {
        self.consider(capture, &stable_path(pid, Path::new(path)));
    }

    /// Inspects the program process `pid` runs, once per executable file.
    pub fn consider_executable(&mut self, capture: &mut Capture, pid: u32) {
        let path = PathBuf::from(format!("/proc/{pid}/exe"));
        let Ok(meta) = std::fs::metadata(&path) else { return };
        let inode = (meta.dev(), meta.ino());
        if !meta.is_file() || !self.executables_seen.insert(inode) {
            return;
        }
        // The probes outlive the process: attach through a stable name of the same file when
        // one is visible from here, else through the process's own link.
        let target = std::fs::read_link(&path)
            .ok()
            .map(|p| stable_path(pid, &p))
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino()))
            .unwrap_or(path);
        self.inspect_executable(capture, &target, inode);
    }

    /// JavaScript runtimes and CLIs with a TLS stack of their own, probed at start where they
    /// are usually installed (see [`exe::runtimes`]): a program's first process after the agent
    /// starts is otherwise inspected only at its exec, and its first calls can outrun the attach.
    pub fn scan_known_runtimes(&mut self, capture: &mut Capture) {
        for path in exe::runtimes::candidates(Path::new("/")) {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let inode = (meta.dev(), meta.ino());
            if self.executables_seen.insert(inode) {
                self.inspect_executable(capture, &path, inode);
            }
        }
    }

    /// Hands one executable file to every stack's module; counts it when it has a TLS stack
    /// of its own but nothing attached.
    fn inspect_executable(&mut self, capture: &mut Capture, target: &Path, inode: (u64, u64)) {
        let target = target.to_path_buf();
        let executable = match exe::Executable::open(&target) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(exe = %target.display(), error = %e, "cannot read executable");
                self.executables_seen.remove(&inode);
                return;
            }
        };
        let started = Instant::now();
        let mut probed = false;
        for result in exe::attach_all(capture, &executable) {
            probed |= result.is_ok();
            match result {
                Ok(found) => {
                    let ms = started.elapsed().as_millis() as u64;
                    tracing::info!(exe = %target.display(), library = found.library.as_str(), probes = found.probes, missing_optional = ?found.missing_optional, ms, "attached probes to executable");
                    self.attached_executables.push((target.clone(), found));
                }
                Err(e) => {
                    self.failures += 1;
                    // Usually the process was gone before its probes were placed (a short Go
                    // program can finish within the ~10-30 ms that takes, and its
                    // /proc/PID/root path goes with it): let its next exec try again.
                    self.executables_seen.remove(&inode);
                    tracing::warn!(exe = %target.display(), error = %crate::errors::chain(&e), "not probing this executable");
                }
            }
        }
        if !probed {
            if let Some(evidence) = exe::unprobed::tls_evidence(&exe::unprobed::data_regions(&executable)) {
                self.unprobed_executables += 1;
                tracing::warn!(exe = %target.display(), stack = evidence.stack, h2 = evidence.h2, "executable has its own TLS stack but no probes: its calls are not metered");
            }
        }
    }

    pub fn on_exec(&mut self, pid: u32, now: Instant) {
        self.rescans.insert(pid, EXEC_RESCANS.iter().map(|d| now + *d).collect());
    }

    pub fn on_exit(&mut self, pid: u32) {
        self.rescans.remove(&pid);
    }

    /// Runs the exec rescans that are due.
    pub fn tick(&mut self, capture: &mut Capture, now: Instant) {
        let due: Vec<u32> = self
            .rescans
            .iter()
            .filter(|(_, times)| times.first().is_some_and(|t| *t <= now))
            .map(|(p, _)| *p)
            .collect();
        for pid in due {
            if let Some(times) = self.rescans.get_mut(&pid) {
                times.remove(0);
                if times.is_empty() {
                    self.rescans.remove(&pid);
                }
            }
            self.scan_process(capture, pid);
        }
    }
}

/// The path through which to attach to a file that process `pid` names `path`: that very name
/// when it reaches the same file from the agent's mount namespace (the probes then do not
/// depend on the process, which may exit before the attach is done: a short-lived client
/// would otherwise leave its executable unprobed for good), else the way through
/// `/proc/PID/root` (containers).
fn stable_path(pid: u32, path: &Path) -> PathBuf {
    let via_proc = procmaps::host_path(pid, path);
    if path.is_absolute() {
        if let (Ok(a), Ok(b)) = (std::fs::metadata(path), std::fs::metadata(&via_proc)) {
            if a.dev() == b.dev() && a.ino() == b.ino() {
                return path.to_path_buf();
            }
        }
    }
    via_proc
}
