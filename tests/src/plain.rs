//! Plain-HTTP helpers: the ports this test binary's agent watches (picked free, outside the
//! ephemeral range, before the agent starts), plain servers on them, checks for `plain`
//! records, and a curl call whose TLS server name differs from its `Host` header.

use std::ffi::OsString;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::case::{Case, CHAT_MODEL, SYSTEM_PROMPT};
use crate::clients::{self, ClientRun};
use crate::expect::{record_mismatches, Expected};
use crate::server::{LlmServer, ServerOpts};
use crate::{agent, env};

/// Ports handed out to tests of one binary (one server each).
const POOL: usize = 10;

static PORTS: OnceLock<Vec<u16>> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Free ports in 20000..32000 (below Linux's ephemeral range, so no client's source port
/// takes one between now and the server's bind).
pub fn ports() -> &'static [u16] {
    PORTS.get_or_init(|| {
        let mut ports = Vec::new();
        while ports.len() < POOL {
            let p = 20000 + (u16::from_str_radix(&env::random_hex(2), 16).unwrap_or(0) % 12000);
            if !ports.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok() {
                ports.push(p);
            }
        }
        ports
    })
}

/// Gives this binary's agent its plain-HTTP port set. Call before the agent starts.
pub fn configure_agent() {
    agent::configure(&format!("[capture.plain_http]\nports = {:?}\n", ports()));
}

/// A watched port of its own for one server (configures the agent first).
pub fn take_port() -> u16 {
    configure_agent();
    let i = NEXT.fetch_add(1, Ordering::SeqCst);
    *ports().get(i).unwrap_or_else(|| panic!("plain port pool of {POOL} exhausted"))
}

/// A plain-HTTP fake LLM server on a watched port.
pub fn server(case: &Case) -> LlmServer {
    let port = take_port();
    case.server(ServerOpts { plain: true, port: Some(port), ..ServerOpts::default() })
}

/// Mismatches of `rec` against the server's entry, with the TLS library and server address
/// the caller expects instead of the OpenSSL defaults of [`record_mismatches`].
pub fn mismatches(case: &Case, rec: &Value, exp: &Expected, tls_library: &str, address: &str) -> Vec<String> {
    let mut bad = record_mismatches(rec, exp, case.started, &case.secrets());
    bad.retain(|m| !m.starts_with("tls_library:") && !m.starts_with("server_address:"));
    for (k, want) in [("tls_library", tls_library), ("server_address", address)] {
        if rec.get(k).and_then(Value::as_str) != Some(want) {
            bad.push(format!("{k}: expected {want:?}, got {:?}", rec.get(k).and_then(Value::as_str)));
        }
    }
    bad
}

/// Pairs records with the server's entries in order; each must be a `plain` record of
/// `client` to 127.0.0.1 on the server's port.
pub fn check_all(case: &Case, server: &LlmServer, recs: &[Value], client: &ClientRun) {
    let entries = server.entries();
    assert_eq!(entries.len(), recs.len(), "server answered {} request(s), agent wrote {}", entries.len(), recs.len());
    for (i, (rec, entry)) in recs.iter().zip(&entries).enumerate() {
        let exp = Expected::from_entry(entry, server.port).with_process(
            client.pid,
            client.comm.as_deref(),
            client.exe.as_deref(),
        );
        let bad = mismatches(case, rec, &exp, "plain", "127.0.0.1");
        assert!(bad.is_empty(), "record #{i} on port {} mismatches:\n  {}", server.port, bad.join("\n  "));
    }
}

/// One chat completion with curl over TLS to `https://<sni>:PORT` (resolved to 127.0.0.1),
/// sending `Host: <host>:PORT`.
pub fn curl_chat_sni(case: &Case, server: &LlmServer, sni: &str, host: &str) -> ClientRun {
    let tag = env::random_hex(4);
    let headers = server.dir.join(format!("curl-headers-{tag}"));
    let body_path = server.dir.join(format!("curl-body-{tag}.json"));
    let body = json!({
        "model": CHAT_MODEL,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": case.prompt()}],
    });
    std::fs::write(
        &headers,
        format!(
            "Authorization: Bearer {}\nContent-Type: application/json\nHost: {host}:{}\n",
            case.api_key, server.port
        ),
    )
    .expect("write curl headers");
    std::fs::write(&body_path, serde_json::to_vec(&body).expect("json")).expect("write body");
    let args: Vec<OsString> = vec![
        "--resolve".into(),
        format!("{sni}:{}:127.0.0.1", server.port).into(),
        "-H".into(),
        format!("@{}", headers.display()).into(),
        "--data-binary".into(),
        format!("@{}", body_path.display()).into(),
        "-o".into(),
        server.dir.join(format!("curl-response-{tag}")).into(),
        format!("https://{sni}:{}/v1/chat/completions", server.port).into(),
    ];
    let run = clients::run_curl(server, &args);
    case.expect_ok(&run);
    assert_eq!(run.stdout.trim(), "200", "curl chat HTTP status");
    run
}

/// Runs `fixtures/plain_negative.py` against a watched port; returns the run and its report.
pub fn run_negative(case: &Case, server: &LlmServer) -> (ClientRun, Value) {
    let run = run_plain_client(case, server, "plain_negative.py", vec!["--dir".into(), server.dir.clone().into()]);
    let report = run.stdout.lines().nth(1).and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    (run, report)
}

/// Runs `fixtures/plain_raw_client.py --mode MODE` (vectored syscalls) against `server`.
pub fn run_raw(case: &Case, server: &LlmServer, mode: &str) -> ClientRun {
    run_plain_client(case, server, "plain_raw_client.py", vec!["--mode".into(), mode.into()])
}

/// Runs the plain-HTTP client `fixtures/<script>` against `server`'s port with the case's key
/// and prompt, then `extra`; panics unless it succeeded.
fn run_plain_client(case: &Case, server: &LlmServer, script: &str, extra: Vec<OsString>) -> ClientRun {
    let mut args: Vec<OsString> = vec![
        "--port".into(),
        server.port.to_string().into(),
        "--api-key".into(),
        case.api_key.clone().into(),
        "--prompt-file".into(),
        case.prompt_file(server).into(),
    ];
    args.extend(extra);
    let run = clients::run_python(script, &args, &server.dir);
    case.expect_ok(&run);
    run
}
