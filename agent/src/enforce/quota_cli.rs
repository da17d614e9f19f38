//! `tokentap quota status`: the enforcing agent's status file as a table or JSON.
use std::{fmt::Write as _, path::Path, process::ExitCode};

use jiff::Timestamp;

use super::status::{EntitlementStatus, QuotaStatus};
use crate::cli::QuotaFormat;

pub fn status(path: &Path, format: QuotaFormat) -> ExitCode {
    let status = match QuotaStatus::read(path, Timestamp::now()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tokentap: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match format {
        QuotaFormat::Table => table(&status),
        QuotaFormat::Json => match serde_json::to_string_pretty(&status) {
            Ok(j) => j + "\n",
            Err(e) => {
                eprintln!("tokentap: cannot encode the status: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    print!("{text}");
    ExitCode::SUCCESS
}

const HEADERS: [&str; 8] = ["ENTITLEMENT", "SCOPE", "USED", "RESERVED", "REMAINING", "LIMIT", "WINDOW END", "STATE"];

/// One line per entitlement, columns aligned; amounts in the entitlement's unit.
pub fn table(status: &QuotaStatus) -> String {
    let mut out = format!("host {}, status written at {}\n", status.host, status.written_at);
    if status.entitlements.is_empty() {
        out.push_str("no entitlements in the policy\n");
        return out;
    }
    let rows: Vec<[String; 8]> = status.entitlements.iter().map(row).collect();
    let mut widths = HEADERS.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Names left-aligned, amounts right-aligned.
            let numeric = (2..=5).contains(&i);
            let _ = match (i, numeric) {
                (7, _) => write!(l, "{cell}"),
                (_, true) => write!(l, "{cell:>w$}  "),
                (_, false) => write!(l, "{cell:<w$}  "),
            };
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&HEADERS);
    for r in &rows {
        line(&r.each_ref().map(String::as_str));
    }
    out
}

fn row(e: &EntitlementStatus) -> [String; 8] {
    let amount = |v: f64| amount(&e.unit, v);
    [
        e.name.clone(),
        e.scope.clone(),
        amount(e.used),
        amount(e.reserved),
        amount(e.remaining),
        format!("{} {}", amount(e.limit), e.unit),
        e.window_end.clone(),
        e.state.as_str().to_string(),
    ]
}

/// Token and request counts are whole; dollars keep cents (and more below a cent).
pub fn amount(unit: &str, v: f64) -> String {
    match unit {
        "usd" if v != 0.0 && v.abs() < 0.01 => format!("{v:.6}"),
        "usd" => format!("{v:.2}"),
        _ => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::status::State;

    fn entitlement(name: &str, unit: &str, limit: f64, used: f64, state: State) -> EntitlementStatus {
        let limit_kind = if unit == "usd" { "cost_usd" } else { "total_tokens" };
        EntitlementStatus {
            limit_kind: limit_kind.into(),
            unit: unit.into(),
            ..EntitlementStatus::sample(name, limit, used, 0.0, state)
        }
    }

    #[test]
    fn table_aligns_columns_and_formats_units() {
        let status = QuotaStatus {
            written_at: "2026-11-28T10:00:00Z".into(),
            host: "n1".into(),
            entitlements: vec![
                entitlement("blue-daily", "tokens", 50_000.0, 50_210.0, State::Exhausted),
                entitlement("red-budget", "usd", 20.0, 3.456, State::Ok),
            ],
        };
        let t = table(&status);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "host n1, status written at 2026-11-28T10:00:00Z");
        assert!(lines[1].starts_with("ENTITLEMENT  SCOPE"), "{t}");
        assert!(
            lines[2].contains("50210") && lines[2].contains("50000 tokens") && lines[2].ends_with("exhausted"),
            "{t}"
        );
        assert!(lines[3].contains("3.46") && lines[3].contains("20.00 usd") && lines[3].ends_with("ok"), "{t}");
        // Every column starts at the same place on every line.
        let col = |l: &str| l.find("2026-11-29").unwrap();
        assert_eq!(col(lines[2]), col(lines[3]));
        assert_eq!(amount("usd", 0.0042), "0.004200");
    }
}
