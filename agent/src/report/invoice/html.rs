//! The HTML invoice: one self-contained file (inline style, no script, no network) whose
//! numbers carry `data-field` attributes, so a test or a tool reads them from the DOM without
//! parsing the layout.
use std::fmt::Write;

use super::build::{Invoice, Kind, Line};
use super::format::{period_ends, price_text};
use crate::report::format::html::esc;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;width:100%;margin-top:1em}\
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.team th{background:#f0f0f0}tr.subtotal td{font-weight:bold}\
tr.total td{font-weight:bold;border-top:2px solid #222;font-size:1.1em}\
tr.unpriced td{color:#a00}dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em}\
dt{font-weight:bold}.note{color:#555;font-size:.9em}";

/// The subject marker: the same string for every version of the same invoice (by, key and
/// period), checked before an existing file is overwritten.
pub fn subject(inv: &Invoice) -> String {
    let (from, to, tz) = period_ends(&inv.period);
    format!("{}={} {}/{} {}", inv.by.name(), inv.key_label(), from, to, tz)
}

pub fn subject_meta(inv: &Invoice) -> String {
    format!("<meta name=\"tokentap-invoice\" content=\"{}\">", esc(&subject(inv)))
}

pub fn render(inv: &Invoice, source: &str) -> String {
    let (from, to, tz) = period_ends(&inv.period);
    let key = inv.key_label();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{}\n<title>Invoice {} — {} {}</title>\
         <style>{STYLE}</style></head>\n<body data-invoice-id=\"{}\">\n<h1>Invoice <span data-field=\"invoice-id\">{}</span></h1>\n<dl>\
         <dt>{}</dt><dd data-field=\"key\" data-unassigned=\"{}\">{}</dd>\
         <dt>Period</dt><dd><span data-field=\"period-from\">{}</span> to <span data-field=\"period-to\">{}</span> \
         (<span data-field=\"tz\">{}</span>, end excluded)</dd>\
         <dt>Calls</dt><dd data-field=\"calls\">{}</dd>\
         <dt>Pricing table</dt><dd data-field=\"pricing-versions\">{}</dd>\
         <dt>Source</dt><dd>{}</dd></dl>\n",
        subject_meta(inv),
        esc(&inv.id),
        esc(inv.by.name()),
        esc(key),
        esc(&inv.id),
        esc(&inv.id),
        esc(&title_case(inv.by.name())),
        inv.key.is_none(),
        esc(key),
        esc(&from),
        esc(&to),
        esc(&tz),
        inv.calls,
        esc(&inv.tables.iter().cloned().collect::<Vec<_>>().join(", ")),
        esc(source),
    );
    h.push_str(
        "<table><thead><tr><th>Model</th><th>Token type</th><th class=\"n\">Tokens</th>\
         <th class=\"n\">Unit price (USD / 1M tokens)</th><th>Pricing version</th><th class=\"n\">Amount (USD)</th>\
         </tr></thead><tbody>\n",
    );
    for (team, (calls, subtotal)) in &inv.teams {
        let _ = writeln!(
            h,
            "<tr class=\"team\"><th colspan=\"6\">Team <span data-field=\"team\">{}</span> \
             (<span data-field=\"team-calls\">{calls}</span> call{})</th></tr>",
            esc(team),
            if *calls == 1 { "" } else { "s" }
        );
        for l in inv.lines.iter().filter(|l| &l.team == team) {
            h.push_str(&line(l));
        }
        let _ = writeln!(
            h,
            "<tr class=\"subtotal\" data-team=\"{}\"><td colspan=\"5\">Subtotal {}</td>\
             <td class=\"n\" data-field=\"subtotal\">{subtotal}</td></tr>",
            esc(team),
            esc(team)
        );
    }
    let _ = write!(
        h,
        "<tr class=\"total\"><td colspan=\"5\">Total</td><td class=\"n\" data-field=\"total\">{}</td></tr>\n\
         </tbody></table>\n<p class=\"note\">Exact cost: <span data-field=\"total-exact\">{}</span> USD. \
         Each amount is tokens × unit price, exact, then rounded to the cent so that the lines add up to the \
         total and the total is the exact cost rounded once (half a cent up). Input is uncached input, \
         output is visible output (reasoning billed separately). Lines without a unit price are calls of a \
         model the pricing table did not know: listed at 0.00 so that they can be disputed.</p>\n</body></html>\n",
        inv.total,
        esc(&inv.exact.to_decimal()),
    );
    h
}

fn line(l: &Line) -> String {
    let price = match l.price {
        Some(_) => esc(&price_text(l.price)),
        None if l.kind == Kind::Unitemized => "—".to_string(),
        None => "unpriced".to_string(),
    };
    format!(
        "<tr class=\"line{}\" data-team=\"{}\" data-model=\"{}\" data-token-type=\"{}\" data-amount-exact=\"{}\">\
         <td>{}</td><td>{}</td><td class=\"n\" data-field=\"tokens\">{}</td>\
         <td class=\"n\" data-field=\"unit-price\">{price}</td><td>{}</td><td class=\"n\" data-field=\"amount\">{}</td></tr>\n",
        if l.price.is_none() && l.kind != Kind::Unitemized { " unpriced" } else { "" },
        esc(&l.team),
        esc(&l.model),
        l.kind.name(),
        l.exact.to_decimal(),
        esc(&l.model),
        l.kind.name(),
        l.tokens,
        esc(l.table.as_deref().unwrap_or("")),
        l.cents,
    )
}

fn title_case(name: &str) -> String {
    let name = name.replace('_', " ");
    let mut c = name.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}
