//! The quota bars under the table: one line per entitlement of the enforcing agent's status
//! file (name, a bar of used and reserved against the limit, percent used, amounts, state).
//! Pure text, so `--once` prints what the screen shows; the screen only adds the state's colour.
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::enforce::{
    quota_cli::amount,
    status::{EntitlementStatus, QuotaStatus, State},
};

/// Where the bars come from, and whether a missing file is worth saying.
#[derive(Debug, Clone)]
pub struct QuotaSource {
    pub path: PathBuf,
    /// Named on the command line (`--status-file`): a missing file is shown as an error.
    /// Otherwise (the config's or the default path) no file means no enforcement: no section.
    pub explicit: bool,
}

/// What the section shows: the bars, or why there are none.
#[derive(Debug, Clone)]
pub enum QuotaView {
    Status(QuotaStatus),
    Error(String),
}

impl QuotaSource {
    /// `None`: no section.
    pub fn read(&self, now: Timestamp) -> Option<QuotaView> {
        if !self.explicit && !Path::new(&self.path).exists() {
            return None;
        }
        Some(match QuotaStatus::read(&self.path, now) {
            Ok(s) => QuotaView::Status(s),
            Err(e) => QuotaView::Error(e.to_string()),
        })
    }
}

/// Bar cells used, reserved (on top of used) and free, of `width` cells.
fn cells(e: &EntitlementStatus, width: usize) -> (usize, usize) {
    if e.limit <= 0.0 || !e.limit.is_finite() {
        return (width, 0);
    }
    let frac = |v: f64| (v / e.limit).clamp(0.0, 1.0);
    let used = (frac(e.used) * width as f64).round() as usize;
    let both = (frac(e.used + e.reserved) * width as f64).round() as usize;
    (used.min(width), both.min(width).saturating_sub(used))
}

/// Percent of the limit settled (may pass 100: the overrun of calls already in flight).
pub fn percent(e: &EntitlementStatus) -> u64 {
    if e.limit <= 0.0 {
        return 100;
    }
    ((e.used / e.limit) * 100.0).floor().clamp(0.0, 9999.0) as u64
}

/// Cells of the bar itself.
const BAR: usize = 20;

/// The section's lines: a title, then `(line, state)` per entitlement, fitting `width`.
pub fn lines(view: &QuotaView, width: usize) -> (String, Vec<(String, Option<State>)>) {
    let status = match view {
        QuotaView::Status(s) => s,
        QuotaView::Error(e) => return ("QUOTAS".into(), vec![(format!("quota status: {e}"), None)]),
    };
    let title = format!("QUOTAS  (status of {} at {})", status.host, status.written_at);
    if status.entitlements.is_empty() {
        return (title, vec![("no entitlements in the policy".into(), None)]);
    }
    let name_w = status.entitlements.iter().map(|e| e.name.chars().count()).max().unwrap_or(0);
    let rows = status
        .entitlements
        .iter()
        .map(|e| {
            let (used, reserved) = cells(e, BAR);
            let bar = format!("{}{}{}", "#".repeat(used), "+".repeat(reserved), "-".repeat(BAR - used - reserved));
            let line = format!(
                "{:<name_w$}  [{bar}] {:>3}%  {}/{} {}  {}",
                e.name,
                percent(e),
                amount(&e.unit, e.used),
                amount(&e.unit, e.limit),
                e.unit,
                e.state.as_str()
            );
            (line.chars().take(width).collect(), Some(e.state))
        })
        .collect();
    (title, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(entitlements: Vec<EntitlementStatus>) -> QuotaView {
        QuotaView::Status(QuotaStatus { written_at: "2026-11-28T10:00:00Z".into(), host: "n1".into(), entitlements })
    }

    fn e(name: &str, limit: f64, used: f64, reserved: f64, state: State) -> EntitlementStatus {
        EntitlementStatus::sample(name, limit, used, reserved, state)
    }

    #[test]
    fn bars_show_used_reserved_and_state() {
        let v = status(vec![
            e("blue", 1000.0, 500.0, 100.0, State::Ok),
            e("red-long-name", 1000.0, 1200.0, 0.0, State::Exhausted),
        ]);
        let (title, rows) = lines(&v, 200);
        assert_eq!(title, "QUOTAS  (status of n1 at 2026-11-28T10:00:00Z)");
        assert_eq!(rows[0].0, "blue           [##########++--------]  50%  500/1000 tokens  ok");
        assert_eq!(rows[1].0, "red-long-name  [####################] 120%  1200/1000 tokens  exhausted");
        assert_eq!(rows[1].1, Some(State::Exhausted));
        assert_eq!(lines(&v, 10).1[0].0.chars().count(), 10);
    }

    #[test]
    fn errors_and_missing_files() {
        let (_, rows) = lines(&QuotaView::Error("stale".into()), 80);
        assert_eq!(rows, vec![("quota status: stale".to_string(), None)]);
        let dir = std::env::temp_dir().join(format!("tokentap-topq-{}", std::process::id()));
        let missing = QuotaSource { path: dir.join("none.json"), explicit: false };
        assert!(missing.read(Timestamp::now()).is_none(), "no file, no section");
        let named = QuotaSource { path: dir.join("none.json"), explicit: true };
        assert!(matches!(named.read(Timestamp::now()), Some(QuotaView::Error(m)) if m.contains("none.json")));
    }
}
