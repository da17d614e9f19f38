//! The entitlement policy file: `[[entitlement]]` tables, each a match on a call's labels, one
//! limit, a window and an action. Parsed from the span-carrying TOML tree so every error names
//! the file, line and dotted key (`entitlement[N]` is 1-based); unknown keys are refused.
use std::ops::Range;

use jiff::tz::TimeZone;
use thiserror::Error;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::window::{Span, Window};
use crate::attribution::glob::Glob;
use crate::money::{UnitPrice, PICO_PER_USD};
use crate::toml_source::{key_at, line_of, KeyPath, TomlChecks};

type Val<'i> = Spanned<DeValue<'i>>;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum PolicyError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid { file: String, line: usize, key: String, message: String },
}

/// The labels an entitlement can match: the keys a report groups by, but `user` and `unit`
/// (an entitlement is a team's, product's or tenant's budget, not a person's or a unit's).
pub use crate::report::rows::Dim as MatchKey;

/// In the order they are documented.
const MATCH_KEYS: [MatchKey; 9] = [
    MatchKey::Team,
    MatchKey::CostCenter,
    MatchKey::Product,
    MatchKey::Tenant,
    MatchKey::App,
    MatchKey::Namespace,
    MatchKey::Workload,
    MatchKey::Provider,
    MatchKey::Model,
];

/// A call's labels. For `provider` and `model`, `None` means "not known yet" (a request held
/// before its bytes leave has no model) and matches, so a hard limit errs on the safe side;
/// for the attribution keys `None` means the label is absent, which matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub team: String,
    pub cost_center: Option<String>,
    pub product: Option<String>,
    pub tenant: Option<String>,
    pub app: Option<String>,
    pub namespace: Option<String>,
    pub workload: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
}

impl Labels {
    fn get(&self, key: MatchKey) -> Option<&str> {
        match key {
            MatchKey::Team => Some(&self.team),
            MatchKey::CostCenter => self.cost_center.as_deref(),
            MatchKey::Product => self.product.as_deref(),
            MatchKey::Tenant => self.tenant.as_deref(),
            MatchKey::App => self.app.as_deref(),
            MatchKey::Namespace => self.namespace.as_deref(),
            MatchKey::Workload => self.workload.as_deref(),
            MatchKey::Provider => self.provider.as_deref(),
            MatchKey::Model => self.model.as_deref(),
            MatchKey::User | MatchKey::Unit => None,
        }
    }
}

/// All conditions must hold; each is a glob (`*` any characters) on one label.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher(pub(crate) Vec<(MatchKey, Glob)>);

impl Matcher {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|(k, g)| match labels.get(*k) {
            Some(v) => g.matches(v),
            None => matches!(k, MatchKey::Provider | MatchKey::Model),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    TotalTokens,
    InputTokens,
    OutputTokens,
    /// Counted in pico-USD (exact; the policy's decimal is held without rounding).
    CostUsd,
    Requests,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::TotalTokens => "total_tokens",
            LimitKind::InputTokens => "input_tokens",
            LimitKind::OutputTokens => "output_tokens",
            LimitKind::CostUsd => "cost_usd",
            LimitKind::Requests => "requests",
        }
    }

    /// The unit amounts are counted in (status file, metrics).
    pub fn unit(self) -> &'static str {
        match self {
            LimitKind::CostUsd => "pico_usd",
            LimitKind::Requests => "requests",
            _ => "tokens",
        }
    }
}

/// A limit: `amount` tokens, requests or pico-USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub kind: LimitKind,
    pub amount: u128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Observe,
    Signal,
    Deny,
    Cut,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Observe => "observe",
            Action::Signal => "signal",
            Action::Deny => "deny",
            Action::Cut => "cut",
        }
    }

    /// Whether the kernel acts (everything but the dry run).
    pub fn is_hard(self) -> bool {
        self != Action::Observe
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Host,
    Cluster,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Host => "host",
            Scope::Cluster => "cluster",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entitlement {
    pub name: String,
    pub matcher: Matcher,
    pub limit: Limit,
    pub window: Window,
    /// Warning threshold in basis points of the limit (8000 = 80 %).
    pub warn_at_bp: Option<u32>,
    pub action: Action,
    /// The signal number for `action = "signal"`.
    pub signal: i32,
    /// Cgroup paths (relative to the cgroup2 root, path globs) never acted on.
    pub(crate) exempt: Vec<Glob>,
    pub scope: Scope,
}

impl Entitlement {
    /// Whether a cgroup path (`/system.slice/x.service` or without the leading `/`) is exempt.
    pub fn exempts(&self, cgroup_path: &str) -> bool {
        let p = cgroup_path.trim_start_matches('/');
        self.exempt.iter().any(|g| g.matches(p))
    }

    /// Whether the definition that counts usage is the same (a reload keeps the counters of
    /// an entitlement whose match, limit kind and window did not change).
    pub fn same_counting(&self, other: &Entitlement) -> bool {
        self.name == other.name
            && self.matcher == other.matcher
            && self.limit.kind == other.limit.kind
            && self.window == other.window
            && self.scope == other.scope
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub entitlements: Vec<Entitlement>,
}

impl Policy {
    pub fn load(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::Read { file: file.clone(), reason: e.to_string() })?;
        Policy::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        let doc = DeTable::parse(text).map_err(|e| {
            let pos = e.span().map(|s| s.start).unwrap_or(0);
            let message = e.message().trim().replace('\n', "; ");
            PolicyError::Invalid { file: file.to_string(), line: line_of(text, pos), key: key_at(text, pos), message }
        })?;
        let p = Parser { file, text };
        let root = KeyPath::root();
        let doc = doc.get_ref();
        p.check_keys(doc, &root, &["entitlement"])?;
        let mut entitlements: Vec<Entitlement> = Vec::new();
        if let Some(v) = doc.get("entitlement") {
            let path = root.key("entitlement");
            let DeValue::Array(items) = v.get_ref() else {
                let msg = format!("expected an array of tables ([[entitlement]]), found {}", v.get_ref().type_str());
                return Err(p.err(v.span(), &path, msg));
            };
            for (i, item) in items.iter().enumerate() {
                let epath = path.index(i + 1);
                let e = p.entitlement(item, &epath)?;
                if let Some(j) = entitlements.iter().position(|x| x.name == e.name) {
                    let span = p.table(item, &epath)?.get("name").map(|n| n.span()).unwrap_or(item.span());
                    let msg = format!("duplicate entitlement name {:?} (entitlement[{}] has it)", e.name, j + 1);
                    return Err(p.err(span, &epath.key("name"), msg));
                }
                entitlements.push(e);
            }
        }
        Ok(Policy { entitlements })
    }
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
}

type R<T> = Result<T, PolicyError>;

const ENTITLEMENT_KEYS: &[&str] =
    &["name", "match", "limit", "window", "time_zone", "sliding", "warn_at", "action", "signal", "exempt", "scope"];
const LIMIT_KEYS: &[&str] = &["total_tokens", "input_tokens", "output_tokens", "cost_usd", "requests"];

impl<'a> TomlChecks for Parser<'a> {
    type Error = PolicyError;
    fn err(&self, span: Range<usize>, key: &KeyPath, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.to_string(),
            line: line_of(self.text, span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl<'a> Parser<'a> {
    fn entitlement(&self, v: &Val<'_>, path: &KeyPath) -> R<Entitlement> {
        let t = self.table(v, path)?;
        self.check_keys(t, path, ENTITLEMENT_KEYS)?;
        let required = |k: &str| t.get(k).ok_or_else(|| self.err(v.span(), &path.key(k), "missing"));
        let name_v = required("name")?;
        let name = self.string(name_v, &path.key("name"))?;
        if name.trim().is_empty() || name.chars().any(char::is_control) || name.len() > 128 {
            let msg = "must be 1 to 128 characters, no control characters";
            return Err(self.err(name_v.span(), &path.key("name"), msg));
        }
        let matcher = self.matcher(required("match")?, &path.key("match"))?;
        let limit = self.limit(required("limit")?, &path.key("limit"))?;
        let window = self.window(t, required("window")?, path)?;
        let warn_at_bp = match t.get("warn_at") {
            None => None,
            Some(w) => Some(self.fraction(w, &path.key("warn_at"))?),
        };
        let action_v = required("action")?;
        let action = match self.string(action_v, &path.key("action"))? {
            "observe" => Action::Observe,
            "signal" => Action::Signal,
            "deny" => Action::Deny,
            "cut" => Action::Cut,
            other => {
                let msg = format!("unknown action {other:?}, expected one of observe, signal, deny, cut");
                return Err(self.err(action_v.span(), &path.key("action"), msg));
            }
        };
        let signal = match t.get("signal") {
            None => libc::SIGTERM,
            Some(s) if action != Action::Signal => {
                return Err(self.err(s.span(), &path.key("signal"), "only for action = \"signal\""));
            }
            Some(s) => {
                let key = path.key("signal");
                let text = self.string(s, &key)?;
                signal_number(text).ok_or_else(|| {
                    self.err(
                        s.span(),
                        &key,
                        format!("unknown or unusable signal {text:?} (e.g. SIGTERM, SIGKILL, SIGINT, SIGUSR1)"),
                    )
                })?
            }
        };
        let exempt = match t.get("exempt") {
            None => Vec::new(),
            Some(e) => self.globs(e, &path.key("exempt"), true)?,
        };
        let scope = match t.get("scope") {
            None => Scope::Host,
            Some(s) => match self.string(s, &path.key("scope"))? {
                "host" => Scope::Host,
                "cluster" => Scope::Cluster,
                other => {
                    let msg = format!("unknown scope {other:?}, expected host or cluster");
                    return Err(self.err(s.span(), &path.key("scope"), msg));
                }
            },
        };
        Ok(Entitlement { name: name.to_string(), matcher, limit, window, warn_at_bp, action, signal, exempt, scope })
    }

    fn matcher(&self, v: &Val<'_>, path: &KeyPath) -> R<Matcher> {
        let t = self.table(v, path)?;
        let names: Vec<&str> = MATCH_KEYS.iter().map(|k| k.name()).collect();
        self.check_keys(t, path, &names)?;
        let mut conds = Vec::new();
        for key in MATCH_KEYS {
            let name = key.name();
            if let Some(pv) = t.get(name) {
                let kp = path.key(name);
                let s = self.string(pv, &kp)?;
                let g = Glob::plain(s).map_err(|m| self.err(pv.span(), &kp, m))?;
                conds.push((key, g));
            }
        }
        Ok(Matcher(conds))
    }

    fn limit(&self, v: &Val<'_>, path: &KeyPath) -> R<Limit> {
        let t = self.table(v, path)?;
        self.check_keys(t, path, LIMIT_KEYS)?;
        let mut keys = t.iter();
        let (Some((k, val)), None) = (keys.next(), keys.next()) else {
            return Err(self.err(v.span(), path, format!("exactly one of {} is required", LIMIT_KEYS.join(", "))));
        };
        let key = path.key(k.get_ref());
        let kind = match k.get_ref().as_ref() {
            "total_tokens" => LimitKind::TotalTokens,
            "input_tokens" => LimitKind::InputTokens,
            "output_tokens" => LimitKind::OutputTokens,
            "cost_usd" => LimitKind::CostUsd,
            _ => LimitKind::Requests,
        };
        let amount = if kind == LimitKind::CostUsd {
            let text = match val.get_ref() {
                DeValue::Integer(i) if i.radix() == 10 => i.as_str(),
                DeValue::Float(f) => f.as_str(),
                DeValue::String(s) => s.as_ref(),
                other => {
                    return Err(self.err(val.span(), &key, format!("expected a number, found {}", other.type_str())))
                }
            };
            // USD with up to 6 decimals, held exactly: parsed as micro-USD, counted in pico-USD.
            let micro = UnitPrice::parse_usd_per_million(text).ok_or_else(|| {
                self.err(val.span(), &key, format!("{text:?} is not an amount in USD with at most 6 decimals"))
            })?;
            micro.0 as u128 * (PICO_PER_USD / 1_000_000) as u128
        } else {
            match val.get_ref() {
                DeValue::Integer(i) => u128::from_str_radix(&i.as_str().replace('_', ""), i.radix())
                    .map_err(|_| self.err(val.span(), &key, "expected a positive integer"))?,
                other => {
                    let msg = format!("expected a positive integer, found {}", other.type_str());
                    return Err(self.err(val.span(), &key, msg));
                }
            }
        };
        if amount == 0 {
            return Err(self.err(val.span(), &key, "must be greater than zero"));
        }
        Ok(Limit { kind, amount })
    }

    fn window(&self, t: &DeTable<'_>, v: &Val<'_>, path: &KeyPath) -> R<Window> {
        let key = path.key("window");
        let text = self.string(v, &key)?;
        let span = Span::parse(text).ok_or_else(|| {
            self.err(v.span(), &key, format!("unknown window {text:?}, expected one of 1m, 1h, 1d, 7d, month"))
        })?;
        let time_zone = match t.get("time_zone") {
            None => None,
            Some(z) => {
                let key = path.key("time_zone");
                let name = self.string(z, &key)?;
                Some(TimeZone::get(name).map_err(|e| self.err(z.span(), &key, format!("unknown time zone: {e}")))?)
            }
        };
        let sliding = match t.get("sliding") {
            None => false,
            Some(s) => match s.get_ref() {
                DeValue::Boolean(b) => *b,
                other => {
                    let msg = format!("expected true or false, found {}", other.type_str());
                    return Err(self.err(s.span(), &path.key("sliding"), msg));
                }
            },
        };
        if sliding && span == Span::Month {
            return Err(self.err(v.span(), &key, "a month does not slide (use 7d sliding or a fixed month)"));
        }
        if sliding && time_zone.is_some() {
            let z = t.get("time_zone").map(|z| z.span()).unwrap_or(v.span());
            return Err(self.err(z, &path.key("time_zone"), "a sliding window has no alignment to a time zone"));
        }
        Ok(Window { span, time_zone, sliding })
    }

    /// A fraction in (0, 1], as basis points.
    fn fraction(&self, v: &Val<'_>, path: &KeyPath) -> R<u32> {
        let x = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) if i.radix() == 10 => i.as_str().parse::<f64>().ok(),
            _ => None,
        };
        match x {
            Some(x) if x > 0.0 && x <= 1.0 => Ok((x * 10_000.0).round() as u32),
            _ => Err(self.err(v.span(), path, "expected a fraction greater than 0 and at most 1 (0.8 = 80 %)")),
        }
    }

    fn globs(&self, v: &Val<'_>, path: &KeyPath, path_glob: bool) -> R<Vec<Glob>> {
        let items: Vec<(&Val<'_>, KeyPath)> = match v.get_ref() {
            DeValue::String(_) => vec![(v, path.clone())],
            DeValue::Array(a) => a.iter().enumerate().map(|(i, x)| (x, path.index(i))).collect(),
            other => {
                let msg = format!("expected a list of strings, found {}", other.type_str());
                return Err(self.err(v.span(), path, msg));
            }
        };
        items
            .into_iter()
            .map(|(x, kp)| {
                let s = self.string(x, &kp)?.trim_start_matches('/');
                let g = if path_glob { Glob::path(s) } else { Glob::plain(s) };
                g.map_err(|m| self.err(x.span(), &kp, m))
            })
            .collect()
    }
}

/// `SIGTERM` or `TERM` → its number. SIGSTOP/SIGCONT are refused: the gate uses them.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.strip_prefix("SIG").unwrap_or(name);
    Some(match n {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "ABRT" => libc::SIGABRT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        "XCPU" => libc::SIGXCPU,
        _ => return None,
    })
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
