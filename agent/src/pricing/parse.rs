//! Pricing TOML → [`PricingTable`]. Walks the span-carrying TOML tree so every error names the
//! file, the line and the dotted key (`model[N]` is 1-based, as `[[model]]` headers count).
use std::collections::BTreeMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::normalize::exact_name;
use super::{Price, PricingError, PricingTable};
use crate::money::UnitPrice;
use crate::toml_source::{key_at, line_of, KeyPath, TomlChecks};

type Val<'i> = Spanned<DeValue<'i>>;
type R<T> = Result<T, PricingError>;

const TOP_KEYS: &[&str] = &["as_of", "source", "currency", "model"];
const MODEL_KEYS: &[&str] = &["provider", "model", "input", "output", "cached_input", "reasoning"];

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
}

pub(super) fn parse(file: &str, text: &str) -> R<PricingTable> {
    let doc = DeTable::parse(text).map_err(|e| {
        let pos = e.span().map(|s| s.start).unwrap_or(0);
        let message = e.message().trim().replace('\n', "; ");
        PricingError::Invalid { file: file.to_string(), line: line_of(text, pos), key: key_at(text, pos), message }
    })?;
    let p = Parser { file, text };
    let root = KeyPath::root();
    let doc = doc.get_ref();
    p.check_keys(doc, &root, TOP_KEYS)?;
    let as_of = match doc.get("as_of") {
        // A bare TOML date (`as_of = 2025-08-01`) is as good as a string.
        Some(v) => match v.get_ref() {
            DeValue::Datetime(d) => d.to_string(),
            _ => p.string(v, &root.key("as_of"))?.to_string(),
        },
        None => String::new(),
    };
    let source = match doc.get("source") {
        Some(v) => p.string(v, &root.key("source"))?.to_string(),
        None => String::new(),
    };
    if let Some(v) = doc.get("currency") {
        let c = p.string(v, &root.key("currency"))?;
        if c != "USD" {
            return Err(p.err(v.span(), &root.key("currency"), format!("unsupported currency {c:?}: prices are USD")));
        }
    }
    let mut models: BTreeMap<String, BTreeMap<String, Price>> = BTreeMap::new();
    // (provider, model) → the 1-based entry that priced it, for duplicate errors.
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    if let Some(v) = doc.get("model") {
        let path = root.key("model");
        let DeValue::Array(items) = v.get_ref() else {
            let found = v.get_ref().type_str();
            return Err(p.err(v.span(), &path, format!("expected an array of tables ([[model]]), found {found}")));
        };
        for (i, item) in items.iter().enumerate() {
            let n = i + 1;
            let (provider, model, model_span, price) = p.entry(item, &path.index(n))?;
            let key = (provider.clone(), model.clone());
            if let Some(first) = seen.get(&key) {
                let msg = format!("duplicate price for provider {provider:?} model {model:?} (model[{first}] has it)");
                return Err(p.err(model_span, &path.index(n).key("model"), msg));
            }
            seen.insert(key, n);
            models.entry(provider).or_default().insert(model, price);
        }
    }
    Ok(PricingTable { as_of, source, models })
}

impl TomlChecks for Parser<'_> {
    type Error = PricingError;
    fn err(&self, span: Range<usize>, key: &KeyPath, message: impl Into<String>) -> PricingError {
        PricingError::Invalid {
            file: self.file.to_string(),
            line: line_of(self.text, span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl Parser<'_> {
    /// A price: a non-negative integer or decimal, held exactly (at most 6 decimal places).
    fn price(&self, v: &Val<'_>, path: &KeyPath) -> R<UnitPrice> {
        let text = match v.get_ref() {
            DeValue::Float(f) => f.as_str().to_string(),
            DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => n.to_string(),
                Err(_) => i.as_str().to_string(),
            },
            other => {
                return Err(self.err(v.span(), path, format!("expected a number, found {}", other.type_str())));
            }
        };
        if text.trim_start().starts_with('-') && !text.contains("inf") {
            return Err(self.err(v.span(), path, format!("negative price {text}")));
        }
        UnitPrice::parse_usd_per_million(&text).ok_or_else(|| {
            self.err(
                v.span(),
                path,
                format!("{text}: must be a finite number (USD per 1M tokens) with at most 6 decimal places"),
            )
        })
    }

    /// One `[[model]]`: (provider, model name, span of the name, price).
    fn entry(&self, v: &Val<'_>, path: &KeyPath) -> R<(String, String, Range<usize>, Price)> {
        let DeValue::Table(t) = v.get_ref() else {
            return Err(self.err(v.span(), path, format!("expected a table, found {}", v.get_ref().type_str())));
        };
        self.check_keys(t, path, MODEL_KEYS)?;
        let required = |name: &str| {
            t.get(name)
                .ok_or_else(|| self.err(v.span(), &path.key(name), format!("missing (every model needs {name})")))
        };
        let name = |key: &str| -> R<(String, Range<usize>)> {
            let val = required(key)?;
            let s = self.string(val, &path.key(key))?.trim();
            if s.is_empty() {
                return Err(self.err(val.span(), &path.key(key), "must not be empty"));
            }
            Ok((s.to_string(), val.span()))
        };
        let (provider, _) = name("provider")?;
        let (model, model_span) = name("model")?;
        let model = exact_name(&model);
        if model.is_empty() {
            return Err(self.err(model_span, &path.key("model"), "must name a model, not only a provider prefix"));
        }
        let input = self.price(required("input")?, &path.key("input"))?;
        let output = self.price(required("output")?, &path.key("output"))?;
        let optional = |key: &str, default: UnitPrice| match t.get(key) {
            Some(val) => self.price(val, &path.key(key)),
            None => Ok(default),
        };
        let cached_input = optional("cached_input", input)?;
        let reasoning = optional("reasoning", output)?;
        let price = Price { input, output, cached_input, reasoning };
        Ok((provider.to_ascii_lowercase(), model, model_span, price))
    }
}
