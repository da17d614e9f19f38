//! Provider API recognition and usage extraction.
//!
//! [`recognise`] tells from the request line and Host header whether a request targets a
//! known AI API; [`extract`] turns one captured exchange (request body, response body) into an
//! [`LlmCall`] record: models, token usage as the provider reported it or, when the response
//! carries none (streams without `include_usage`, servers that omit it), as estimated with
//! tiktoken ([`crate::tokens`]).
//!
//! Privacy: bodies hold prompts and completions. Nothing built here carries body text out:
//! [`LlmCall`] holds counts, model names (sanitised) and short error identifiers; [`LlmError`]
//! holds fixed reasons; [`Exchange`]'s `Debug` shows lengths only.

mod anthropic;
mod cohere;
mod estimate;
mod openai_chat;
mod openai_embeddings;
mod openai_responses;
mod plan;
mod progress;
mod recognise;
mod request;
#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::Value;

use crate::http::sse;
use crate::tokens::{self, Encoding};

pub use plan::{plan_request, RequestPlan, TOKENIZE_MAX};
pub use progress::OutputProgress;
pub use recognise::{is_known_ai_host, recognise, KNOWN_AI_HOSTS};

/// An AI API provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI, and the many servers that speak its API.
    OpenAi,
    Anthropic,
    Cohere,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Cohere => "cohere",
        }
    }
}

/// Which API of a provider; decides the request and response shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    Chat,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// OpenAI Embeddings (`/v1/embeddings`).
    Embeddings,
    /// Anthropic Messages (`/v1/messages`).
    Messages,
    /// Cohere v2 Chat (`/v2/chat`).
    CohereChat,
    /// Cohere v2 Embed (`/v2/embed`).
    CohereEmbed,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Responses => "responses",
            Operation::Embeddings => "embeddings",
            Operation::Messages => "messages",
            // Named for what they are in the GenAI conventions; the provider tells them apart.
            Operation::CohereChat => "chat",
            Operation::CohereEmbed => "embeddings",
        }
    }
}

/// A recognised API endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub provider: Provider,
    pub operation: Operation,
}

/// Where the token counts of an [`LlmCall`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// The provider's `usage` object.
    Reported,
    /// Counted with tiktoken from the request and the response text.
    Estimated,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
        }
    }
}

/// One captured request/response pair, bodies already de-chunked and content-decoded.
pub struct Exchange<'a> {
    /// Content-decoded JSON body of the request.
    pub request_body: &'a [u8],
    /// The capture cut the request body: its JSON may be incomplete.
    pub request_truncated: bool,
    pub status: u16,
    /// Media type only, lower-cased (`application/json`, `text/event-stream`).
    pub response_content_type: Option<&'a str>,
    /// De-chunked, content-decoded.
    pub response_body: &'a [u8],
    pub response_truncated: bool,
}

/// Shows lengths and flags only: the bodies are prompts and completions.
impl fmt::Debug for Exchange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("request_body_len", &self.request_body.len())
            .field("request_truncated", &self.request_truncated)
            .field("status", &self.status)
            .field("response_content_type", &self.response_content_type)
            .field("response_body_len", &self.response_body.len())
            .field("response_truncated", &self.response_truncated)
            .finish()
    }
}

/// What one API call cost, and what it was about (metadata only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmCall {
    pub endpoint: Endpoint,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    /// Total tokens read. OpenAI `prompt_tokens` / `input_tokens` (which include cached ones);
    /// Anthropic `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`.
    pub input_tokens: u64,
    /// `completion_tokens` / `output_tokens` (OpenAI: includes reasoning tokens).
    pub output_tokens: u64,
    /// OpenAI `*_tokens_details.cached_tokens`; Anthropic `cache_read_input_tokens`.
    pub cached_input_tokens: u64,
    /// OpenAI `*_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: u64,
    pub usage_source: UsageSource,
    /// The request had `"stream": true`, or the response is an event stream.
    pub streaming: bool,
    /// For status >= 400 (or an error event inside a successful stream): the provider's
    /// `error.type` (an identifier of at most 64 chars of `[A-Za-z0-9_.-]`), else the status code.
    pub error_type: Option<String>,
}

/// Why no [`LlmCall`] could be built. Carries reasons only, never body text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("request body is not JSON")]
    RequestNotJson,
    #[error("response body is not JSON")]
    ResponseNotJson,
    #[error("response reports no usage and has nothing to estimate it from")]
    NoUsage,
    #[error("body truncated by the capture before the usage")]
    Truncated,
    #[error("unexpected shape: {0}")]
    UnexpectedShape(&'static str),
}

impl LlmError {
    /// Snake-case label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            LlmError::RequestNotJson => "request_not_json",
            LlmError::ResponseNotJson => "response_not_json",
            LlmError::NoUsage => "no_usage",
            LlmError::Truncated => "truncated",
            LlmError::UnexpectedShape(_) => "unexpected_shape",
        }
    }
}

/// Builds the call record. Status >= 400: zero tokens, usage_source Reported, error_type set, Ok.
///
/// For a successful call, usage comes from the response; if it reports none, it is estimated
/// (`UsageSource::Estimated`): input from the request body, output from the response text.
pub fn extract(endpoint: Endpoint, ex: &Exchange) -> Result<LlmCall, LlmError> {
    let meta = request::scan(ex.request_body);
    let event_stream = is_event_stream(ex.response_content_type, ex.response_body);
    let mut call = LlmCall {
        endpoint,
        request_model: meta.model,
        response_model: None,
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        reasoning_tokens: 0,
        usage_source: UsageSource::Reported,
        streaming: meta.stream || event_stream,
        error_type: None,
    };
    if ex.status >= 400 {
        let found = serde_json::from_slice::<Value>(ex.response_body).ok().as_ref().and_then(error_type_of);
        call.error_type = Some(found.unwrap_or_else(|| ex.status.to_string()));
        return Ok(call);
    }

    let mut obs = Observed::default();
    if event_stream {
        let raw = sse::parse(ex.response_body);
        let events: Vec<Event> = raw
            .iter()
            .filter_map(|e| {
                let value = serde_json::from_str::<Value>(e.data.trim()).ok()?;
                value.is_object().then_some(Event { name: e.event.as_deref(), value })
            })
            .collect();
        if events.is_empty() {
            if !ended_empty(&raw) {
                return Err(not_json(ex.response_truncated));
            }
            // Only `data: [DONE]`: the server ended the stream without a chunk. Still a call
            // that read its prompt, so it is recorded with the input estimated and no output.
            obs.has_output = true;
            return finish(call, obs, ex);
        }
        match endpoint.operation {
            Operation::Chat => openai_chat::observe_stream(&events, &mut obs),
            Operation::Responses => openai_responses::observe_stream(&events, &mut obs),
            Operation::Embeddings => {
                for e in &events {
                    openai_embeddings::observe_json(&e.value, &mut obs);
                }
            }
            Operation::Messages => anthropic::observe_stream(&events, &mut obs),
            Operation::CohereChat => cohere::observe_chat_stream(&events, &mut obs),
            Operation::CohereEmbed => {
                for e in &events {
                    cohere::observe_embed_json(&e.value, &mut obs);
                }
            }
        }
    } else {
        let value = serde_json::from_slice::<Value>(ex.response_body).map_err(|_| not_json(ex.response_truncated))?;
        if !value.is_object() {
            return Err(LlmError::UnexpectedShape("response is not a JSON object"));
        }
        match endpoint.operation {
            Operation::Chat => openai_chat::observe_json(&value, &mut obs),
            Operation::Responses => openai_responses::observe_json(&value, &mut obs),
            Operation::Embeddings => openai_embeddings::observe_json(&value, &mut obs),
            Operation::Messages => anthropic::observe_json(&value, &mut obs),
            Operation::CohereChat => cohere::observe_chat_json(&value, &mut obs),
            Operation::CohereEmbed => cohere::observe_embed_json(&value, &mut obs),
        }
    }
    finish(call, obs, ex)
}

/// A stream whose only data frames are the `[DONE]` sentinel (at least one).
fn ended_empty(raw: &[sse::SseEvent]) -> bool {
    !raw.is_empty() && raw.iter().all(|e| e.data.trim() == "[DONE]")
}

fn not_json(truncated: bool) -> LlmError {
    if truncated {
        LlmError::Truncated
    } else {
        LlmError::ResponseNotJson
    }
}

/// One parsed data frame of an event stream.
pub(crate) struct Event<'a> {
    pub name: Option<&'a str>,
    pub value: Value,
}

impl Event<'_> {
    /// The JSON `type` field, else the SSE `event:` name.
    pub fn kind(&self) -> &str {
        self.value.get("type").and_then(Value::as_str).or(self.name).unwrap_or("")
    }
}

/// Token counts as the provider reported them, already mapped to [`LlmCall`]'s meaning.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub reasoning: u64,
}

/// What a response body showed, gathered by the per-API modules.
#[derive(Default)]
pub(crate) struct Observed {
    pub response_model: Option<String>,
    /// Complete reported usage.
    pub usage: Option<Usage>,
    /// Reported input side only (`(input, cached)`), when the output side never came.
    pub reported_input: Option<(u64, u64)>,
    /// Generated text, per choice / output item, for estimation.
    pub outputs: Texts,
    /// Generated reasoning text (visible thinking), for estimation.
    pub reasoning: Texts,
    /// The body had the structure that carries output (choices, output items, content...).
    pub has_output: bool,
    /// An error reported inside a successful (2xx) response, e.g. a stream error event.
    pub error_type: Option<String>,
}

impl Observed {
    /// Keeps the first non-empty model name seen.
    pub fn set_model(&mut self, model: Option<&Value>) {
        if self.response_model.is_none() {
            self.response_model = model.and_then(Value::as_str).and_then(clean_model);
        }
    }

    /// Records an error object found inside a successful response.
    pub fn set_error(&mut self, error_type: Option<String>) {
        if self.error_type.is_none() {
            self.error_type = Some(error_type.unwrap_or_else(|| "stream_error".to_string()));
        }
    }
}

/// Text buffers keyed by choice / output index, each counted on its own.
#[derive(Default)]
pub(crate) struct Texts(Vec<(u64, String)>);

/// More parallel choices than this are folded into the last buffer.
const MAX_TEXT_KEYS: u64 = 64;

impl Texts {
    pub fn push(&mut self, key: u64, text: &str) {
        if text.is_empty() {
            return;
        }
        let key = key.min(MAX_TEXT_KEYS);
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, buf)) => buf.push_str(text),
            None => self.0.push((key, text.to_string())),
        }
    }

    pub fn count(&self, encoding: Encoding) -> u64 {
        self.0.iter().fold(0u64, |n, (_, t)| n.saturating_add(tokens::count(encoding, t)))
    }
}

fn finish(mut call: LlmCall, obs: Observed, ex: &Exchange) -> Result<LlmCall, LlmError> {
    call.response_model = obs.response_model;
    call.error_type = obs.error_type;
    if let Some(u) = obs.usage {
        call.input_tokens = u.input;
        call.output_tokens = u.output;
        call.cached_input_tokens = u.cached;
        call.reasoning_tokens = u.reasoning;
        return Ok(call);
    }
    if call.error_type.is_some() {
        // The call failed mid-way: keep what was reported, estimate nothing.
        if let Some((input, cached)) = obs.reported_input {
            call.input_tokens = input;
            call.cached_input_tokens = cached;
        }
        return Ok(call);
    }
    if ex.response_truncated {
        return Err(LlmError::Truncated);
    }
    if !obs.has_output {
        return Err(LlmError::NoUsage);
    }
    let model = call.request_model.as_deref().or(call.response_model.as_deref()).unwrap_or("");
    let encoding = tokens::encoding_for_model(model);
    let (input, cached) = match obs.reported_input {
        Some(reported) => reported,
        None => (estimate_request(call.endpoint.operation, ex, encoding)?, 0),
    };
    let reasoning = obs.reasoning.count(encoding);
    call.input_tokens = input;
    call.cached_input_tokens = cached;
    call.output_tokens = obs.outputs.count(encoding).saturating_add(reasoning);
    call.reasoning_tokens = reasoning;
    call.usage_source = UsageSource::Estimated;
    Ok(call)
}

fn estimate_request(op: Operation, ex: &Exchange, encoding: Encoding) -> Result<u64, LlmError> {
    let req = serde_json::from_slice::<Value>(ex.request_body).map_err(|_| {
        if ex.request_truncated {
            LlmError::Truncated
        } else {
            LlmError::RequestNotJson
        }
    })?;
    if !req.is_object() {
        return Err(LlmError::UnexpectedShape("request is not a JSON object"));
    }
    let estimate = match op {
        Operation::Chat => openai_chat::estimate_input(&req, encoding),
        Operation::Responses => openai_responses::estimate_input(&req, encoding),
        Operation::Embeddings => openai_embeddings::estimate_input(&req, encoding),
        Operation::Messages => anthropic::estimate_input(&req, encoding),
        // Cohere's messages are role + content (string or text blocks), as OpenAI's.
        Operation::CohereChat => openai_chat::estimate_input(&req, encoding),
        Operation::CohereEmbed => cohere::estimate_embed_input(&req, encoding),
    };
    estimate.ok_or(LlmError::UnexpectedShape("request has no input to count"))
}

/// Is the response body an event stream? The body's first bytes decide when they are
/// unambiguous (`{` is JSON; `data:`, `event:`, `:` comments are SSE); else the media type.
fn is_event_stream(content_type: Option<&str>, body: &[u8]) -> bool {
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).map_or(&[][..], |i| &body[i..]);
    if start.starts_with(b"{") || start.starts_with(b"[") {
        return false;
    }
    if [&b"data:"[..], b"event:", b":", b"id:", b"retry:"].iter().any(|p| start.starts_with(p)) {
        return true;
    }
    content_type.is_some_and(|ct| ct.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The `error.type` of an error body (`{"error": {"type": ...}}`, OpenAI and Anthropic alike).
pub(crate) fn error_type_of(v: &Value) -> Option<String> {
    let error = v.get("error").filter(|e| e.is_object())?;
    error.get("type").and_then(Value::as_str).and_then(clean_error_type)
}

/// A short identifier, or None: at most 64 chars, only `[A-Za-z0-9_.-]`.
pub(crate) fn clean_error_type(s: &str) -> Option<String> {
    let s: String = s.chars().take(64).collect();
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    ok.then_some(s)
}

/// Longest model name kept.
const MAX_MODEL_LEN: usize = 128;

/// Model names leave the host as metadata: keep at most 128 chars, and replace anything
/// outside `[A-Za-z0-9._:/@+=-]` with `_` so a misused field cannot carry free text verbatim.
pub(crate) fn clean_model(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    Some(
        s.chars()
            .take(MAX_MODEL_LEN)
            .map(|c| if c.is_ascii_alphanumeric() || "._:/@+=-".contains(c) { c } else { '_' })
            .collect(),
    )
}

/// A non-negative integer at `path` (integral floats accepted; anything else is None).
pub(crate) fn num_at(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_u64().or_else(|| {
        cur.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e19).map(|f| f as u64)
    })
}
