//! `[rule.set]` values: text with `{variable}` references, `{{`/`}}` for literal braces.
use std::fmt;

/// Longest label value a template produces, in characters.
pub(crate) const MAX_VALUE_CHARS: usize = 128;

/// What a `{…}` in a template refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Var {
    Namespace,
    Pod,
    Workload,
    WorkloadKind,
    Label(String),
    Annotation(String),
    Container,
    Image,
    Unit,
    ExeName,
    Comm,
    User,
    Uid,
    /// Index into the mapping's header names, and the (lower-cased) name.
    Header(usize, String),
}

/// The variables accepted in templates, for error messages.
pub(crate) const VARIABLES: &str = "{namespace}, {pod}, {workload}, {workload_kind}, {labels.KEY}, \
     {annotations.KEY}, {container}, {image}, {unit}, {exe_name}, {comm}, {user}, {uid}, {header.NAME}";

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Namespace => f.write_str("{namespace}"),
            Var::Pod => f.write_str("{pod}"),
            Var::Workload => f.write_str("{workload}"),
            Var::WorkloadKind => f.write_str("{workload_kind}"),
            Var::Label(k) => write!(f, "{{labels.{k}}}"),
            Var::Annotation(k) => write!(f, "{{annotations.{k}}}"),
            Var::Container => f.write_str("{container}"),
            Var::Image => f.write_str("{image}"),
            Var::Unit => f.write_str("{unit}"),
            Var::ExeName => f.write_str("{exe_name}"),
            Var::Comm => f.write_str("{comm}"),
            Var::User => f.write_str("{user}"),
            Var::Uid => f.write_str("{uid}"),
            Var::Header(_, name) => write!(f, "{{header.{name}}}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A parsed template.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Template {
    src: String,
    parts: Vec<Part>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.src)
    }
}

impl Template {
    /// Parses `src`; `header` interns a header name (already lower-cased and checked) and
    /// returns its index. Errors are messages for the caller to place.
    pub(crate) fn parse(src: &str, header: &mut dyn FnMut(&str) -> usize) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("{{") {
                lit.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                lit.push('}');
                rest = after;
            } else if tail.starts_with('}') {
                return Err(format!("unmatched \"}}\" in template {src:?} (write \"}}}}\" for a literal brace)"));
            } else {
                let Some(end) = tail.find('}') else {
                    return Err(format!("unclosed \"{{\" in template {src:?} (write \"{{{{\" for a literal brace)"));
                };
                let var = parse_var(&tail[1..end], header)?;
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Var(var));
                rest = &tail[end + 1..];
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { src: src.to_string(), parts })
    }

    #[cfg(test)]
    pub(crate) fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        })
    }

    /// Renders with `lookup`; the first variable without a (non-empty) value is the error.
    /// The result is sanitised (see [`sanitize`]); an empty result counts as missing too.
    pub(crate) fn render<'t>(&'t self, lookup: &mut dyn FnMut(&Var) -> Option<String>) -> Result<String, Missing<'t>> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => match lookup(v) {
                    Some(value) if !value.is_empty() => out.push_str(&value),
                    _ => return Err(Missing::Var(v)),
                },
            }
        }
        let out = sanitize(&out);
        if out.is_empty() {
            return Err(Missing::Empty);
        }
        Ok(out)
    }
}

/// Why a template has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing<'t> {
    Var(&'t Var),
    /// Every character was whitespace or control.
    Empty,
}

/// Drops control characters, trims surrounding whitespace and keeps at most
/// [`MAX_VALUE_CHARS`] characters.
pub(crate) fn sanitize(s: &str) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control()).collect();
    cleaned.trim().chars().take(MAX_VALUE_CHARS).collect::<String>().trim_end().to_string()
}

fn parse_var(inner: &str, header: &mut dyn FnMut(&str) -> usize) -> Result<Var, String> {
    let unknown = || format!("unknown template variable \"{{{inner}}}\", expected one of {VARIABLES}");
    let keyed = |prefix: &str| -> Result<Option<String>, String> {
        match inner.strip_prefix(prefix) {
            None => Ok(None),
            Some("") => Err(format!("template variable \"{{{inner}}}\" needs a name after \"{prefix}\"")),
            Some(k) => Ok(Some(k.to_string())),
        }
    };
    if let Some(k) = keyed("labels.")? {
        return Ok(Var::Label(k));
    }
    if let Some(k) = keyed("annotations.")? {
        return Ok(Var::Annotation(k));
    }
    if let Some(name) = keyed("header.")? {
        let name = header_name(&name).map_err(|m| format!("template variable \"{{{inner}}}\": {m}"))?;
        let idx = header(&name);
        return Ok(Var::Header(idx, name));
    }
    Ok(match inner {
        "namespace" => Var::Namespace,
        "pod" => Var::Pod,
        "workload" => Var::Workload,
        "workload_kind" => Var::WorkloadKind,
        "container" => Var::Container,
        "image" => Var::Image,
        "unit" => Var::Unit,
        "exe_name" => Var::ExeName,
        "comm" => Var::Comm,
        "user" => Var::User,
        "uid" => Var::Uid,
        _ => return Err(unknown()),
    })
}

/// Checks an HTTP header name (an RFC 9110 token) and lower-cases it.
pub(crate) fn header_name(name: &str) -> Result<String, String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        return Err("empty header name".into());
    }
    if let Some(c) = name.chars().find(|c| !token(*c)) {
        return Err(format!("invalid header name {name:?}: {c:?} is not allowed in a header name"));
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Template, String> {
        let mut names: Vec<String> = Vec::new();
        Template::parse(s, &mut |n| {
            names.push(n.to_string());
            names.len() - 1
        })
    }

    fn render(t: &Template, f: impl Fn(&Var) -> Option<String>) -> Result<String, String> {
        t.render(&mut |v| f(v)).map_err(|m| match m {
            Missing::Var(v) => v.to_string(),
            Missing::Empty => "empty".into(),
        })
    }

    #[test]
    fn parses_variables_and_braces() {
        let t = parse("team-{labels.team}/{{x}}").unwrap();
        assert_eq!(t.vars().cloned().collect::<Vec<_>>(), vec![Var::Label("team".into())]);
        let out = render(&t, |v| (v == &Var::Label("team".into())).then(|| "a".to_string())).unwrap();
        assert_eq!(out, "team-a/{x}");
        let t = parse("{annotations.billing.example.com/cost-center}").unwrap();
        assert_eq!(t.vars().next(), Some(&Var::Annotation("billing.example.com/cost-center".into())));
        let t = parse("{header.X-Tenant}").unwrap();
        assert_eq!(t.vars().next(), Some(&Var::Header(0, "x-tenant".into())));
        assert_eq!(t.vars().next().unwrap().to_string(), "{header.x-tenant}");
        assert_eq!(parse("plain").unwrap().vars().count(), 0);
    }

    #[test]
    fn bad_templates_are_errors() {
        assert!(parse("{labelz.x}").unwrap_err().starts_with("unknown template variable \"{labelz.x}\""));
        assert!(parse("{labels.}").unwrap_err().contains("needs a name"));
        assert!(parse("{team").unwrap_err().starts_with("unclosed"));
        assert!(parse("team}").unwrap_err().starts_with("unmatched"));
        assert!(parse("{}").unwrap_err().starts_with("unknown template variable \"{}\""));
        assert!(parse("{header.x team}").unwrap_err().contains("invalid header name"));
    }

    #[test]
    fn missing_or_empty_values_fail_and_values_are_sanitised() {
        let t = parse("{comm}-{user}").unwrap();
        assert_eq!(render(&t, |v| (v == &Var::Comm).then(|| "c".into())).unwrap_err(), "{user}");
        assert_eq!(render(&t, |_| Some(String::new())).unwrap_err(), "{comm}");
        let t = parse("{comm}").unwrap();
        assert_eq!(render(&t, |_| Some("a\u{7}b\nc\u{0}".into())).unwrap(), "abc");
        assert_eq!(render(&t, |_| Some("\n\t".into())).unwrap_err(), "empty");
        assert_eq!(render(&t, |_| Some("x".repeat(1000))).unwrap().chars().count(), MAX_VALUE_CHARS);
        assert_eq!(render(&t, |_| Some("é".repeat(1000))).unwrap().chars().count(), MAX_VALUE_CHARS);
        assert_eq!(sanitize("  a b  "), "a b");
    }
}
