//! The shared tokentap agent: one per test binary, started on first use.
//!
//! It is spawned from a dedicated thread that never exits, with
//! `PR_SET_PDEATHSIG = SIGTERM`, so it dies exactly when the test process
//! does (PDEATHSIG fires when the spawning *thread* exits).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::env;

/// Line the agent prints on stderr once its probes are attached.
pub const READY_LINE: &str = "tokentap: capture ready";
/// How long to wait for [`READY_LINE`].
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Agent {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub usage_log: PathBuf,
    /// This agent's own ledger (`--ledger`), never shared with another agent.
    pub ledger: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub pid: u32,
    /// When the harness saw the ready line (monotonic).
    pub ready_at: Instant,
    /// Same moment on CLOCK_BOOTTIME, comparable with /proc starttime.
    pub ready_boottime_ns: u128,
    child: Mutex<Child>,
}

static AGENT: OnceLock<Result<Agent, String>> = OnceLock::new();
static CONFIG: OnceLock<String> = OnceLock::new();
static ENV: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Environment variables for this test binary's agent (e.g. the standard `OTEL_*` ones). Call
/// it before the first [`agent`] call in every test of the binary (the first call wins).
pub fn configure_env(vars: &[(&str, &str)]) {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let set = ENV.get_or_init(|| vars.clone());
    assert_eq!(set, &vars, "one agent environment per test binary");
}

/// Gives this test binary's agent a configuration file with `toml` as its content. Call it
/// before the first [`agent`] call in every test of the binary (the first call wins).
pub fn configure(toml: &str) {
    let set = CONFIG.get_or_init(|| toml.to_string());
    assert_eq!(set, toml, "one agent configuration per test binary");
}

/// The shared agent, started (and waited for) on first call. A failed start
/// is remembered, so every later test fails fast with the same message.
pub fn agent() -> &'static Agent {
    match AGENT.get_or_init(start) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

/// `TOKENTAP_BIN`, else `<workspace>/target/debug/tokentap`.
pub fn agent_bin() -> PathBuf {
    match std::env::var_os("TOKENTAP_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => env::workspace_dir().join("target/debug/tokentap"),
    }
}

fn start() -> Result<Agent, String> {
    let bin = agent_bin();
    if !bin.is_file() {
        return Err(format!(
            "agent binary not found at {} (set TOKENTAP_BIN, or run `cargo xtask test`)",
            bin.display()
        ));
    }
    let dir = env::temp_subdir("agent");
    let usage_log = dir.join("usage.jsonl");
    let ledger = dir.join("ledger.db");
    let stdout = dir.join("agent.stdout");
    let stderr = dir.join("agent.stderr");
    let out = std::fs::File::create(&stdout).map_err(|e| format!("create {stdout:?}: {e}"))?;
    let err = std::fs::File::create(&stderr).map_err(|e| format!("create {stderr:?}: {e}"))?;

    let mut cmd = Command::new(&bin);
    cmd.arg("run")
        .arg("--usage-log")
        .arg(&usage_log)
        .arg("--ledger")
        .arg(&ledger)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // The test process's own OTEL_* settings must not leak into the agent under test.
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    if let Some(vars) = ENV.get() {
        cmd.envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    if let Some(toml) = CONFIG.get() {
        let path = dir.join("tokentap.toml");
        std::fs::write(&path, toml).map_err(|e| format!("write {path:?}: {e}"))?;
        cmd.arg("--config").arg(path);
    }
    env::set_pdeathsig(&mut cmd, libc::SIGTERM);

    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tokentap-agent-parent".into())
        .spawn(move || {
            let _ = tx.send(cmd.spawn());
            // Must never exit: the agent's PDEATHSIG is bound to this thread.
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("spawn agent parent thread: {e}"))?;
    let mut child = rx
        .recv()
        .map_err(|e| format!("agent parent thread: {e}"))?
        .map_err(|e| format!("failed to spawn agent {}: {e}", bin.display()))?;
    let pid = child.id();

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let text = std::fs::read(&stderr).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains(READY_LINE) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "agent {} exited ({status}) before printing {READY_LINE:?}; stderr tail:\n{}",
                bin.display(),
                env::tail_lines(&stderr, 30)
            ));
        }
        if Instant::now() >= deadline {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
            return Err(format!(
                "agent {} did not print {READY_LINE:?} within {}s; stderr tail:\n{}",
                bin.display(),
                READY_TIMEOUT.as_secs(),
                env::tail_lines(&stderr, 30)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Agent {
        bin,
        dir,
        usage_log,
        ledger,
        stdout,
        stderr,
        pid,
        ready_at: Instant::now(),
        ready_boottime_ns: env::boottime_ns(),
        child: Mutex::new(child),
    })
}

impl Agent {
    /// "running" or how it exited.
    pub fn status(&self) -> String {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.try_wait() {
            Ok(None) => "running".to_string(),
            Ok(Some(s)) => format!("exited ({s})"),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Last `n` lines of the agent's stderr, with `secrets` redacted.
    pub fn stderr_tail(&self, n: usize, secrets: &[String]) -> String {
        env::redact(&env::tail_lines(&self.stderr, n), secrets)
    }

    /// Everything the agent wrote: usage log, stdout, stderr.
    pub fn outputs(&self) -> [&Path; 3] {
        [&self.usage_log, &self.stdout, &self.stderr]
    }
}
