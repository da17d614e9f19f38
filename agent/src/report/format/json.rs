//! `--format json`:
//! `{"period": {"from", "to"}, "groups": [{<key>: value|null, ..., <counters>}], "totals": {<counters>}}`.
//! Counters are integers; `cost_usd` is a JSON number written as the exact decimal amount
//! (up to 12 decimals), never through a float, so a decimal-aware reader gets it exactly.
use serde_json::Value;

use super::{field_exact, Report, FIELDS};
use crate::report::rows::Counters;

pub fn render(r: &Report) -> String {
    let mut out = String::from("{\n  \"period\": {");
    out.push_str(&format!("\"from\": {}, \"to\": {}", string(&r.from_text()), string(&r.to_text())));
    out.push_str("},\n  \"groups\": [");
    for (i, (values, c)) in r.groups.iter().enumerate() {
        out.push_str(if i == 0 { "\n    {" } else { ",\n    {" });
        for (d, v) in r.by.iter().zip(values) {
            let v = v.as_deref().map(string).unwrap_or_else(|| "null".into());
            out.push_str(&format!("{}: {v}, ", string(d.name())));
        }
        counters(&mut out, c);
        out.push('}');
    }
    out.push_str(if r.groups.is_empty() { "],\n" } else { "\n  ],\n" });
    out.push_str("  \"totals\": {");
    counters(&mut out, &r.totals);
    out.push_str("}\n}\n");
    out
}

fn counters(out: &mut String, c: &Counters) {
    let fields: Vec<String> = FIELDS.iter().map(|f| format!("{}: {}", string(f), field_exact(c, f))).collect();
    out.push_str(&fields.join(", "));
}

fn string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}
