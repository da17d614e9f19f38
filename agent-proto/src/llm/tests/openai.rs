//! OpenAI Chat Completions, Responses and Embeddings.

use super::*;
use crate::tokens::{count, Encoding};

const CHAT_PLAIN: &[u8] = include_bytes!("../fixtures/openai_chat.json");
const CHAT_STREAM_USAGE: &[u8] = include_bytes!("../fixtures/openai_chat_stream_usage.sse");
const CHAT_STREAM_NO_USAGE: &[u8] = include_bytes!("../fixtures/openai_chat_stream_no_usage.sse");
const COOKBOOK_REQUEST: &[u8] = include_bytes!("../fixtures/openai_chat_request_cookbook.json");
const RESPONSES_PLAIN: &[u8] = include_bytes!("../fixtures/openai_responses.json");
const RESPONSES_STREAM: &[u8] = include_bytes!("../fixtures/openai_responses_stream.sse");
const RESPONSES_STREAM_CUT: &[u8] = include_bytes!("../fixtures/openai_responses_stream_cut.sse");
const EMBEDDINGS_PLAIN: &[u8] = include_bytes!("../fixtures/openai_embeddings.json");

const SYSTEM: &str = "You are a helpful assistant.";
const QUESTION: &str = "What's the weather like in Paris today?";

fn chat_request(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "stream": stream,
    })
    .to_string()
}

#[test]
fn chat_plain() {
    let req = br#"{"model":"o3-mini","messages":[{"role":"user","content":"What is the capital of France?"}],"reasoning_effort":"medium"}"#;
    let call = extract(CHAT, &json(req, CHAT_PLAIN)).unwrap();
    assert_eq!(
        call,
        LlmCall {
            endpoint: CHAT,
            request_model: Some("o3-mini".into()),
            response_model: Some("o3-mini-2025-01-31".into()),
            input_tokens: 1843,
            output_tokens: 412,
            cached_input_tokens: 1792,
            reasoning_tokens: 320,
            usage_source: UsageSource::Reported,
            streaming: false,
            error_type: None,
        }
    );
}

#[test]
fn chat_stream_with_usage() {
    let req = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let call = extract(CHAT, &sse(req, CHAT_STREAM_USAGE)).unwrap();
    assert_eq!(call.request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(call.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!((call.input_tokens, call.output_tokens), (19, 10));
    assert_eq!((call.cached_input_tokens, call.reasoning_tokens), (0, 0));
    assert_eq!(call.usage_source, UsageSource::Reported);
    assert!(call.streaming);
    assert_eq!(call.error_type, None);
}

#[test]
fn chat_stream_without_usage_is_estimated() {
    let req = chat_request("gpt-4o", true);
    let call = extract(CHAT, &sse(req.as_bytes(), CHAT_STREAM_NO_USAGE)).unwrap();
    let enc = Encoding::O200k;
    let generated =
        "Let me check the weather in Paris for you.get_weather{\"location\":\"Paris, France\",\"unit\":\"celsius\"}";
    let prompt = 3 + (3 + count(enc, "system") + count(enc, SYSTEM)) + (3 + count(enc, "user") + count(enc, QUESTION));
    assert_eq!(call.usage_source, UsageSource::Estimated);
    assert_eq!(call.output_tokens, count(enc, generated));
    assert_eq!(call.input_tokens, prompt);
    assert_eq!((call.cached_input_tokens, call.reasoning_tokens), (0, 0));
    assert_eq!(call.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert!(call.streaming);
}

#[test]
fn stream_detected_without_content_type_or_stream_flag() {
    let req = chat_request("gpt-4o", false);
    let ex = Exchange { response_content_type: None, ..json(req.as_bytes(), CHAT_STREAM_USAGE) };
    let call = extract(CHAT, &ex).unwrap();
    assert!(call.streaming);
    assert_eq!((call.input_tokens, call.output_tokens), (19, 10));
}

#[test]
fn cookbook_example_matches_the_api() {
    // OpenAI's cookbook reports 129 prompt tokens for these messages on gpt-4-0613 (cl100k),
    // as counted by the API itself, and 124 on gpt-4o (o200k).
    let req: serde_json::Value = serde_json::from_slice(COOKBOOK_REQUEST).unwrap();
    assert_eq!(openai_chat::estimate_input(&req, Encoding::Cl100k), Some(129));
    assert_eq!(openai_chat::estimate_input(&req, Encoding::O200k), Some(124));
    // And end to end, from a stream that reports no usage.
    let call = extract(CHAT, &sse(COOKBOOK_REQUEST, CHAT_STREAM_NO_USAGE)).unwrap();
    assert_eq!(call.input_tokens, 129);
    assert_eq!(call.request_model.as_deref(), Some("gpt-4-0613"));
}

#[test]
fn chat_estimate_counts_parts_names_and_tool_calls() {
    let req = br#"{"model":"gpt-4.1","messages":[
        {"role":"user","name":"ann","content":[{"type":"text","text":"Describe"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}},{"type":"text","text":" this"}]},
        {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"look","arguments":"{\"x\":1}"}}]},
        {"role":"tool","tool_call_id":"call_1","content":"a cat"}
    ]}"#;
    let enc = Encoding::O200k;
    let want = 3
        + (3 + count(enc, "user") + count(enc, "ann") + 1 + count(enc, "Describe this"))
        + (3 + count(enc, "assistant") + count(enc, "look") + count(enc, "{\"x\":1}"))
        + (3 + count(enc, "tool") + count(enc, "a cat"));
    let value: serde_json::Value = serde_json::from_slice(req).unwrap();
    assert_eq!(openai_chat::estimate_input(&value, enc), Some(want));
}

#[test]
fn chat_plain_without_usage_is_estimated() {
    let resp = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1747986420,"model":"llama3.1:8b","choices":[{"index":0,"message":{"role":"assistant","content":"Paris.","reasoning_content":"Capital of France."},"finish_reason":"stop"}]}"#;
    let req = chat_request("llama3.1:8b", false);
    let call = extract(CHAT, &json(req.as_bytes(), resp)).unwrap();
    let enc = Encoding::Cl100k;
    let reasoning = count(enc, "Capital of France.");
    assert_eq!(call.usage_source, UsageSource::Estimated);
    assert_eq!(call.reasoning_tokens, reasoning);
    assert_eq!(call.output_tokens, count(enc, "Paris.") + reasoning);
    assert!(!call.streaming);
}

#[test]
fn chat_parallel_choices_are_counted_apart() {
    let resp = br#"{"id":"chatcmpl-2","object":"chat.completion","created":1,"model":"gpt-4o","choices":[
        {"index":0,"message":{"role":"assistant","content":"Yes"},"finish_reason":"stop"},
        {"index":1,"message":{"role":"assistant","content":"No"},"finish_reason":"stop"}]}"#;
    let req = chat_request("gpt-4o", false);
    let call = extract(CHAT, &json(req.as_bytes(), resp)).unwrap();
    let enc = Encoding::O200k;
    assert_eq!(call.output_tokens, count(enc, "Yes") + count(enc, "No"));
}

#[test]
fn responses_plain() {
    let req = br#"{"model":"gpt-4.1","input":"Tell me a three sentence bedtime story about a unicorn."}"#;
    let call = extract(RESPONSES, &json(req, RESPONSES_PLAIN)).unwrap();
    assert_eq!(
        call,
        LlmCall {
            endpoint: RESPONSES,
            request_model: Some("gpt-4.1".into()),
            response_model: Some("gpt-4.1-2025-04-14".into()),
            input_tokens: 1536,
            output_tokens: 87,
            cached_input_tokens: 1024,
            reasoning_tokens: 0,
            usage_source: UsageSource::Reported,
            streaming: false,
            error_type: None,
        }
    );
}

const RESPONSES_REQUEST: &[u8] = br#"{"model":"gpt-5-mini","instructions":"You are a terse assistant.","input":"Write a two-line poem about counting tokens.","reasoning":{"effort":"minimal"},"stream":true}"#;
const POEM: &str = "Roses are red, violets are blue \u{2014} tokens are counted for you.";

#[test]
fn responses_stream() {
    let call = extract(RESPONSES, &sse(RESPONSES_REQUEST, RESPONSES_STREAM)).unwrap();
    assert_eq!(call.request_model.as_deref(), Some("gpt-5-mini"));
    assert_eq!(call.response_model.as_deref(), Some("gpt-5-mini-2025-08-07"));
    assert_eq!((call.input_tokens, call.output_tokens), (27, 83));
    assert_eq!((call.cached_input_tokens, call.reasoning_tokens), (0, 64));
    assert_eq!(call.usage_source, UsageSource::Reported);
    assert!(call.streaming);
}

#[test]
fn responses_stream_without_completed_event() {
    let call = extract(RESPONSES, &sse(RESPONSES_REQUEST, RESPONSES_STREAM_CUT)).unwrap();
    let enc = Encoding::O200k;
    let input = 3
        + (3 + count(enc, "You are a terse assistant."))
        + (3 + count(enc, "user") + count(enc, "Write a two-line poem about counting tokens."));
    assert_eq!(call.usage_source, UsageSource::Estimated);
    assert_eq!(call.output_tokens, count(enc, POEM));
    assert_eq!(call.input_tokens, input);
    // Cut by the capture instead: nothing trustworthy to report.
    let ex = Exchange { response_truncated: true, ..sse(RESPONSES_REQUEST, RESPONSES_STREAM_CUT) };
    assert_eq!(extract(RESPONSES, &ex), Err(LlmError::Truncated));
}

#[test]
fn responses_plain_without_usage_counts_output_items() {
    let resp = br#"{"id":"resp_1","object":"response","created_at":1,"status":"completed","error":null,"model":"gpt-4o","output":[
        {"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Oslo\"}","status":"completed"},
        {"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Checking.","annotations":[]}]}],"usage":null}"#;
    let req =
        br#"{"model":"gpt-4o","input":[{"role":"user","content":[{"type":"input_text","text":"Weather in Oslo?"}]}]}"#;
    let call = extract(RESPONSES, &json(req, resp)).unwrap();
    let enc = Encoding::O200k;
    assert_eq!(call.usage_source, UsageSource::Estimated);
    assert_eq!(call.output_tokens, count(enc, "get_weather{\"city\":\"Oslo\"}") + count(enc, "Checking."));
    assert_eq!(call.input_tokens, 3 + 3 + count(enc, "user") + count(enc, "Weather in Oslo?"));
}

#[test]
fn responses_failed_in_stream() {
    let body = b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"o3\",\"output\":[],\"usage\":null,\"error\":null}}\n\n\
event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"failed\",\"model\":\"o3\",\"output\":[],\"usage\":null,\"error\":{\"code\":\"server_error\",\"message\":\"The model failed.\"}}}\n\n";
    let call = extract(RESPONSES, &sse(br#"{"model":"o3","input":"hi","stream":true}"#, body)).unwrap();
    assert_eq!(call.error_type.as_deref(), Some("server_error"));
    assert_eq!((call.input_tokens, call.output_tokens), (0, 0));
    assert_eq!(call.usage_source, UsageSource::Reported);
}

#[test]
fn embeddings() {
    let req = br#"{"model":"text-embedding-3-small","input":["The food was delicious and the waiter...","hello"],"encoding_format":"float"}"#;
    let call = extract(EMBEDDINGS, &json(req, EMBEDDINGS_PLAIN)).unwrap();
    assert_eq!(
        call,
        LlmCall {
            endpoint: EMBEDDINGS,
            request_model: Some("text-embedding-3-small".into()),
            response_model: Some("text-embedding-3-small".into()),
            input_tokens: 13,
            output_tokens: 0,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            usage_source: UsageSource::Reported,
            streaming: false,
            error_type: None,
        }
    );
}

#[test]
fn embeddings_without_usage_are_estimated() {
    let resp = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"nomic-embed-text"}"#;
    let req = br#"{"model":"nomic-embed-text","input":["hello world", [1, 2, 3], 7]}"#;
    let call = extract(EMBEDDINGS, &json(req, resp)).unwrap();
    assert_eq!(call.usage_source, UsageSource::Estimated);
    assert_eq!(call.input_tokens, 2 + 3 + 1);
    assert_eq!(call.output_tokens, 0);
}

#[test]
fn truncated_request_still_reports_usage() {
    let full = format!(
        r#"{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "Hello! ".repeat(100)
    );
    let cut = &full.as_bytes()[..full.len() / 2];
    let ex = Exchange { request_truncated: true, ..sse(cut, CHAT_STREAM_USAGE) };
    let call = extract(CHAT, &ex).unwrap();
    assert_eq!(call.request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!((call.input_tokens, call.output_tokens), (19, 10));
    // Model after the cut: unknown, still fine.
    let ex = Exchange {
        request_truncated: true,
        ..sse(br#"{"messages":[{"role":"user","content":"Hel"#, CHAT_STREAM_USAGE)
    };
    let call = extract(CHAT, &ex).unwrap();
    assert_eq!(call.request_model, None);
    assert_eq!(call.usage_source, UsageSource::Reported);
}
