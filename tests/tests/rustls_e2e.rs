//! Privileged end-to-end tests: a real tokentap agent meters Rust programs using rustls
//! (`ureq`, and tokio-rustls as under hyper/reqwest; built from `tests/fixtures/rust_client`,
//! symbols kept) talking to the fake LLM server; every record is compared with the server's own usage numbers and the agent's
//! output is privacy-scanned.
//!
//! Needs root + kernel BTF (`TOKENTAP_REQUIRE_BPF=1` fails instead of skipping) and cargo
//! (the client is built into `target/rust-client` on first use). Never prints payloads.

use tokentap_tests::raw_tls::{chat_body, chat_request, check_all_library};
use tokentap_tests::rust_client::{run_rust_async, run_rust_client, Build};
use tokentap_tests::{env, require_bpf, Case, ServerOpts};

/// `requests` chat calls on one connection from the rustls client against a fresh server,
/// fully checked.
fn rustls_chat(kind: Build, stream: bool, requests: usize) {
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let body = server.dir.join(format!("rust-body-{}.json", env::random_hex(3)));
    std::fs::write(&body, chat_body(&case, stream)).expect("write body");
    let key = server.dir.join(format!("rust-key-{}", env::random_hex(3)));
    std::fs::write(&key, &case.api_key).expect("write key");
    let run = run_rust_client(kind, &server, "/v1/chat/completions", &body, &key, requests);
    case.expect_ok(&run);
    let statuses: Vec<&str> = run.stdout.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(statuses, vec!["200"; requests], "client HTTP statuses");
    let recs = case.wait_records(&server, requests);
    let entries = server.entries();
    assert_eq!(entries.len(), requests, "server log entries");
    for e in &entries {
        assert_eq!(e.streaming(), stream);
        assert!(e.usage().is_some(), "server sent no usage");
    }
    if requests > 1 {
        // One keep-alive connection: every request came from the same client port.
        assert!(
            entries.iter().all(|e| e.client_port() == entries[0].client_port()),
            "requests used several connections"
        );
    }
    check_all_library(&case, &server, &recs, &run, "rustls");
    case.finish(&server);
}

#[test]
fn rustls_ureq_chat_plain() {
    if !require_bpf() {
        return;
    }
    rustls_chat(Build::Release, false, 1);
}

#[test]
fn rustls_ureq_chat_streaming() {
    if !require_bpf() {
        return;
    }
    rustls_chat(Build::Release, true, 1);
}

#[test]
fn rustls_ureq_three_chats_on_one_connection() {
    if !require_bpf() {
        return;
    }
    rustls_chat(Build::Release, false, 3);
}

/// The same program with v0 symbol mangling: the functions are found by demangled name.
#[test]
fn rustls_ureq_v0_mangling_chat_plain() {
    if !require_bpf() {
        return;
    }
    rustls_chat(Build::ReleaseV0, false, 1);
}

/// A debug build: `ConnectionCommon::reader` is not inlined, the offset comes from its body.
#[test]
fn rustls_ureq_debug_build_chat_plain() {
    if !require_bpf() {
        return;
    }
    rustls_chat(Build::Debug, false, 1);
}

/// tokio-rustls reads through `BufRead` (`into_first_chunk` + `consume`), not `Read::read`.
fn tokio_rustls_chat(stream: bool) {
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let request = server.dir.join(format!("rust-request-{}", env::random_hex(3)));
    std::fs::write(&request, chat_request(&case, &server, stream)).expect("write request");
    let run = run_rust_async(&server, &request);
    case.expect_ok(&run);
    assert!(run.stdout.trim().parse::<u64>().is_ok_and(|n| n > 0), "client read no response");
    let recs = case.wait_records(&server, 1);
    let entries = server.entries();
    assert_eq!(entries.len(), 1, "server log entries");
    assert_eq!(entries[0].streaming(), stream);
    assert!(entries[0].usage().is_some(), "server sent no usage");
    check_all_library(&case, &server, &recs, &run, "rustls");
    case.finish(&server);
}

#[test]
fn tokio_rustls_chat_plain() {
    if !require_bpf() {
        return;
    }
    tokio_rustls_chat(false);
}

#[test]
fn tokio_rustls_chat_streaming() {
    if !require_bpf() {
        return;
    }
    tokio_rustls_chat(true);
}
