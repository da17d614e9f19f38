//! Cohere v2 Chat and Embed: the billed units are the record's tokens.

use super::*;

const CHAT_PLAIN: &[u8] = include_bytes!("../fixtures/cohere_chat.json");
const CHAT_STREAM: &[u8] = include_bytes!("../fixtures/cohere_chat_stream.sse");
const EMBED: &[u8] = include_bytes!("../fixtures/cohere_embed.json");

const REQUEST: &[u8] =
    br#"{"model":"command-a-03-2025","messages":[{"role":"user","content":"Tell me about LLMs"}],"max_tokens":500}"#;

#[test]
fn chat_plain_reports_billed_units() {
    let call = extract(COHERE_CHAT, &json(REQUEST, CHAT_PLAIN)).unwrap();
    assert_eq!(
        call,
        LlmCall {
            endpoint: COHERE_CHAT,
            request_model: Some("command-a-03-2025".into()),
            // Cohere's response names no model.
            response_model: None,
            // billed_units, not tokens (71 in, prompt template included).
            input_tokens: 5,
            output_tokens: 418,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            usage_source: UsageSource::Reported,
            streaming: false,
            error_type: None,
        }
    );
}

#[test]
fn chat_stream_usage_from_message_end() {
    let req = br#"{"model":"command-r-plus-08-2024","stream":true,"messages":[{"role":"user","content":"Hello"}]}"#;
    let call = extract(COHERE_CHAT, &sse(req, CHAT_STREAM)).unwrap();
    assert_eq!(call.request_model.as_deref(), Some("command-r-plus-08-2024"));
    assert_eq!((call.input_tokens, call.output_tokens), (3, 9));
    assert_eq!(call.usage_source, UsageSource::Reported);
    assert!(call.streaming);
    assert_eq!(call.error_type, None);
}

#[test]
fn chat_stream_without_usage_is_estimated_from_deltas() {
    let body = String::from_utf8(CHAT_STREAM.to_vec()).unwrap();
    let cut = &body[..body.find("event: message-end").unwrap()];
    let req = br#"{"model":"command-a-03-2025","stream":true,"messages":[{"role":"user","content":"Hello"}]}"#;
    let call = extract(COHERE_CHAT, &sse(req, cut.as_bytes())).unwrap();
    assert_eq!(call.usage_source, UsageSource::Estimated);
    let enc = crate::tokens::encoding_for_model("command-a-03-2025");
    assert_eq!(call.output_tokens, crate::tokens::count(enc, "Hello! How can I help you today?"));
    assert!(call.input_tokens > 0);
}

#[test]
fn chat_stream_error_at_message_end_is_an_error_without_its_text() {
    let body = br#"event: message-start
data: {"type":"message-start","delta":{"message":{"role":"assistant"}}}

event: message-end
data: {"type":"message-end","delta":{"finish_reason":"ERROR","error":"secret prompt words"}}

"#;
    let call = extract(COHERE_CHAT, &sse(REQUEST, body)).unwrap();
    assert_eq!(call.error_type.as_deref(), Some("stream_error"));
    assert!(!format!("{call:?}").contains("secret"));
}

#[test]
fn chat_stream_progress_counts_deltas() {
    let mut p = OutputProgress::new(COHERE_CHAT, Some("command-a-03-2025"));
    for piece in CHAT_STREAM.chunks(13) {
        p.feed(piece);
    }
    // message-end reports 9 billed output tokens, more than the delta text counts.
    assert_eq!(p.tokens(), 9);
    assert!(p.deltas() > 1);
}

#[test]
fn embed_reports_billed_input() {
    let req = br#"{"model":"embed-v4.0","texts":["hello"],"input_type":"classification","embedding_types":["float"]}"#;
    let call = extract(COHERE_EMBED, &json(req, EMBED)).unwrap();
    assert_eq!(call.request_model.as_deref(), Some("embed-v4.0"));
    assert_eq!((call.input_tokens, call.output_tokens), (1, 0));
    assert_eq!(call.usage_source, UsageSource::Reported);
    assert_eq!(call.endpoint.provider.as_str(), "cohere");
    assert_eq!(call.endpoint.operation.as_str(), "embeddings");
}

#[test]
fn embed_without_meta_is_estimated_from_texts() {
    let req = br#"{"model":"embed-v4.0","texts":["hello world","bye"],"embedding_types":["float"]}"#;
    let resp = br#"{"id":"x","embeddings":{"float":[[0.1],[0.2]]},"texts":["hello world","bye"]}"#;
    let call = extract(COHERE_EMBED, &json(req, resp)).unwrap();
    assert_eq!(call.usage_source, UsageSource::Estimated);
    assert_eq!((call.input_tokens, call.output_tokens), (3, 0));
}

#[test]
fn cohere_error_body_gives_the_status() {
    // Cohere errors are `{"id", "message"}`: no type field, so the status names the error.
    let resp = br#"{"id":"e1","message":"invalid api token"}"#;
    let call = extract(COHERE_CHAT, &failed(401, REQUEST, resp)).unwrap();
    assert_eq!(call.error_type.as_deref(), Some("401"));
}

#[test]
fn plan_reads_cohere_requests() {
    let plan = plan_request(COHERE_CHAT, REQUEST, REQUEST.len() as u64);
    assert_eq!(plan.model.as_deref(), Some("command-a-03-2025"));
    assert_eq!(plan.max_output_tokens, Some(500));
    assert!(plan.input_tokens > 3, "{plan:?}");
    let embed = br#"{"model":"embed-v4.0","texts":["hello world"]}"#;
    let plan = plan_request(COHERE_EMBED, embed, embed.len() as u64);
    assert_eq!((plan.input_tokens, plan.max_output_tokens), (2, Some(0)));
}
