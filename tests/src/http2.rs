//! HTTP/2 clients for the e2e tests: `curl --http2` and `fixtures/httpx_client.py`
//! (httpx with `http2=True`), and checks that need no ordering between concurrent streams.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::SystemTime;

use serde_json::Value;

use crate::case::Case;
use crate::clients::{self, ClientRun};
use crate::expect::{record_mismatches, Expected};
use crate::raw_tls::chat_json;
use crate::{certs, env, LlmServer};

/// `httpx_client.py` arguments for `scenario` against `server`.
fn httpx_args(case: &Case, server: &LlmServer, scenario: &str) -> Vec<OsString> {
    vec![
        "--base-url".into(),
        server.openai_base_url().into(),
        "--ca".into(),
        certs::certs().ca.clone().into(),
        "--api-key".into(),
        case.api_key.clone().into(),
        "--scenario".into(),
        scenario.into(),
        "--prompt-file".into(),
        case.prompt_file(server).into(),
    ]
}

/// Runs an `httpx_client.py` scenario to completion; panics unless it succeeded.
pub fn httpx(case: &Case, server: &LlmServer, scenario: &str) -> ClientRun {
    let run = clients::run_python("httpx_client.py", &httpx_args(case, server, scenario), &server.dir);
    case.expect_ok(&run);
    run
}

/// A chat completion with `curl --http2` (plain, or streaming with usage); asserts HTTP 200.
pub fn curl_chat(case: &Case, server: &LlmServer, stream: bool, extra: &[&str]) -> ClientRun {
    let body = chat_json(case, stream);
    // run_curl puts --http1.1 first; curl takes the last HTTP version option given.
    let mut args = vec!["--http2"];
    args.extend_from_slice(extra);
    let run = clients::curl_post_json(server, "/v1/chat/completions", &case.api_key, &body, &args);
    case.expect_ok(&run);
    assert_eq!(run.stdout.trim(), "200", "curl chat HTTP status");
    run
}

/// Panics unless every exchange the server logged went over HTTP/2.
pub fn assert_all_http2(server: &LlmServer) {
    let entries = server.entries();
    assert!(!entries.is_empty(), "server logged no exchange");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.http_version(), Some("2"), "exchange #{i} was not served over HTTP/2");
    }
}

/// Like `Case::check_all`, but pairs records with server entries by content, not by order:
/// concurrent streams complete in any order. Each entry must match exactly one record.
pub fn check_unordered(case: &Case, server: &LlmServer, recs: &[Value], client: &ClientRun, since: SystemTime) {
    let entries = server.entries();
    assert_eq!(
        entries.len(),
        recs.len(),
        "server answered {} call(s), agent wrote {} record(s)",
        entries.len(),
        recs.len()
    );
    let secrets = case.secrets();
    let mut used = vec![false; recs.len()];
    for (i, e) in entries.iter().enumerate() {
        let exp = Expected::from_entry(e, server.port).with_process(
            client.pid,
            client.comm.as_deref(),
            client.exe.as_deref(),
        );
        let found =
            (0..recs.len()).find(|&j| !used[j] && record_mismatches(&recs[j], &exp, since, &secrets).is_empty());
        match found {
            Some(j) => used[j] = true,
            None => {
                // Report the mismatches against the first unused record (no payloads in them).
                let j = used.iter().position(|u| !u).unwrap_or(0);
                let bad = record_mismatches(&recs[j], &exp, since, &secrets);
                panic!("server entry #{i} matches no record; against record #{j}:\n  {}", bad.join("\n  "));
            }
        }
    }
}

/// `httpx_client.py --scenario late`, left running after its first call: the test starts the
/// agent, then lets it go on ([`LateClient::go`]).
pub struct LateClient {
    pub run: ClientRun,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl LateClient {
    /// Starts the client and returns once its first call is done ("ready").
    pub fn start(case: &Case, server: &LlmServer) -> LateClient {
        let stderr = server.dir.join("httpx-late.stderr");
        let err = std::fs::File::create(&stderr).expect("create client stderr");
        let mut cmd = Command::new(env::python());
        cmd.arg(env::fixtures_dir().join("httpx_client.py"))
            .args(httpx_args(case, server, "late"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err);
        env::no_proxy(&mut cmd);
        env::set_pdeathsig(&mut cmd, libc::SIGKILL);
        let spawned_at = std::time::Instant::now();
        let mut child = cmd.spawn().expect("spawn httpx_client.py");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut identity = String::new();
        stdout.read_line(&mut identity).expect("read identity line");
        let id: Value = serde_json::from_str(identity.trim()).unwrap_or(Value::Null);
        let mut ready = String::new();
        stdout.read_line(&mut ready).expect("read ready line");
        assert_eq!(ready.trim(), "ready", "late client failed before its first call finished");
        let run = ClientRun {
            what: "httpx_client.py late".to_string(),
            pid: id["pid"].as_u64().unwrap_or(0) as u32,
            comm: id["comm"].as_str().map(String::from),
            exe: id["exe"].as_str().map(String::from),
            starttime_ticks: id["starttime_ticks"].as_u64(),
            spawned_at,
            status: std::process::ExitStatus::default(),
            stdout: identity,
            stderr_tail: String::new(),
        };
        LateClient { run, child, stdin, stdout }
    }

    /// Lets the client make its remaining calls and waits for it to exit successfully.
    pub fn go(mut self) -> ClientRun {
        let mut stdin = self.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("write go");
        drop(stdin);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let status = self.child.wait().expect("wait for late client");
        assert!(status.success(), "late client failed ({status})");
        self.run.status = status;
        std::mem::replace(&mut self.run, placeholder_run())
    }
}

fn placeholder_run() -> ClientRun {
    ClientRun {
        what: String::new(),
        pid: 0,
        comm: None,
        exe: None,
        starttime_ticks: None,
        spawned_at: std::time::Instant::now(),
        status: std::process::ExitStatus::default(),
        stdout: String::new(),
        stderr_tail: String::new(),
    }
}

impl Drop for LateClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
