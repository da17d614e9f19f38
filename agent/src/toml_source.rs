//! Positions in a TOML file for error messages, shared by the config, mapping, pricing and policy
//! files: byte offset → line, dotted key paths, and a best-effort key for syntax errors (where
//! there is no parsed tree to walk).
use std::fmt;

/// 1-based line of byte `offset` in `text` (offsets past the end count as the last line).
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// A dotted key path like `rule[2].match.pod_labels.matchLabels."app.kubernetes.io/name"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(String);

impl KeyPath {
    pub(crate) fn root() -> KeyPath {
        KeyPath(String::new())
    }

    /// Appends a key, quoted when it is not a bare TOML key.
    pub(crate) fn key(&self, k: &str) -> KeyPath {
        let mut s = self.0.clone();
        if !s.is_empty() {
            s.push('.');
        }
        if is_bare(k) {
            s.push_str(k);
        } else {
            s.push_str(&format!("{k:?}"));
        }
        KeyPath(s)
    }

    /// Appends an array index: `[i]`.
    pub(crate) fn index(&self, i: usize) -> KeyPath {
        KeyPath(format!("{}[{i}]", self.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        if self.0.is_empty() {
            "(document)"
        } else {
            &self.0
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_bare(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Best-effort dotted key for a syntax error at byte `pos`: the key on that line, under the
/// nearest `[table]` / `[[array]]` header above. An array-of-tables header is numbered with
/// the count of identical headers up to it (1-based, as the mapping file numbers rules).
pub(crate) fn key_at(text: &str, pos: usize) -> String {
    let pos = floor_boundary(text, pos);
    let line_start = text[..pos].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[pos..].find('\n').map(|i| pos + i).unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    let norm = |l: &str| l.split('#').next().unwrap_or("").replace([' ', '\t', '\r'], "");
    let header = |l: &str, upto: &str| -> Option<String> {
        let l = l.split('#').next().unwrap_or("").trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let name = name.trim();
            let n = upto.lines().filter(|x| norm(x) == format!("[[{name}]]")).count();
            return Some(format!("{name}[{}]", n.max(1)));
        }
        let name = l.strip_prefix('[')?.strip_suffix(']')?.trim();
        if name.is_empty() || name.starts_with('[') {
            return None;
        }
        // `[rule.match]` belongs to the latest `[[rule]]`.
        let first = name.split('.').next().unwrap_or(name);
        let n = upto.lines().filter(|x| norm(x) == format!("[[{first}]]")).count();
        Some(if n > 0 { format!("{first}[{n}]{}", &name[first.len()..]) } else { name.to_string() })
    };
    if line.starts_with('[') {
        if let Some(h) = header(line, &text[..line_end]) {
            return h;
        }
    }
    let mut table = None;
    let before = &text[..line_start];
    let mut end = before.len();
    for l in before.split('\n').rev() {
        let start = end - l.len();
        if l.trim_start().starts_with('[') {
            table = header(l, &text[..end]);
            if table.is_some() {
                break;
            }
        }
        end = start.saturating_sub(1);
    }
    let key = line.split('=').next().unwrap_or("").trim();
    let key = if line.contains('=') && !key.is_empty() && !key.starts_with('#') { Some(key) } else { None };
    let key = match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k.to_string(),
        (Some(t), None) => t,
        (None, None) => String::new(),
    };
    if key.is_empty() {
        "(document)".to_string()
    } else {
        key
    }
}

fn floor_boundary(text: &str, pos: usize) -> usize {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    pos
}

/// The first key of `t`, in file order, that is not in `allowed`, with its span: both the
/// mapping file and the pricing table reject unknown keys this way.
pub(crate) fn first_unknown_key<'t, 'i>(
    t: &'t toml::de::DeTable<'i>,
    allowed: &[&str],
) -> Option<&'t toml::Spanned<std::borrow::Cow<'i, str>>> {
    t.iter().map(|(k, _)| k).filter(|k| !allowed.contains(&k.get_ref().as_ref())).min_by_key(|k| k.span().start)
}

/// The message for such a key.
pub(crate) fn unknown_key_message(key: &str, allowed: &[&str]) -> String {
    format!("unknown key {key:?}, expected one of {}", allowed.join(", "))
}

type Val<'i> = toml::Spanned<toml::de::DeValue<'i>>;

/// The checks every file parser makes, written once: a parser names only how an error at a
/// place of its file is built (its own error type, with file, line and key).
pub(crate) trait TomlChecks {
    type Error;

    fn err(&self, span: std::ops::Range<usize>, key: &KeyPath, message: impl Into<String>) -> Self::Error;

    /// Rejects the first (in file order) key not in `allowed`.
    fn check_keys(&self, t: &toml::de::DeTable<'_>, path: &KeyPath, allowed: &[&str]) -> Result<(), Self::Error> {
        match first_unknown_key(t, allowed) {
            None => Ok(()),
            Some(k) => Err(self.err(k.span(), &path.key(k.get_ref()), unknown_key_message(k.get_ref(), allowed))),
        }
    }

    fn table<'v, 'i>(&self, v: &'v Val<'i>, path: &KeyPath) -> Result<&'v toml::de::DeTable<'i>, Self::Error> {
        match v.get_ref() {
            toml::de::DeValue::Table(t) => Ok(t),
            other => Err(self.err(v.span(), path, format!("expected a table, found {}", other.type_str()))),
        }
    }

    fn string<'v>(&self, v: &'v Val<'_>, path: &KeyPath) -> Result<&'v str, Self::Error> {
        match v.get_ref() {
            toml::de::DeValue::String(s) => Ok(s),
            other => Err(self.err(v.span(), path, format!("expected a string, found {}", other.type_str()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }

    #[test]
    fn key_paths_quote_non_bare_keys() {
        let p = KeyPath::root().key("rule").index(2).key("match").key("app.kubernetes.io/name");
        assert_eq!(p.to_string(), "rule[2].match.\"app.kubernetes.io/name\"");
        assert_eq!(KeyPath::root().to_string(), "(document)");
    }

    #[test]
    fn syntax_error_keys_name_the_rule() {
        let text = "[[rule]]\nname = \"a\"\n[[rule]]\n[rule.match]\ncomm = \"x\n";
        let pos = text.find("comm").unwrap() + 8;
        assert_eq!(key_at(text, pos), "rule[2].match.comm");
        assert_eq!(key_at(text, 2), "rule[1]");
        assert_eq!(key_at("x = 1", 1), "x");
        assert_eq!(key_at("[unattributed]\nteam 1\n", 20), "unattributed");
        assert_eq!(key_at("é", 1), "(document)");
    }
}
