//! Client processes: the Python SDK clients in `fixtures/` and curl.
//!
//! Output goes to files in the server's temp dir; nothing a client prints is
//! echoed by the harness except (redacted) stderr tails on failure.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::LlmServer;
use crate::{certs, env};

/// Upper bound for one client process.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug)]
pub struct ClientRun {
    /// What ran (script or program name, no arguments).
    pub what: String,
    /// Pid of the process that did the TLS calls.
    pub pid: u32,
    /// `/proc/PID/comm` as the client saw it (python) or "curl".
    pub comm: Option<String>,
    /// `/proc/PID/exe` target as the client saw it (python) or curl's path.
    pub exe: Option<String>,
    /// `/proc/PID/stat` starttime (clock ticks since boot), python only.
    pub starttime_ticks: Option<u64>,
    /// When the harness spawned it.
    pub spawned_at: Instant,
    pub status: ExitStatus,
    /// stdout (python: identity line; curl: `-w` output). No payloads.
    pub stdout: String,
    /// Last stderr lines, unredacted: callers must redact before printing.
    pub stderr_tail: String,
}

impl ClientRun {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// A client process whose stdout and stderr go to files under a test's dir.
pub struct Spawned {
    pub child: Child,
    pub what: String,
    pub spawned_at: Instant,
    out_path: PathBuf,
    err_path: PathBuf,
}

/// Spawns `cmd` (no proxy, killed with the harness) with `stdin`, its output in files under
/// `dir` named after `what`.
pub fn spawn(mut cmd: Command, what: &str, dir: &Path, stdin: Stdio) -> Spawned {
    let tag = format!("{}-{}", what.replace(['/', '.', ' '], "_"), env::random_hex(3));
    let out_path = dir.join(format!("{tag}.stdout"));
    let err_path = dir.join(format!("{tag}.stderr"));
    let out = std::fs::File::create(&out_path).expect("create client stdout");
    let err = std::fs::File::create(&err_path).expect("create client stderr");
    env::no_proxy(&mut cmd);
    cmd.stdin(stdin).stdout(out).stderr(err);
    env::set_pdeathsig(&mut cmd, libc::SIGKILL);
    let spawned_at = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    Spawned { child, what: what.to_string(), spawned_at, out_path, err_path }
}

impl Spawned {
    /// Waits for the process (see [`wait`]) and collects what it printed.
    pub fn finish(mut self) -> ClientRun {
        let status = wait(&mut self.child, &self.what, self.spawned_at);
        ClientRun {
            what: self.what,
            pid: self.child.id(),
            comm: None,
            exe: None,
            starttime_ticks: None,
            spawned_at: self.spawned_at,
            status,
            stdout: std::fs::read_to_string(&self.out_path).unwrap_or_default(),
            stderr_tail: env::tail_lines(&self.err_path, 10),
        }
    }
}

/// Waits for `child`, killing it after [`CLIENT_TIMEOUT`].
pub fn wait(child: &mut Child, what: &str, spawned_at: Instant) -> ExitStatus {
    let deadline = spawned_at + CLIENT_TIMEOUT;
    loop {
        if let Some(s) = child.try_wait().expect("wait for client") {
            return s;
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) of our own child by pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            panic!("{what} (pid {}) did not finish within {}s", child.id(), CLIENT_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one client process to completion, its output in files under `dir`.
pub fn run(cmd: Command, what: &str, dir: &Path) -> ClientRun {
    spawn(cmd, what, dir, Stdio::null()).finish()
}

/// Fills in the identity (pid, comm, exe, start time) a client printed as its first stdout
/// line (`fixtures/client_common.py` `announce`, or the Node client's equivalent).
pub fn adopt_identity(run: &mut ClientRun) {
    if let Some(id) = run.stdout.lines().next().and_then(|l| serde_json::from_str::<Value>(l).ok()) {
        if let Some(pid) = id.get("pid").and_then(Value::as_u64) {
            run.pid = pid as u32;
        }
        run.comm = id.get("comm").and_then(Value::as_str).map(String::from);
        run.exe = id.get("exe").and_then(Value::as_str).map(String::from);
        run.starttime_ticks = id.get("starttime_ticks").and_then(Value::as_u64);
    }
}

/// Runs `fixtures/<script>` with the test Python and fills in the identity
/// the client printed on its first stdout line.
pub fn run_python(script: &str, args: &[OsString], dir: &Path) -> ClientRun {
    run_python_with(script, args, dir, &[])
}

/// [`run_python`] behind a command `prefix` that ends by exec'ing its arguments (`env VAR=x`,
/// `unshare … sh -c '…; exec "$@"'`), so the client keeps the pid the prefix started with.
pub fn run_python_with(script: &str, args: &[OsString], dir: &Path, prefix: &[OsString]) -> ClientRun {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(env::python());
            c
        }
        None => Command::new(env::python()),
    };
    cmd.arg(env::fixtures_dir().join(script))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONWARNINGS", "ignore")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL");
    let mut run = run(cmd, script, dir);
    adopt_identity(&mut run);
    run
}

fn sdk_args(base_url: String, key: &str, scenario: &str, prompt: Option<&Path>) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--base-url".into(),
        base_url.into(),
        "--ca".into(),
        certs::certs().ca.clone().into(),
        "--api-key".into(),
        key.into(),
        "--scenario".into(),
        scenario.into(),
    ];
    if let Some(p) = prompt {
        a.push("--prompt-file".into());
        a.push(p.into());
    }
    a
}

/// `openai_client.py --scenario NAME` against `server`.
pub fn run_openai(server: &LlmServer, key: &str, scenario: &str, prompt: Option<&Path>) -> ClientRun {
    run_openai_with(server, key, scenario, prompt, &[])
}

/// [`run_openai`] behind a command prefix (see [`run_python_with`]).
pub fn run_openai_with(
    server: &LlmServer,
    key: &str,
    scenario: &str,
    prompt: Option<&Path>,
    prefix: &[OsString],
) -> ClientRun {
    let args = sdk_args(server.openai_base_url(), key, scenario, prompt);
    run_python_with("openai_client.py", &args, &server.dir, prefix)
}

/// `anthropic_client.py --scenario NAME` against `server`.
pub fn run_anthropic(server: &LlmServer, key: &str, scenario: &str, prompt: Option<&Path>) -> ClientRun {
    let args = sdk_args(server.origin(), key, scenario, prompt);
    run_python("anthropic_client.py", &args, &server.dir)
}

/// Path of the curl binary (canonical), for `exe` checks.
pub fn curl_path() -> PathBuf {
    env::which("curl").unwrap_or_else(|| PathBuf::from("/usr/bin/curl"))
}

/// Runs `curl --http1.1 -sS --cacert CA <args>`; response bodies must be sent
/// to files by the caller (`-o`), `-w '%{http_code}\n'` goes to `stdout`.
pub fn run_curl(server: &LlmServer, args: &[OsString]) -> ClientRun {
    let curl = curl_path();
    let mut cmd = Command::new(&curl);
    cmd.arg("--http1.1").arg("-sS").arg("--cacert").arg(&certs::certs().ca).arg("-w").arg("%{http_code}\n").args(args);
    let mut run = run(cmd, "curl", &server.dir);
    run.comm = Some("curl".to_string());
    run.exe = Some(curl.display().to_string());
    run
}

/// POSTs `body` (JSON) to `path` with curl, bearer `key` in a header file.
pub fn curl_post_json(server: &LlmServer, path: &str, key: &str, body: &Value, extra: &[&str]) -> ClientRun {
    let tag = env::random_hex(4);
    let headers = server.dir.join(format!("curl-headers-{tag}"));
    let body_path = server.dir.join(format!("curl-body-{tag}.json"));
    let resp = server.dir.join(format!("curl-response-{tag}"));
    std::fs::write(&headers, format!("Authorization: Bearer {key}\nContent-Type: application/json\n"))
        .expect("write curl headers");
    std::fs::write(&body_path, serde_json::to_vec(body).expect("json")).expect("write body");
    let mut args: Vec<OsString> = vec![
        "-H".into(),
        format!("@{}", headers.display()).into(),
        "--data-binary".into(),
        format!("@{}", body_path.display()).into(),
        "-o".into(),
        resp.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args.push(format!("{}{path}", server.origin()).into());
    run_curl(server, &args)
}

/// GETs each of `paths` in one curl process (one keep-alive connection).
pub fn curl_get(server: &LlmServer, paths: &[&str]) -> ClientRun {
    let mut args: Vec<OsString> = Vec::new();
    for p in paths {
        args.push("-o".into());
        args.push(server.dir.join(format!("curl-get-{}", env::random_hex(4))).into());
        args.push(format!("{}{p}", server.origin()).into());
    }
    run_curl(server, &args)
}
