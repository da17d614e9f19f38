//! Privileged end-to-end tests of OpenAI-compatible servers' quirks on `/v1/chat/completions`,
//! through the real agent and curl: usage spelt `input_tokens`/`output_tokens` (DashScope/Qwen)
//! is the server's numbers, not an estimate; a stream that is only `data: [DONE]` is still a
//! call, its input estimated. The upstream answers so on request headers (`x-test-*`).
//!
//! Needs root + kernel BTF (else SKIPPED, or a panic with `TOKENTAP_REQUIRE_BPF=1`). Never
//! prints payloads.

use serde_json::{json, Value};
use tokentap_tests::case::{CHAT_MODEL, SYSTEM_PROMPT};
use tokentap_tests::expect::cookbook_chat_estimate;
use tokentap_tests::{clients, require_bpf, Case, ClientRun, Expected, LlmServer, ServerOpts};

/// One curl chat call with these extra curl arguments; asserts HTTP 200.
fn curl_chat(case: &Case, server: &LlmServer, stream: bool, extra: &[&str]) -> ClientRun {
    let mut body = json!({
        "model": CHAT_MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": case.prompt()},
        ],
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let run = clients::curl_post_json(server, "/v1/chat/completions", &case.api_key, &body, extra);
    case.expect_ok(&run);
    assert_eq!(run.stdout.trim(), "200", "curl chat HTTP status");
    run
}

#[test]
fn dashscope_usage_spelling_is_reported() {
    if !require_bpf() {
        return;
    }
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let plain = curl_chat(&case, &server, false, &["-H", "x-test-usage-spelling: dashscope"]);
    let stream = curl_chat(&case, &server, true, &["-H", "x-test-usage-spelling: dashscope"]);
    let recs = case.wait_records(&server, 2);
    let entries = server.entries();
    for (e, streaming) in entries.iter().zip([false, true]) {
        let u = e.usage().expect("server usage");
        // The server really used the other spelling, so OpenAI's names alone cannot pass.
        assert!(u.get("prompt_tokens").is_none() && u["input_tokens"].as_u64() > Some(0));
        assert_eq!(e.streaming(), streaming);
    }
    // Exact input/output/cached counts, usage_source "reported", identity, models.
    for (i, run) in [&plain, &stream].into_iter().enumerate() {
        let exp = Expected::from_entry(&entries[i], server.port).with_process(
            run.pid,
            run.comm.as_deref(),
            run.exe.as_deref(),
        );
        assert_eq!(exp.usage_source, "reported");
        case.check(&recs[i], &exp);
    }
    case.finish(&server);
}

#[test]
fn done_only_stream_is_a_call_with_estimated_input() {
    if !require_bpf() {
        return;
    }
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let run = curl_chat(&case, &server, true, &["-H", "x-test-empty-stream: 1"]);
    let recs = case.wait_records(&server, 1);
    let e = &server.entries()[0];
    assert!(e.streaming() && e.usage().is_none() && e.text().is_empty(), "server sent more than [DONE]");
    let r: &Value = &recs[0];
    assert_eq!(r["pid"].as_u64(), Some(u64::from(run.pid)));
    assert_eq!(r["operation"], "chat");
    assert_eq!(r["request_model"], CHAT_MODEL);
    assert!(r["response_model"].is_null(), "response_model: {}", r["response_model"]);
    assert_eq!(r["usage_source"], "estimated");
    assert_eq!(r["streaming"], true);
    assert_eq!(r["http_status"], 200);
    assert_eq!(r["output_tokens"], 0);
    assert_eq!((r["cached_input_tokens"].as_u64(), r["reasoning_tokens"].as_u64()), (Some(0), Some(0)));
    // The cookbook estimate of the request's messages, ± 2 % (tokenizer differences).
    let est = cookbook_chat_estimate(e.request_messages().expect("request messages"));
    let got = r["input_tokens"].as_u64().expect("input_tokens");
    assert!(got.abs_diff(est) <= (est as f64 * 0.02).ceil() as u64, "input_tokens {got}, estimate {est}");
    case.finish(&server);
}
