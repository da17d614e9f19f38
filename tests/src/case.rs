//! Per-test context: unique API key and prompt, the secrets that must never
//! show up in agent output, and convenience wrappers around the harness.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::clients::{self, ClientRun};
use crate::expect::{check_record, record_mismatches, Expected};
use crate::records::{self, RECORD_TIMEOUT};
use crate::server::{LlmServer, ServerOpts};
use crate::{agent, env};

/// Mirrors `SYSTEM_PROMPT` in `fixtures/openai_client.py` (a payload too).
pub const SYSTEM_PROMPT: &str = "You are a terse assistant used by an automated test.";
/// Mirrors the filler of the `big_prompt` scenario.
pub const BIG_PROMPT_FILLER: &str = "The quick brown fox jumps over the lazy dog while the probe counts";
/// Chat model used by every client.
pub const CHAT_MODEL: &str = "gpt-4o-mini";

pub struct Case {
    pub name: String,
    /// `sk-test-<random hex>`, unique to this test.
    pub api_key: String,
    /// Random marker inside the prompt.
    pub marker: String,
    /// When the test started (lower bound for record timestamps).
    pub started: SystemTime,
    secrets: Mutex<Vec<String>>,
}

impl Default for Case {
    fn default() -> Self {
        Self::new()
    }
}

impl Case {
    pub fn new() -> Case {
        let api_key = format!("sk-test-{}", env::random_hex(24));
        let marker = format!("pm{}", env::random_hex(8));
        let case = Case {
            name: env::current_test_name(),
            api_key: api_key.clone(),
            marker: marker.clone(),
            started: SystemTime::now(),
            secrets: Mutex::new(Vec::new()),
        };
        case.add_secret(api_key);
        case.add_secret(marker);
        case.add_secret(case.prompt());
        case.add_secret(SYSTEM_PROMPT);
        case
    }

    /// The test's unique prompt (contains the marker).
    pub fn prompt(&self) -> String {
        format!("tokentap e2e prompt {}: in one sentence, explain why the sky looks blue at noon.", self.marker)
    }

    pub fn add_secret(&self, s: impl Into<String>) {
        self.secrets.lock().unwrap().push(s.into());
    }

    pub fn secrets(&self) -> Vec<String> {
        self.secrets.lock().unwrap().clone()
    }

    /// Starts a server after making sure the shared agent is ready; records
    /// are attributed to it only from this point of the usage log on.
    pub fn server(&self, opts: ServerOpts) -> LlmServer {
        let _ = agent::agent();
        let offset = records::usage_log_len();
        let mut s = LlmServer::start(opts);
        s.usage_offset = offset;
        s
    }

    /// Writes the prompt into the server's dir and returns the path.
    pub fn prompt_file(&self, server: &LlmServer) -> PathBuf {
        let p = server.dir.join(format!("prompt-{}.txt", env::random_hex(3)));
        std::fs::write(&p, self.prompt()).expect("write prompt file");
        p
    }

    /// Panics (with a redacted stderr tail) unless the client succeeded.
    pub fn expect_ok(&self, run: &ClientRun) {
        assert!(
            run.success(),
            "{} failed ({}); stderr tail (redacted):\n{}",
            run.what,
            run.status,
            env::redact(&run.stderr_tail, &self.secrets())
        );
    }

    /// Runs an `openai_client.py` scenario with this case's key and prompt.
    pub fn openai(&self, server: &LlmServer, scenario: &str) -> ClientRun {
        let prompt = self.prompt_file(server);
        let run = clients::run_openai(server, &self.api_key, scenario, Some(&prompt));
        self.expect_ok(&run);
        run
    }

    /// [`Case::openai`] behind a command prefix (see [`clients::run_python_with`]).
    pub fn openai_with(&self, server: &LlmServer, scenario: &str, prefix: &[std::ffi::OsString]) -> ClientRun {
        let prompt = self.prompt_file(server);
        let run = clients::run_openai_with(server, &self.api_key, scenario, Some(&prompt), prefix);
        self.expect_ok(&run);
        run
    }

    /// Runs an `anthropic_client.py` scenario with this case's key and prompt.
    pub fn anthropic(&self, server: &LlmServer, scenario: &str) -> ClientRun {
        let prompt = self.prompt_file(server);
        let run = clients::run_anthropic(server, &self.api_key, scenario, Some(&prompt));
        self.expect_ok(&run);
        run
    }

    /// One non-streaming chat completion with curl; asserts HTTP 200.
    pub fn curl_chat(&self, server: &LlmServer, extra: &[&str]) -> ClientRun {
        self.curl_chat_model(server, CHAT_MODEL, extra)
    }

    /// [`Case::curl_chat`] naming `model` (the test server echoes models it does not know).
    pub fn curl_chat_model(&self, server: &LlmServer, model: &str, extra: &[&str]) -> ClientRun {
        let body = json!({
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": self.prompt()},
            ],
        });
        let run = clients::curl_post_json(server, "/v1/chat/completions", &self.api_key, &body, extra);
        self.expect_ok(&run);
        assert_eq!(run.stdout.trim(), "200", "curl chat HTTP status");
        run
    }

    /// One curl chat call against a fresh server, fully checked (counts, identity, privacy);
    /// returns its record.
    pub fn one_curl_chat(&self, extra: &[&str]) -> Value {
        let server = self.server(ServerOpts::default());
        let run = self.curl_chat(&server, extra);
        let recs = self.wait_records(&server, 1);
        self.check_all(&server, &recs, &run);
        self.finish(&server);
        recs.into_iter().next().expect("one record")
    }

    /// One `openai_client.py` scenario behind `prefix` against a fresh server, fully checked;
    /// returns its records.
    pub fn one_openai(&self, scenario: &str, n: usize, prefix: &[std::ffi::OsString]) -> Vec<Value> {
        let server = self.server(ServerOpts::default());
        let run = self.openai_with(&server, scenario, prefix);
        let recs = self.wait_records(&server, n);
        self.check_all(&server, &recs, &run);
        self.finish(&server);
        recs
    }

    /// Waits for exactly `n` records for this server (fails on fewer within
    /// the timeout, or on more after settling).
    pub fn wait_records(&self, server: &LlmServer, n: usize) -> Vec<Value> {
        self.wait_records_timeout(server, n, RECORD_TIMEOUT)
    }

    pub fn wait_records_timeout(&self, server: &LlmServer, n: usize, timeout: Duration) -> Vec<Value> {
        let recs = records::wait_records_since(server.usage_offset, server.port, n, timeout, &self.secrets());
        assert_eq!(
            recs.len(),
            n,
            "expected exactly {n} usage record(s) for server_port {}, got {} (duplicates or spurious records)",
            server.port,
            recs.len()
        );
        recs
    }

    /// Checks one record against an expectation.
    pub fn check(&self, rec: &Value, exp: &Expected) {
        check_record(rec, exp, self.started, &self.secrets());
    }

    /// Pairs records with the server's log entries in order and checks each,
    /// expecting every record to come from `client`.
    pub fn check_all(&self, server: &LlmServer, recs: &[Value], client: &ClientRun) {
        let entries = server.entries();
        assert_eq!(
            entries.len(),
            recs.len(),
            "server answered {} LLM request(s) but the agent wrote {} record(s)",
            entries.len(),
            recs.len()
        );
        for (i, (rec, entry)) in recs.iter().zip(&entries).enumerate() {
            let exp = Expected::from_entry(entry, server.port).with_process(
                client.pid,
                client.comm.as_deref(),
                client.exe.as_deref(),
            );
            let bad = record_mismatches(rec, &exp, self.started, &self.secrets());
            assert!(
                bad.is_empty(),
                "record #{i} of {} ({} {} on port {}) mismatches:\n  {}",
                recs.len(),
                exp.provider,
                exp.operation,
                server.port,
                bad.join("\n  ")
            );
        }
    }

    /// End-of-test checks: no record from the server process, and nothing
    /// the agent wrote contains this test's secrets or completion markers.
    pub fn finish(&self, server: &LlmServer) {
        for e in server.entries() {
            if let Some(m) = e.marker() {
                self.add_secret(m);
            }
        }
        let from_server = records::records_with_pid(server.pid);
        assert!(
            from_server.is_empty(),
            "the TLS server process (pid {}) produced {} usage record(s); only clients may",
            server.pid,
            from_server.len()
        );
        let secrets = self.secrets();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        records::assert_private(&refs);
    }
}
