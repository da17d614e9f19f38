//! The mapping file: ordered rules that turn a workload (and request headers) into a team.
//!
//! A [`Mapping`] is parsed once from TOML (`docs/attribution.md` is the reference; a full
//! example is `deploy/examples/mapping.toml`). For each call, [`Mapping::attribute`] walks the
//! rules in file order and the first one whose conditions all hold — and whose `set`
//! templates all have values — produces the [`Attribution`]; when none does, the
//! `[unattributed]` defaults apply.
//!
//! Privacy: request header values are read only for the header names in
//! [`Mapping::header_names`], are never kept, logged or shown by [`Mapping::explain`], and reach
//! an [`Attribution`] only through a `{header.NAME}` template a rule deliberately wrote.
use std::fmt;
use std::path::Path;

use thiserror::Error;

use crate::identity::model::Workload;

mod eval;
pub(crate) mod glob;
mod parse;
mod template;

#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_eval;

/// The labels one call is attributed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub team: String,
    pub cost_center: Option<String>,
    pub product: Option<String>,
    pub tenant: Option<String>,
    pub app: Option<String>,
    /// name of the rule that matched; None when unattributed
    pub rule: Option<String>,
}

impl Attribution {
    pub(crate) fn unattributed(team: &str) -> Attribution {
        Attribution { team: team.to_string(), cost_center: None, product: None, tenant: None, app: None, rule: None }
    }
}

/// Why a mapping file was rejected. `Invalid` names the file, the 1-based line and the dotted
/// key (`rule[N]` counts rules from 1; other list indices count from 0).
#[derive(Debug, Error, PartialEq)]
pub enum MappingError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid { file: String, line: usize, key: String, message: String },
}

/// Parsed mapping rules. `Debug` shows the rule count and names only.
#[derive(Clone)]
pub struct Mapping {
    rules: Vec<eval::Rule>,
    unattributed: Attribution,
    header_names: Vec<String>,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("rule_count", &self.rules.len())
            .field("rules", &self.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping::empty()
    }
}

impl Mapping {
    /// No rules: everything is attributed to team `unattributed`.
    pub fn empty() -> Mapping {
        Mapping { rules: Vec::new(), unattributed: Attribution::unattributed("unattributed"), header_names: Vec::new() }
    }

    /// Parses a mapping file's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Mapping, MappingError> {
        let p = parse::parse(file, text)?;
        Ok(Mapping { rules: p.rules, unattributed: p.unattributed, header_names: p.header_names })
    }

    pub fn load(path: &Path) -> Result<Mapping, MappingError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| MappingError::Read { file: file.clone(), reason: e.to_string() })?;
        Mapping::parse(&file, &text)
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Lower-cased header names any rule matches on or templates from: the agent reads only these from requests.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// The attribution for a call from `workload`. `headers(name)` returns the request's value
    /// for a lower-cased header name (first occurrence); it is called at most once per name,
    /// and only for names in [`Mapping::header_names`].
    pub fn attribute(&self, workload: &Workload, headers: &dyn Fn(&str) -> Option<String>) -> Attribution {
        let cx = eval::Cx::new(workload, headers, &self.header_names);
        self.rules.iter().find_map(|r| r.eval(&cx, false).ok()).unwrap_or_else(|| self.unattributed.clone())
    }

    /// Like [`Mapping::attribute`], for `tokentap identity PID`: also one line per rule, in
    /// order: `NAME: matched`, `NAME: no match: REASON` (the first condition that failed, e.g.
    /// `namespace: "default" not in [payments, billing]`), or, for a rule after the winner
    /// that would match too, `NAME: matches too, but "WINNER" comes first`. Header values are
    /// never shown (`header x-team: no match`).
    pub fn explain(&self, workload: &Workload, headers: &dyn Fn(&str) -> Option<String>) -> (Attribution, Vec<String>) {
        let cx = eval::Cx::new(workload, headers, &self.header_names);
        let mut winner: Option<Attribution> = None;
        let mut lines = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            match (r.eval(&cx, true), &winner) {
                (Ok(a), None) => {
                    lines.push(format!("{}: matched", r.name));
                    winner = Some(a);
                }
                (Ok(_), Some(w)) => {
                    let first = w.rule.as_deref().unwrap_or_default();
                    lines.push(format!("{}: matches too, but {first:?} comes first", r.name));
                }
                (Err(why), _) => lines.push(format!("{}: no match: {why}", r.name)),
            }
        }
        (winner.unwrap_or_else(|| self.unattributed.clone()), lines)
    }
}
