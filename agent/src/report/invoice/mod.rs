//! `tokentap report --invoice`: one invoice per value of the `--by` key (rows without a value
//! go to the invoice named `unassigned`), each an HTML file and a CSV of its line items.
//! See docs/chargeback.md, "Invoices".
mod build;
mod csv;
mod files;
mod format;
mod html;
mod names;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use build::{invoices, Invoice, Kind, Line, UNASSIGNED};

use crate::report::rows::{Dim, Period, Row};

/// Writes the invoices for `rows` over `period` into `dir` (created if missing) and returns
/// the files written (HTML then CSV, per key value in order). `source` (the ledgers or URL
/// read) is shown on the invoice but is not part of its id. No rows: nothing is written.
/// Errors name the path; when one is returned, no file was written or changed unless the
/// error is about writing one (then the earlier ones were written).
pub fn write(rows: &[Row], period: &Period, by: Dim, dir: &Path, source: &str) -> Result<Vec<PathBuf>, String> {
    let mut targets = Vec::new();
    for inv in invoices(rows, period, by) {
        let stem = names::stem(by, inv.key.as_deref(), period);
        let meta = html::subject_meta(&inv);
        targets.push(files::Target {
            path: dir.join(format!("{stem}.html")),
            contents: html::render(&inv, source),
            same_invoice: Box::new(move |old: &str| old.contains(&meta)),
        });
        let prefix = csv::subject_prefix(&inv);
        targets.push(files::Target {
            path: dir.join(format!("{stem}.csv")),
            contents: csv::render(&inv),
            // Our header, then nothing (an invoice without lines) or a record of this subject.
            // Only the first record is looked at: a key value may hold a line break.
            same_invoice: Box::new(move |old: &str| {
                old.strip_prefix(csv::HEADER)
                    .and_then(|rest| rest.strip_prefix("\r\n"))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(&prefix))
            }),
        });
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    files::write_all(dir, &targets)?;
    Ok(targets.into_iter().map(|t| t.path).collect())
}
