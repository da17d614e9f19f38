//! Prices per model (USD per million tokens) and the cost of a call.
//!
//! The built-in table (`agent/pricing/prices.toml`) is a dated snapshot of the providers'
//! public list prices; an override file replaces or adds entries. Models are looked up by
//! provider and by the name [`normalize_model`] gives (dated snapshot suffixes removed), after
//! an exact-name entry, so one snapshot can be priced apart from its family. A model that is
//! not in the table is unpriced (`None`): a wrong price is worse than none.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use thiserror::Error;

use crate::money::{Pico, UnitPrice};

mod normalize;
mod parse;
#[cfg(test)]
mod tests;

pub use normalize::normalize_model;

/// The shipped table.
const BUILTIN: &str = include_str!("../../pricing/prices.toml");
const BUILTIN_FILE: &str = "prices.toml (built in)";

/// Prices of one model, exact (micro-USD per 1M tokens), with the optional ones resolved
/// (`cached_input` defaults to `input`, `reasoning` to `output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price {
    pub input: UnitPrice,
    pub output: UnitPrice,
    pub cached_input: UnitPrice,
    pub reasoning: UnitPrice,
}

impl Price {
    /// The exact cost of a call with these counts (see [`PricingTable::cost`]).
    pub fn cost(&self, t: Tokens) -> Pico {
        self.input.amount(t.input.saturating_sub(t.cached_input))
            + self.cached_input.amount(t.cached_input)
            + self.output.amount(t.output.saturating_sub(t.reasoning))
            + self.reasoning.amount(t.reasoning)
    }
}

/// Token counts of one call, as usage records hold them: `input` includes `cached_input`,
/// `output` includes `reasoning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub reasoning: u64,
}

/// The cost of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// Exact: the sum of tokens × unit price per token type.
    pub amount: Pico,
    /// `amount` as a float, for metrics.
    pub usd: f64,
    /// The table's name for the model that was priced (normalised, or the exact entry).
    pub model: String,
    /// The unit prices in force, which the ledger keeps with the call for its invoice lines.
    pub price: Price,
}

#[derive(Debug, Error, PartialEq)]
pub enum PricingError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid { file: String, line: usize, key: String, message: String },
}

/// Prices by provider and model name.
#[derive(Debug, Clone)]
pub struct PricingTable {
    as_of: String,
    source: String,
    /// provider → model → price; names lower-case, provider prefixes removed.
    models: BTreeMap<String, BTreeMap<String, Price>>,
}

impl PricingTable {
    /// The shipped table, parsed once (a unit test guarantees that it parses).
    pub fn builtin() -> PricingTable {
        static TABLE: OnceLock<PricingTable> = OnceLock::new();
        TABLE
            .get_or_init(|| {
                PricingTable::parse(BUILTIN_FILE, BUILTIN).unwrap_or_else(|e| panic!("built-in pricing table: {e}"))
            })
            .clone()
    }

    /// Parses a table; errors name `file`, the line and the dotted key (`model[N]` is 1-based).
    pub fn parse(file: &str, text: &str) -> Result<PricingTable, PricingError> {
        parse::parse(file, text)
    }

    pub fn load(path: &Path) -> Result<PricingTable, PricingError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| PricingError::Read { file: file.clone(), reason: e.to_string() })?;
        PricingTable::parse(&file, &text)
    }

    /// Entries of `over` replace or add to self's (same provider + model); as_of/source of `over`
    /// are appended to the description (`"2025-10-20 (override: 2025-11-03)"`).
    pub fn merged(mut self, over: PricingTable) -> PricingTable {
        for (provider, models) in over.models {
            self.models.entry(provider).or_default().extend(models);
        }
        let append = |base: String, extra: String| {
            if extra.is_empty() {
                base
            } else {
                format!("{base} (override: {extra})")
            }
        };
        self.as_of = append(self.as_of, over.as_of);
        self.source = append(self.source, over.source);
        self
    }

    /// When the prices were read (with those of any overrides appended).
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    /// Where the prices were read (with those of any overrides appended).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of priced (provider, model) entries.
    pub fn len(&self) -> usize {
        self.models.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry as (provider, model, price), sorted by provider and model.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, Price)> + '_ {
        self.models.iter().flat_map(|(p, ms)| ms.iter().map(move |(m, price)| (p.as_str(), m.as_str(), *price)))
    }

    /// The price of `model` from `provider` and the table's name for it: an entry for the exact
    /// name (lower-cased, provider prefix removed) first, else one for the normalised name.
    pub fn price(&self, provider: &str, model: &str) -> Option<(String, Price)> {
        let models = self.models.get(provider.trim().to_ascii_lowercase().as_str())?;
        let exact = normalize::exact_name(model);
        if let Some(p) = models.get(&exact) {
            return Some((exact, *p));
        }
        let name = normalize_model(model);
        models.get(&name).map(|p| (name, *p))
    }

    /// cost = (input-cached)*p.input + cached*p.cached_input + (output-reasoning)*p.output +
    /// reasoning*p.reasoning (saturating subtractions), exact. None when unpriced.
    pub fn cost(&self, provider: &str, model: &str, tokens: Tokens) -> Option<Cost> {
        let (model, price) = self.price(provider, model)?;
        let amount = price.cost(tokens);
        Some(Cost { amount, usd: amount.usd(), model, price })
    }
}
