//! Rebuilds the current windows' usage from the agent's own ledger at start, so a restart
//! never resets a budget: every call row (and hourly rollup, for windows reaching past the
//! ledger's retention) since the earliest window start is counted as it was when settled.
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;

use jiff::Timestamp;
use rusqlite::Connection;

use super::budget::{Budgets, Usage};
use super::labels::model_of;
use super::policy::Labels;
use crate::ledger::schema::{open_read_only, LedgerError};

/// What the seed read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    pub calls: u64,
    pub rollup_hours: u64,
    /// The cgroups the window's calls came from, with the labels of their latest call
    /// (provider and model left unknown): targets from the first moment after a restart.
    pub cgroups: HashMap<u64, Labels>,
}

/// Adds the ledger's usage to `budgets`. A missing ledger is an empty one (first start).
pub fn from_ledger<K: Eq + Hash + Clone>(
    budgets: &mut Budgets<K>,
    ledger: &Path,
    now: Timestamp,
) -> Result<Seeded, LedgerError> {
    let Some(since) = budgets.counters().iter().map(|c| c.bounds().start).min() else {
        return Ok(Seeded::default());
    };
    budgets.roll(now);
    if !ledger.is_file() {
        return Ok(Seeded::default());
    }
    let conn = open_read_only(ledger)?;
    seed(budgets, &conn, since).map_err(|e| LedgerError::sqlite(ledger, e))
}

const LABELS: &str = "team, cost_center, product, tenant, app, k8s_namespace, k8s_workload, provider";

fn labels(r: &rusqlite::Row<'_>, model: Option<String>) -> rusqlite::Result<Labels> {
    Ok(Labels {
        team: r.get(0)?,
        cost_center: r.get(1)?,
        product: r.get(2)?,
        tenant: r.get(3)?,
        app: r.get(4)?,
        namespace: r.get(5)?,
        workload: r.get(6)?,
        provider: Some(r.get(7)?),
        model,
    })
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn seed<K: Eq + Hash + Clone>(
    budgets: &mut Budgets<K>,
    conn: &Connection,
    since: Timestamp,
) -> rusqlite::Result<Seeded> {
    let mut seeded = Seeded::default();
    let since_ns = i64::try_from(since.as_nanosecond()).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {LABELS}, request_model, response_model, ts_ns, input_tokens, output_tokens, cost_pusd, \
         cgroup_id FROM calls WHERE ts_ns >= ?1 ORDER BY ts_ns, id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([since_ns])?;
    while let Some(r) = rows.next()? {
        let (req, resp): (Option<String>, Option<String>) = (r.get(8)?, r.get(9)?);
        let model = model_of(req.as_deref(), resp.as_deref()).map(str::to_string);
        let l = labels(r, model)?;
        let ts = Timestamp::from_nanosecond(i128::from(r.get::<_, i64>(10)?)).unwrap_or(since);
        let cost: Option<i64> = r.get(13)?;
        let usage = Usage::call(count(r.get(11)?), count(r.get(12)?), cost.map_or(0, |c| c.max(0) as u128));
        let cgroup_id: i64 = r.get(14)?;
        if cgroup_id > 0 {
            let process_labels = Labels { provider: None, model: None, ..l.clone() };
            seeded.cgroups.insert(cgroup_id as u64, process_labels);
        }
        budgets.settle(None, &l, usage, ts);
        seeded.calls += 1;
    }
    // Rollups start on whole hours; one that began before `since` is a window's past and is
    // left out (a window shorter than an hour never reaches rollups: they only hold calls
    // older than the retention, at least a day).
    let since_hour = since.as_second();
    let sql = format!(
        "SELECT {LABELS}, model, hour, calls, input_tokens, output_tokens, cost_pusd FROM rollups WHERE hour >= ?1"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([since_hour])?;
    while let Some(r) = rows.next()? {
        let l = labels(r, r.get(8)?)?;
        let ts = Timestamp::from_second(r.get(9)?).unwrap_or(since);
        let usage = Usage {
            requests: count(r.get(10)?),
            input_tokens: count(r.get(11)?),
            output_tokens: count(r.get(12)?),
            cost_pico: r.get::<_, i64>(13)?.max(0) as u128,
        };
        budgets.settle(None, &l, usage, ts);
        seeded.rollup_hours += 1;
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::policy::Policy;
    use crate::usage::UsageRecord;

    #[test]
    fn a_restart_counts_the_current_window_only() {
        let dir = crate::ledger::test_dir("enforce-seed");
        let path = dir.join("ledger.db");
        let conn = crate::ledger::open::open(&path, "h").unwrap();
        let mut stmt = conn.prepare(crate::ledger::row::INSERT_SQL).unwrap();
        let rec = |ts: &str, team: &str, tokens: u64| UsageRecord {
            ts: ts.into(),
            team: team.into(),
            input_tokens: tokens,
            output_tokens: 1,
            ..UsageRecord::sample()
        };
        for r in [
            rec("2026-11-28T13:59:59Z", "blue", 1000),
            rec("2026-11-28T14:00:00Z", "blue", 10),
            rec("2026-11-28T14:20:00Z", "blue", 20),
            rec("2026-11-28T14:20:00Z", "red", 40),
        ] {
            crate::ledger::row::insert(&mut stmt, "h", "v", &crate::ledger::row::Pending::new(r)).unwrap();
        }
        drop(stmt);
        drop(conn);
        let policy = Policy::parse(
            "p.toml",
            "[[entitlement]]\nname = \"blue\"\nmatch = { team = \"blue\", model = \"gpt-4o*\" }\n\
             limit = { total_tokens = 100 }\nwindow = \"1h\"\naction = \"deny\"\n",
        )
        .unwrap();
        let now: Timestamp = "2026-11-28T14:30:00Z".parse().unwrap();
        let mut b: Budgets<u32> = Budgets::new(&policy, 0.5, 10, now);
        let s = from_ledger(&mut b, &path, now).unwrap();
        assert_eq!((s.calls, s.rollup_hours), (3, 0));
        let cg = UsageRecord::sample().cgroup_id;
        assert_eq!(s.cgroups.get(&cg).map(|l| (l.team.as_str(), l.model.is_none())), Some(("red", true)));
        assert_eq!(b.counters()[0].used(), 32);
        let mut b: Budgets<u32> = Budgets::new(&policy, 0.5, 10, now);
        assert_eq!(from_ledger(&mut b, &dir.join("none.db"), now).unwrap(), Seeded::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
