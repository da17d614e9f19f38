//! What a request is about to cost, known before its response: the input tokens counted the way
//! [`super::extract`] estimates them when a response reports no usage, and the output cap the
//! request sets. Enforcement reserves this much while the call is in flight.

use serde_json::Value;

use super::{request, Endpoint, Operation};
use crate::tokens::{self, Encoding};

/// A request's expected cost. Counts and the sanitised model name only: no body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPlan {
    pub model: Option<String>,
    pub stream: bool,
    /// Counted with tiktoken from the messages / input. A body larger than [`TOKENIZE_MAX`], or
    /// one that is not readable JSON (cut by the capture, say), counts four bytes a token of its
    /// whole length, so a large prompt still reserves a large amount.
    pub input_tokens: u64,
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens`; `Some(0)` for embeddings,
    /// which produce no output tokens.
    pub max_output_tokens: Option<u64>,
}

/// Largest body whose input is counted with the tokenizer. Counting runs on the agent's event
/// loop while the caller may be held: tiktoken takes about 50 ms per MiB, so a larger prompt is
/// counted by its size (JSON syntax included, which errs on the side of reserving more).
pub const TOKENIZE_MAX: usize = 64 * 1024;

/// `body`: the request body, content-decoded, possibly cut; `body_len`: its whole length.
pub fn plan_request(endpoint: Endpoint, body: &[u8], body_len: u64) -> RequestPlan {
    let meta = request::scan(body);
    let encoding = tokens::encoding_for_model(meta.model.as_deref().unwrap_or(""));
    let counted = (body.len() <= TOKENIZE_MAX)
        .then(|| serde_json::from_slice::<Value>(body).ok())
        .flatten()
        .filter(Value::is_object)
        .and_then(|req| input_estimate(endpoint.operation, &req, encoding));
    let max_output_tokens = match endpoint.operation {
        Operation::Embeddings | Operation::CohereEmbed => Some(0),
        _ => meta.max_output_tokens,
    };
    RequestPlan {
        model: meta.model,
        stream: meta.stream,
        input_tokens: counted.unwrap_or_else(|| body_len.max(body.len() as u64).div_ceil(4)),
        max_output_tokens,
    }
}

fn input_estimate(op: Operation, req: &Value, encoding: Encoding) -> Option<u64> {
    match op {
        Operation::Chat => super::openai_chat::estimate_input(req, encoding),
        Operation::Responses => super::openai_responses::estimate_input(req, encoding),
        Operation::Embeddings => super::openai_embeddings::estimate_input(req, encoding),
        Operation::Messages => super::anthropic::estimate_input(req, encoding),
        Operation::CohereChat => super::openai_chat::estimate_input(req, encoding),
        Operation::CohereEmbed => super::cohere::estimate_embed_input(req, encoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Provider;

    const CHAT: Endpoint = Endpoint { provider: Provider::OpenAi, operation: Operation::Chat };

    #[test]
    fn chat_request_counts_like_the_usage_estimate() {
        // OpenAI's cookbook: these two messages are 3 + (1 + 5) ... = counted by estimate_input.
        let body =
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}],"max_tokens":64,"stream":true}"#;
        let plan = plan_request(CHAT, body, body.len() as u64);
        // 3 (message) + "user" (1) + "hello world" (2) + 3 (reply priming).
        assert_eq!(plan.input_tokens, 9);
        assert_eq!(plan.max_output_tokens, Some(64));
        assert_eq!(plan.model.as_deref(), Some("gpt-4o"));
        assert!(plan.stream);
    }

    #[test]
    fn responses_messages_and_embeddings() {
        let responses = Endpoint { provider: Provider::OpenAi, operation: Operation::Responses };
        let body = br#"{"model":"gpt-5","input":"hello world","max_output_tokens":300}"#;
        let plan = plan_request(responses, body, body.len() as u64);
        assert!(plan.input_tokens >= 2, "{plan:?}");
        assert_eq!(plan.max_output_tokens, Some(300));

        let messages = Endpoint { provider: Provider::Anthropic, operation: Operation::Messages };
        let body = br#"{"model":"claude-sonnet-4-20250514","max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude"}]}"#;
        let plan = plan_request(messages, body, body.len() as u64);
        assert!(plan.input_tokens >= 4, "{plan:?}");
        assert_eq!(plan.max_output_tokens, Some(1024));

        let embeddings = Endpoint { provider: Provider::OpenAi, operation: Operation::Embeddings };
        let body = br#"{"model":"text-embedding-3-small","input":"hello world"}"#;
        let plan = plan_request(embeddings, body, body.len() as u64);
        assert_eq!(plan.input_tokens, 2);
        assert_eq!(plan.max_output_tokens, Some(0));
    }

    #[test]
    fn cut_or_odd_bodies_count_their_bytes() {
        let body = br#"{"model":"gpt-4o","max_tokens":10,"messages":[{"role":"user","content":"a long pro"#;
        let plan = plan_request(CHAT, body, 4000);
        assert_eq!(plan.input_tokens, 1000);
        assert_eq!(plan.max_output_tokens, Some(10));
        assert_eq!(plan.model.as_deref(), Some("gpt-4o"));
        let plan = plan_request(CHAT, b"[1,2,3]", 7);
        assert_eq!(plan.input_tokens, 2);
        assert_eq!(plan.max_output_tokens, None);
        assert_eq!(plan_request(CHAT, b"", 0).input_tokens, 0);
    }

    #[test]
    fn large_bodies_count_by_size() {
        let text = "word ".repeat(TOKENIZE_MAX / 5 + 100);
        let body = format!(r#"{{"model":"gpt-4o","max_tokens":7,"messages":[{{"role":"user","content":"{text}"}}]}}"#);
        let plan = plan_request(CHAT, body.as_bytes(), body.len() as u64);
        assert_eq!(plan.input_tokens, (body.len() as u64).div_ceil(4));
        assert_eq!(plan.max_output_tokens, Some(7));
        // Just under the bound: the tokenizer's count (one token per " word").
        let text = "word ".repeat(1000);
        let body = format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{text}"}}]}}"#);
        let counted = plan_request(CHAT, body.as_bytes(), body.len() as u64).input_tokens;
        assert!((1000..1010).contains(&counted), "{counted}");
    }
}
