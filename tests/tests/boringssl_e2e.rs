//! Privileged end-to-end tests: Bun (BoringSSL linked in, its symbols stripped) running the
//! real `openai` npm package. The agent finds `SSL_read`/`SSL_write` in the executable by
//! their machine-code signatures; every record is checked against the fake server's ground
//! truth (exact counts), the client's pid/comm/exe, tls_library "boringssl", and the privacy
//! scan.
//!
//! Needs what `node_e2e` needs; `cargo xtask test` installs Bun from npm under
//! `target/node-clients`. Never prints payloads.

use serde_json::Value;
use tokentap_tests::node::{bun_path, run_openai_js};
use tokentap_tests::{require_bpf, Case, Expected, LlmServer, ServerOpts};

/// The binary really is stripped of BoringSSL's names: otherwise this test would only repeat
/// the symbol-based one.
fn assert_stripped(exe: &std::path::Path) {
    let bytes = std::fs::read(exe).expect("read bun");
    for name in [&b"SSL_read\0"[..], b"SSL_write\0"] {
        assert!(bytes.windows(name.len()).all(|w| w != name), "bun carries a symbol name it should not");
    }
}

fn bun_case(scenario: &str, n: usize) -> (Case, LlmServer, Vec<Value>) {
    let bun = bun_path();
    assert_stripped(&bun);
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let prompt = case.prompt_file(&server);
    let run = run_openai_js(&bun, &server, &case.api_key, scenario, &prompt);
    case.expect_ok(&run);
    assert_eq!(run.exe.as_deref(), bun.to_str(), "client exe");
    let recs = case.wait_records(&server, n);
    let entries = server.entries();
    assert_eq!(entries.len(), n, "server log entries");
    for (rec, entry) in recs.iter().zip(&entries) {
        let exp = Expected::from_entry(entry, server.port)
            .with_process(run.pid, run.comm.as_deref(), run.exe.as_deref())
            .with_library("boringssl");
        case.check(rec, &exp);
    }
    (case, server, recs)
}

#[test]
fn bun_openai_chat_plain() {
    if !require_bpf() {
        return;
    }
    let (case, server, _recs) = bun_case("chat", 1);
    assert!(!server.entries()[0].streaming());
    case.finish(&server);
}

#[test]
fn bun_openai_chat_streaming() {
    if !require_bpf() {
        return;
    }
    let (case, server, recs) = bun_case("chat_stream_usage", 1);
    assert!(server.entries()[0].streaming());
    assert_eq!(recs[0]["streaming"], true);
    case.finish(&server);
}

#[test]
fn bun_openai_three_calls() {
    if !require_bpf() {
        return;
    }
    let (case, _server, _recs) = bun_case("keepalive3", 3);
    case.finish(&_server);
}
