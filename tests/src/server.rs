//! The fake LLM HTTPS server (`fixtures/llm_server.py`), one process per
//! test, and its ground-truth log.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::{certs, env};

const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct ServerOpts {
    /// Gzip every JSON response when the client accepts gzip (`--gzip`).
    pub gzip: bool,
    /// Plain `http://` without TLS (`--plain`), as local model servers speak.
    pub plain: bool,
    /// Listen on this port instead of an OS-chosen one (e.g. one the agent watches for plain
    /// HTTP).
    pub port: Option<u16>,
    /// Serve HTTP/2 too (`fixtures/llm_server_h2.py`: ALPN h2 and http/1.1, same responses and
    /// log, each HTTP/2 entry marked `"http_version": "2"`).
    pub http2: bool,
}

pub struct LlmServer {
    pub port: u16,
    pub pid: u32,
    /// Private temp dir: server log, stderr, prompt files, client outputs.
    pub dir: PathBuf,
    /// Ground-truth log (JSON lines; holds payloads: never print it).
    pub log: PathBuf,
    pub stderr: PathBuf,
    /// Byte offset in the agent's usage log when this server started; only
    /// records after it are attributed to this server.
    pub usage_offset: u64,
    /// Serving plain HTTP (`http://` origins).
    pub plain: bool,
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl LlmServer {
    /// Starts a server on 127.0.0.1 with an OS-chosen port.
    pub fn start(opts: ServerOpts) -> LlmServer {
        let certs = certs::certs();
        let dir = env::temp_subdir("server");
        let log = dir.join("server-log.jsonl");
        let stderr = dir.join("server.stderr");
        let err = std::fs::File::create(&stderr).expect("create server stderr");
        let mut cmd = Command::new(env::python());
        let script = if opts.http2 { "llm_server_h2.py" } else { "llm_server.py" };
        cmd.arg(env::fixtures_dir().join(script))
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .arg("--log")
            .arg(&log)
            .arg("--port")
            .arg(opts.port.unwrap_or(0).to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("LLM_SERVER_DEBUG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err);
        if opts.gzip {
            cmd.arg("--gzip");
        }
        if opts.plain {
            cmd.arg("--plain");
        }
        env::set_pdeathsig(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {} llm_server.py: {e}", env::python()));
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let res = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send((res, reader));
        });
        let (line, reader) = match rx.recv_timeout(START_TIMEOUT) {
            Ok((Ok(line), reader)) => (line, reader),
            other => {
                // SAFETY: kill(2) of our own child by pid.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let _ = child.wait();
                panic!(
                    "llm_server.py did not report its port ({}); stderr tail:\n{}",
                    if other.is_err() { "timeout" } else { "read error" },
                    env::tail_lines(&stderr, 20)
                );
            }
        };
        let port: u16 = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let _ = child.wait();
                panic!(
                    "llm_server.py printed no port (first line {} bytes); stderr tail:\n{}",
                    line.len(),
                    env::tail_lines(&stderr, 20)
                );
            }
        };
        LlmServer { port, pid, dir, log, stderr, usage_offset: 0, plain: opts.plain, child, _stdout: reader }
    }

    /// `https://127.0.0.1:PORT` (`http://` for a plain server)
    pub fn origin(&self) -> String {
        let scheme = if self.plain { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:PORT/v1` (OpenAI SDK base URL).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.origin())
    }

    /// All LLM responses the server sent, in order.
    pub fn entries(&self) -> Vec<ServerEntry> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| ServerEntry(serde_json::from_str(l).expect("server log line is JSON")))
            .collect()
    }

    /// Server stderr tail (the server never writes payloads there).
    pub fn stderr_tail(&self) -> String {
        env::tail_lines(&self.stderr, 20)
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child, by its own pid.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.wait();
        if !env::keep_tmp() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One line of the server's ground-truth log.
#[derive(Debug, Clone)]
pub struct ServerEntry(pub Value);

impl ServerEntry {
    fn str_field(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(Value::as_str)
    }
    /// e.g. `/v1/chat/completions`.
    pub fn path(&self) -> &str {
        self.str_field("path").unwrap_or("")
    }
    pub fn streaming(&self) -> bool {
        self.0.get("streaming").and_then(Value::as_bool).unwrap_or(false)
    }
    /// Provider usage object as the client finally saw it (None: no usage).
    pub fn usage(&self) -> Option<&Value> {
        self.0.get("usage").filter(|u| !u.is_null())
    }
    /// Full completion text (payload: never print).
    pub fn text(&self) -> &str {
        self.str_field("text").unwrap_or("")
    }
    /// Random marker embedded in the completion text (payload: never print).
    pub fn marker(&self) -> Option<&str> {
        self.str_field("marker")
    }
    pub fn request_model(&self) -> &str {
        self.str_field("request_model").unwrap_or("")
    }
    pub fn response_model(&self) -> &str {
        self.str_field("response_model").unwrap_or("")
    }
    /// `Some("gzip")` when the body was sent gzip-encoded.
    pub fn content_encoding(&self) -> Option<&str> {
        self.str_field("content_encoding")
    }
    /// Peer port of the TLS connection (same value = same connection).
    pub fn client_port(&self) -> u64 {
        self.0.get("client_port").and_then(Value::as_u64).unwrap_or(0)
    }
    /// `Some("2")` when the exchange was served over HTTP/2 (llm_server_h2.py).
    pub fn http_version(&self) -> Option<&str> {
        self.str_field("http_version")
    }
    /// Size of the request body the server received.
    pub fn request_bytes(&self) -> u64 {
        self.0.get("request_bytes").and_then(Value::as_u64).unwrap_or(0)
    }
    /// Whether a chat stream request asked for `stream_options.include_usage`.
    pub fn include_usage(&self) -> bool {
        self.0.get("include_usage").and_then(Value::as_bool).unwrap_or(false)
    }
    /// Chat request messages as received (payload: never print).
    pub fn request_messages(&self) -> Option<&Vec<Value>> {
        self.0.get("request_messages").and_then(Value::as_array)
    }
}
