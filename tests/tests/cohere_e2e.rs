//! Privileged end-to-end test of Cohere v2: curl (Cohere has no SDK in the test venv) over
//! OpenSSL posts `/v2/chat` plain and streamed and `/v2/embed` to the fake upstream, and the
//! agent must meter each with Cohere's billed units, exactly as the server's log says it sent.
//! Never prints payloads.

use serde_json::{json, Value};
use tokentap_tests::{clients, require_bpf, Case, ServerOpts};

fn post(case: &Case, server: &tokentap_tests::LlmServer, path: &str, body: &Value) {
    let run = clients::curl_post_json(server, path, &case.api_key, body, &[]);
    case.expect_ok(&run);
    assert_eq!(run.stdout.trim(), "200", "curl {path} HTTP status");
}

#[test]
fn cohere_chat_plain_stream_and_embed() {
    if !require_bpf() {
        return;
    }
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let messages = json!([{"role": "user", "content": case.prompt()}]);
    post(&case, &server, "/v2/chat", &json!({"model": "command-a-03-2025", "messages": messages, "max_tokens": 300}));
    post(&case, &server, "/v2/chat", &json!({"model": "command-r-plus-08-2024", "messages": messages, "stream": true}));
    post(
        &case,
        &server,
        "/v2/embed",
        &json!({"model": "embed-v4.0", "texts": [case.prompt()], "embedding_types": ["float"]}),
    );

    let recs = case.wait_records(&server, 3);
    let entries = server.entries();
    assert_eq!(entries.len(), 3);
    for e in &entries {
        let usage = e.usage().expect("server logged usage");
        let billed = |k: &str| usage["billed_units"][k].as_u64().unwrap_or(0);
        let (operation, streaming) = match e.path() {
            "/v2/chat" => ("chat", e.streaming()),
            "/v2/embed" => ("embeddings", false),
            other => panic!("unexpected path {other:?}"),
        };
        let rec = recs
            .iter()
            .find(|r| r["operation"] == operation && r["streaming"] == streaming)
            .unwrap_or_else(|| panic!("no record for {operation} streaming={streaming}"));
        assert_eq!(rec["provider"], "cohere");
        assert_eq!(rec["request_model"], e.request_model());
        assert_eq!(rec["usage_source"], "reported");
        // Billed units, not the larger processed `tokens` count the server also sent.
        assert_eq!(rec["input_tokens"].as_u64(), Some(billed("input_tokens")), "{operation} {streaming}");
        assert_eq!(rec["output_tokens"].as_u64(), Some(billed("output_tokens")), "{operation} {streaming}");
    }
    case.finish(&server);
}
