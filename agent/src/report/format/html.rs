//! `--format html`: one self-contained page (inline CSS and SVG; no scripts, fonts or any
//! other request), readable in a browser or attached to a mail.
//!
//! For checks by machine, every number sits in an element with an id or a `data-field`
//! attribute and its exact value in `data-value` (cost: the exact decimal USD amount):
//! `#period[data-from][data-to]`, `#totals td[data-field]`, `#unattributed[data-calls]
//! [data-cost]`, `#estimated[data-calls]`, `#trend rect[data-day]`, `#top-teams`/`#top-models`
//! rows `tr[data-key]`, and `#groups tbody tr` with `td[data-key=<dim>]` and `td[data-field]`.
use super::html_chart;
use super::{field_exact, field_human, key_human, share, usd_human, Report, FIELDS};
use crate::report::rows::{group, Counters, Dim};

/// How many teams and models the "top" lists show.
const TOP: usize = 10;

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em;color:#1d2330;background:#fff}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em}
.meta{color:#5b6475;margin-top:0}
table{border-collapse:collapse;margin:.5em 0}
th,td{padding:.25em .7em;border-bottom:1px solid #e2e5eb;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tfoot td{font-weight:600;border-top:2px solid #1d2330}
.cards{display:flex;flex-wrap:wrap;gap:1em}
.card{border:1px solid #e2e5eb;border-radius:6px;padding:.6em 1em;min-width:9em}
.card .v{font-size:1.3em;font-weight:600}
.axis{stroke:#5b6475}.lbl{font-size:11px;fill:#5b6475}.bar{fill:#3b6fd8}
.share-a{fill:#d8873b}.share-b{fill:#3b6fd8}
.none{color:#8a93a3;font-style:italic}
";

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    s.push_str(&format!("<title>LLM usage {} to {}</title>\n", esc(&r.from_text()), esc(&r.to_text())));
    s.push_str(&format!("<style>{STYLE}</style></head><body>\n"));
    s.push_str("<h1>LLM usage report</h1>\n");
    s.push_str(&format!(
        "<p class=\"meta\" id=\"period\" data-from=\"{f}\" data-to=\"{t}\" data-tz=\"{z}\">{f} to {t} ({z}) · source: <span id=\"source\">{src}</span> · generated {g}</p>\n",
        f = esc(&r.from_text()),
        t = esc(&r.to_text()),
        z = esc(r.period.tz.iana_name().unwrap_or("UTC")),
        src = esc(&r.source),
        g = esc(&r.generated()),
    ));
    totals(&mut s, &r.totals);
    shares(&mut s, r);
    s.push_str("<h2>Trend</h2>\n");
    s.push_str(&html_chart::svg(r));
    top(&mut s, r, Dim::Team, "top-teams", "Top teams");
    top(&mut s, r, Dim::Model, "top-models", "Top models");
    groups(&mut s, r);
    s.push_str("</body></html>\n");
    s
}

fn totals(s: &mut String, t: &Counters) {
    s.push_str("<h2>Totals</h2>\n<table id=\"totals\"><tr>");
    for f in FIELDS {
        s.push_str(&format!("<th class=\"n\">{f}</th>"));
    }
    s.push_str("</tr><tr>");
    for f in FIELDS {
        s.push_str(&num_cell(t, f));
    }
    s.push_str("</tr></table>\n");
}

/// The unattributed share (calls the mapping gave no team) and the estimated share (calls
/// whose tokens tokentap counted because the provider reported none).
fn shares(s: &mut String, r: &Report) {
    let t = &r.totals;
    let unattributed: Counters = r.rows.iter().filter(|row| row.keys.get(Dim::Team) == Some("unattributed")).fold(
        Counters::default(),
        |mut acc, row| {
            acc += row.counters;
            acc
        },
    );
    let ua_share = share(unattributed.calls, t.calls);
    let est_share = share(t.estimated_calls, t.calls);
    s.push_str("<h2>Attribution and accuracy</h2>\n<div class=\"cards\">\n");
    s.push_str(&format!(
        "<div class=\"card\" id=\"unattributed\" data-calls=\"{}\" data-cost=\"{}\" data-share=\"{ua_share:.6}\">\
         <div>Unattributed (team <code>unattributed</code>)</div><div class=\"v\">{:.1} % of calls</div>\
         <div>{} of {} calls · ${} of ${}</div>{}</div>\n",
        unattributed.calls,
        unattributed.cost.to_decimal(),
        ua_share * 100.0,
        unattributed.calls,
        t.calls,
        usd_human(unattributed.cost),
        usd_human(t.cost),
        share_bar(ua_share, "unattributed", "attributed"),
    ));
    s.push_str(&format!(
        "<div class=\"card\" id=\"estimated\" data-calls=\"{}\" data-reported=\"{}\" data-share=\"{est_share:.6}\">\
         <div>Estimated tokens (no provider usage)</div><div class=\"v\">{:.1} % of calls</div>\
         <div>{} estimated · {} reported</div>{}</div>\n",
        t.estimated_calls,
        t.calls - t.estimated_calls.min(t.calls),
        est_share * 100.0,
        t.estimated_calls,
        t.calls - t.estimated_calls.min(t.calls),
        share_bar(est_share, "estimated", "reported"),
    ));
    s.push_str("</div>\n");
}

/// A 100 % bar split in two: `part` (first colour) and the rest.
fn share_bar(part: f64, a: &str, b: &str) -> String {
    let w = 200.0;
    let pa = (part.clamp(0.0, 1.0) * w * 100.0).round() / 100.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"12\" viewBox=\"0 0 {w} 12\" role=\"img\">\
         <rect class=\"share-a\" x=\"0\" y=\"0\" width=\"{pa}\" height=\"12\"><title>{a}</title></rect>\
         <rect class=\"share-b\" x=\"{pa}\" y=\"0\" width=\"{}\" height=\"12\"><title>{b}</title></rect></svg>",
        w - pa
    )
}

/// The `TOP` values of `dim` by cost, then by tokens, with a bar for their share of the cost
/// (of the tokens when nothing is priced).
fn top(s: &mut String, r: &Report, dim: Dim, id: &str, title: &str) {
    let mut all: Vec<(Option<String>, Counters)> =
        group(&r.rows, &[dim]).into_iter().map(|(mut k, c)| (k.pop().flatten(), c)).collect();
    all.sort_by(|(ka, a), (kb, b)| {
        (b.cost, b.input_tokens + b.output_tokens).cmp(&(a.cost, a.input_tokens + a.output_tokens)).then(ka.cmp(kb))
    });
    let by_cost = r.totals.cost.0 > 0;
    let whole = |c: &Counters| if by_cost { c.cost.0 as f64 } else { (c.input_tokens + c.output_tokens) as f64 };
    let total = whole(&r.totals);
    s.push_str(&format!("<h2>{title}</h2>\n<table id=\"{id}\"><thead><tr><th>{}</th><th class=\"n\">calls</th><th class=\"n\">tokens</th><th class=\"n\">cost_usd</th><th>share of {}</th></tr></thead><tbody>\n", dim.name(), if by_cost { "cost" } else { "tokens" }));
    for (k, c) in all.iter().take(TOP) {
        let frac = if total > 0.0 { whole(c) / total } else { 0.0 };
        s.push_str(&format!(
            "<tr data-key=\"{}\"><td>{}</td><td class=\"n\" data-field=\"calls\" data-value=\"{}\">{}</td><td class=\"n\" data-field=\"tokens\" data-value=\"{tok}\">{tok}</td>{}<td>{} {:.1} %</td></tr>\n",
            esc(k.as_deref().unwrap_or("")),
            key_cell(k),
            c.calls,
            c.calls,
            num_cell(c, "cost_usd"),
            share_bar(frac, dim.name(), "others"),
            frac * 100.0,
            tok = c.input_tokens + c.output_tokens,
        ));
    }
    s.push_str("</tbody></table>\n");
}

fn groups(s: &mut String, r: &Report) {
    let by: Vec<&str> = r.by.iter().map(|d| d.name()).collect();
    s.push_str(&format!("<h2>By {}</h2>\n<table id=\"groups\"><thead><tr>", esc(&by.join(", "))));
    for d in &by {
        s.push_str(&format!("<th>{d}</th>"));
    }
    for f in FIELDS {
        s.push_str(&format!("<th class=\"n\">{f}</th>"));
    }
    s.push_str("</tr></thead><tbody>\n");
    for (values, c) in &r.groups {
        s.push_str("<tr>");
        for (d, v) in r.by.iter().zip(values) {
            let attr = v.as_deref().map(|v| format!(" data-value=\"{}\"", esc(v))).unwrap_or_default();
            s.push_str(&format!("<td data-key=\"{}\"{attr}>{}</td>", d.name(), key_cell(v)));
        }
        for f in FIELDS {
            s.push_str(&num_cell(c, f));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody><tfoot><tr>");
    s.push_str(&format!("<td colspan=\"{}\">Total</td>", by.len()));
    for f in FIELDS {
        s.push_str(&num_cell(&r.totals, f));
    }
    s.push_str("</tr></tfoot></table>\n");
}

fn num_cell(c: &Counters, f: &str) -> String {
    format!("<td class=\"n\" data-field=\"{f}\" data-value=\"{}\">{}</td>", field_exact(c, f), field_human(c, f))
}

fn key_cell(v: &Option<String>) -> String {
    match v {
        Some(v) => esc(v),
        None => format!("<span class=\"none\">{}</span>", key_human(v)),
    }
}

/// Escapes text for HTML content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}
