//! Fixture tests of [`super::extract`]. Fixtures under `../fixtures/` copy the real APIs' shapes.

mod anthropic;
mod cohere;
mod compatible;
mod errors;
mod openai;
mod robustness;

use super::*;

pub(super) const CHAT: Endpoint = Endpoint { provider: Provider::OpenAi, operation: Operation::Chat };
pub(super) const RESPONSES: Endpoint = Endpoint { provider: Provider::OpenAi, operation: Operation::Responses };
pub(super) const EMBEDDINGS: Endpoint = Endpoint { provider: Provider::OpenAi, operation: Operation::Embeddings };
pub(super) const MESSAGES: Endpoint = Endpoint { provider: Provider::Anthropic, operation: Operation::Messages };
pub(super) const COHERE_CHAT: Endpoint = Endpoint { provider: Provider::Cohere, operation: Operation::CohereChat };
pub(super) const COHERE_EMBED: Endpoint = Endpoint { provider: Provider::Cohere, operation: Operation::CohereEmbed };
pub(super) const ALL: [Endpoint; 6] = [CHAT, RESPONSES, EMBEDDINGS, MESSAGES, COHERE_CHAT, COHERE_EMBED];

/// A complete 200 exchange with a JSON response.
pub(super) fn json<'a>(request: &'a [u8], response: &'a [u8]) -> Exchange<'a> {
    Exchange {
        request_body: request,
        request_truncated: false,
        status: 200,
        response_content_type: Some("application/json"),
        response_body: response,
        response_truncated: false,
    }
}

/// A complete 200 exchange with an event-stream response.
pub(super) fn sse<'a>(request: &'a [u8], response: &'a [u8]) -> Exchange<'a> {
    Exchange { response_content_type: Some("text/event-stream"), ..json(request, response) }
}

/// An error exchange.
pub(super) fn failed<'a>(status: u16, request: &'a [u8], response: &'a [u8]) -> Exchange<'a> {
    Exchange { status, ..json(request, response) }
}

#[test]
fn labels() {
    assert_eq!(Provider::OpenAi.as_str(), "openai");
    assert_eq!(Provider::Anthropic.as_str(), "anthropic");
    assert_eq!(Operation::Chat.as_str(), "chat");
    assert_eq!(Operation::Responses.as_str(), "responses");
    assert_eq!(Operation::Embeddings.as_str(), "embeddings");
    assert_eq!(Operation::Messages.as_str(), "messages");
    assert_eq!(UsageSource::Reported.as_str(), "reported");
    assert_eq!(UsageSource::Estimated.as_str(), "estimated");
    let reasons = [
        (LlmError::RequestNotJson, "request_not_json"),
        (LlmError::ResponseNotJson, "response_not_json"),
        (LlmError::NoUsage, "no_usage"),
        (LlmError::Truncated, "truncated"),
        (LlmError::UnexpectedShape("x"), "unexpected_shape"),
    ];
    for (e, label) in reasons {
        assert_eq!(e.reason(), label);
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn model_names_are_sanitised() {
    assert_eq!(clean_model(" gpt-4o "), Some("gpt-4o".to_string()));
    assert_eq!(
        clean_model("accounts/fireworks/models/llama-v3p1-8b-instruct").as_deref(),
        Some("accounts/fireworks/models/llama-v3p1-8b-instruct")
    );
    assert_eq!(
        clean_model("anthropic.claude-3-sonnet-20240229-v1:0").as_deref(),
        Some("anthropic.claude-3-sonnet-20240229-v1:0")
    );
    assert_eq!(clean_model("a b\"c\n").as_deref(), Some("a_b_c"));
    assert_eq!(clean_model(""), None);
    assert_eq!(clean_model(&"x".repeat(1000)).map(|m| m.len()), Some(128));
}

#[test]
fn error_types_are_sanitised() {
    assert_eq!(clean_error_type("overloaded_error").as_deref(), Some("overloaded_error"));
    assert_eq!(clean_error_type("a.b-c_1").as_deref(), Some("a.b-c_1"));
    assert_eq!(clean_error_type("has space"), None);
    assert_eq!(clean_error_type(""), None);
    assert_eq!(clean_error_type(&"e".repeat(100)).map(|t| t.len()), Some(64));
}
