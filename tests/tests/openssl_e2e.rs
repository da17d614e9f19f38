//! Privileged end-to-end tests: a real tokentap agent meters OpenSSL clients
//! (curl, the OpenAI and Anthropic Python SDKs) talking TLS to a fake LLM
//! server; every record is compared with the server's own usage numbers.
//!
//! Needs root + kernel BTF (else SKIPPED, or a panic with
//! `TOKENTAP_REQUIRE_BPF=1`), the agent at `TOKENTAP_BIN` (default
//! `target/debug/tokentap`) and `TOKENTAP_PYTHON` with
//! `tests/fixtures/requirements.txt` installed. Never prints payloads.

use serde_json::Value;
use tokentap_tests::case::{BIG_PROMPT_FILLER, CHAT_MODEL};
use tokentap_tests::expect::{cookbook_chat_estimate, o200k_count, Tokens};
use tokentap_tests::{agent, clients, env, require_bpf, Case, Expected, LlmServer, ServerOpts};

/// The usual shape: one Python client run, `n` records, all checked.
fn python_case(scenario: &str, n: usize) -> (Case, LlmServer, Vec<Value>) {
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let run = case.openai(&server, scenario);
    let recs = case.wait_records(&server, n);
    case.check_all(&server, &recs, &run);
    (case, server, recs)
}

#[test]
fn curl_chat_plain() {
    if !require_bpf() {
        return;
    }
    // Checks pid and comm ("curl") of the curl process, exact counts, privacy.
    let r = Case::new().one_curl_chat(&[]);
    assert_eq!(r["comm"], "curl");
}

#[test]
fn python_chat_plain() {
    if !require_bpf() {
        return;
    }
    let (case, server, _recs) = python_case("chat", 1);
    // response_model must come from the response (a dated snapshot), which
    // differs from the request's alias.
    let e = &server.entries()[0];
    assert_eq!(e.request_model(), CHAT_MODEL);
    assert_ne!(e.response_model(), e.request_model());
    case.finish(&server);
}

#[test]
fn chat_streaming_with_usage() {
    if !require_bpf() {
        return;
    }
    // check_all: usage_source "reported", streaming, time_to_first_chunk_ms.
    let (case, server, _recs) = python_case("chat_stream_usage", 1);
    let e = &server.entries()[0];
    assert!(e.streaming() && e.include_usage() && e.usage().is_some());
    case.finish(&server);
}

#[test]
fn chat_streaming_without_usage_is_estimated() {
    if !require_bpf() {
        return;
    }
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let run = case.openai(&server, "chat_stream_no_usage");
    let recs = case.wait_records(&server, 1);
    let entries = server.entries();
    assert_eq!(entries.len(), 1, "server log entries");
    let e = &entries[0];
    assert!(e.streaming() && e.usage().is_none(), "server sent usage");
    // The expectation for a usage-less stream: output = o200k tokens of the
    // whole streamed text, input = cookbook estimate ± 2 %.
    let exp = Expected::from_entry(e, server.port).with_process(run.pid, run.comm.as_deref(), run.exe.as_deref());
    let out = o200k_count(e.text());
    assert!(out > 10, "streamed text too short to be meaningful");
    assert_eq!(exp.output_tokens, Tokens::Exact(out));
    let est = cookbook_chat_estimate(e.request_messages().expect("request messages"));
    assert!(matches!(exp.input_tokens, Tokens::Approx { expected, .. } if expected == est));
    assert_eq!(exp.usage_source, "estimated");
    case.check(&recs[0], &exp);
    case.finish(&server);
}

#[test]
fn responses_plain() {
    if !require_bpf() {
        return;
    }
    let (case, server, _recs) = python_case("responses", 1);
    assert!(!server.entries()[0].streaming());
    case.finish(&server);
}

#[test]
fn responses_streaming() {
    if !require_bpf() {
        return;
    }
    let (case, server, _recs) = python_case("responses_stream", 1);
    assert!(server.entries()[0].streaming());
    case.finish(&server);
}

#[test]
fn embeddings() {
    if !require_bpf() {
        return;
    }
    let (case, server, _recs) = python_case("embeddings", 1);
    case.finish(&server);
}

fn anthropic_case(scenario: &str, streaming: bool) {
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let run = case.anthropic(&server, scenario);
    let recs = case.wait_records(&server, 1);
    let e = &server.entries()[0];
    assert_eq!(e.streaming(), streaming);
    let u = e.usage().expect("anthropic usage");
    // Cache writes and reads are both non-zero, so a record that reports only
    // the uncached `input_tokens` cannot pass.
    for k in ["cache_creation_input_tokens", "cache_read_input_tokens"] {
        assert!(u[k].as_u64().unwrap_or(0) > 0, "server {k} must be > 0");
    }
    case.check_all(&server, &recs, &run);
    case.finish(&server);
}

#[test]
fn anthropic_messages_plain() {
    if !require_bpf() {
        return;
    }
    anthropic_case("messages", false);
}

#[test]
fn anthropic_messages_streaming() {
    if !require_bpf() {
        return;
    }
    anthropic_case("messages_stream", true);
}

#[test]
fn gzip_encoded_response() {
    if !require_bpf() {
        return;
    }
    let case = Case::new();
    let server = case.server(ServerOpts { gzip: true, ..Default::default() });
    let py = case.openai(&server, "chat");
    let curl = case.curl_chat(&server, &["--compressed"]);
    let recs = case.wait_records(&server, 2);
    let entries = server.entries();
    assert_eq!(entries.len(), 2, "server log entries");
    for (i, (e, run)) in entries.iter().zip([&py, &curl]).enumerate() {
        assert_eq!(e.content_encoding(), Some("gzip"), "response #{i} was not sent gzip-encoded");
        let exp = Expected::from_entry(e, server.port).with_process(run.pid, run.comm.as_deref(), run.exe.as_deref());
        case.check(&recs[i], &exp);
    }
    case.finish(&server);
}

#[test]
fn big_prompt_1mib() {
    if !require_bpf() {
        return;
    }
    let case = Case::new();
    case.add_secret(BIG_PROMPT_FILLER);
    let server = case.server(ServerOpts::default());
    let run = case.openai(&server, "big_prompt");
    let recs = case.wait_records(&server, 1);
    let e = &server.entries()[0];
    assert!(e.request_bytes() >= 1024 * 1024, "request body only {} bytes", e.request_bytes());
    // check_all covers exact counts, truncated == false and request_model
    // (which the SDK serializes *after* the 1 MiB of messages).
    assert_eq!(e.request_model(), CHAT_MODEL);
    case.check_all(&server, &recs, &run);
    case.finish(&server);
}

#[test]
fn keepalive_20_calls_one_connection() {
    if !require_bpf() {
        return;
    }
    let (case, server, recs) = python_case("keepalive20", 20);
    let entries = server.entries();
    let first = entries[0].client_port();
    assert!(entries.iter().all(|e| e.client_port() == first), "the 20 calls did not share one keep-alive connection");
    // Counts differ per call, so order mix-ups cannot pass check_all.
    let inputs: std::collections::BTreeSet<_> = recs.iter().map(|r| r["input_tokens"].as_u64()).collect();
    assert_eq!(inputs.len(), 20, "input_tokens not distinct per call");
    case.finish(&server);
}

#[test]
fn client_started_after_agent_ready() {
    if !require_bpf() {
        return;
    }
    let a = agent();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let run = case.openai(&server, "chat");
    assert!(run.spawned_at > a.ready_at, "client was spawned before the agent was ready");
    let start_ticks = run.starttime_ticks.expect("client reported its /proc starttime");
    let start_upper_ns = (start_ticks as u128 + 1) * env::tick_ns();
    assert!(
        start_upper_ns > a.ready_boottime_ns,
        "client process start ({start_ticks} ticks) is not after the agent's ready time"
    );
    let recs = case.wait_records(&server, 1);
    case.check_all(&server, &recs, &run);
    case.finish(&server);
}

#[test]
fn non_llm_https_traffic_produces_no_records() {
    if !require_bpf() {
        return;
    }
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(clients::curl_get(&server, &["/health"]));
    }
    // several requests on one keep-alive connection
    others.push(clients::curl_get(&server, &["/health", "/v1/models", "/health"]));
    for r in &others {
        case.expect_ok(r);
        assert!(r.stdout.lines().all(|l| l.trim() == "200"), "non-LLM request did not return 200");
    }
    // Sentinel: one real chat call; once its record is there, nothing else
    // may have been recorded for this port.
    let sentinel = case.curl_chat(&server, &[]);
    // Exactly one record (after settling), and it is the sentinel's chat.
    let recs = case.wait_records(&server, 1);
    case.check_all(&server, &recs, &sentinel);
    for r in &others {
        assert!(
            tokentap_tests::records::records_with_pid(r.pid).is_empty(),
            "a non-LLM request (pid {}) produced a usage record",
            r.pid
        );
    }
    case.finish(&server);
}
