//! Privileged end-to-end tests: a real tokentap agent meters a Go program (`crypto/tls` via
//! `net/http`, built in the test) in three layouts — default, stripped (`-s -w`: functions
//! only in `.gopclntab`) and PIE — plain and streaming; every record is compared with the fake
//! server's ground truth and the agent's output is privacy-scanned.
//!
//! Needs root + kernel BTF (TOKENTAP_REQUIRE_BPF=1 fails instead of skipping), `go` (Debian
//! golang-go, installed by `cargo xtask test`), and the test Python for the server.
use tokentap_tests::go::{self, Build, GoRun};
use tokentap_tests::{require_bpf, Case, ServerOpts};

/// One client run of `scenario` making `n` calls, fully checked.
fn go_case(build: Build, scenario: &str, n: usize, http2: bool, opts: ServerOpts) {
    let case = Case::new();
    let server = case.server(opts);
    let run = go::run(&case, &server, &GoRun { build, scenario, http2 });
    let recs = case.wait_records(&server, n);
    go::check_all(&case, &server, &recs, &run);
    let entries = server.entries();
    let streamed = entries.iter().filter(|e| e.streaming()).count();
    let expected_streams = match scenario {
        "chat" => 0,
        "chat_twice" => 1,
        _ => n,
    };
    assert_eq!(streamed, expected_streams, "streaming calls in the server log");
    case.finish(&server);
}

#[test]
fn go_default_chat_plain() {
    if !require_bpf() {
        return;
    }
    go_case(Build::Default, "chat", 1, false, ServerOpts::default());
}

#[test]
fn go_default_chat_streaming() {
    if !require_bpf() {
        return;
    }
    go_case(Build::Default, "chat_stream_usage", 1, false, ServerOpts::default());
}

#[test]
fn go_default_keepalive_two_calls() {
    if !require_bpf() {
        return;
    }
    // Both calls share one *tls.Conn: the second must be metered on the reused connection.
    go_case(Build::Default, "chat_twice", 2, false, ServerOpts::default());
}

#[test]
fn go_default_streaming_without_usage_is_estimated() {
    if !require_bpf() {
        return;
    }
    go_case(Build::Default, "chat_stream_no_usage", 1, false, ServerOpts::default());
}

#[test]
fn go_stripped_chat_plain() {
    if !require_bpf() {
        return;
    }
    go_case(Build::Stripped, "chat", 1, false, ServerOpts::default());
}

#[test]
fn go_stripped_chat_streaming() {
    if !require_bpf() {
        return;
    }
    go_case(Build::Stripped, "chat_stream_usage", 1, false, ServerOpts::default());
}

#[test]
fn go_pie_chat_plain() {
    if !require_bpf() {
        return;
    }
    go_case(Build::Pie, "chat", 1, false, ServerOpts::default());
}

#[test]
fn go_pie_chat_streaming() {
    if !require_bpf() {
        return;
    }
    go_case(Build::Pie, "chat_stream_usage", 1, false, ServerOpts::default());
}
