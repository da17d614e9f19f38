//! `--format csv`: one header line (the `--by` keys, then the counters) and one line per
//! group; no total line, so that summing a column gives the total. Unset keys are empty
//! cells; `cost_usd` is the exact decimal amount.
use super::{field_exact, Report, FIELDS};

pub fn render(r: &Report) -> Result<String, String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let header = r.by.iter().map(|d| d.name()).chain(FIELDS);
    w.write_record(header).map_err(|e| e.to_string())?;
    for (values, c) in &r.groups {
        let keys = values.iter().map(|v| v.clone().unwrap_or_default());
        let line: Vec<String> = keys.chain(FIELDS.iter().map(|f| field_exact(c, f))).collect();
        w.write_record(&line).map_err(|e| e.to_string())?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}
