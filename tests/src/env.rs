//! Environment helpers: BPF gating, paths, randomness, temp dirs, clocks,
//! and redaction of secrets from diagnostic text.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Returns true when this test can exercise eBPF (euid 0 and kernel BTF).
///
/// Otherwise: with `TOKENTAP_REQUIRE_BPF=1` it panics naming what is missing;
/// without it prints `SKIPPED (needs root + BPF): <test name>` straight to
/// stderr (bypassing libtest's capture, so it is visible) and returns false.
pub fn require_bpf() -> bool {
    let name = current_test_name();
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (euid 0)");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("kernel BTF (/sys/kernel/btf/vmlinux)");
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var("TOKENTAP_REQUIRE_BPF").as_deref() == Ok("1") {
        panic!("TOKENTAP_REQUIRE_BPF=1 but {name} cannot run: missing {}", missing.join(" and "));
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED (needs root + BPF): {name} (missing {})", missing.join(" and "));
    false
}

/// libtest names each test's thread after the test.
pub fn current_test_name() -> String {
    std::thread::current().name().unwrap_or("<unnamed test>").to_string()
}

/// The Cargo workspace root (parent of this crate).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate has a parent dir").to_path_buf()
}

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Python interpreter: `TOKENTAP_PYTHON`, else the venv `cargo xtask test` creates, else `python3`.
pub fn python() -> String {
    let venv = workspace_dir().join("target/test-venv/bin/python");
    std::env::var("TOKENTAP_PYTHON").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".to_string()
        }
    })
}

/// Whether to keep per-test temp dirs (`TOKENTAP_KEEP_TMP=1`).
pub fn keep_tmp() -> bool {
    std::env::var("TOKENTAP_KEEP_TMP").as_deref() == Ok("1")
}

/// `n` random bytes as lowercase hex (from /dev/urandom).
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temp dir private to this test binary, created once.
pub fn temp_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        remove_stale_roots();
        let dir = std::env::temp_dir().join(format!("tokentap-e2e-{}-{}", std::process::id(), random_hex(4)));
        std::fs::create_dir_all(&dir).expect("create temp root");
        dir
    })
}

/// Removes `tokentap-e2e-<pid>-*` dirs of earlier test processes that are
/// gone (unless `TOKENTAP_KEEP_TMP=1`).
fn remove_stale_roots() {
    if keep_tmp() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("tokentap-e2e-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Creates a fresh subdirectory of [`temp_root`].
pub fn temp_subdir(prefix: &str) -> PathBuf {
    let dir = temp_root().join(format!("{prefix}-{}", random_hex(4)));
    std::fs::create_dir_all(&dir).expect("create temp subdir");
    dir
}

/// CLOCK_BOOTTIME in nanoseconds (the clock behind /proc/PID/stat starttime).
pub fn boottime_ns() -> u128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// Nanoseconds per clock tick (USER_HZ).
pub fn tick_ns() -> u128 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / (if hz > 0 { hz as u128 } else { 100 })
}

/// Makes the child get `sig` when the spawning *thread* exits.
pub fn set_pdeathsig(cmd: &mut Command, sig: libc::c_int) {
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Removes proxy variables so loopback traffic goes straight to our server.
pub fn no_proxy(cmd: &mut Command) {
    for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        cmd.env_remove(v);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
}

/// Last `n` lines of a file (lossy UTF-8); empty if unreadable.
pub fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Replaces every secret in `text` with `<redacted>`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

/// Finds `prog` in PATH and canonicalizes it.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(prog)).find(|p| p.is_file()).and_then(|p| p.canonicalize().ok())
}
