//! An invoice's content from report rows: line items per team × model × token type × unit
//! price, amounts exact in pico-USD and then rounded once (largest remainder) so that the
//! lines add up to the total and the total is the exact cost rounded to the cent.
use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::money::{allocate_cents, Cents, Pico, UnitPrice};
use crate::report::rows::{Dim, Period, Priced, Row};

/// What a key without a value (no cost centre, no team) is called on an invoice.
pub const UNASSIGNED: &str = "unassigned";

/// The token types an invoice bills separately. `input` is uncached input (input − cached) and
/// `output` visible output (output − reasoning), so the four add up to a call's cost.
/// `Unitemized` carries any cost the four do not explain: rows from a source without unit
/// prices (Prometheus' cost counter), or calls whose counts were inconsistent (more cached than
/// input), which the pricing formula clamps per call while rows hold sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Input,
    CachedInput,
    Output,
    Reasoning,
    Unitemized,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Input => "input",
            Kind::CachedInput => "cached_input",
            Kind::Output => "output",
            Kind::Reasoning => "reasoning",
            Kind::Unitemized => "unitemized",
        }
    }
}

/// One line item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub team: String,
    /// The pricing table's entry for priced calls, else the model the calls named.
    pub model: String,
    pub kind: Kind,
    pub tokens: u64,
    /// `None`: unpriced (listed at 0.00 so the calls can be disputed) or unitemized.
    pub price: Option<UnitPrice>,
    /// The pricing table version the price comes from.
    pub table: Option<String>,
    pub exact: Pico,
    pub cents: Cents,
}

/// One invoice: the calls of one value of the `by` key in the period.
#[derive(Debug, Clone)]
pub struct Invoice {
    pub by: Dim,
    /// The key's value; `None`: calls without one (shown as [`UNASSIGNED`]).
    pub key: Option<String>,
    pub period: Period,
    pub id: String,
    /// Sorted by team, model, price, token type.
    pub lines: Vec<Line>,
    /// Per team: (calls, subtotal in cents = the sum of its lines).
    pub teams: BTreeMap<String, (u64, Cents)>,
    pub calls: u64,
    /// The pricing table versions of the priced lines.
    pub tables: BTreeSet<String>,
    /// The exact cost: the sum of the rows' costs (= the sum of the exact line amounts).
    pub exact: Pico,
    /// `exact` rounded to the cent, which is also the sum of the lines' cents.
    pub total: Cents,
}

impl Invoice {
    pub fn key_label(&self) -> &str {
        self.key.as_deref().unwrap_or(UNASSIGNED)
    }
}

/// One invoice per value of `by` among `rows`, sorted by that value (unassigned first).
pub fn invoices(rows: &[Row], period: &Period, by: Dim) -> Vec<Invoice> {
    let mut per_key: BTreeMap<Option<String>, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        per_key.entry(r.keys.get(by).map(str::to_string)).or_default().push(r);
    }
    per_key.into_iter().map(|(key, rows)| invoice(by, key, period, &rows)).collect()
}

/// What lines are summed by: team, then the price entry (or the raw model when unpriced).
type Group = (String, Option<Priced>, String);

#[derive(Default)]
struct Sums {
    tokens: [u64; 4],
    cost: Pico,
    calls: u64,
}

fn invoice(by: Dim, key: Option<String>, period: &Period, rows: &[&Row]) -> Invoice {
    let mut groups: BTreeMap<Group, Sums> = BTreeMap::new();
    for r in rows {
        let team = r.keys.get(Dim::Team).unwrap_or(UNASSIGNED).to_string();
        let model = match &r.priced {
            Some(p) => p.model.clone(),
            None => r.keys.get(Dim::Model).unwrap_or("unknown").to_string(),
        };
        let c = &r.counters;
        let s = groups.entry((team, r.priced.clone(), model)).or_default();
        s.tokens[0] += c.input_tokens.saturating_sub(c.cached_input_tokens);
        s.tokens[1] += c.cached_input_tokens;
        s.tokens[2] += c.output_tokens.saturating_sub(c.reasoning_tokens);
        s.tokens[3] += c.reasoning_tokens;
        s.cost += c.cost;
        s.calls += c.calls;
    }
    let mut lines = Vec::new();
    let mut teams: BTreeMap<String, (u64, Cents)> = BTreeMap::new();
    let mut tables = BTreeSet::new();
    for ((team, priced, model), s) in groups {
        teams.entry(team.clone()).or_default().0 += s.calls;
        let prices = priced.as_ref().map(|p| [p.price.input, p.price.cached_input, p.price.output, p.price.reasoning]);
        if let Some(p) = &priced {
            tables.insert(p.table.clone());
        }
        let kinds = [Kind::Input, Kind::CachedInput, Kind::Output, Kind::Reasoning];
        let mut itemized = Pico(0);
        for (i, kind) in kinds.into_iter().enumerate() {
            let tokens = s.tokens[i];
            if tokens == 0 {
                continue;
            }
            let price = prices.map(|p| p[i]);
            let exact = price.map(|p| p.amount(tokens)).unwrap_or_default();
            itemized += exact;
            lines.push(Line {
                team: team.clone(),
                model: model.clone(),
                kind,
                tokens,
                price,
                table: priced.as_ref().map(|p| p.table.clone()),
                exact,
                cents: Cents(0),
            });
        }
        let rest = Pico(s.cost.0 - itemized.0);
        if rest.0 != 0 {
            lines.push(Line {
                team: team.clone(),
                model,
                kind: Kind::Unitemized,
                tokens: 0,
                price: None,
                table: priced.as_ref().map(|p| p.table.clone()),
                exact: rest,
                cents: Cents(0),
            });
        }
    }
    // Groups were visited in (team, price, model) order; lines read best by team, model, price.
    lines.sort_by(|a, b| {
        (&a.team, &a.model, a.table.as_deref(), a.price.is_none(), a.kind, a.price).cmp(&(
            &b.team,
            &b.model,
            b.table.as_deref(),
            b.price.is_none(),
            b.kind,
            b.price,
        ))
    });
    let exacts: Vec<Pico> = lines.iter().map(|l| l.exact).collect();
    for (line, cents) in lines.iter_mut().zip(allocate_cents(&exacts)) {
        line.cents = cents;
        teams.entry(line.team.clone()).or_default().1 .0 += cents.0;
    }
    let exact: Pico = exacts.iter().copied().sum();
    let total = exact.round_cents();
    let calls = teams.values().map(|t| t.0).sum();
    let id = invoice_id(by, key.as_deref(), period, &lines);
    Invoice { by, key, period: period.clone(), id, lines, teams, calls, tables, exact, total }
}

/// A digest of everything the invoice bills and nothing else (no time of generation, no
/// paths): the same ledger content for the same period and key gives the same id.
fn invoice_id(by: Dim, key: Option<&str>, period: &Period, lines: &[Line]) -> String {
    let mut h = Sha256::new();
    // Length-prefixed fields: no two different contents hash the same text.
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field("tokentap invoice v1");
    field(by.name());
    field(key.unwrap_or("\0unassigned"));
    field(&period.from.to_string());
    field(&period.to.to_string());
    field(&super::format::tz_name(period));
    for l in lines {
        field(&l.team);
        field(&l.model);
        field(l.kind.name());
        field(&l.tokens.to_string());
        field(&l.price.map(|p| p.0.to_string()).unwrap_or_default());
        field(l.table.as_deref().unwrap_or(""));
        field(&l.exact.0.to_string());
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02X}")).collect();
    format!("TT-{hex}")
}
