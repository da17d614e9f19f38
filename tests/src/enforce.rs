//! A keep-alive client driven one request at a time (`fixtures/enforce_client.py`), for tests
//! that stop, signal or cut a client mid-way and must see exactly what it saw.
use std::{
    ffi::OsString,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::Duration,
};

use serde_json::Value;

use crate::{certs, env, LlmServer};

pub struct DrivenClient {
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl DrivenClient {
    /// Starts the client behind a command `prefix` (e.g. a cgroup's), against `server`.
    pub fn start(server: &LlmServer, prefix: &[OsString]) -> DrivenClient {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env::python());
                c
            }
            None => Command::new(env::python()),
        };
        cmd.arg(env::fixtures_dir().join("enforce_client.py"))
            .arg("--port")
            .arg(server.port.to_string())
            .arg("--ca")
            .arg(&certs::certs().ca)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        env::no_proxy(&mut cmd);
        env::set_pdeathsig(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().expect("spawn enforce_client.py");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut c = DrivenClient { pid: child.id(), child, stdin, lines };
        let first = c.line(Duration::from_secs(30)).expect("enforce_client.py announces its pid");
        let pid = serde_json::from_str::<Value>(&first).ok().and_then(|v| v["pid"].as_u64()).expect("pid line");
        c.pid = pid as u32;
        c
    }

    /// Sends a command line (`req`, `close`).
    pub fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("client stdin open");
        writeln!(stdin, "{cmd}").expect("write to client");
        stdin.flush().expect("flush client stdin");
    }

    /// The next line the client printed, within `timeout`.
    pub fn line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next result line, parsed.
    pub fn result(&mut self, timeout: Duration) -> Option<Value> {
        self.line(timeout).map(|l| serde_json::from_str(&l).expect("client prints JSON"))
    }

    /// One request, its result.
    pub fn request(&mut self) -> Value {
        self.send("req");
        self.result(Duration::from_secs(60)).expect("client answered")
    }

    /// The process's state letter in `/proc/PID/stat` (`T`: stopped), `None` once gone.
    pub fn state(&self) -> Option<char> {
        proc_state(self.pid)
    }

    /// Waits for the process to exit; its wait status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// The state letter of a process (`R`, `S`, `T`, ...), `None` once gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// Waits until `pid` is in state `want` (or gone, `None`).
pub fn wait_state(pid: u32, want: Option<char>, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if proc_state(pid) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

impl Drop for DrivenClient {
    fn drop(&mut self) {
        // Never leave a process stopped: continue it, then end it.
        // SAFETY: kill(2) of our own child by pid.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGCONT);
            libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
        }
        self.stdin.take();
        let _ = self.child.wait();
    }
}
