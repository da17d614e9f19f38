//! Model names as requests and responses spell them → the names the pricing table uses.

/// Prefixes some clients and gateways put before the model name (`openai/gpt-4o`).
const PREFIXES: &[&str] = &["openai/", "anthropic/", "models/"];

/// The name a model is priced under: lower-case, without a provider prefix (`openai/`,
/// `anthropic/`, `models/`) and without one snapshot suffix: an OpenAI date (`-2024-08-06`), an
/// Anthropic date (`-20241022`) or `-latest`. Nothing else is guessed: `ft:…` fine-tunes,
/// Bedrock and Vertex ids and unknown variants stay as they are (and so stay unpriced).
pub fn normalize_model(model: &str) -> String {
    let lower = model.trim().to_lowercase();
    strip_snapshot(strip_prefixes(&lower)).to_string()
}

/// Lower-cased, trimmed, without provider prefixes: the name an exact table entry (such as a
/// snapshot priced differently from its family) is looked up under before normalisation.
pub(super) fn exact_name(model: &str) -> String {
    strip_prefixes(&model.trim().to_lowercase()).to_string()
}

fn strip_prefixes(mut s: &str) -> &str {
    while let Some(rest) = PREFIXES.iter().find_map(|p| s.strip_prefix(p)) {
        s = rest;
    }
    s
}

fn strip_snapshot(s: &str) -> &str {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let n = b.len();
    let base = if let Some(rest) = s.strip_suffix("-latest") {
        rest
    } else if n > 11
        && b[n - 11] == b'-'
        && digits(n - 10..n - 6)
        && b[n - 6] == b'-'
        && digits(n - 5..n - 3)
        && b[n - 3] == b'-'
        && digits(n - 2..n)
    {
        // `-YYYY-MM-DD`: the last 11 bytes are ASCII, so this is a char boundary.
        &s[..n - 11]
    } else if n > 9 && b[n - 9] == b'-' && digits(n - 8..n) {
        &s[..n - 9]
    } else {
        s
    };
    if base.is_empty() {
        s
    } else {
        base
    }
}
