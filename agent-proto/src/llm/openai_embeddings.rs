//! OpenAI Embeddings (`/v1/embeddings`): input tokens only.

use serde_json::Value;

use super::{error_type_of, num_at, Observed, Usage};
use crate::tokens::{count, Encoding};

/// A `list` of `embedding` objects with `usage.prompt_tokens` and `usage.total_tokens`.
pub(crate) fn observe_json(v: &Value, obs: &mut Observed) {
    obs.set_model(v.get("model"));
    if v.get("error").is_some_and(Value::is_object) {
        obs.set_error(error_type_of(v));
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        if let Some(input) = num_at(u, &["prompt_tokens"]).or_else(|| num_at(u, &["total_tokens"])) {
            obs.usage = Some(Usage { input, ..Usage::default() });
        }
    }
    if v.get("data").is_some_and(Value::is_array) {
        obs.has_output = true;
    }
}

/// Tokens of `input`: a string, an array of strings, an array of token ids, or an array of
/// token-id arrays (token ids count exactly). No per-message overhead.
pub(crate) fn estimate_input(req: &Value, enc: Encoding) -> Option<u64> {
    Some(match req.get("input")? {
        Value::String(s) => count(enc, s),
        Value::Array(items) => items.iter().fold(0u64, |n, item| {
            let t = match item {
                Value::String(s) => count(enc, s),
                Value::Number(_) => 1,
                Value::Array(ids) => ids.len() as u64,
                _ => 0,
            };
            n.saturating_add(t)
        }),
        _ => return None,
    })
}
