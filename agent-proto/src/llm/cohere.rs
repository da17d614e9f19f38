//! Cohere v2 Chat (`/v2/chat`, plain and streamed) and Embed (`/v2/embed`).
//!
//! Cohere reports two counts: `tokens` (what the model processed, prompt template included) and
//! `billed_units` (what Cohere invoices). A usage record is for showback and cost, so the billed
//! units are the record's input and output; `tokens` is used only when billed units are absent.

use serde_json::Value;

use super::{num_at, Event, Observed, Usage};

/// A chat `usage` object (`{billed_units: {...}, tokens: {...}}`), or an embed `meta`.
fn usage(u: Option<&Value>) -> Option<Usage> {
    let u = u.filter(|u| u.is_object())?;
    let billed = u.get("billed_units").filter(|b| b.is_object());
    let counted = u.get("tokens").filter(|t| t.is_object());
    let side = |key: &str| billed.and_then(|b| num_at(b, &[key])).or_else(|| counted.and_then(|t| num_at(t, &[key])));
    let (input, output) = (side("input_tokens"), side("output_tokens"));
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Usage { input: input.unwrap_or(0), output: output.unwrap_or(0), ..Usage::default() })
}

/// A chat response: `message.content[]` (text blocks), `message.tool_calls[]`, `usage`. Cohere
/// sends no model name back; the record keeps the request's.
pub(crate) fn observe_chat_json(v: &Value, obs: &mut Observed) {
    if let Some(u) = usage(v.get("usage")) {
        obs.usage = Some(u);
    }
    if let Some(m) = v.get("message").filter(|m| m.is_object()) {
        obs.has_output = true;
        collect_message(m, 0, obs);
    }
}

/// The text a `message` (or a stream delta's `message`) carries: content text, tool plan, tool
/// call names and arguments. `content` and `tool_calls` are arrays in a whole response and single
/// objects in stream deltas.
fn collect_message(m: &Value, index: u64, obs: &mut Observed) {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    for c in one_or_many(m.get("content")) {
        if let Some(s) = text(c, "text") {
            obs.outputs.push(index, &s);
        }
    }
    if let Some(s) = text(m, "tool_plan") {
        obs.outputs.push(index, &s);
    }
    for call in one_or_many(m.get("tool_calls")) {
        if let Some(f) = call.get("function") {
            for k in ["name", "arguments"] {
                if let Some(s) = text(f, k) {
                    obs.outputs.push(index, &s);
                }
            }
        }
    }
}

fn one_or_many(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::Array(items)) => items,
        Some(one @ Value::Object(_)) => std::slice::from_ref(one),
        _ => &[],
    }
}

/// `message-start`, `content-start`/`content-delta`/`content-end`, `tool-plan-delta`,
/// `tool-call-start`/`tool-call-delta`/`tool-call-end`, `citation-*`, and `message-end`, whose
/// `delta.usage` is the only usage of the stream.
pub(crate) fn observe_chat_stream(events: &[Event], obs: &mut Observed) {
    for e in events {
        let v = &e.value;
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let delta = v.get("delta");
        match e.kind() {
            "message-start" => obs.has_output = true,
            "content-start" | "content-delta" | "tool-plan-delta" | "tool-call-start" | "tool-call-delta" => {
                obs.has_output = true;
                if let Some(m) = delta.and_then(|d| d.get("message")).filter(|m| m.is_object()) {
                    collect_message(m, index, obs);
                }
            }
            "message-end" => {
                obs.has_output = true;
                // `delta.error` is free text: only its presence is kept.
                let failed = delta.and_then(|d| d.get("error")).is_some_and(|e| !e.is_null())
                    || delta.and_then(|d| d.get("finish_reason")).and_then(Value::as_str) == Some("ERROR");
                if failed {
                    obs.set_error(None);
                }
                if let Some(u) = usage(delta.and_then(|d| d.get("usage"))) {
                    obs.usage = Some(u);
                }
            }
            _ => {}
        }
    }
}

/// An embed response: `meta.billed_units.input_tokens` (embeddings produce no output tokens).
pub(crate) fn observe_embed_json(v: &Value, obs: &mut Observed) {
    if let Some(u) = usage(v.get("meta")) {
        obs.usage = Some(Usage { output: 0, ..u });
    }
    if v.get("embeddings").is_some_and(|e| e.is_object() || e.is_array()) {
        obs.has_output = true;
    }
}

/// Tokens of an embed request's `texts` (strings; images in `inputs` are not estimated). No
/// per-text overhead.
pub(crate) fn estimate_embed_input(req: &Value, enc: crate::tokens::Encoding) -> Option<u64> {
    let texts = req.get("texts")?.as_array()?;
    Some(texts.iter().filter_map(Value::as_str).fold(0u64, |n, s| n.saturating_add(crate::tokens::count(enc, s))))
}
