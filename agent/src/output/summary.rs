//! The live per-process, per-model table `tokentap run` shows without `--usage-log`.
use std::collections::BTreeMap;

use crate::usage::UsageRecord;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub calls: u64,
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub reasoning: u64,
    pub estimated: u64,
}

#[derive(Default)]
pub struct Summary {
    rows: BTreeMap<(String, u32, &'static str, String), Totals>,
    dirty: bool,
}

impl Summary {
    pub fn add(&mut self, r: &UsageRecord) {
        let model = r.response_model.clone().or_else(|| r.request_model.clone()).unwrap_or_else(|| "-".into());
        let t = self.rows.entry((r.comm.clone(), r.pid, r.provider, model)).or_default();
        t.calls += 1;
        t.input += r.input_tokens;
        t.output += r.output_tokens;
        t.cached += r.cached_input_tokens;
        t.reasoning += r.reasoning_tokens;
        if r.usage_source == "estimated" {
            t.estimated += 1;
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
            "{:<16} {:>8} {:<10} {:<28} {:>6} {:>10} {:>10} {:>9} {:>9}\n",
            "PROCESS", "PID", "PROVIDER", "MODEL", "CALLS", "INPUT", "OUTPUT", "CACHED", "REASON"
        );
        for ((comm, pid, provider, model), t) in &self.rows {
            let calls = if t.estimated > 0 { format!("{}~", t.calls) } else { t.calls.to_string() };
            s.push_str(&format!(
                "{:<16} {:>8} {:<10} {:<28} {:>6} {:>10} {:>10} {:>9} {:>9}\n",
                comm, pid, provider, model, calls, t.input, t.output, t.cached, t.reasoning
            ));
        }
        s.push_str(&format!("-- {footer}\n"));
        s
    }
}
