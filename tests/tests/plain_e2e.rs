//! Privileged end-to-end tests of plain HTTP over sockets (syscall tracepoints) and of endpoint
//! identity (TLS server name, socket peer): the Python `openai` SDK against a plain `http://`
//! fake LLM server on a port the agent watches, exact counts against the server's log; AI-looking
//! bytes through files, pipes and unconnected sockets that must not be metered; and curl over
//! OpenSSL whose SNI differs from its `Host` header. Never prints payloads.

use serde_json::Value;
use tokentap_tests::records::records_with_pid;
use tokentap_tests::{clients, plain, require_bpf, Case, ServerOpts};

fn plain_openai(scenario: &str, streaming: bool) {
    let case = Case::new();
    let server = plain::server(&case);
    let run = case.openai(&server, scenario);
    let recs = case.wait_records(&server, 1);
    plain::check_all(&case, &server, &recs, &run);
    assert_eq!(server.entries()[0].streaming(), streaming);
    assert_eq!(recs[0]["server_port"], server.port, "server_port from the Host header");
    case.finish(&server);
}

#[test]
fn plain_http_chat() {
    if !require_bpf() {
        return;
    }
    plain_openai("chat", false);
}

#[test]
fn plain_http_chat_streaming() {
    if !require_bpf() {
        return;
    }
    // check_all: usage_source "reported", streaming, time_to_first_chunk_ms.
    plain_openai("chat_stream_usage", true);
}

#[test]
fn plain_http_without_host_names_the_socket_peer() {
    if !require_bpf() {
        return;
    }
    // curl drops the Host header when given an empty one: server_address and server_port can
    // then only come from the socket peer the `connect` tracepoint saw.
    let case = Case::new();
    let server = plain::server(&case);
    let run = case.curl_chat(&server, &["-H", "Host:"]);
    let recs = case.wait_records(&server, 1);
    plain::check_all(&case, &server, &recs, &run);
    case.finish(&server);
}

/// Vectored syscalls: the request in two iovecs, the response read into three buffers.
fn plain_raw(mode: &str) {
    let case = Case::new();
    let server = plain::server(&case);
    let run = plain::run_raw(&case, &server, mode);
    let recs = case.wait_records(&server, 1);
    plain::check_all(&case, &server, &recs, &run);
    case.finish(&server);
}

#[test]
fn plain_http_sendmsg_recvmsg() {
    if !require_bpf() {
        return;
    }
    plain_raw("sendmsg");
}

#[test]
fn plain_http_writev_readv() {
    if !require_bpf() {
        return;
    }
    plain_raw("writev");
}

#[test]
fn plain_http_non_ai_files_pipes_are_not_metered() {
    if !require_bpf() {
        return;
    }
    let case = Case::new();
    let server = plain::server(&case);
    // A non-AI request on a watched port: judged and ignored, never a record.
    let get = clients::curl_get(&server, &["/health", "/health"]);
    case.expect_ok(&get);
    let (run, report) = plain::run_negative(&case, &server);
    // The file really took the closed watched socket's fd number (and the socketpair end was
    // dup2'ed over a live one), so a capture that kept the fd would have shipped their bytes.
    assert_eq!(report["file_fd_reused"], Value::Bool(true), "file did not reuse the socket's fd");
    // Then a real AI call from a new client: proves the agent was watching this port all along.
    let ok = case.openai(&server, "chat");
    let recs = case.wait_records(&server, 1);
    assert_eq!(recs[0]["pid"], ok.pid, "the one record is the SDK call's");
    assert!(records_with_pid(run.pid).is_empty(), "file/pipe/socketpair bytes were metered");
    assert!(records_with_pid(get.pid).is_empty(), "a non-AI plain exchange was metered");
    case.finish(&server);
}

#[test]
fn tls_on_a_watched_port_is_metered_once_by_openssl() {
    if !require_bpf() {
        return;
    }
    // TLS to a port the socket capture watches: the ciphertext is not HTTP and is ignored
    // after its first bytes; the OpenSSL probes meter the call, exactly once.
    let case = Case::new();
    let port = plain::take_port();
    let server = case.server(ServerOpts { port: Some(port), ..ServerOpts::default() });
    let run = case.openai(&server, "chat");
    let recs = case.wait_records(&server, 1);
    case.check_all(&server, &recs, &run);
    case.finish(&server);
}

#[test]
fn tls_server_name_is_the_server_address() {
    if !require_bpf() {
        return;
    }
    plain::configure_agent();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    // SNI "localhost" (the certificate's name), Host header another name: the record names the
    // server the client asked TLS for.
    let run = plain::curl_chat_sni(&case, &server, "localhost", "tokentap-gateway.test");
    let recs = case.wait_records(&server, 1);
    let entries = server.entries();
    assert_eq!(entries.len(), 1);
    let exp = tokentap_tests::Expected::from_entry(&entries[0], server.port).with_process(
        run.pid,
        run.comm.as_deref(),
        run.exe.as_deref(),
    );
    let bad = plain::mismatches(&case, &recs[0], &exp, "openssl", "localhost");
    assert!(bad.is_empty(), "record mismatches:\n  {}", bad.join("\n  "));
    case.finish(&server);
}
