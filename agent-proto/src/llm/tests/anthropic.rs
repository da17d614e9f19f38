//! Anthropic Messages.

use super::*;
use crate::tokens::{count, Encoding};

const PLAIN: &[u8] = include_bytes!("../fixtures/anthropic_messages.json");
const STREAM: &[u8] = include_bytes!("../fixtures/anthropic_stream.sse");
const STREAM_CACHE_TOOLS: &[u8] = include_bytes!("../fixtures/anthropic_stream_cache_tools.sse");

const REQUEST: &[u8] = br#"{"model":"claude-3-5-haiku-latest","max_tokens":1024,"system":"Be friendly.","messages":[{"role":"user","content":"Hello, Claude"}],"stream":true}"#;
const GREETING: &str = "Hello! It's nice to meet you. How can I help you today?";

#[test]
fn plain_with_cache() {
    let req = br#"{"model":"claude-sonnet-4-20250514","max_tokens":1024,"tools":[{"name":"get_weather","description":"Get the current weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}}}}],"messages":[{"role":"user","content":"What is the weather like in San Francisco?"}]}"#;
    let call = extract(MESSAGES, &json(req, PLAIN)).unwrap();
    assert_eq!(
        call,
        LlmCall {
            endpoint: MESSAGES,
            request_model: Some("claude-sonnet-4-20250514".into()),
            response_model: Some("claude-sonnet-4-20250514".into()),
            input_tokens: 472 + 1500 + 2048,
            output_tokens: 89,
            cached_input_tokens: 2048,
            reasoning_tokens: 0,
            usage_source: UsageSource::Reported,
            streaming: false,
            error_type: None,
        }
    );
}

#[test]
fn stream() {
    let call = extract(MESSAGES, &sse(REQUEST, STREAM)).unwrap();
    assert_eq!(call.request_model.as_deref(), Some("claude-3-5-haiku-latest"));
    assert_eq!(call.response_model.as_deref(), Some("claude-3-5-haiku-20241022"));
    assert_eq!((call.input_tokens, call.output_tokens), (25, 15));
    assert_eq!((call.cached_input_tokens, call.reasoning_tokens), (0, 0));
    assert_eq!(call.usage_source, UsageSource::Reported);
    assert!(call.streaming);
}

#[test]
fn stream_message_delta_usage_wins() {
    let call = extract(MESSAGES, &sse(REQUEST, STREAM_CACHE_TOOLS)).unwrap();
    assert_eq!(call.response_model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    assert_eq!(call.input_tokens, 9 + 2051 + 4096);
    assert_eq!(call.cached_input_tokens, 4096);
    assert_eq!(call.output_tokens, 58);
    assert_eq!(call.usage_source, UsageSource::Reported);
}

#[test]
fn last_message_delta_wins() {
    let body = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-1-20250805\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":100,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":50,\"output_tokens\":1}}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null,\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n";
    let call = extract(MESSAGES, &sse(REQUEST, body)).unwrap();
    assert_eq!(call.input_tokens, 150);
    assert_eq!(call.cached_input_tokens, 50);
    assert_eq!(call.output_tokens, 42);
}

/// The stream up to (not including) its `message_delta`.
fn without_message_delta() -> &'static [u8] {
    let at = STREAM.windows(b"event: message_delta".len()).position(|w| w == b"event: message_delta").unwrap();
    &STREAM[..at]
}

#[test]
fn stream_without_message_delta() {
    let body = without_message_delta();
    let call = extract(MESSAGES, &sse(REQUEST, body)).unwrap();
    // Input as message_start reported it; output counted from the text deltas.
    assert_eq!(call.usage_source, UsageSource::Estimated);
    assert_eq!(call.input_tokens, 25);
    assert_eq!(call.output_tokens, count(Encoding::Cl100k, GREETING));
    let ex = Exchange { response_truncated: true, ..sse(REQUEST, body) };
    assert_eq!(extract(MESSAGES, &ex), Err(LlmError::Truncated));
}

#[test]
fn error_event_mid_stream() {
    let mut body = without_message_delta().to_vec();
    body.extend_from_slice(
        b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    let call = extract(MESSAGES, &sse(REQUEST, &body)).unwrap();
    assert_eq!(call.error_type.as_deref(), Some("overloaded_error"));
    assert_eq!(call.input_tokens, 25);
    assert_eq!(call.usage_source, UsageSource::Reported);
}

#[test]
fn plain_without_usage_is_estimated() {
    let resp = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-haiku-20240307","content":[{"type":"thinking","thinking":"Greet back.","signature":"abc"},{"type":"text","text":"Hi there!"}],"stop_reason":"end_turn","stop_sequence":null}"#;
    let req = br#"{"model":"claude-3-haiku-20240307","max_tokens":100,"system":[{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"Hello"}]},{"role":"assistant","content":"Hi"},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"42"}]}]}"#;
    let call = extract(MESSAGES, &json(req, resp)).unwrap();
    let enc = Encoding::Cl100k;
    let input = 3
        + (3 + count(enc, "Be brief."))
        + (3 + count(enc, "user") + count(enc, "Hello"))
        + (3 + count(enc, "assistant") + count(enc, "Hi"))
        + (3 + count(enc, "user") + count(enc, "42"));
    let thinking = count(enc, "Greet back.");
    assert_eq!(call.usage_source, UsageSource::Estimated);
    assert_eq!(call.input_tokens, input);
    assert_eq!(call.reasoning_tokens, thinking);
    assert_eq!(call.output_tokens, count(enc, "Hi there!") + thinking);
}
