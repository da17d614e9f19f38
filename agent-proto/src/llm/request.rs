//! What the request says about itself: `model`, `stream` and its output cap, read without
//! building the whole JSON tree, and still read from a body the capture cut short.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::clean_model;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RequestMeta {
    pub model: Option<String>,
    pub stream: bool,
    /// The largest of `max_tokens`, `max_completion_tokens`, `max_output_tokens` present.
    pub max_output_tokens: Option<u64>,
}

/// Reads the top-level `model`, `stream` and output caps of a JSON object. Skipped values are not
/// materialised. On a truncated or malformed body, whatever came before the damage is kept.
pub(crate) fn scan(body: &[u8]) -> RequestMeta {
    let mut meta = RequestMeta::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    // An error only means the body ended or broke somewhere: keep what was read.
    let _ = Scan(&mut meta).deserialize(&mut de);
    meta
}

struct Scan<'m>(&'m mut RequestMeta);

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "model" => {
                    if let Value::String(s) = map.next_value::<Value>()? {
                        self.0.model = clean_model(&s);
                    }
                }
                "stream" => self.0.stream = map.next_value::<Value>()?.as_bool() == Some(true),
                // Chat's current and legacy names, the Responses API's, Anthropic's.
                "max_tokens" | "max_completion_tokens" | "max_output_tokens" => {
                    if let Some(n) = super::num_at(&map.next_value::<Value>()?, &[]) {
                        self.0.max_output_tokens = Some(self.0.max_output_tokens.map_or(n, |m| m.max(n)));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream() {
        let m = scan(br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
        assert_eq!(m.model.as_deref(), Some("gpt-4o"));
        assert!(m.stream);
        let m = scan(br#"{"stream":false,"model":"o3"}"#);
        assert_eq!(m.model.as_deref(), Some("o3"));
        assert!(!m.stream);
    }

    #[test]
    fn reads_output_caps() {
        assert_eq!(scan(br#"{"model":"gpt-4o","max_tokens":256}"#).max_output_tokens, Some(256));
        assert_eq!(scan(br#"{"max_completion_tokens":100,"max_tokens":50}"#).max_output_tokens, Some(100));
        assert_eq!(scan(br#"{"max_output_tokens":1024.0}"#).max_output_tokens, Some(1024));
        assert_eq!(scan(br#"{"max_tokens":null,"max_output_tokens":-1}"#).max_output_tokens, None);
        assert_eq!(scan(br#"{"model":"o3"}"#).max_output_tokens, None);
    }

    #[test]
    fn truncated_keeps_what_came_first() {
        let m = scan(
            br#"{"model":"claude-sonnet-4-20250514","stream":true,"messages":[{"role":"user","content":"a long pro"#,
        );
        assert_eq!(m.model.as_deref(), Some("claude-sonnet-4-20250514"));
        assert!(m.stream);
        let m = scan(br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4"#);
        assert_eq!(m.model, None);
    }

    #[test]
    fn odd_inputs() {
        assert_eq!(scan(b""), RequestMeta::default());
        assert_eq!(scan(b"[1,2]"), RequestMeta::default());
        assert_eq!(scan(b"not json"), RequestMeta::default());
        assert_eq!(scan(br#"{"model":5,"stream":"yes"}"#), RequestMeta::default());
        let deep = "[".repeat(100_000);
        let body = format!("{{\"x\":{deep}");
        assert_eq!(scan(body.as_bytes()), RequestMeta::default());
    }
}
