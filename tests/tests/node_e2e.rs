//! Privileged end-to-end tests: Node.js (`/usr/bin/node`, OpenSSL linked statically into the
//! executable, no libssl.so) with the real `openai` npm package, metered by probes on the node
//! executable itself. Every record is checked against the fake server's ground truth (exact
//! counts), the client's own pid/comm/exe, and the privacy scan.
//!
//! Needs what `openssl_e2e` needs plus `node` and the npm packages `cargo xtask test` installs
//! under `target/node-clients`. Never prints payloads.

use serde_json::Value;
use tokentap_tests::node::{node_path, run_openai_node};
use tokentap_tests::{require_bpf, Case, ClientRun, LlmServer, ServerOpts};

/// Runs one scenario of `openai_client.cjs`, waits for `n` records and checks them all.
fn node_case(scenario: &str, n: usize) -> (Case, LlmServer, ClientRun, Vec<Value>) {
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let prompt = case.prompt_file(&server);
    let run = run_openai_node(&server, &case.api_key, scenario, &prompt);
    case.expect_ok(&run);
    // The identity the client printed is the node process itself: the probes sit on the
    // executable, so the record must name it, not a library.
    assert_eq!(run.exe.as_deref(), Some(node_path().to_str().expect("utf-8 path")), "client exe");
    assert!(run.comm.is_some(), "client printed no identity line");
    let recs = case.wait_records(&server, n);
    // check_all: exact token counts, models, streaming, pid/comm/exe of this client,
    // server_port, tls_library "openssl".
    case.check_all(&server, &recs, &run);
    for r in &recs {
        assert_eq!(r["tls_library"], "openssl");
        assert_eq!(r["comm"], "node");
    }
    (case, server, run, recs)
}

#[test]
fn node_openai_chat_plain() {
    if !require_bpf() {
        return;
    }
    let (case, server, _run, _recs) = node_case("chat", 1);
    let e = &server.entries()[0];
    assert!(!e.streaming() && e.usage().is_some());
    case.finish(&server);
}

#[test]
fn node_openai_chat_streaming() {
    if !require_bpf() {
        return;
    }
    let (case, server, _run, recs) = node_case("chat_stream_usage", 1);
    let e = &server.entries()[0];
    assert!(e.streaming() && e.include_usage() && e.usage().is_some());
    assert_eq!(recs[0]["streaming"], true);
    case.finish(&server);
}

#[test]
fn node_openai_chat_streaming_without_usage_is_estimated() {
    if !require_bpf() {
        return;
    }
    // Expected::from_entry turns a usage-less stream into: output = o200k tokens of the
    // streamed text (exact), input = cookbook estimate ± 2 %, usage_source "estimated".
    let (case, server, _run, recs) = node_case("chat_stream_no_usage", 1);
    assert!(server.entries()[0].usage().is_none());
    assert_eq!(recs[0]["usage_source"], "estimated");
    case.finish(&server);
}

#[test]
fn node_openai_three_calls_one_connection() {
    if !require_bpf() {
        return;
    }
    // Node's fetch (undici) keeps TLS sessions alive: a later response read with SSL_read into
    // node's own buffers, on a session that already carried a call, must come out as its own
    // record with its own counts. (undici opens a second connection for the second call, as the
    // first is released only after the body's end is processed; the third reuses the first.)
    let (case, server, _run, _recs) = node_case("keepalive3", 3);
    let ports: std::collections::BTreeSet<u64> = server.entries().iter().map(|e| e.client_port()).collect();
    assert!(ports.len() < 3, "no TLS session carried more than one call");
    case.finish(&server);
}

#[test]
fn node_https_one_connection_per_call() {
    if !require_bpf() {
        return;
    }
    // node's own https module, `Connection: close`: each session ends with SSL_shutdown and
    // SSL_free (probed on the executable too) and the next may reuse the freed SSL object's
    // address; every call must still be its own record with its own counts.
    let (case, server, _run, _recs) = node_case("https_close3", 3);
    let ports: std::collections::BTreeSet<u64> = server.entries().iter().map(|e| e.client_port()).collect();
    assert_eq!(ports.len(), 3, "the calls did not each use their own connection");
    case.finish(&server);
}
