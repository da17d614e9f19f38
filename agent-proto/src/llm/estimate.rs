//! Shared pieces of the input-token estimate, after OpenAI's cookbook ("How to count tokens
//! with tiktoken"): every message costs [`PER_MESSAGE`] tokens plus the tokens of its strings,
//! a `name` one more, and the reply is primed with [`REPLY_PRIMING`] tokens.

use serde_json::Value;

use crate::tokens::{count, Encoding};

pub(crate) const PER_MESSAGE: u64 = 3;
pub(crate) const PER_NAME: u64 = 1;
pub(crate) const REPLY_PRIMING: u64 = 3;

/// Tokens of a `content` value: a string, an array of parts, or one part.
pub(crate) fn content_tokens(v: &Value, enc: Encoding) -> u64 {
    match v {
        Value::String(s) => count(enc, s),
        Value::Array(parts) => parts.iter().fold(0u64, |n, p| n.saturating_add(part_tokens(p, enc))),
        Value::Object(_) => part_tokens(v, enc),
        _ => 0,
    }
}

/// Tokens of one content part / block: its text-bearing fields (`text`, `refusal`,
/// `thinking`, tool `name`/`arguments`/`input`, tool results' `content`/`output`).
/// Images, files and audio are not counted.
pub(crate) fn part_tokens(p: &Value, enc: Encoding) -> u64 {
    let Value::Object(m) = p else {
        return match p {
            Value::String(s) => count(enc, s),
            _ => 0,
        };
    };
    let mut n = 0u64;
    for key in ["text", "refusal", "thinking", "name", "arguments"] {
        if let Some(Value::String(s)) = m.get(key) {
            n = n.saturating_add(count(enc, s));
        }
    }
    if let Some(input @ Value::Object(_)) = m.get("input") {
        n = n.saturating_add(count(enc, &input.to_string()));
    }
    for key in ["content", "output"] {
        if let Some(v) = m.get(key) {
            n = n.saturating_add(content_tokens(v, enc));
        }
    }
    n
}

/// Tokens of `tool_calls` (Chat Completions; or one legacy `function_call` object): each
/// call's function name and arguments.
pub(crate) fn tool_calls_tokens(calls: &Value, enc: Encoding) -> u64 {
    let calls = match calls {
        Value::Array(calls) => calls.as_slice(),
        Value::Object(_) => std::slice::from_ref(calls),
        _ => return 0,
    };
    calls.iter().fold(0u64, |n, call| {
        let f = call.get("function").unwrap_or(call);
        let mut t = 0u64;
        for key in ["name", "arguments"] {
            if let Some(s) = f.get(key).and_then(Value::as_str) {
                t = t.saturating_add(count(enc, s));
            }
        }
        n.saturating_add(t)
    })
}

/// Tokens of a message's content parts: the `text` parts joined (as the model reads them),
/// plus any other parts on their own.
fn parts_joined_tokens(parts: &[Value], enc: Encoding) -> u64 {
    let mut joined = String::new();
    let mut others = 0u64;
    for p in parts {
        match p.get("text").and_then(Value::as_str) {
            Some(t) => joined.push_str(t),
            None => others = others.saturating_add(part_tokens(p, enc)),
        }
    }
    count(enc, &joined).saturating_add(others)
}

/// Cookbook cost of one chat-style message object: [`PER_MESSAGE`], every string value
/// (`name` one more), `content` arrays by their joined text parts, `tool_calls` by name and arguments.
/// Keys listed in `skip` (ids and such) are not counted.
pub(crate) fn message_tokens(msg: &Value, enc: Encoding, skip: &[&str]) -> u64 {
    let mut n = PER_MESSAGE;
    let Some(obj) = msg.as_object() else {
        return n.saturating_add(content_tokens(msg, enc));
    };
    for (key, value) in obj {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let t = match (key.as_str(), value) {
            ("name", Value::String(s)) => count(enc, s).saturating_add(PER_NAME),
            (_, Value::String(s)) => count(enc, s),
            ("content", Value::Array(parts)) => parts_joined_tokens(parts, enc),
            ("content" | "output", v) => content_tokens(v, enc),
            ("tool_calls" | "function_call", v) => tool_calls_tokens(v, enc),
            _ => 0,
        };
        n = n.saturating_add(t);
    }
    n
}
