//! `--format table`: aligned columns for a terminal, keys left, numbers right, a total line.
use super::{field_human, key_human, Report, FIELDS};

pub fn render(r: &Report) -> String {
    let mut header: Vec<String> = r.by.iter().map(|d| d.name().to_string()).collect();
    header.extend(FIELDS.iter().map(|f| f.to_string()));
    let keys = r.by.len();
    let mut lines: Vec<Vec<String>> = vec![header];
    for (values, c) in &r.groups {
        let mut line: Vec<String> = values.iter().map(|v| key_human(v).to_string()).collect();
        line.extend(FIELDS.iter().map(|f| field_human(c, f)));
        lines.push(line);
    }
    let mut total: Vec<String> = (0..keys).map(|i| if i == 0 { "TOTAL".to_string() } else { String::new() }).collect();
    total.extend(FIELDS.iter().map(|f| field_human(&r.totals, f)));

    let mut widths = vec![0usize; keys + FIELDS.len()];
    for line in lines.iter().chain(std::iter::once(&total)) {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt_line = |line: &[String]| -> String {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| if i < keys { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        cells.join("  ").trim_end().to_string()
    };
    let mut out = format!("tokentap report {} .. {} (from {})\n", r.from_text(), r.to_text(), r.source);
    for line in &lines {
        out.push_str(&fmt_line(line));
        out.push('\n');
    }
    let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(rule));
    out.push('\n');
    out.push_str(&fmt_line(&total));
    out.push('\n');
    out
}
