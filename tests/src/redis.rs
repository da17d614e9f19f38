//! A real Redis (Debian `redis-server`) for the cluster-entitlement tests: started by the test
//! on a free loopback port, in the test's own directory, with no persistence (a restart loses
//! every key, as a crashed cache would), stopped and restarted on the same port by its own
//! pid, killed on drop.
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env;

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    runs: u32,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub fn start(dir: &Path) -> RedisServer {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let port = free_port();
        let mut r = RedisServer { port, dir, child: None, runs: 0 };
        r.run();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn run(&mut self) {
        // By name, not by canonical path: redis-server is a link to a multi-call binary that
        // picks its role from argv[0].
        env::which("redis-server").expect("no `redis-server` binary (Debian package redis-server)");
        self.runs += 1;
        let log = self.dir.join(format!("redis-{}.log", self.runs));
        let out = self.dir.join(format!("redis-{}.out", self.runs));
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("redis stdout"))
            .stderr(std::fs::File::create(&out).expect("redis stderr"));
        env::set_pdeathsig(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis-server exited ({status}):\n{}\n{}", env::tail_lines(&out, 20), env::tail_lines(&log, 20));
            }
            if self.ping() {
                break;
            }
            if Instant::now() > deadline {
                kill(&mut child);
                panic!("redis-server not answering on port {}:\n{}", self.port, env::tail_lines(&log, 20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Stops the server (SIGKILL: nothing is saved, every key is gone).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// A fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    fn ping(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.cli(&["PING"]).trim() == "PONG"
    }

    /// One command through `redis-cli` (raw output: one value per line).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("--raw")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (Debian package redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A hash as (field, value) pairs.
    pub fn hgetall(&self, key: &str) -> Vec<(String, String)> {
        let out = self.cli(&["HGETALL", key]);
        let lines: Vec<&str> = out.lines().collect();
        lines.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].to_string(), c[1].to_string())).collect()
    }

    /// Milliseconds until the key expires (-1: no expiry, -2: no key).
    pub fn pttl(&self, key: &str) -> i64 {
        self.cli(&["PTTL", key]).trim().parse().expect("PTTL reply")
    }

    /// Calls of one command so far (`INFO commandstats`), e.g. `evalsha`.
    pub fn command_calls(&self, command: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill(child: &mut Child) {
    // SAFETY: kill(2) of our own child, by its own pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait();
}

/// A port free right now on loopback (the kernel's choice).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}
