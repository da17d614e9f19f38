//! Privileged end-to-end tests: HTTP/2 clients (`curl --http2`, httpx with `http2=True`) over
//! TLS to `fixtures/llm_server_h2.py`; every record is compared with the server's own usage
//! numbers, the server log proves HTTP/2 was spoken, and agent output is privacy-scanned.

use serde_json::json;
use tokentap_tests::case::BIG_PROMPT_FILLER;
use tokentap_tests::http2::{assert_all_http2, check_unordered, curl_chat, httpx};
use tokentap_tests::{clients, require_bpf, Case, LlmServer, ServerEntry, ServerOpts};

/// The fixture itself, without an agent: ALPN picks h2 or http/1.1, both logged the same way.
#[test]
fn h2_server_fixture_serves_both_protocols() {
    let case = Case::new();
    let server = LlmServer::start(ServerOpts { gzip: true, http2: true, ..Default::default() });
    curl_chat(&case, &server, false, &["--compressed"]);
    curl_chat(&case, &server, true, &[]);
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]});
    let run = clients::curl_post_json(&server, "/v1/chat/completions", &case.api_key, &body, &[]);
    case.expect_ok(&run);
    let entries = server.entries();
    assert_eq!(entries.len(), 3);
    assert_eq!((entries[0].http_version(), entries[0].content_encoding()), (Some("2"), Some("gzip")));
    assert_eq!(entries[1].http_version(), Some("2"));
    assert!(entries[1].streaming() && entries[1].usage().is_some());
    assert_eq!(entries[2].http_version(), None, "curl --http1.1 must get HTTP/1.1");
    assert_eq!(server.stderr_tail(), "", "server reported errors");
}

fn h2_server(case: &Case, gzip: bool) -> LlmServer {
    case.server(ServerOpts { gzip, http2: true, ..Default::default() })
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

/// Runs one httpx scenario against a fresh HTTP/2 server, checks every record; returns the
/// server's entries.
fn httpx_case(scenario: &str, n: usize) -> Vec<ServerEntry> {
    let case = Case::new();
    case.add_secret(BIG_PROMPT_FILLER);
    let server = h2_server(&case, false);
    let run = httpx(&case, &server, scenario);
    let recs = case.wait_records(&server, n);
    assert_all_http2(&server);
    check_unordered(&case, &server, &recs, &run, case.started);
    let entries = server.entries();
    let port = entries[0].client_port();
    assert!(entries.iter().all(|e| e.client_port() == port), "the calls did not share one connection");
    case.finish(&server);
    entries
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

#[test]
fn httpx_http2_big_prompt_1mib() {
    if !require_bpf() {
        return;
    }
    // Exact counts and truncated == false are checked in httpx_case.
    let entries = httpx_case("big_prompt", 1);
    assert!(entries[0].request_bytes() >= 1024 * 1024, "request body only {} bytes", entries[0].request_bytes());
}

/// The OpenAI Python SDK itself over HTTP/2 (`OPENAI_CLIENT_HTTP2=1`: its httpx fork with
/// `http2=True`), `n` calls of `scenario` on one connection.
fn openai_sdk_case(scenario: &str, n: usize) {
    let case = Case::new();
    let server = h2_server(&case, false);
    let prefix: Vec<std::ffi::OsString> = vec!["env".into(), "OPENAI_CLIENT_HTTP2=1".into()];
    let run = case.openai_with(&server, scenario, &prefix);
    let recs = case.wait_records(&server, n);
    assert_all_http2(&server);
    case.check_all(&server, &recs, &run);
    let entries = server.entries();
    assert!(entries.iter().all(|e| e.client_port() == entries[0].client_port()), "calls did not share one connection");
    case.finish(&server);
}

#[test]
fn openai_sdk_http2_chat_streaming() {
    if !require_bpf() {
        return;
    }
    openai_sdk_case("chat_stream_usage", 1);
}

#[test]
fn openai_sdk_http2_responses_streaming() {
    if !require_bpf() {
        return;
    }
    openai_sdk_case("responses_stream", 1);
}

#[test]
fn openai_sdk_http2_20_calls_one_connection() {
    if !require_bpf() {
        return;
    }
    // Later calls' headers are mostly HPACK dynamic-table references to the first call's.
    openai_sdk_case("keepalive20", 20);
}
