//! OpenAI Chat Completions (`/v1/chat/completions`), plain and streamed.

use serde_json::Value;

use super::estimate::{message_tokens, REPLY_PRIMING};
use super::{error_type_of, num_at, Event, Observed, Usage};
use crate::tokens::Encoding;

/// A `chat.completion` object.
pub(crate) fn observe_json(v: &Value, obs: &mut Observed) {
    observe_object(v, "message", obs);
}

/// One completion object or chunk: model, error, usage, and the choices' `field` (`message`
/// in a whole completion, `delta` in a chunk).
fn observe_object(v: &Value, field: &str, obs: &mut Observed) {
    obs.set_model(v.get("model"));
    if v.get("error").is_some_and(Value::is_object) {
        obs.set_error(error_type_of(v));
    }
    if let Some(u) = usage(v.get("usage")) {
        obs.usage = Some(u);
    }
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        obs.has_output = true;
        for (pos, choice) in choices.iter().enumerate() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
            if let Some(part) = choice.get(field) {
                collect(part, index, obs);
            }
        }
    }
}

/// `chat.completion.chunk` frames. The usage frame (with `stream_options.include_usage`) is
/// the last one, with `"choices": []`; earlier frames have `"usage": null`. Some compatible
/// servers send cumulative usage on every frame: the last one wins either way.
pub(crate) fn observe_stream(events: &[Event], obs: &mut Observed) {
    for e in events {
        observe_object(&e.value, "delta", obs);
    }
}

/// Generated text of a message or delta: content, refusal, tool-call names and arguments
/// (in that order), and visible reasoning (`reasoning_content` / `reasoning`, sent by some
/// compatible servers) apart.
fn collect(m: &Value, index: u64, obs: &mut Observed) {
    match m.get("content") {
        Some(Value::String(s)) => obs.outputs.push(index, s),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(s) = p.get("text").and_then(Value::as_str) {
                    obs.outputs.push(index, s);
                }
            }
        }
        _ => {}
    }
    if let Some(s) = m.get("refusal").and_then(Value::as_str) {
        obs.outputs.push(index, s);
    }
    let calls = match m.get("tool_calls") {
        Some(Value::Array(calls)) => calls.as_slice(),
        _ => &[],
    };
    let legacy = m.get("function_call").filter(|f| f.is_object());
    for call in calls.iter().chain(legacy) {
        let f = call.get("function").unwrap_or(call);
        for key in ["name", "arguments"] {
            if let Some(s) = f.get(key).and_then(Value::as_str) {
                obs.outputs.push(index, s);
            }
        }
    }
    for key in ["reasoning_content", "reasoning"] {
        if let Some(s) = m.get(key).and_then(Value::as_str) {
            obs.reasoning.push(index, s);
        }
    }
}

/// `usage` → [`Usage`], if it is an object with at least one of the two main counts.
///
/// Compatible servers do not all spell it OpenAI's way: DashScope (Qwen) sends
/// `input_tokens`/`output_tokens` (the Responses API names) on `/chat/completions`. Both
/// spellings are read, OpenAI's first, so such a server's own numbers are kept rather than
/// replaced by an estimate.
pub(crate) fn usage(u: Option<&Value>) -> Option<Usage> {
    let u = u.filter(|u| u.is_object())?;
    let first = |paths: &[&[&str]]| paths.iter().find_map(|p| num_at(u, p));
    let input = first(&[&["prompt_tokens"], &["input_tokens"]]);
    let output = first(&[&["completion_tokens"], &["output_tokens"]]);
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Usage {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
        cached: first(&[&["prompt_tokens_details", "cached_tokens"], &["input_tokens_details", "cached_tokens"]])
            .unwrap_or(0),
        reasoning: first(&[
            &["completion_tokens_details", "reasoning_tokens"],
            &["output_tokens_details", "reasoning_tokens"],
        ])
        .unwrap_or(0),
    })
}

/// The cookbook estimate of the prompt: per message 3 + its strings (`name` +1), plus 3.
pub(crate) fn estimate_input(req: &Value, enc: Encoding) -> Option<u64> {
    let messages = req.get("messages")?.as_array()?;
    Some(messages.iter().fold(REPLY_PRIMING, |n, m| n.saturating_add(message_tokens(m, enc, &["tool_call_id"]))))
}
