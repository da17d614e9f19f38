//! Report output formats. Each takes a [`Report`] (the rows of a period grouped by the `--by`
//! keys, in key order) and returns the whole document as text.
//!
//! Costs: machine formats (CSV, JSON, HTML `data-value` attributes) carry the exact decimal
//! USD amount (up to 12 decimals: pico-USD, no rounding, so sums of groups equal the totals
//! exactly); human text (table, Markdown, HTML cells) rounds to micro-USD.
use jiff::Timestamp;

use super::period::rfc3339;
use super::rows::{group, Counters, Dim, Period, Row};
use crate::money::Pico;

pub mod csv;
pub mod html;
mod html_chart;
pub mod json;
pub mod markdown;
pub mod table;

/// The counters every format shows, in this order, with their names in CSV/JSON/HTML.
pub const FIELDS: [&str; 8] = [
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "estimated_calls",
    "cost_usd",
];

/// A period's rows grouped for output.
pub struct Report {
    pub period: Period,
    pub by: Vec<Dim>,
    /// One entry per distinct combination of the `by` values (`None`: not set), in key order.
    pub groups: Vec<(Vec<Option<String>>, Counters)>,
    pub totals: Counters,
    /// The rows themselves, for views across other keys (the HTML's top teams and models,
    /// daily trend).
    pub rows: Vec<Row>,
    /// The ledger file(s) or URL the rows came from.
    pub source: String,
}

impl Report {
    pub fn new(rows: Vec<Row>, period: Period, by: Vec<Dim>, source: String) -> Report {
        let groups: Vec<_> = group(&rows, &by).into_iter().collect();
        let mut totals = Counters::default();
        for (_, c) in &groups {
            totals += *c;
        }
        Report { period, by, groups, totals, rows, source }
    }

    pub fn from_text(&self) -> String {
        rfc3339(self.period.from, &self.period.tz)
    }

    pub fn to_text(&self) -> String {
        rfc3339(self.period.to, &self.period.tz)
    }

    /// When the report was made, to the second.
    pub fn generated(&self) -> String {
        let now = Timestamp::now();
        rfc3339(Timestamp::from_second(now.as_second()).unwrap_or(now), &self.period.tz)
    }
}

/// A counter by its name in [`FIELDS`], as exact text (integers; cost as an exact decimal).
pub fn field_exact(c: &Counters, field: &str) -> String {
    match field {
        "calls" => c.calls.to_string(),
        "errors" => c.errors.to_string(),
        "input_tokens" => c.input_tokens.to_string(),
        "output_tokens" => c.output_tokens.to_string(),
        "cached_input_tokens" => c.cached_input_tokens.to_string(),
        "reasoning_tokens" => c.reasoning_tokens.to_string(),
        "estimated_calls" => c.estimated_calls.to_string(),
        "cost_usd" => c.cost.to_decimal(),
        _ => String::new(),
    }
}

/// A counter for people: integers as they are, cost rounded to micro-USD.
pub fn field_human(c: &Counters, field: &str) -> String {
    match field {
        "cost_usd" => usd_human(c.cost),
        _ => field_exact(c, field),
    }
}

/// USD rounded to micro-USD (halves away from zero), at least two decimals: `12.50`,
/// `0.000185`, `0.00`.
pub fn usd_human(p: Pico) -> String {
    let fixed = p.to_fixed(6);
    let (int, frac) = fixed.split_once('.').unwrap_or((&fixed, ""));
    let frac = frac.trim_end_matches('0');
    format!("{int}.{frac:0<2}")
}

/// How a key value is shown to people; `None` (not set) is `(none)`.
pub fn key_human(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(none)")
}

/// `part / whole` as a fraction, 0 when `whole` is 0.
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests;
