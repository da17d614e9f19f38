//! OpenAI Responses API (`/v1/responses`), plain and streamed.

use serde_json::Value;

use super::estimate::{message_tokens, PER_MESSAGE, REPLY_PRIMING};
use super::{clean_error_type, num_at, Event, Observed, Usage};
use crate::tokens::{count, Encoding};

/// A `response` object.
pub(crate) fn observe_json(v: &Value, obs: &mut Observed) {
    if v.get("error").is_some_and(Value::is_object) && v.get("object").is_none() {
        // `{"error": {...}}` sent with a 2xx status by some servers.
        obs.set_error(super::error_type_of(v));
        return;
    }
    observe_response(v, obs);
    if let Some(items) = v.get("output").and_then(Value::as_array) {
        obs.has_output = true;
        for (pos, item) in items.iter().enumerate() {
            collect_item(item, pos as u64, obs);
        }
    }
}

/// Model, usage and failure of a `response` object (plain, or inside a stream event).
fn observe_response(r: &Value, obs: &mut Observed) {
    obs.set_model(r.get("model"));
    if let Some(u) = usage(r.get("usage")) {
        obs.usage = Some(u);
    }
    if let Some(e) = r.get("error").filter(|e| e.is_object()) {
        let code = ["code", "type"].iter().find_map(|k| e.get(k).and_then(Value::as_str).and_then(clean_error_type));
        obs.set_error(Some(code.unwrap_or_else(|| "response_failed".to_string())));
    }
}

/// Generated text of one output item: message text and refusals, function-call name and
/// arguments, visible reasoning text. Reasoning summaries are not output tokens.
fn collect_item(item: &Value, index: u64, obs: &mut Observed) {
    match item.get("type").and_then(Value::as_str).unwrap_or("") {
        "message" => {
            if let Some(parts) = item.get("content").and_then(Value::as_array) {
                for p in parts {
                    for key in ["text", "refusal"] {
                        if let Some(s) = p.get(key).and_then(Value::as_str) {
                            obs.outputs.push(index, s);
                        }
                    }
                }
            }
        }
        "reasoning" => {
            if let Some(parts) = item.get("content").and_then(Value::as_array) {
                for p in parts {
                    if let Some(s) = p.get("text").and_then(Value::as_str) {
                        obs.reasoning.push(index, s);
                    }
                }
            }
        }
        _ => {
            for key in ["name", "arguments", "input"] {
                if let Some(s) = item.get(key).and_then(Value::as_str) {
                    obs.outputs.push(index, s);
                }
            }
        }
    }
}

/// Stream events: `response.created` … `response.output_text.delta` … `response.completed`,
/// whose `response.usage` holds the usage (`response.incomplete` / `response.failed` too).
/// Text is taken from the deltas only (the final response repeats it).
pub(crate) fn observe_stream(events: &[Event], obs: &mut Observed) {
    for e in events {
        let v = &e.value;
        let index = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
        let delta = v.get("delta").and_then(Value::as_str);
        match e.kind() {
            "response.created"
            | "response.queued"
            | "response.in_progress"
            | "response.completed"
            | "response.incomplete"
            | "response.failed" => {
                obs.has_output = true;
                if let Some(r) = v.get("response") {
                    observe_response(r, obs);
                }
            }
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta"
            | "response.custom_tool_call_input.delta" => {
                obs.outputs.push(index, delta.unwrap_or(""));
            }
            "response.reasoning_text.delta" => obs.reasoning.push(index, delta.unwrap_or("")),
            "response.output_item.added" => {
                let name = v
                    .get("item")
                    .filter(|i| i.get("type").and_then(Value::as_str) != Some("message"))
                    .and_then(|i| i.get("name"))
                    .and_then(Value::as_str);
                obs.outputs.push(index, name.unwrap_or(""));
            }
            "error" => {
                let code = super::error_type_of(v)
                    .or_else(|| v.get("code").and_then(Value::as_str).and_then(clean_error_type));
                obs.set_error(code);
            }
            _ => {}
        }
    }
}

/// `usage` → [`Usage`], if it is an object with at least one of the two main counts.
fn usage(u: Option<&Value>) -> Option<Usage> {
    let u = u.filter(|u| u.is_object())?;
    let input = num_at(u, &["input_tokens"]);
    let output = num_at(u, &["output_tokens"]);
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Usage {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
        cached: num_at(u, &["input_tokens_details", "cached_tokens"]).unwrap_or(0),
        reasoning: num_at(u, &["output_tokens_details", "reasoning_tokens"]).unwrap_or(0),
    })
}

/// Cookbook-style estimate: `instructions` as a system message, `input` as one user message
/// (string) or one message per item, plus the reply priming.
pub(crate) fn estimate_input(req: &Value, enc: Encoding) -> Option<u64> {
    let instructions = req.get("instructions").and_then(Value::as_str);
    let input = req.get("input");
    if instructions.is_none() && input.is_none() {
        return None;
    }
    let mut n = REPLY_PRIMING;
    if let Some(s) = instructions {
        n = n.saturating_add(PER_MESSAGE).saturating_add(count(enc, s));
    }
    match input {
        Some(Value::String(s)) => {
            n = n.saturating_add(PER_MESSAGE).saturating_add(count(enc, "user")).saturating_add(count(enc, s));
        }
        Some(Value::Array(items)) => {
            for item in items {
                let t = message_tokens(item, enc, &["type", "id", "call_id", "status"]);
                n = n.saturating_add(t);
            }
        }
        _ => {}
    }
    Some(n)
}
