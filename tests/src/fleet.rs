//! A small fleet on one machine: agents this test starts, stops and restarts itself (each with
//! its own configuration, usage log and metrics port), and a real Prometheus (Debian
//! `prometheus`) scraping them. Every process is stopped by its own pid.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{agent_bin, READY_LINE, READY_TIMEOUT};
use crate::env;

/// One agent of the fleet. Each run writes its own usage log (`runs()`), so what each run
/// metered stays apart; every run writes the agent's one ledger, as a restarted host would.
pub struct FleetAgent {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub ledger: PathBuf,
    /// Where `export.prometheus_listen` serves.
    pub metrics_port: u16,
    child: Option<Child>,
    runs: Vec<PathBuf>,
}

impl FleetAgent {
    /// Starts `tokentap run --config <config_toml>` and waits for its ready line.
    pub fn start(name: &str, dir: &Path, metrics_port: u16, config_toml: &str) -> FleetAgent {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("agent dir");
        let config = dir.join("tokentap.toml");
        std::fs::write(&config, config_toml).expect("write agent config");
        let ledger = dir.join("ledger.db");
        let mut a = FleetAgent { name: name.into(), dir, config, ledger, metrics_port, child: None, runs: Vec::new() };
        a.run();
        a
    }

    fn run(&mut self) {
        let n = self.runs.len() + 1;
        let usage_log = self.dir.join(format!("usage-{n}.jsonl"));
        let stderr = self.dir.join(format!("agent-{n}.stderr"));
        let err = std::fs::File::create(&stderr).expect("agent stderr");
        let out = std::fs::File::create(self.dir.join(format!("agent-{n}.stdout"))).expect("agent stdout");
        let mut cmd = Command::new(agent_bin());
        cmd.arg("run").arg("--usage-log").arg(&usage_log).arg("--ledger").arg(&self.ledger);
        cmd.arg("--config").arg(&self.config);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(key);
        }
        env::set_pdeathsig(&mut cmd, libc::SIGTERM);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn agent {}: {e}", self.name));
        let deadline = Instant::now() + READY_TIMEOUT;
        while !std::fs::read_to_string(&stderr).unwrap_or_default().contains(READY_LINE) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("agent {} exited ({status}) before it was ready:\n{}", self.name, env::tail_lines(&stderr, 30));
            }
            if Instant::now() > deadline {
                kill_and_wait(&mut child, libc::SIGKILL);
                panic!("agent {} not ready within {READY_TIMEOUT:?}:\n{}", self.name, env::tail_lines(&stderr, 30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        self.runs.push(usage_log);
    }

    /// SIGTERM (a clean stop), then waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_wait(&mut c, libc::SIGTERM);
        }
    }

    /// A new run (same configuration and metrics port, a new usage log).
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The usage logs of every run, in order.
    pub fn runs(&self) -> &[PathBuf] {
        &self.runs
    }

    /// The records of run `i` (0-based).
    pub fn records(&self, i: usize) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.runs[i]).unwrap_or_default();
        text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for FleetAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_wait(&mut c, libc::SIGKILL);
        }
    }
}

fn kill_and_wait(child: &mut Child, sig: libc::c_int) {
    // SAFETY: kill(2) of our own child, by its own pid.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real Prometheus scraping `targets` every second, on loopback.
pub struct Prometheus {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Prometheus {
    pub fn start(dir: &Path, targets: &[u16]) -> Prometheus {
        let bin = env::which("prometheus").expect("no `prometheus` binary (Debian package prometheus)");
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let list: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: tokentap\n    \
                 static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .expect("prometheus config");
        let port = crate::collector::free_ports(1)[0];
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        env::set_pdeathsig(&mut cmd, libc::SIGKILL);
        let child = cmd.spawn().expect("spawn prometheus");
        let p = Prometheus { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.get("/-/ready").map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready on port {port}:\n{}",
                env::tail_lines(&p.dir.join("prometheus.log"), 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain HTTP/1.0 GET: (status, body).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// An instant query now: `data.result`.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", percent_encode(promql))).expect("prometheus");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "query {promql}: {}", &body[..body.len().min(300)]);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child, libc::SIGTERM);
        if !env::keep_tmp() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
