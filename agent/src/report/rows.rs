//! What every report is built from, whatever the source (ledger files or a Prometheus-compatible
//! backend): rows of exact counters per hour, per value of every attribution key and per unit
//! price. Formats, invoices and `top` never look at a source directly.
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::{tz::TimeZone, Timestamp};

use crate::money::Pico;
use crate::pricing::Price;

/// An attribution key a report can group by (`--by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dim {
    Team,
    CostCenter,
    Product,
    Tenant,
    App,
    Namespace,
    Workload,
    Provider,
    Model,
    User,
    Unit,
}

impl Dim {
    pub const ALL: [Dim; 11] = [
        Dim::Team,
        Dim::CostCenter,
        Dim::Product,
        Dim::Tenant,
        Dim::App,
        Dim::Namespace,
        Dim::Workload,
        Dim::Provider,
        Dim::Model,
        Dim::User,
        Dim::Unit,
    ];

    /// The name on the command line and in report output.
    pub fn name(self) -> &'static str {
        match self {
            Dim::Team => "team",
            Dim::CostCenter => "cost_center",
            Dim::Product => "product",
            Dim::Tenant => "tenant",
            Dim::App => "app",
            Dim::Namespace => "namespace",
            Dim::Workload => "workload",
            Dim::Provider => "provider",
            Dim::Model => "model",
            Dim::User => "user",
            Dim::Unit => "unit",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dim {
    type Err = String;
    /// An unknown key is refused with the list of known ones.
    fn from_str(s: &str) -> Result<Dim, String> {
        Dim::ALL.into_iter().find(|d| d.name() == s.trim()).ok_or_else(|| {
            let known: Vec<&str> = Dim::ALL.iter().map(|d| d.name()).collect();
            format!("unknown key {s:?} (one of: {})", known.join(", "))
        })
    }
}

/// The value of every [`Dim`] for a row, indexed by [`Dim::index`]; `None`: not set (a call no
/// rule gave a cost centre, a process outside Kubernetes has no namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Keys(pub [Option<String>; 11]);

impl Keys {
    pub fn get(&self, d: Dim) -> Option<&str> {
        self.0[d.index()].as_deref()
    }

    pub fn set(&mut self, d: Dim, v: Option<String>) {
        self.0[d.index()] = v;
    }
}

/// Exact sums over calls. `input_tokens` includes `cached_input_tokens`; `output_tokens`
/// includes `reasoning_tokens` (as in usage records).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub calls: u64,
    /// Calls that failed (HTTP status ≥ 400 or a provider error).
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    /// Calls whose tokens were counted by tokentap, not reported by the provider.
    pub estimated_calls: u64,
    /// The exact cost; unpriced calls add nothing.
    pub cost: Pico,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cached_input_tokens += o.cached_input_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.estimated_calls += o.estimated_calls;
        self.cost += o.cost;
    }
}

/// The unit prices some calls were charged at: invoices make a line per price, so a price
/// change within a period shows as two lines, each at the price in force for its calls.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priced {
    /// The pricing table's entry (normalised model name or exact snapshot).
    pub model: String,
    pub price: Price,
    /// The pricing table's version (`as_of`, with overrides appended).
    pub table: String,
}

/// Counters of the calls in one UTC hour that share every key value and unit price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Start of the hour, unix seconds (UTC).
    pub hour: i64,
    pub keys: Keys,
    /// `None`: unpriced calls (the model was not in the pricing table), or a source that does
    /// not know unit prices (Prometheus: its `cost` comes from the agents' cost counter).
    pub priced: Option<Priced>,
    pub counters: Counters,
}

/// A report's period: `[from, to)`, shown in `tz`.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub from: Timestamp,
    pub to: Timestamp,
    pub tz: TimeZone,
}

/// Where rows come from. Errors name the source (file or URL).
pub trait UsageSource {
    /// For messages: the file(s) or URL read.
    fn describe(&self) -> String;
    /// Every row whose hour overlaps `period`. A source that holds calls with exact times
    /// includes exactly those in `[from, to)`; hourly data (rollups, Prometheus) is included
    /// by whole hours.
    fn rows(&self, period: &Period) -> Result<Vec<Row>, String>;
}

/// Sums rows by the values of `by` (in that order), sorted by those values.
pub fn group(rows: &[Row], by: &[Dim]) -> BTreeMap<Vec<Option<String>>, Counters> {
    let mut out: BTreeMap<Vec<Option<String>>, Counters> = BTreeMap::new();
    for r in rows {
        let key = by.iter().map(|d| r.keys.get(*d).map(str::to_string)).collect();
        *out.entry(key).or_default() += r.counters;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_by_name_and_unknown_ones_are_listed() {
        for d in Dim::ALL {
            assert_eq!(d.name().parse::<Dim>(), Ok(d));
            assert_eq!(Dim::ALL[d.index()], d);
        }
        let e = "colour".parse::<Dim>().unwrap_err();
        assert!(e.contains("\"colour\"") && e.contains("cost_center"), "{e}");
    }

    #[test]
    fn grouping_sums_by_the_chosen_keys() {
        let row = |team: &str, model: &str, calls| {
            let mut keys = Keys::default();
            keys.set(Dim::Team, Some(team.into()));
            keys.set(Dim::Model, Some(model.into()));
            Row { hour: 0, keys, priced: None, counters: Counters { calls, ..Counters::default() } }
        };
        let rows = [row("a", "m1", 1), row("a", "m2", 2), row("b", "m1", 4)];
        let by_team = group(&rows, &[Dim::Team]);
        assert_eq!(by_team[&vec![Some("a".to_string())]].calls, 3);
        let both = group(&rows, &[Dim::Team, Dim::Model]);
        assert_eq!(both.len(), 3);
        assert_eq!(group(&rows, &[Dim::CostCenter])[&vec![None]].calls, 7);
    }
}
