//! OpenAI-compatible servers whose Chat Completions responses differ from OpenAI's own:
//! usage spelt the Responses way (DashScope/Qwen), and streams with no chunk at all.

use super::*;
use crate::tokens::{count, Encoding};

const DASHSCOPE_PLAIN: &[u8] = include_bytes!("../fixtures/openai_chat_dashscope.json");
const DASHSCOPE_STREAM: &[u8] = include_bytes!("../fixtures/openai_chat_stream_dashscope.sse");
const DONE_ONLY: &[u8] = include_bytes!("../fixtures/openai_chat_stream_done_only.sse");

const QWEN_REQ: &[u8] = br#"{"model":"qwen-plus","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Who are you?"}]}"#;
const QWEN_STREAM_REQ: &[u8] = br#"{"model":"qwen-plus","messages":[{"role":"user","content":"Who are you?"}],"stream":true,"stream_options":{"include_usage":true}}"#;

#[test]
fn dashscope_plain_usage_is_reported() {
    let call = extract(CHAT, &json(QWEN_REQ, DASHSCOPE_PLAIN)).unwrap();
    assert_eq!(
        call,
        LlmCall {
            endpoint: CHAT,
            request_model: Some("qwen-plus".into()),
            response_model: Some("qwen-plus".into()),
            input_tokens: 22,
            output_tokens: 17,
            cached_input_tokens: 8,
            reasoning_tokens: 0,
            usage_source: UsageSource::Reported,
            streaming: false,
            error_type: None,
        }
    );
}

#[test]
fn dashscope_stream_usage_is_reported() {
    let call = extract(CHAT, &sse(QWEN_STREAM_REQ, DASHSCOPE_STREAM)).unwrap();
    assert_eq!(call.usage_source, UsageSource::Reported);
    assert_eq!((call.input_tokens, call.output_tokens), (22, 10));
    assert_eq!((call.cached_input_tokens, call.reasoning_tokens), (0, 0));
    assert_eq!(call.response_model.as_deref(), Some("qwen-plus"));
    assert!(call.streaming);
}

#[test]
fn openai_spelling_wins_when_both_are_present() {
    let resp = br#"{"object":"chat.completion","model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":6,"input_tokens":50,"output_tokens":60,"output_tokens_details":{"reasoning_tokens":2}}}"#;
    let call = extract(CHAT, &json(QWEN_REQ, resp)).unwrap();
    assert_eq!((call.input_tokens, call.output_tokens, call.reasoning_tokens), (5, 6, 2));
    assert_eq!(call.usage_source, UsageSource::Reported);
}

#[test]
fn done_only_stream_is_a_call_with_estimated_input() {
    let call = extract(CHAT, &sse(QWEN_STREAM_REQ, DONE_ONLY)).unwrap();
    let enc = Encoding::Cl100k;
    let prompt = 3 + 3 + count(enc, "user") + count(enc, "Who are you?");
    assert_eq!(
        call,
        LlmCall {
            endpoint: CHAT,
            request_model: Some("qwen-plus".into()),
            response_model: None,
            input_tokens: prompt,
            output_tokens: 0,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            usage_source: UsageSource::Estimated,
            streaming: true,
            error_type: None,
        }
    );
    // Without a content type or a stream flag, `data:` still marks it a stream.
    let ex = Exchange { response_content_type: None, ..json(QWEN_REQ, DONE_ONLY) };
    assert_eq!(extract(CHAT, &ex).map(|c| (c.streaming, c.output_tokens)), Ok((true, 0)));
}

#[test]
fn done_only_stream_still_needs_a_readable_request() {
    // The estimate is all there is: an unreadable request is an error, not a zero.
    assert_eq!(extract(CHAT, &sse(b"not json", DONE_ONLY)), Err(LlmError::RequestNotJson));
    let cut = Exchange { response_truncated: true, ..sse(QWEN_REQ, DONE_ONLY) };
    assert_eq!(extract(CHAT, &cut), Err(LlmError::Truncated));
    // A non-JSON frame before `[DONE]` is not an empty stream.
    assert_eq!(extract(CHAT, &sse(QWEN_REQ, b"data: oops\n\ndata: [DONE]\n\n")), Err(LlmError::ResponseNotJson));
    // Comments only, no `[DONE]`: nothing says the stream ended.
    assert_eq!(extract(CHAT, &sse(QWEN_REQ, b": ping\n\n")), Err(LlmError::ResponseNotJson));
}
