//! Clients that send a hand-built HTTP/1.1 request over TLS: `gnutls-cli` (GnuTLS) and the
//! test's own rustls program. The request bytes are written by the harness, so the exact
//! request the server answers is known; nothing here prints them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::case::{Case, CHAT_MODEL, SYSTEM_PROMPT};
use crate::clients::{self, ClientRun};
use crate::server::LlmServer;
use crate::{certs, env};

/// The JSON of one chat completion for `case`, streaming with usage or not.
pub fn chat_json(case: &Case, stream: bool) -> Value {
    let mut body = json!({
        "model": CHAT_MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": case.prompt()},
        ],
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// [`chat_json`] serialized: the exact request body.
pub fn chat_body(case: &Case, stream: bool) -> Vec<u8> {
    serde_json::to_vec(&chat_json(case, stream)).expect("json")
}

/// A complete `POST /v1/chat/completions` request that asks the server to close the connection
/// after answering (the client then ends on the server's close).
pub fn chat_request(case: &Case, server: &LlmServer, stream: bool) -> Vec<u8> {
    let body = chat_body(case, stream);
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: */*\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.port,
        case.api_key,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// Path of `gnutls-cli` (canonical), for `exe` checks.
pub fn gnutls_cli_path() -> PathBuf {
    env::which("gnutls-cli")
        .expect("gnutls-cli not found in PATH (apt-get install gnutls-bin; `cargo xtask test` does)")
}

/// Sends `request` with `gnutls-cli` (trusting the test CA) and waits for the server to close.
/// stdin stays open until then: gnutls-cli ends the session as soon as its stdin ends.
/// `gnutls-cli` exits 1 when a server closes without a TLS close_notify (Python's ssl server
/// does), so success is judged from the response status line in its output instead.
pub fn run_gnutls_cli(server: &LlmServer, request: &[u8]) -> ClientRun {
    run_gnutls_cli_gated(server, request, &[], &|| true)
}

/// [`run_gnutls_cli`] with extra environment variables (`LD_LIBRARY_PATH`), writing the
/// request only once `gate` holds (gnutls-cli sends nothing before it reads its stdin).
pub fn run_gnutls_cli_gated(
    server: &LlmServer,
    request: &[u8],
    vars: &[(&str, &std::ffi::OsStr)],
    gate: &dyn Fn() -> bool,
) -> ClientRun {
    let cli = gnutls_cli_path();
    let mut cmd = Command::new(&cli);
    cmd.envs(vars.iter().copied());
    cmd.arg("--x509cafile").arg(&certs::certs().ca).arg("-p").arg(server.port.to_string()).arg("127.0.0.1");
    let mut run = run_with_stdin(cmd, "gnutls-cli", &server.dir, request, gate);
    run.comm = Some("gnutls-cli".to_string());
    run.exe = Some(cli.display().to_string());
    run
}

/// True when `run`'s output holds an `HTTP/1.1 200` status line (the output holds the
/// response: never print it).
pub fn got_http_200(run: &ClientRun) -> bool {
    run.stdout.lines().any(|l| l.starts_with("HTTP/1.1 200 "))
}

/// How long [`run_with_stdin`] waits for its gate (a debug-built agent inspecting the
/// executables of parallel builds can lag by tens of seconds).
const GATE_TIMEOUT: Duration = Duration::from_secs(120);

/// Spawns `cmd` and, once `gate` holds, writes `input` on a stdin kept open until the process
/// exits; stdout and stderr go to files in `dir`.
pub fn run_with_stdin(cmd: Command, what: &str, dir: &Path, input: &[u8], gate: &dyn Fn() -> bool) -> ClientRun {
    let mut spawned = clients::spawn(cmd, what, dir, Stdio::piped());
    let pid = spawned.child.id();
    let mut stdin = spawned.child.stdin.take().expect("piped stdin");
    while !gate() {
        if spawned.spawned_at.elapsed() > GATE_TIMEOUT {
            // SAFETY: kill(2) of our own child by pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = spawned.child.wait();
            panic!("{what} (pid {pid}): the condition to start sending never held");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stdin.write_all(input).unwrap_or_else(|e| panic!("{what}: writing stdin failed: {e}"));
    let run = spawned.finish();
    drop(stdin);
    run
}

/// [`Case::check_all`] for a client of another TLS stack: pairs records with the server's log
/// entries in order and checks each, including `tls_library`.
pub fn check_all_library(case: &Case, server: &LlmServer, recs: &[serde_json::Value], run: &ClientRun, library: &str) {
    let entries = server.entries();
    assert_eq!(
        entries.len(),
        recs.len(),
        "server answered {} request(s), agent wrote {} record(s)",
        entries.len(),
        recs.len()
    );
    for (rec, entry) in recs.iter().zip(&entries) {
        let exp = crate::Expected::from_entry(entry, server.port)
            .with_process(run.pid, run.comm.as_deref(), run.exe.as_deref())
            .with_library(library);
        case.check(rec, &exp);
    }
}
