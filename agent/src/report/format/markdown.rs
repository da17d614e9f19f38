//! `--format markdown`: a heading with the period, the totals and the grouped table as
//! GitHub-flavoured Markdown tables (for a wiki page or a ticket).
use super::{field_human, key_human, Report, FIELDS};

pub fn render(r: &Report) -> String {
    let mut out =
        format!("# LLM usage {} to {}\n\nSource: {}\n\n## Totals\n\n", r.from_text(), r.to_text(), cell(&r.source));
    out.push_str(&format!("| {} |\n", FIELDS.join(" | ")));
    out.push_str(&format!("|{}\n", "---:|".repeat(FIELDS.len())));
    let totals: Vec<String> = FIELDS.iter().map(|f| field_human(&r.totals, f)).collect();
    out.push_str(&format!("| {} |\n", totals.join(" | ")));

    let by: Vec<&str> = r.by.iter().map(|d| d.name()).collect();
    out.push_str(&format!("\n## By {}\n\n", by.join(", ")));
    out.push_str(&format!("| {} | {} |\n", by.join(" | "), FIELDS.join(" | ")));
    out.push_str(&format!("|{}{}\n", "---|".repeat(by.len()), "---:|".repeat(FIELDS.len())));
    for (values, c) in &r.groups {
        let keys: Vec<String> = values.iter().map(|v| cell(key_human(v))).collect();
        let nums: Vec<String> = FIELDS.iter().map(|f| field_human(c, f)).collect();
        out.push_str(&format!("| {} | {} |\n", keys.join(" | "), nums.join(" | ")));
    }
    out
}

/// A table cell: pipes escaped, no line breaks, Markdown's inline specials made literal.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '|' | '\\' | '*' | '_' | '`' | '[' | ']' | '<' | '>' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}
