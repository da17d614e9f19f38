//! Anthropic Messages (`/v1/messages`), plain and streamed.
//!
//! Anthropic's `input_tokens` excludes cache writes and reads; [`super::LlmCall`] wants the
//! total read, like OpenAI's, so input = `input_tokens + cache_creation_input_tokens +
//! cache_read_input_tokens`, and cached = `cache_read_input_tokens`.

use serde_json::Value;

use super::estimate::{content_tokens, PER_MESSAGE, REPLY_PRIMING};
use super::{error_type_of, num_at, Event, Observed, Usage};
use crate::tokens::{count, Encoding};

/// Usage fields as sent; absent ones stay None so later frames can fill them in.
#[derive(Debug, Default, Clone, Copy)]
struct Fields {
    input: Option<u64>,
    creation: Option<u64>,
    read: Option<u64>,
    output: Option<u64>,
}

impl Fields {
    fn from(u: Option<&Value>) -> Option<Fields> {
        let u = u.filter(|u| u.is_object())?;
        Some(Fields {
            input: num_at(u, &["input_tokens"]),
            creation: num_at(u, &["cache_creation_input_tokens"]),
            read: num_at(u, &["cache_read_input_tokens"]),
            output: num_at(u, &["output_tokens"]),
        })
    }

    /// Fields present in `newer` win.
    fn overlay(self, newer: Fields) -> Fields {
        Fields {
            input: newer.input.or(self.input),
            creation: newer.creation.or(self.creation),
            read: newer.read.or(self.read),
            output: newer.output.or(self.output),
        }
    }

    /// `(total input, cached)`.
    fn input_side(&self) -> (u64, u64) {
        let read = self.read.unwrap_or(0);
        let total = self.input.unwrap_or(0).saturating_add(self.creation.unwrap_or(0)).saturating_add(read);
        (total, read)
    }

    fn usage(&self) -> Usage {
        let (input, cached) = self.input_side();
        Usage { input, output: self.output.unwrap_or(0), cached, reasoning: 0 }
    }
}

/// A `message` object.
pub(crate) fn observe_json(v: &Value, obs: &mut Observed) {
    obs.set_model(v.get("model"));
    if v.get("error").is_some_and(Value::is_object) {
        obs.set_error(error_type_of(v));
    }
    if let Some(f) = Fields::from(v.get("usage")) {
        if f.input.is_some() || f.output.is_some() {
            obs.usage = Some(f.usage());
        }
    }
    if let Some(blocks) = v.get("content").and_then(Value::as_array) {
        obs.has_output = true;
        for (pos, block) in blocks.iter().enumerate() {
            collect_block(block, pos as u64, obs);
        }
    }
}

/// Generated text of a content block: text, tool name and input, thinking apart.
fn collect_block(block: &Value, index: u64, obs: &mut Observed) {
    if let Some(s) = block.get("text").and_then(Value::as_str) {
        obs.outputs.push(index, s);
    }
    if let Some(s) = block.get("name").and_then(Value::as_str) {
        obs.outputs.push(index, s);
    }
    if let Some(input) = block.get("input").filter(|i| i.is_object()) {
        obs.outputs.push(index, &input.to_string());
    }
    if let Some(s) = block.get("thinking").and_then(Value::as_str) {
        obs.reasoning.push(index, s);
    }
}

/// `message_start` (usage with the input side and usually `output_tokens: 1`),
/// `content_block_*`, `message_delta` (cumulative `output_tokens`; newer API versions repeat
/// the input side there, and then it wins), `message_stop`; `error` events mid-stream.
pub(crate) fn observe_stream(events: &[Event], obs: &mut Observed) {
    let mut start: Option<Fields> = None;
    let mut last: Option<Fields> = None;
    for e in events {
        let v = &e.value;
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match e.kind() {
            "message_start" => {
                obs.has_output = true;
                if let Some(m) = v.get("message") {
                    obs.set_model(m.get("model"));
                    if let Some(f) = Fields::from(m.get("usage")) {
                        start = Some(f);
                    }
                }
            }
            "content_block_start" => {
                obs.has_output = true;
                if let Some(block) = v.get("content_block") {
                    // Tool input arrives as input_json_delta; the start block's `{}` is not it.
                    if let Some(s) = block.get("text").and_then(Value::as_str) {
                        obs.outputs.push(index, s);
                    }
                    if let Some(s) = block.get("name").and_then(Value::as_str) {
                        obs.outputs.push(index, s);
                    }
                }
            }
            "content_block_delta" => {
                obs.has_output = true;
                let Some(d) = v.get("delta") else { continue };
                let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("");
                match d.get("type").and_then(Value::as_str).unwrap_or("") {
                    "text_delta" => obs.outputs.push(index, text("text")),
                    "input_json_delta" => obs.outputs.push(index, text("partial_json")),
                    "thinking_delta" => obs.reasoning.push(index, text("thinking")),
                    _ => {}
                }
            }
            "message_delta" => {
                obs.has_output = true;
                if let Some(f) = Fields::from(v.get("usage")) {
                    last = Some(last.unwrap_or_default().overlay(f));
                }
            }
            "error" => obs.set_error(error_type_of(v)),
            _ => {}
        }
    }
    match (start, last) {
        (start, Some(last)) => obs.usage = Some(start.unwrap_or_default().overlay(last).usage()),
        (Some(start), None) if start.input.is_some() => {
            obs.reported_input = Some(start.input_side());
        }
        _ => {}
    }
}

/// Cookbook-style estimate (cl100k stands in for Claude's tokenizer): `system` as one
/// message, each message 3 + role + content blocks, plus the reply priming.
pub(crate) fn estimate_input(req: &Value, enc: Encoding) -> Option<u64> {
    let messages = req.get("messages")?.as_array()?;
    let mut n = REPLY_PRIMING;
    if let Some(system) = req.get("system") {
        n = n.saturating_add(PER_MESSAGE).saturating_add(content_tokens(system, enc));
    }
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").map_or(0, |c| content_tokens(c, enc));
        n = n.saturating_add(PER_MESSAGE).saturating_add(count(enc, role)).saturating_add(content);
    }
    Some(n)
}
