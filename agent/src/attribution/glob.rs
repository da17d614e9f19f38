//! A tiny glob matcher: `*`, `**`, `?` and `\` escapes; no character classes.
//!
//! Two flavours. In a *path* glob (`cgroup_path`, `exe`) `*` and `?` never match `/` and `**`
//! matches anything, `/` included. In a *plain* glob (every other key) `*` and `**` both match
//! any run of characters and `?` any one character. Matching is an NFA walk: linear in the
//! text for a given pattern, whatever the pattern (no exponential backtracking).
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**`
    DeepStar,
}

/// A compiled glob; `Display` shows the source text.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    src: String,
    path: bool,
    toks: Vec<Tok>,
    /// The unescaped text when the pattern has no wildcard (matched by equality).
    literal: Option<String>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.src)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.src)
    }
}

impl Glob {
    /// A plain glob: `*` matches any characters, `/` included.
    pub(crate) fn plain(src: &str) -> Result<Glob, String> {
        Glob::compile(src, false)
    }

    /// A path glob: `*` and `?` stop at `/`; `**` crosses it.
    pub(crate) fn path(src: &str) -> Result<Glob, String> {
        Glob::compile(src, true)
    }

    fn compile(src: &str, path: bool) -> Result<Glob, String> {
        let mut toks = Vec::new();
        let mut chars = src.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e) => toks.push(Tok::Lit(e)),
                    None => return Err(format!("invalid glob {src:?}: trailing \"\\\" escapes nothing")),
                },
                '*' => {
                    if chars.peek() == Some(&'*') {
                        while chars.peek() == Some(&'*') {
                            chars.next();
                        }
                        toks.push(Tok::DeepStar);
                    } else {
                        toks.push(Tok::Star);
                    }
                }
                '?' => toks.push(Tok::One),
                '[' | ']' | '{' | '}' => {
                    return Err(format!(
                        "invalid glob {src:?}: {c:?} is not supported (no character classes or {{a,b}} \
                         alternation; write \"\\{c}\" to match it literally)"
                    ))
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        let literal = toks
            .iter()
            .map(|t| match t {
                Tok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect::<Option<String>>();
        Ok(Glob { src: src.to_string(), path, toks, literal })
    }

    /// Whether the pattern has no wildcard (so it matches one exact string).
    #[cfg(test)]
    pub(crate) fn is_literal(&self) -> bool {
        self.literal.is_some()
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        if let Some(lit) = &self.literal {
            return lit == text;
        }
        let n = self.toks.len();
        let mut cur = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        cur[0] = true;
        self.close(&mut cur);
        for c in text.chars() {
            next.iter_mut().for_each(|s| *s = false);
            let mut any = false;
            for i in 0..n {
                if !cur[i] {
                    continue;
                }
                let slash_ok = !(self.path && c == '/');
                match self.toks[i] {
                    Tok::Lit(l) if l == c => next[i + 1] = true,
                    Tok::Lit(_) => continue,
                    Tok::One if slash_ok => next[i + 1] = true,
                    Tok::Star if slash_ok => next[i] = true,
                    Tok::One | Tok::Star => continue,
                    Tok::DeepStar => next[i] = true,
                }
                any = true;
            }
            if !any {
                return false;
            }
            self.close(&mut next);
            std::mem::swap(&mut cur, &mut next);
        }
        cur[n]
    }

    /// Epsilon closure: a star may match nothing.
    fn close(&self, states: &mut [bool]) {
        for i in 0..self.toks.len() {
            if states[i] && matches!(self.toks[i], Tok::Star | Tok::DeepStar) {
                states[i + 1] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Glob {
        Glob::plain(s).unwrap()
    }
    fn pa(s: &str) -> Glob {
        Glob::path(s).unwrap()
    }

    #[test]
    fn literals_match_exactly() {
        assert!(p("curl").matches("curl"));
        assert!(!p("curl").matches("curl2"));
        assert!(!p("curl").matches("cur"));
        assert!(p("curl").is_literal());
        assert!(p("").matches(""));
        assert!(!p("").matches("x"));
        assert!(p(r"a\*b").matches("a*b"));
        assert!(!p(r"a\*b").matches("axb"));
        assert!(p(r"a\*b").is_literal());
        assert!(p(r"\[x\]").matches("[x]"));
    }

    #[test]
    fn plain_stars_cross_slashes() {
        assert!(p("*").matches(""));
        assert!(p("*").matches("a/b/c"));
        assert!(p("team-*").matches("team-a"));
        assert!(p("team-*").matches("team-"));
        assert!(!p("team-*").matches("tea"));
        assert!(p("registry.example.com/payments/*").matches("registry.example.com/payments/api:1.2"));
        assert!(p("registry.example.com/*").matches("registry.example.com/payments/api:1.2"));
        assert!(p("*-svc-*").matches("a-svc-b"));
        assert!(!p("*-svc-*").matches("asvcb"));
        assert!(p("a?c").matches("abc"));
        assert!(p("a?c").matches("a/c"));
        assert!(!p("a?c").matches("ac"));
        assert!(p("python*").matches("python3.12"));
        assert!(p("ü*ß").matches("üxyß"));
        assert!(p("a**b").matches("a/x/b"));
    }

    #[test]
    fn path_stars_stop_at_slashes() {
        assert!(pa("/kubepods.slice/**").matches("/kubepods.slice/a/b.scope"));
        assert!(!pa("/kubepods.slice/*").matches("/kubepods.slice/a/b.scope"));
        assert!(pa("/kubepods.slice/*").matches("/kubepods.slice/a.slice"));
        assert!(pa("/usr/bin/python3*").matches("/usr/bin/python3.11"));
        assert!(!pa("/usr/*/python3").matches("/usr/local/bin/python3"));
        assert!(pa("/usr/**/python3").matches("/usr/local/bin/python3"));
        assert!(pa("**/python3").matches("/opt/venv/bin/python3"));
        assert!(!pa("/a?b").matches("/a/b"));
        assert!(pa("/a?b").matches("/axb"));
        assert!(pa("**").matches(""));
    }

    #[test]
    fn bad_globs_are_rejected() {
        assert!(Glob::plain("a\\").unwrap_err().contains("trailing"));
        for bad in ["[abc]", "a]", "{a,b}", "x}"] {
            assert!(Glob::plain(bad).unwrap_err().contains("not supported"), "{bad}");
        }
    }

    #[test]
    fn pathological_patterns_are_fast() {
        let g = p("*a*a*a*a*a*a*a*a*a*a*a*b");
        let text = "a".repeat(20_000);
        assert!(!g.matches(&text));
    }
}
