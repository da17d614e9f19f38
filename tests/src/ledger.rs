//! Ledger tests' helpers: an agent process of the test's own (not the shared one: these tests
//! kill, restart and starve it), its Prometheus health gauges, and the ledger's `calls` rows
//! read back with SQLite.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{agent_bin, READY_LINE, READY_TIMEOUT};
use crate::collector::free_ports;
use crate::{env, records};

/// An agent started by one test, with its own usage log, ledger and metrics port.
pub struct OwnAgent {
    pub dir: PathBuf,
    pub ledger: PathBuf,
    pub usage_log: PathBuf,
    pub stderr: PathBuf,
    pub prom_port: u16,
    pub pid: u32,
    child: Option<Child>,
}

impl OwnAgent {
    /// Starts `tokentap run --ledger LEDGER` (files in `dir`, stderr appended to across
    /// restarts) and waits for its ready line.
    pub fn start(dir: &Path, ledger: &Path) -> OwnAgent {
        let prom_port = free_ports(1)[0];
        let config = dir.join("tokentap.toml");
        std::fs::write(&config, format!("[export]\nprometheus_listen = \"127.0.0.1:{prom_port}\"\n"))
            .expect("write agent config");
        let usage_log = dir.join("usage.jsonl");
        let stderr = dir.join("agent.stderr");
        let err = std::fs::OpenOptions::new().create(true).append(true).open(&stderr).expect("agent stderr");
        let offset = err.metadata().map_or(0, |m| m.len());
        let mut cmd = Command::new(agent_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--usage-log")
            .arg(&usage_log)
            .arg("--ledger")
            .arg(ledger)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        env::set_pdeathsig(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start the agent: {e}"));
        let pid = child.id();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = std::fs::read(&stderr).unwrap_or_default();
            let start = (offset as usize).min(text.len());
            if String::from_utf8_lossy(&text[start..]).contains(READY_LINE) {
                break;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agent not ready ({exited:?}); stderr tail:\n{}", env::tail_lines(&stderr, 30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnAgent {
            dir: dir.to_path_buf(),
            ledger: ledger.to_path_buf(),
            usage_log,
            stderr,
            prom_port,
            pid,
            child: Some(child),
        }
    }

    /// `kill -9`: nothing is flushed.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit (the last batch is committed).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let status = child.wait().expect("wait for the agent");
            assert!(status.success(), "agent exited with {status}; stderr:\n{}", env::tail_lines(&self.stderr, 20));
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// This agent's usage records for `port`.
    pub fn records(&self, port: u16) -> Vec<Value> {
        let (all, _) = records::read_records_from(&self.usage_log, 0);
        all.into_iter().filter(|r| r["server_port"].as_u64() == Some(u64::from(port))).collect()
    }

    /// Waits until the usage log holds `n` records for `port`.
    pub fn wait_records(&self, port: u16, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} usage records for port {port}"), Duration::from_secs(60), || {
            let r = self.records(port);
            (r.len() >= n).then_some(r)
        })
    }

    /// The value of an unlabelled Prometheus sample `name` (e.g. `tokentap_agent_ledger_healthy`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = scrape(self.prom_port).ok()?;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let bare = series.split('{').next()?;
            (bare == name).then(|| value.parse().ok()).flatten()
        })
    }

    /// Lines of this agent's stderr containing `needle`.
    pub fn log_lines(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.stderr).unwrap_or_default().lines().filter(|l| l.contains(needle)).count()
    }
}

impl Drop for OwnAgent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The Prometheus exposition an agent serves on `127.0.0.1:port` (`[export] prometheus_listen`).
pub fn scrape(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Polls `f` until it returns `Some`, or panics naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {}s waiting for {what}", timeout.as_secs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `calls` row, the fields the tests compare with the server's log.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    pub ts_ns: i64,
    pub server_port: u16,
    pub provider: String,
    pub operation: String,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_source: String,
    pub http_status: u16,
    pub error_type: Option<String>,
    pub pid: u32,
    pub comm: String,
    pub host: String,
    pub priced_model: Option<String>,
    pub cost_pusd: Option<i64>,
    pub pricing_version: String,
}

/// The `calls` rows for `port`, oldest first, read without writing anything (read-only URI).
pub fn calls(ledger: &Path, port: u16) -> Vec<CallRow> {
    let conn = read_only(ledger);
    let mut stmt = conn
        .prepare(
            "SELECT ts_ns, server_port, provider, operation, request_model, response_model, input_tokens,
                output_tokens, cached_input_tokens, reasoning_tokens, usage_source, http_status, pid, comm,
                host, priced_model, cost_pusd, pricing_version, error_type
             FROM calls WHERE server_port = ?1 ORDER BY ts_ns, id",
        )
        .expect("prepare");
    let rows = stmt
        .query_map([port], |r| {
            Ok(CallRow {
                ts_ns: r.get(0)?,
                server_port: r.get(1)?,
                provider: r.get(2)?,
                operation: r.get(3)?,
                request_model: r.get(4)?,
                response_model: r.get(5)?,
                input_tokens: r.get(6)?,
                output_tokens: r.get(7)?,
                cached_input_tokens: r.get(8)?,
                reasoning_tokens: r.get(9)?,
                usage_source: r.get(10)?,
                http_status: r.get(11)?,
                pid: r.get(12)?,
                comm: r.get(13)?,
                host: r.get(14)?,
                priced_model: r.get(15)?,
                cost_pusd: r.get(16)?,
                pricing_version: r.get(17)?,
                error_type: r.get(18)?,
            })
        })
        .expect("query calls");
    rows.collect::<Result<_, _>>().expect("read calls")
}

/// A read-only connection (the writer may be running: WAL lets both be).
pub fn read_only(ledger: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", ledger.display()))
}

/// `PRAGMA integrity_check` of a ledger.
pub fn integrity(ledger: &Path) -> String {
    read_only(ledger).query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check")
}

/// A tmpfs of `size` mounted at `dir` (created), unmounted when dropped.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("create mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tokentap-test"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { dir: dir.to_path_buf() }
    }

    /// Writes a file until the file system is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill tmpfs: {e}"),
            }
        }
        // Small writes too, down to the last free byte.
        while let Ok(n) = f.write(&[0u8; 512]) {
            if n == 0 {
                break;
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: an agent still holding the file must not keep the mount alive forever.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
