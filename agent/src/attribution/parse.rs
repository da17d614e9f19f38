//! Mapping file → compiled rules. Walks the span-carrying TOML tree so every error names the
//! file, the line and the dotted key (`rule[N]` is 1-based; other list indices 0-based).
use std::cell::RefCell;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::eval::{Cond, Op, Patterns, Requirement, Rule, Selector, SetTemplates};
use super::glob::Glob;
use super::template::{header_name, sanitize, Template, MAX_VALUE_CHARS};
use super::{Attribution, MappingError};
use crate::toml_source::{key_at, line_of, KeyPath, TomlChecks};

type Val<'i> = Spanned<DeValue<'i>>;

/// The keys of `[rule.match]`, in the order conditions are evaluated (and explained).
pub(crate) const MATCH_KEYS: &[&str] = &[
    "namespace",
    "workload",
    "workload_kind",
    "pod_labels",
    "pod_annotations",
    "container_image",
    "container_name",
    "systemd_unit",
    "cgroup_path",
    "exe",
    "exe_name",
    "comm",
    "user",
    "uid",
    "headers",
];
const SET_KEYS: &[&str] = &["team", "cost_center", "product", "tenant", "app"];
const OPERATORS: &str = "In, NotIn, Exists, DoesNotExist";

/// A parsed mapping file.
pub(crate) struct Parsed {
    pub(crate) rules: Vec<Rule>,
    pub(crate) unattributed: Attribution,
    pub(crate) header_names: Vec<String>,
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
    /// Header names in first-use order (see `Mapping::header_names`).
    headers: RefCell<Vec<String>>,
}

type R<T> = Result<T, MappingError>;

pub(crate) fn parse(file: &str, text: &str) -> R<Parsed> {
    let doc = DeTable::parse(text).map_err(|e| {
        let pos = e.span().map(|s| s.start).unwrap_or(0);
        let message = e.message().trim().replace('\n', "; ");
        MappingError::Invalid { file: file.to_string(), line: line_of(text, pos), key: key_at(text, pos), message }
    })?;
    let p = Parser { file, text, headers: RefCell::new(Vec::new()) };
    let root = KeyPath::root();
    let doc = doc.get_ref();
    p.check_keys(doc, &root, &["unattributed", "rule"])?;
    let unattributed = match doc.get("unattributed") {
        Some(v) => p.unattributed(v, &root.key("unattributed"))?,
        None => Attribution::unattributed("unattributed"),
    };
    let mut rules: Vec<Rule> = Vec::new();
    if let Some(v) = doc.get("rule") {
        let path = root.key("rule");
        let DeValue::Array(items) = v.get_ref() else {
            return Err(p.err(
                v.span(),
                &path,
                format!("expected an array of tables ([[rule]]), found {}", v.get_ref().type_str()),
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let rule_path = path.index(i + 1);
            let (rule, name_span) = p.rule(i + 1, item, &rule_path)?;
            if let Some(j) = rules.iter().position(|r| r.name == rule.name) {
                let msg = format!("duplicate rule name {:?} (rule[{}] has it)", rule.name, j + 1);
                return Err(p.err(name_span, &rule_path.key("name"), msg));
            }
            rules.push(rule);
        }
    }
    Ok(Parsed { rules, unattributed, header_names: p.headers.into_inner() })
}

impl<'a> TomlChecks for Parser<'a> {
    type Error = MappingError;
    fn err(&self, span: Range<usize>, key: &KeyPath, message: impl Into<String>) -> MappingError {
        MappingError::Invalid {
            file: self.file.to_string(),
            line: line_of(self.text, span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl<'a> Parser<'a> {
    fn intern(&self, name: &str) -> usize {
        let mut headers = self.headers.borrow_mut();
        match headers.iter().position(|h| h == name) {
            Some(i) => i,
            None => {
                headers.push(name.to_string());
                headers.len() - 1
            }
        }
    }

    /// A string or a non-empty list of strings, each with its span and key path.
    fn strings<'v>(&self, v: &'v Val<'_>, path: &KeyPath) -> R<Vec<(&'v str, Range<usize>, KeyPath)>> {
        match v.get_ref() {
            DeValue::String(s) => Ok(vec![(s.as_ref(), v.span(), path.clone())]),
            DeValue::Array(items) if items.is_empty() => {
                Err(self.err(v.span(), path, "empty list: give at least one pattern (or remove the key)"))
            }
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.string(item, &path.index(i)).map(|s| (s, item.span(), path.index(i))))
                .collect(),
            other => Err(self.err(
                v.span(),
                path,
                format!("expected a string or a list of strings, found {}", other.type_str()),
            )),
        }
    }

    fn patterns(&self, v: &Val<'_>, path: &KeyPath, path_glob: bool) -> R<Patterns> {
        let globs = self
            .strings(v, path)?
            .into_iter()
            .map(|(s, span, key)| {
                let g = if path_glob { Glob::path(s) } else { Glob::plain(s) };
                g.map_err(|m| self.err(span, &key, m))
            })
            .collect::<R<Vec<_>>>()?;
        Ok(Patterns(globs))
    }

    /// A rule and the span to blame for a duplicate name.
    fn rule(&self, n: usize, v: &Val<'_>, path: &KeyPath) -> R<(Rule, Range<usize>)> {
        let t = self.table(v, path)?;
        self.check_keys(t, path, &["name", "match", "set"])?;
        let (name, name_span) = match t.get("name") {
            Some(nv) => {
                let key = path.key("name");
                let name = self.string(nv, &key)?;
                if name.trim().is_empty() {
                    return Err(self.err(nv.span(), &key, "must not be empty"));
                }
                if name.chars().any(char::is_control) {
                    return Err(self.err(nv.span(), &key, "must not contain control characters"));
                }
                if name.chars().count() > MAX_VALUE_CHARS {
                    return Err(self.err(nv.span(), &key, format!("longer than {MAX_VALUE_CHARS} characters")));
                }
                (name.to_string(), nv.span())
            }
            None => (format!("rule-{n}"), v.span()),
        };
        let conds = match t.get("match") {
            Some(mv) => self.conditions(mv, &path.key("match"))?,
            None => Vec::new(),
        };
        let set = match t.get("set") {
            Some(sv) => self.set(sv, &path.key("set"))?,
            None => {
                return Err(self.err(v.span(), &path.key("set").key("team"), "missing (every rule needs set.team)"))
            }
        };
        Ok((Rule { name, conds, set }, name_span))
    }

    fn conditions(&self, v: &Val<'_>, path: &KeyPath) -> R<Vec<Cond>> {
        let t = self.table(v, path)?;
        self.check_keys(t, path, MATCH_KEYS)?;
        let mut conds = Vec::new();
        for &key in MATCH_KEYS {
            let Some(v) = t.get(key) else { continue };
            let kp = path.key(key);
            let cond = match key {
                "namespace" => Cond::Namespace(self.patterns(v, &kp, false)?),
                "workload" => Cond::Workload(self.patterns(v, &kp, false)?),
                "workload_kind" => Cond::WorkloadKind(self.patterns(v, &kp, false)?),
                "pod_labels" => Cond::PodLabels(self.selector(v, &kp)?),
                "pod_annotations" => Cond::PodAnnotations(self.selector(v, &kp)?),
                "container_image" => Cond::ContainerImage(self.patterns(v, &kp, false)?),
                "container_name" => Cond::ContainerName(self.patterns(v, &kp, false)?),
                "systemd_unit" => Cond::SystemdUnit(self.patterns(v, &kp, false)?),
                "cgroup_path" => Cond::CgroupPath(self.patterns(v, &kp, true)?),
                "exe" => Cond::Exe(self.patterns(v, &kp, true)?),
                "exe_name" => Cond::ExeName(self.patterns(v, &kp, false)?),
                "comm" => Cond::Comm(self.patterns(v, &kp, false)?),
                "user" => Cond::User(self.patterns(v, &kp, false)?),
                "uid" => Cond::Uid(self.uids(v, &kp)?),
                "headers" => {
                    conds.extend(self.header_conds(v, &kp)?);
                    continue;
                }
                _ => unreachable!("MATCH_KEYS and this match disagree"),
            };
            conds.push(cond);
        }
        Ok(conds)
    }

    fn uids(&self, v: &Val<'_>, path: &KeyPath) -> R<Vec<u32>> {
        let one = |v: &Val<'_>, path: &KeyPath| -> R<u32> {
            let DeValue::Integer(i) = v.get_ref() else {
                return Err(self.err(v.span(), path, format!("expected an integer, found {}", v.get_ref().type_str())));
            };
            i128::from_str_radix(i.as_str(), i.radix())
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.err(v.span(), path, format!("uid {i} is out of range (0 to {})", u32::MAX)))
        };
        match v.get_ref() {
            DeValue::Integer(_) => Ok(vec![one(v, path)?]),
            DeValue::Array(items) if items.is_empty() => {
                Err(self.err(v.span(), path, "empty list: give at least one uid (or remove the key)"))
            }
            DeValue::Array(items) => items.iter().enumerate().map(|(i, item)| one(item, &path.index(i))).collect(),
            other => Err(self.err(
                v.span(),
                path,
                format!("expected an integer or a list of integers, found {}", other.type_str()),
            )),
        }
    }

    fn header_conds(&self, v: &Val<'_>, path: &KeyPath) -> R<Vec<Cond>> {
        let t = self.table(v, path)?;
        let mut entries: Vec<_> = t.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let mut conds: Vec<Cond> = Vec::new();
        for (k, hv) in entries {
            let kp = path.key(k.get_ref());
            let name = header_name(k.get_ref()).map_err(|m| self.err(k.span(), &kp, m))?;
            if conds.iter().any(|c| matches!(c, Cond::Header { name: n, .. } if *n == name)) {
                return Err(self.err(
                    k.span(),
                    &kp,
                    format!("header {name:?} is listed twice (names are case-insensitive)"),
                ));
            }
            let patterns = self.patterns(hv, &kp, false)?;
            let idx = self.intern(&name);
            conds.push(Cond::Header { idx, name, patterns });
        }
        Ok(conds)
    }

    fn selector(&self, v: &Val<'_>, path: &KeyPath) -> R<Selector> {
        let t = self.table(v, path)?;
        self.check_keys(t, path, &["matchLabels", "matchExpressions"])?;
        let mut sel = Selector::default();
        if let Some(lv) = t.get("matchLabels") {
            let lp = path.key("matchLabels");
            let labels = self.table(lv, &lp)?;
            let mut entries: Vec<_> = labels.iter().collect();
            entries.sort_by_key(|(k, _)| k.span().start);
            for (k, val) in entries {
                let kp = lp.key(k.get_ref());
                if k.get_ref().is_empty() {
                    return Err(self.err(k.span(), &kp, "empty key"));
                }
                sel.match_labels.push((k.get_ref().to_string(), self.string(val, &kp)?.to_string()));
            }
        }
        if let Some(ev) = t.get("matchExpressions") {
            let ep = path.key("matchExpressions");
            let DeValue::Array(items) = ev.get_ref() else {
                let found = ev.get_ref().type_str();
                return Err(self.err(ev.span(), &ep, format!("expected a list of tables, found {found}")));
            };
            for (i, item) in items.iter().enumerate() {
                sel.exprs.push(self.requirement(item, &ep.index(i))?);
            }
        }
        Ok(sel)
    }

    fn requirement(&self, v: &Val<'_>, path: &KeyPath) -> R<Requirement> {
        let t = self.table(v, path)?;
        self.check_keys(t, path, &["key", "operator", "values"])?;
        let required = |name: &str| -> R<(&str, Range<usize>)> {
            let kp = path.key(name);
            let val = t.get(name).ok_or_else(|| self.err(v.span(), &kp, "missing"))?;
            Ok((self.string(val, &kp)?, val.span()))
        };
        let (key, key_span) = required("key")?;
        if key.is_empty() {
            return Err(self.err(key_span, &path.key("key"), "must not be empty"));
        }
        let (op, op_span) = required("operator")?;
        let op = match op {
            "In" => Op::In,
            "NotIn" => Op::NotIn,
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            other => {
                let msg = format!("unknown operator {other:?}, expected one of {OPERATORS}");
                return Err(self.err(op_span, &path.key("operator"), msg));
            }
        };
        let vp = path.key("values");
        let values: Vec<String> = match t.get("values") {
            None => Vec::new(),
            Some(vv) => match vv.get_ref() {
                DeValue::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.string(item, &vp.index(i)).map(str::to_string))
                    .collect::<R<_>>()?,
                other => {
                    return Err(self.err(
                        vv.span(),
                        &vp,
                        format!("expected a list of strings, found {}", other.type_str()),
                    ))
                }
            },
        };
        let span = t.get("values").map(|vv| vv.span()).unwrap_or(v.span());
        let name = format!("{op:?}");
        match op {
            Op::In | Op::NotIn if values.is_empty() => {
                Err(self.err(span, &vp, format!("operator {name} needs a non-empty list of values")))
            }
            Op::Exists | Op::DoesNotExist if !values.is_empty() => {
                Err(self.err(span, &vp, format!("operator {name} takes no values")))
            }
            _ => Ok(Requirement { key: key.to_string(), op, values }),
        }
    }

    fn set(&self, v: &Val<'_>, path: &KeyPath) -> R<SetTemplates> {
        let t = self.table(v, path)?;
        self.check_keys(t, path, SET_KEYS)?;
        let template = |name: &str| -> R<Option<Template>> {
            let Some(tv) = t.get(name) else { return Ok(None) };
            let kp = path.key(name);
            let src = self.string(tv, &kp)?;
            if src.trim().is_empty() {
                return Err(self.err(tv.span(), &kp, "must not be empty"));
            }
            let parsed = Template::parse(src, &mut |h| self.intern(h));
            parsed.map(Some).map_err(|m| self.err(tv.span(), &kp, m))
        };
        let team = template("team")?;
        let (cost_center, product, tenant, app) =
            (template("cost_center")?, template("product")?, template("tenant")?, template("app")?);
        let team = team.ok_or_else(|| self.err(v.span(), &path.key("team"), "missing (every rule needs set.team)"))?;
        Ok(SetTemplates { team, cost_center, product, tenant, app })
    }

    fn unattributed(&self, v: &Val<'_>, path: &KeyPath) -> R<Attribution> {
        let t = self.table(v, path)?;
        self.check_keys(t, path, SET_KEYS)?;
        let literal = |name: &str| -> R<Option<String>> {
            let Some(lv) = t.get(name) else { return Ok(None) };
            let kp = path.key(name);
            let s = self.string(lv, &kp)?;
            if s.contains(['{', '}']) {
                return Err(self.err(lv.span(), &kp, "templates are not allowed in [unattributed]: use plain text"));
            }
            let s = sanitize(s);
            if s.is_empty() {
                return Err(self.err(lv.span(), &kp, "must not be empty"));
            }
            Ok(Some(s))
        };
        let mut a = Attribution::unattributed(&literal("team")?.unwrap_or_else(|| "unattributed".into()));
        a.cost_center = literal("cost_center")?;
        a.product = literal("product")?;
        a.tenant = literal("tenant")?;
        a.app = literal("app")?;
        Ok(a)
    }
}
