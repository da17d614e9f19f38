//! Expected record contents derived from the server's ground truth, and the
//! field-by-field record check (which never prints payloads).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::server::ServerEntry;

/// Every field a usage record must carry.
pub const RECORD_FIELDS: &[&str] = &[
    "ts",
    "pid",
    "comm",
    "exe",
    "cgroup_id",
    "provider",
    "operation",
    "server_address",
    "server_port",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "usage_source",
    "streaming",
    "http_status",
    "duration_ms",
    "time_to_first_chunk_ms",
    "tls_library",
    "truncated",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    Exact(u64),
    /// `|actual - expected| <= tolerance`
    Approx {
        expected: u64,
        tolerance: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Expected {
    pub provider: String,
    pub operation: String,
    pub request_model: String,
    pub response_model: String,
    pub input_tokens: Tokens,
    pub output_tokens: Tokens,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_source: String,
    pub streaming: bool,
    pub http_status: u64,
    pub server_port: u16,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    /// The record's `tls_library` ("openssl" unless a test says otherwise).
    pub tls_library: String,
}

fn u(v: Option<&Value>, path: &[&str]) -> u64 {
    let mut cur = v;
    for k in path {
        cur = cur.and_then(|c| c.get(*k));
    }
    cur.and_then(Value::as_u64).unwrap_or(0)
}

/// o200k_base token count (`encode_ordinary`).
pub fn o200k_count(text: &str) -> u64 {
    tiktoken_rs::o200k_base_singleton().encode_ordinary(text).len() as u64
}

/// OpenAI cookbook estimate for chat messages (gpt-4o family):
/// per message 3 + tokens(role) + tokens(content) (+1 with `name`), plus 3.
pub fn cookbook_chat_estimate(messages: &[Value]) -> u64 {
    let mut n = 3;
    for m in messages {
        n += 3;
        if let Some(obj) = m.as_object() {
            for (k, v) in obj {
                let text = match v {
                    Value::String(s) => s.clone(),
                    // content parts: count the text parts
                    Value::Array(parts) => {
                        parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
                    }
                    _ => continue,
                };
                n += o200k_count(&text);
                if k == "name" {
                    n += 1;
                }
            }
        }
    }
    n
}

impl Expected {
    /// What the agent must report for the server response `e` on `port`.
    pub fn from_entry(e: &ServerEntry, port: u16) -> Expected {
        let usage = e.usage();
        let (provider, operation) = match e.path() {
            "/v1/chat/completions" => ("openai", "chat"),
            "/v1/responses" => ("openai", "responses"),
            "/v1/embeddings" => ("openai", "embeddings"),
            "/v1/messages" => ("anthropic", "messages"),
            other => panic!("server log has an unexpected path {other:?}"),
        };
        let (input, output, cached, reasoning, source) = match (operation, usage) {
            // OpenAI's spelling, or DashScope's (`input_tokens`...) when the server used it.
            ("chat", Some(uv)) if uv.get("prompt_tokens").is_none() => (
                Tokens::Exact(u(usage, &["input_tokens"])),
                Tokens::Exact(u(usage, &["output_tokens"])),
                u(usage, &["input_tokens_details", "cached_tokens"]),
                u(usage, &["output_tokens_details", "reasoning_tokens"]),
                "reported",
            ),
            ("chat", Some(_)) => (
                Tokens::Exact(u(usage, &["prompt_tokens"])),
                Tokens::Exact(u(usage, &["completion_tokens"])),
                u(usage, &["prompt_tokens_details", "cached_tokens"]),
                u(usage, &["completion_tokens_details", "reasoning_tokens"]),
                "reported",
            ),
            ("chat", None) => {
                let msgs = e.request_messages().cloned().unwrap_or_default();
                let est = cookbook_chat_estimate(&msgs);
                let tolerance = ((est as f64) * 0.02).ceil() as u64;
                (Tokens::Approx { expected: est, tolerance }, Tokens::Exact(o200k_count(e.text())), 0, 0, "estimated")
            }
            ("responses", _) => (
                Tokens::Exact(u(usage, &["input_tokens"])),
                Tokens::Exact(u(usage, &["output_tokens"])),
                u(usage, &["input_tokens_details", "cached_tokens"]),
                u(usage, &["output_tokens_details", "reasoning_tokens"]),
                "reported",
            ),
            ("embeddings", _) => (Tokens::Exact(u(usage, &["prompt_tokens"])), Tokens::Exact(0), 0, 0, "reported"),
            // Anthropic: total input = uncached + cache writes + cache reads.
            _ => (
                Tokens::Exact(
                    u(usage, &["input_tokens"])
                        + u(usage, &["cache_creation_input_tokens"])
                        + u(usage, &["cache_read_input_tokens"]),
                ),
                Tokens::Exact(u(usage, &["output_tokens"])),
                u(usage, &["cache_read_input_tokens"]),
                0,
                "reported",
            ),
        };
        Expected {
            provider: provider.into(),
            operation: operation.into(),
            request_model: e.request_model().into(),
            response_model: e.response_model().into(),
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: cached,
            reasoning_tokens: reasoning,
            usage_source: source.into(),
            streaming: e.streaming(),
            http_status: 200,
            server_port: port,
            pid: None,
            comm: None,
            exe: None,
            tls_library: "openssl".into(),
        }
    }

    /// Also expect the record to belong to this process.
    pub fn with_process(mut self, pid: u32, comm: Option<&str>, exe: Option<&str>) -> Self {
        self.pid = Some(pid);
        self.comm = comm.map(String::from);
        self.exe = exe.map(String::from);
        self
    }

    /// Expect the record to come from this TLS stack (`TlsLibrary::as_str`).
    pub fn with_library(mut self, library: &str) -> Self {
        self.tls_library = library.into();
        self
    }
}

/// Describes a JSON value for a failure message without leaking payloads:
/// numbers/bools/null verbatim; strings only if short and secret-free.
pub fn describe(v: Option<&Value>, secrets: &[String]) -> String {
    match v {
        None => "<missing>".into(),
        Some(Value::String(s)) => {
            let secret = secrets.iter().any(|x| !x.is_empty() && s.contains(x.as_str()));
            if s.len() <= 80 && !secret {
                format!("{s:?}")
            } else {
                format!("<string of {} bytes, not shown>", s.len())
            }
        }
        Some(Value::Array(a)) => format!("<array of {}>", a.len()),
        Some(Value::Object(o)) => format!("<object with {} keys>", o.len()),
        Some(other) => other.to_string(),
    }
}

/// Parses an RFC 3339 timestamp into Unix seconds (fraction ignored).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    // days from civil (Howard Hinnant)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Checks one usage record against `exp`; panics listing every mismatch by
/// field name. `not_before` bounds `ts` from below (test start).
pub fn check_record(rec: &Value, exp: &Expected, not_before: SystemTime, secrets: &[String]) {
    let bad = record_mismatches(rec, exp, not_before, secrets);
    assert!(
        bad.is_empty(),
        "usage record mismatch ({} {} on port {}):\n  {}",
        exp.provider,
        exp.operation,
        exp.server_port,
        bad.join("\n  ")
    );
}

/// Every mismatch between `rec` and `exp`, described without payloads.
pub fn record_mismatches(rec: &Value, exp: &Expected, not_before: SystemTime, secrets: &[String]) -> Vec<String> {
    let mut bad: Vec<String> = Vec::new();
    let get = |k: &str| rec.get(k);
    let mut mismatch = |field: &str, want: String, got: Option<&Value>| {
        bad.push(format!("{field}: expected {want}, got {}", describe(got, secrets)));
    };

    let missing: Vec<&str> = RECORD_FIELDS.iter().copied().filter(|k| rec.get(*k).is_none()).collect();
    if !missing.is_empty() {
        mismatch("<fields>", format!("all present (missing: {})", missing.join(", ")), None);
    }

    let str_eq = |k: &str, want: &str| get(k).and_then(Value::as_str) == Some(want);
    for (k, want) in [
        ("provider", exp.provider.as_str()),
        ("operation", exp.operation.as_str()),
        ("request_model", exp.request_model.as_str()),
        ("response_model", exp.response_model.as_str()),
        ("usage_source", exp.usage_source.as_str()),
        ("server_address", "127.0.0.1"),
        ("tls_library", exp.tls_library.as_str()),
    ] {
        if !str_eq(k, want) {
            mismatch(k, format!("{want:?}"), get(k));
        }
    }
    if let Some(c) = &exp.comm {
        if !str_eq("comm", c) {
            mismatch("comm", format!("{c:?}"), get("comm"));
        }
    } else if get("comm").and_then(Value::as_str).is_none_or(str::is_empty) {
        mismatch("comm", "non-empty string".into(), get("comm"));
    }
    if let Some(x) = &exp.exe {
        if !str_eq("exe", x) {
            mismatch("exe", format!("{x:?}"), get("exe"));
        }
    } else if get("exe").and_then(Value::as_str).is_none() {
        mismatch("exe", "string".into(), get("exe"));
    }

    let num = |k: &str| get(k).and_then(Value::as_u64);
    if num("server_port") != Some(exp.server_port as u64) {
        mismatch("server_port", exp.server_port.to_string(), get("server_port"));
    }
    if num("http_status") != Some(exp.http_status) {
        mismatch("http_status", exp.http_status.to_string(), get("http_status"));
    }
    if let Some(pid) = exp.pid {
        if num("pid") != Some(pid as u64) {
            mismatch("pid", pid.to_string(), get("pid"));
        }
    } else if num("pid").is_none_or(|p| p == 0) {
        mismatch("pid", "positive integer".into(), get("pid"));
    }
    if num("cgroup_id").is_none() {
        mismatch("cgroup_id", "unsigned integer".into(), get("cgroup_id"));
    }

    for (k, want) in [("input_tokens", exp.input_tokens), ("output_tokens", exp.output_tokens)] {
        let got = num(k);
        let ok = match want {
            // a provider that reports nothing for a count: 0 or null
            Tokens::Exact(0) => got == Some(0) || get(k).is_some_and(Value::is_null),
            Tokens::Exact(n) => got == Some(n),
            Tokens::Approx { expected, tolerance } => got.is_some_and(|g| g.abs_diff(expected) <= tolerance),
        };
        if !ok {
            let w = match want {
                Tokens::Exact(n) => n.to_string(),
                Tokens::Approx { expected, tolerance } => format!("{expected} ± {tolerance}"),
            };
            mismatch(k, w, get(k));
        }
    }
    for (k, want) in [("cached_input_tokens", exp.cached_input_tokens), ("reasoning_tokens", exp.reasoning_tokens)] {
        let ok = if want == 0 { num(k) == Some(0) || get(k).is_some_and(Value::is_null) } else { num(k) == Some(want) };
        if !ok {
            mismatch(k, want.to_string(), get(k));
        }
    }

    if get("streaming").and_then(Value::as_bool) != Some(exp.streaming) {
        mismatch("streaming", exp.streaming.to_string(), get("streaming"));
    }
    if get("truncated").and_then(Value::as_bool) != Some(false) {
        mismatch("truncated", "false".into(), get("truncated"));
    }
    let duration = get("duration_ms").and_then(Value::as_f64);
    if duration.is_none_or(|d| d < 0.0) {
        mismatch("duration_ms", "number >= 0".into(), get("duration_ms"));
    }
    let ttfc = get("time_to_first_chunk_ms");
    if exp.streaming {
        let t = ttfc.and_then(Value::as_f64);
        let ok = t.is_some_and(|t| t >= 0.0 && duration.is_none_or(|d| t <= d + 1.0));
        if !ok {
            mismatch("time_to_first_chunk_ms", "number in [0, duration_ms] (streaming)".into(), ttfc);
        }
    } else if !ttfc.is_some_and(Value::is_null) {
        mismatch("time_to_first_chunk_ms", "null (not streaming)".into(), ttfc);
    }

    let lo = not_before.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64) - 5;
    let hi = now_unix() + 5;
    match get("ts").and_then(Value::as_str).map(parse_rfc3339) {
        Some(Some(t)) if (lo..=hi).contains(&t) => {}
        Some(Some(_)) => mismatch("ts", "a time during this test".into(), get("ts")),
        _ => mismatch("ts", "RFC 3339 timestamp".into(), get("ts")),
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56.789+02:00"), Some(1_709_210_096 - 7200));
        assert_eq!(parse_rfc3339("2024-02-29 12:34:56"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn cookbook() {
        let msgs: Vec<Value> =
            serde_json::from_str(r#"[{"role":"system","content":"You are helpful."},{"role":"user","content":"Hi"}]"#)
                .unwrap();
        assert_eq!(
            cookbook_chat_estimate(&msgs),
            3 + 3
                + o200k_count("system")
                + o200k_count("You are helpful.")
                + 3
                + o200k_count("user")
                + o200k_count("Hi")
        );
    }

    #[test]
    fn describe_hides_secrets() {
        let secrets = vec!["sk-test-abc".to_string()];
        let v = Value::String("xx sk-test-abc yy".into());
        assert!(!describe(Some(&v), &secrets).contains("sk-test"));
        let long = Value::String("a".repeat(200));
        assert!(describe(Some(&long), &[]).contains("200 bytes"));
    }
}
