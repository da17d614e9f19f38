//! Privileged end-to-end tests: HTTP/2 clients (`curl --http2`, httpx with `http2=True`) over
//! TLS to `fixtures/llm_server_h2.py`; every record is compared with the server's own usage
//! numbers, the server log proves HTTP/2 was spoken, and agent output is privacy-scanned.

use tokentap_tests::http2::{assert_all_http2, check_unordered, curl_chat, httpx};
use tokentap_tests::{require_bpf, Case, LlmServer, ServerOpts};

fn h2_server(case: &Case, gzip: bool) -> LlmServer {
    case.server(ServerOpts { gzip, http2: true })
}

fn curl_case(stream: bool, gzip: bool) {
    let case = Case::new();
    let server = h2_server(&case, gzip);
    let extra: &[&str] = if gzip { &["--compressed"] } else { &[] };
    let run = curl_chat(&case, &server, stream, extra);
    let recs = case.wait_records(&server, 1);
    assert_all_http2(&server);
    let e = &server.entries()[0];
    assert_eq!(e.streaming(), stream);
    if gzip {
        assert_eq!(e.content_encoding(), Some("gzip"), "response was not sent gzip-encoded");
    }
    case.check_all(&server, &recs, &run);
    assert_eq!(recs[0]["comm"], "curl");
    case.finish(&server);
}

#[test]
fn curl_http2_chat_plain() {
    if !require_bpf() {
        return;
    }
    curl_case(false, false);
}

#[test]
fn curl_http2_chat_streaming() {
    if !require_bpf() {
        return;
    }
    curl_case(true, false);
}

#[test]
fn curl_http2_chat_gzip() {
    if !require_bpf() {
        return;
    }
    curl_case(false, true);
}

fn httpx_case(scenario: &str, n: usize) {
    let case = Case::new();
    let server = h2_server(&case, false);
    let run = httpx(&case, &server, scenario);
    let recs = case.wait_records(&server, n);
    assert_all_http2(&server);
    check_unordered(&case, &server, &recs, &run, case.started);
    let entries = server.entries();
    let port = entries[0].client_port();
    assert!(entries.iter().all(|e| e.client_port() == port), "the calls did not share one connection");
    case.finish(&server);
}

#[test]
fn httpx_http2_chat_plain() {
    if !require_bpf() {
        return;
    }
    httpx_case("chat", 1);
}

#[test]
fn httpx_http2_chat_streaming() {
    if !require_bpf() {
        return;
    }
    httpx_case("chat_stream", 1);
}

#[test]
fn httpx_http2_10_concurrent_streams_one_connection() {
    if !require_bpf() {
        return;
    }
    // 5 plain and 5 streaming calls in flight at once, multiplexed on one connection; usage
    // numbers differ per call, so a mix-up between streams cannot pass.
    httpx_case("concurrent10", 10);
}
