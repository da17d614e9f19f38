//! Error responses, and inputs that must be refused (never panicked on, never echoed).

use super::*;

const OPENAI_401: &[u8] = include_bytes!("../fixtures/openai_error_401.json");
const ANTHROPIC_529: &[u8] = include_bytes!("../fixtures/anthropic_error_529.json");
const CHAT_STREAM_USAGE: &[u8] = include_bytes!("../fixtures/openai_chat_stream_usage.sse");
const CHAT_STREAM_NO_USAGE: &[u8] = include_bytes!("../fixtures/openai_chat_stream_no_usage.sse");
const CHAT_PLAIN: &[u8] = include_bytes!("../fixtures/openai_chat.json");

const CHAT_REQ: &[u8] = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"SECRET-PROMPT"}],"stream":true}"#;

#[test]
fn openai_401() {
    let call = extract(CHAT, &failed(401, CHAT_REQ, OPENAI_401)).unwrap();
    assert_eq!(
        call,
        LlmCall {
            endpoint: CHAT,
            request_model: Some("gpt-4o".into()),
            response_model: None,
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            usage_source: UsageSource::Reported,
            streaming: true,
            error_type: Some("invalid_request_error".into()),
        }
    );
}

#[test]
fn anthropic_529() {
    let req = br#"{"model":"claude-opus-4-1-20250805","max_tokens":1024,"messages":[{"role":"user","content":"Hi"}]}"#;
    let call = extract(MESSAGES, &failed(529, req, ANTHROPIC_529)).unwrap();
    assert_eq!(call.error_type.as_deref(), Some("overloaded_error"));
    assert_eq!(call.request_model.as_deref(), Some("claude-opus-4-1-20250805"));
    assert_eq!((call.input_tokens, call.output_tokens), (0, 0));
    assert_eq!(call.usage_source, UsageSource::Reported);
    assert!(!call.streaming);
}

#[test]
fn error_without_usable_type_falls_back_to_status() {
    let cases: &[(u16, &[u8])] = &[
        (502, b"<html><body>502 Bad Gateway</body></html>"),
        (500, b""),
        (429, br#"{"error":"rate limited"}"#),
        (400, br#"{"error":{"message":"bad","type":null}}"#),
        (400, br#"{"error":{"type":"Your prompt SECRET-PROMPT is bad"}}"#),
        (404, br#"{"detail":"Not Found"}"#),
    ];
    for (status, body) in cases {
        for ep in ALL {
            let call = extract(ep, &failed(*status, CHAT_REQ, body)).unwrap();
            assert_eq!(call.error_type, Some(status.to_string()));
        }
    }
    let long = format!(r#"{{"error":{{"type":"{}"}}}}"#, "x".repeat(200));
    let call = extract(CHAT, &failed(400, CHAT_REQ, long.as_bytes())).unwrap();
    assert_eq!(call.error_type, Some("x".repeat(64)));
}

#[test]
fn error_event_inside_a_successful_stream() {
    let body = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
    let call = extract(CHAT, &sse(CHAT_REQ, body)).unwrap();
    assert_eq!(call.error_type.as_deref(), Some("server_error"));
    assert_eq!((call.input_tokens, call.output_tokens), (0, 0));
}

#[test]
fn refused_inputs() {
    // Response not JSON.
    assert_eq!(extract(CHAT, &json(CHAT_REQ, b"<html>hello</html>")), Err(LlmError::ResponseNotJson));
    assert_eq!(extract(CHAT, &json(CHAT_REQ, b"")), Err(LlmError::ResponseNotJson));
    assert_eq!(extract(CHAT, &sse(CHAT_REQ, b"data: not json\n\ndata: [DONE]\n\n")), Err(LlmError::ResponseNotJson));
    // JSON, but not an object.
    assert_eq!(
        extract(CHAT, &json(CHAT_REQ, b"[1,2,3]")),
        Err(LlmError::UnexpectedShape("response is not a JSON object"))
    );
    // An object with neither usage nor output.
    assert_eq!(extract(CHAT, &json(CHAT_REQ, br#"{"object":"list","data":[]}"#)), Err(LlmError::NoUsage));
    // Plain JSON cut before the usage.
    let cut = &CHAT_PLAIN[..CHAT_PLAIN.len() - 300];
    let ex = Exchange { response_truncated: true, ..json(CHAT_REQ, cut) };
    assert_eq!(extract(CHAT, &ex), Err(LlmError::Truncated));
    // A stream cut before its usage frame.
    let cut = &CHAT_STREAM_USAGE[..CHAT_STREAM_USAGE.len() / 2];
    let ex = Exchange { response_truncated: true, ..sse(CHAT_REQ, cut) };
    assert_eq!(extract(CHAT, &ex), Err(LlmError::Truncated));
    // Estimation needed, but the request is not JSON / was cut / has no messages.
    assert_eq!(extract(CHAT, &sse(b"SECRET-PROMPT", CHAT_STREAM_NO_USAGE)), Err(LlmError::RequestNotJson));
    let ex = Exchange { request_truncated: true, ..sse(&CHAT_REQ[..30], CHAT_STREAM_NO_USAGE) };
    assert_eq!(extract(CHAT, &ex), Err(LlmError::Truncated));
    assert!(matches!(
        extract(CHAT, &sse(br#"{"model":"gpt-4o"}"#, CHAT_STREAM_NO_USAGE)),
        Err(LlmError::UnexpectedShape(_))
    ));
    assert!(matches!(extract(CHAT, &sse(b"[]", CHAT_STREAM_NO_USAGE)), Err(LlmError::UnexpectedShape(_))));
}

#[test]
fn nothing_leaks_through_debug_or_errors() {
    let ex = sse(CHAT_REQ, CHAT_STREAM_NO_USAGE);
    let shown = format!("{ex:?}");
    assert!(!shown.contains("SECRET"));
    assert!(!shown.contains("weather"));
    assert!(shown.contains("request_body_len"));
    let bad = json(CHAT_REQ, b"SECRET-RESPONSE");
    let err = extract(CHAT, &bad).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("SECRET"));
    let call = extract(CHAT, &ex).unwrap();
    assert!(!format!("{call:?}").contains("SECRET"));
}
