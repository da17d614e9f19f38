//! Token counting fallback (tiktoken) for calls whose response reports no usage.
//!
//! The BPE tables are built once, lazily, on first use (building one takes a noticeable
//! fraction of a second). Counting never panics: the text is cut into bounded pieces at
//! places where the tokenizers' pre-split regex always splits anyway, so the count is exact
//! for ordinary text, and pathological input (megabytes without a single space) costs bounded
//! time instead of tripping the regex engine's backtracking limit.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

/// A tiktoken vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `cl100k_base`: GPT-4, GPT-3.5, text-embedding-3-*, and our stand-in for everything unknown.
    Cl100k,
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o-series.
    O200k,
}

impl Encoding {
    /// tiktoken's name for the encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Cl100k => "cl100k_base",
            Encoding::O200k => "o200k_base",
        }
    }
}

/// Model-name prefixes (after any `provider/` prefix, lower-cased) that use `o200k_base`.
const O200K_PREFIXES: &[&str] = &[
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    // gpt-oss uses o200k_harmony, whose ordinary (non-special) tokens are o200k_base's.
    "gpt-oss",
];

/// o200k_base for gpt-4o*, chatgpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*, o1*, o3*, o4* (and gpt-oss*),
/// after stripping a provider prefix like `openai/` and a fine-tune prefix `ft:`;
/// cl100k_base otherwise (including unknown and Anthropic models).
pub fn encoding_for_model(model: &str) -> Encoding {
    let name = model.trim();
    let name = name.rsplit('/').next().unwrap_or(name);
    let name = name.to_ascii_lowercase();
    let name = name.strip_prefix("ft:").unwrap_or(&name);
    if O200K_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Encoding::O200k
    } else {
        Encoding::Cl100k
    }
}

/// Exact token count of `text` (ordinary tokens, special tokens not interpreted).
pub fn count(encoding: Encoding, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let Some(bpe) = bpe(encoding) else {
        return rough_count(text);
    };
    let mut total = 0u64;
    for piece in Chunks::new(text) {
        let n = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bpe.encode_ordinary(piece).len() as u64))
            .unwrap_or_else(|_| rough_count(piece));
        total = total.saturating_add(n);
    }
    total
}

/// The usual "four bytes a token" rule, only used if a tokenizer could not be built or failed.
fn rough_count(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

fn bpe(encoding: Encoding) -> Option<&'static CoreBPE> {
    static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    match encoding {
        Encoding::Cl100k => CL100K.get_or_init(|| tiktoken_rs::cl100k_base().ok()),
        Encoding::O200k => O200K.get_or_init(|| tiktoken_rs::o200k_base().ok()),
    }
    .as_ref()
}

/// Longest piece handed to the tokenizer at once.
const MAX_PIECE: usize = 1024;

/// Splits text into pieces of at most [`MAX_PIECE`] bytes (or one char, if longer), cutting
/// where both tokenizers' pre-split regexes always cut:
/// - before a space that follows a non-whitespace char (no regex alternative matches a
///   non-whitespace char followed by a space);
/// - before `, . ! ? ; :` or CJK punctuation that follows an ASCII letter or a CJK/kana/hangul
///   letter (a letter run only continues with letters, or with `'s`-style contractions).
///
/// Only text with no such place in [`MAX_PIECE`] bytes is cut elsewhere (approximate there).
struct Chunks<'a> {
    rest: &'a str,
}

impl<'a> Chunks<'a> {
    fn new(text: &'a str) -> Self {
        Chunks { rest: text }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() <= MAX_PIECE {
            let all = self.rest;
            self.rest = "";
            return Some(all);
        }
        let mut last_safe = 0;
        let mut hard = 0;
        let mut prev: Option<char> = None;
        for (i, c) in self.rest.char_indices() {
            if i > MAX_PIECE {
                break;
            }
            hard = i;
            if prev.is_some_and(|p| is_safe_cut(p, c)) {
                last_safe = i;
            }
            prev = Some(c);
        }
        let cut = if last_safe > 0 { last_safe } else { hard };
        let cut = if cut == 0 {
            // A single char longer than MAX_PIECE cannot happen (chars are <= 4 bytes), but
            // never loop forever.
            self.rest.len()
        } else {
            cut
        };
        let (head, tail) = self.rest.split_at(cut);
        self.rest = tail;
        Some(head)
    }
}

fn is_safe_cut(prev: char, cur: char) -> bool {
    if cur == ' ' {
        return !prev.is_whitespace();
    }
    let punct = matches!(cur, ',' | '.' | '!' | '?' | ';' | ':' | '，' | '。' | '！' | '？' | '；' | '：' | '、');
    punct && is_plain_letter(prev)
}

/// Letters that are certainly `\p{L}` (never marks, never unassigned).
fn is_plain_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || ('\u{4E00}'..='\u{9FA5}').contains(&c)
        || ('\u{3041}'..='\u{3096}').contains(&c)
        || ('\u{30A1}'..='\u{30FA}').contains(&c)
        || ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(encoding: Encoding, text: &str) -> u64 {
        bpe(encoding).expect("tokenizer builds").encode_ordinary(text).len() as u64
    }

    #[test]
    fn known_counts() {
        assert_eq!(count(Encoding::Cl100k, "hello world"), 2);
        assert_eq!(count(Encoding::O200k, "hello world"), 2);
        assert_eq!(count(Encoding::Cl100k, ""), 0);
        assert_eq!(count(Encoding::O200k, ""), 0);
        // From OpenAI's cookbook "How to count tokens with tiktoken".
        assert_eq!(count(Encoding::Cl100k, "tiktoken is great!"), 6);
        assert_eq!(bpe(Encoding::Cl100k).unwrap().encode_ordinary("hello world"), vec![15339, 1917]);
    }

    #[test]
    fn special_tokens_are_not_interpreted() {
        assert!(count(Encoding::Cl100k, "<|endoftext|>") > 1);
        assert!(count(Encoding::O200k, "<|endoftext|>") > 1);
    }

    #[test]
    fn model_mapping() {
        let table: &[(&str, Encoding)] = &[
            ("gpt-4o", Encoding::O200k),
            ("gpt-4o-mini-2024-07-18", Encoding::O200k),
            ("chatgpt-4o-latest", Encoding::O200k),
            ("gpt-4.1-nano", Encoding::O200k),
            ("gpt-4.5-preview", Encoding::O200k),
            ("gpt-5", Encoding::O200k),
            ("gpt-5.1-codex", Encoding::O200k),
            ("o1-preview", Encoding::O200k),
            ("o3-mini", Encoding::O200k),
            ("o4-mini-2025-04-16", Encoding::O200k),
            ("openai/gpt-4o", Encoding::O200k),
            ("azure/GPT-4o", Encoding::O200k),
            ("ft:gpt-4o-mini-2024-07-18:acme::9abc", Encoding::O200k),
            ("openai/gpt-oss-120b", Encoding::O200k),
            ("gpt-4", Encoding::Cl100k),
            ("gpt-4-turbo", Encoding::Cl100k),
            ("gpt-3.5-turbo", Encoding::Cl100k),
            ("text-embedding-3-small", Encoding::Cl100k),
            ("claude-sonnet-4-20250514", Encoding::Cl100k),
            ("anthropic/claude-3-5-haiku", Encoding::Cl100k),
            ("meta-llama/Llama-3.1-8B-Instruct", Encoding::Cl100k),
            ("", Encoding::Cl100k),
        ];
        for (model, want) in table {
            assert_eq!(encoding_for_model(model), *want, "{model}");
        }
        assert_eq!(Encoding::Cl100k.as_str(), "cl100k_base");
        assert_eq!(Encoding::O200k.as_str(), "o200k_base");
    }

    #[test]
    fn chunking_keeps_counts_exact_for_ordinary_text() {
        let mut text = String::new();
        for i in 0..400 {
            text.push_str("The quick brown fox, number ");
            text.push_str(&i.to_string());
            text.push_str(", jumps over the lazy dog's back!\n  Indented: it's fine.\t");
            text.push_str("日本語の文章です。中文句子，还有标点！");
        }
        assert!(text.len() > 10 * MAX_PIECE);
        for enc in [Encoding::Cl100k, Encoding::O200k] {
            assert_eq!(count(enc, &text), whole(enc, &text));
        }
        let pieces: Vec<&str> = Chunks::new(&text).collect();
        assert!(pieces.len() > 10);
        assert!(pieces.iter().all(|p| p.len() <= MAX_PIECE + 4));
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn pathological_runs_are_bounded_and_do_not_panic() {
        for s in ["a", " ", "\n", "^", "0", "'s", "語"] {
            let text = s.repeat(60_000);
            let n = count(Encoding::Cl100k, &text);
            assert!(n > 0);
            let n = count(Encoding::O200k, &text);
            assert!(n > 0);
        }
    }
}
