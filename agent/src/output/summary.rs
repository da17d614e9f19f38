//! The live per-process, per-model table `tokentap run` shows without `--usage-log`.
use std::collections::BTreeMap;

use crate::usage::UsageRecord;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Totals {
    pub calls: u64,
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub reasoning: u64,
    pub estimated: u64,
    pub errors: u64,
    /// USD at list prices; `None` while every call so far was unpriced.
    pub cost_usd: Option<f64>,
}

#[derive(Default)]
pub struct Summary {
    rows: BTreeMap<(String, String, u32, &'static str, String), Totals>,
    dirty: bool,
}

impl Summary {
    pub fn add(&mut self, r: &UsageRecord) {
        let model = r.response_model.clone().or_else(|| r.request_model.clone()).unwrap_or_else(|| "-".into());
        let t = self.rows.entry((r.team.clone(), r.comm.clone(), r.pid, r.provider, model)).or_default();
        t.calls += 1;
        t.input += r.input_tokens;
        t.output += r.output_tokens;
        t.cached += r.cached_input_tokens;
        t.reasoning += r.reasoning_tokens;
        if r.usage_source == "estimated" {
            t.estimated += 1;
        }
        if r.error_type.is_some() || r.http_status >= 400 {
            t.errors += 1;
        }
        if let Some(usd) = r.cost_usd {
            t.cost_usd = Some(t.cost_usd.unwrap_or(0.0) + usd);
        }
        self.dirty = true;
    }

    /// The table if anything changed since the last call.
    pub fn render_if_changed(&mut self, footer: &str) -> Option<String> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some(self.render(footer))
    }

    pub fn render(&self, footer: &str) -> String {
        let mut s = format!(
            "{:<16} {:<16} {:>8} {:<10} {:<28} {:>6} {:>6} {:>10} {:>10} {:>9} {:>9} {:>10}\n",
            "TEAM",
            "PROCESS",
            "PID",
            "PROVIDER",
            "MODEL",
            "CALLS",
            "ERRORS",
            "INPUT",
            "OUTPUT",
            "CACHED",
            "REASON",
            "COST USD"
        );
        for ((team, comm, pid, provider, model), t) in &self.rows {
            let calls = if t.estimated > 0 { format!("{}~", t.calls) } else { t.calls.to_string() };
            let cost = t.cost_usd.map(|c| format!("{c:.4}")).unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "{:<16} {:<16} {:>8} {:<10} {:<28} {:>6} {:>6} {:>10} {:>10} {:>9} {:>9} {:>10}\n",
                team, comm, pid, provider, model, calls, t.errors, t.input, t.output, t.cached, t.reasoning, cost
            ));
        }
        s.push_str(&format!("-- {footer} (~: some counts estimated)\n"));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, input: u64, status: u16, source: &'static str) -> UsageRecord {
        UsageRecord {
            pid,
            response_model: Some("gpt-4o-2024-08-06".into()),
            input_tokens: input,
            output_tokens: 2,
            cached_input_tokens: 1,
            usage_source: source,
            http_status: status,
            duration_ms: 1.0,
            error_type: (status >= 400).then(|| status.to_string()),
            cost_usd: (status < 400).then_some(0.25),
            ..UsageRecord::sample()
        }
    }

    #[test]
    fn totals_per_process_and_model_with_errors_and_estimates() {
        let mut s = Summary::default();
        assert!(s.render_if_changed("x").is_none());
        s.add(&record(7, 10, 200, "reported"));
        s.add(&record(7, 5, 401, "reported"));
        s.add(&record(7, 3, 200, "estimated"));
        let table = s.render_if_changed("calls=3").expect("changed");
        let row = table.lines().find(|l| l.starts_with("ml ")).expect("a row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            vec!["ml", "python3", "7", "openai", "gpt-4o-2024-08-06", "3~", "1", "18", "6", "3", "0", "0.5000"]
        );
        assert!(table.ends_with("-- calls=3 (~: some counts estimated)\n"));
        assert!(s.render_if_changed("x").is_none(), "unchanged: nothing to print");
    }
}
