//! The CSV of an invoice's line items, one line item per record (RFC 4180). Every record
//! starts with the invoice's subject (key, value, period), so line items of several invoices
//! can be concatenated and still be told apart, and so an existing file can be recognised
//! as the same invoice before it is overwritten.
use super::build::{Invoice, Line};
use super::format::{period_ends, price_text};

pub const HEADER: &str = "by,key,period_from,period_to,tz,invoice_id,team,model,token_type,tokens,\
unit_price_usd_per_1m,pricing_version,amount_usd,amount_exact_usd";

/// The fields every record of this invoice starts with (up to `invoice_id`, excluded).
pub fn subject_prefix(inv: &Invoice) -> String {
    let (from, to, tz) = period_ends(&inv.period);
    [inv.by.name(), inv.key_label(), &from, &to, &tz].map(field).join(",") + ","
}

pub fn render(inv: &Invoice) -> String {
    let prefix = subject_prefix(inv);
    let mut out = String::from(HEADER);
    out.push_str("\r\n");
    for l in &inv.lines {
        out.push_str(&prefix);
        out.push_str(&record(inv, l));
        out.push_str("\r\n");
    }
    out
}

fn record(inv: &Invoice, l: &Line) -> String {
    [
        inv.id.clone(),
        l.team.clone(),
        l.model.clone(),
        l.kind.name().to_string(),
        l.tokens.to_string(),
        price_text(l.price),
        l.table.clone().unwrap_or_default(),
        l.cents.to_string(),
        l.exact.to_decimal(),
    ]
    .iter()
    .map(|s| field(s))
    .collect::<Vec<_>>()
    .join(",")
}

/// Quoted when it holds a comma, quote or line break. Values are written as they are (no
/// spreadsheet-formula escaping): the file is data to be checked against the ledger.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
