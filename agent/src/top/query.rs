//! Reading a running agent's ledger: the calls of the window, grouped by (team, model, process),
//! and the totals since midnight and since the first of the month.
//!
//! The agent writes in WAL mode, so reading beside it sees only committed transactions; each
//! snapshot is read in one transaction, so the window and the totals agree. The totals are
//! kept incrementally (calls with a newer row id are added) because summing a month of calls
//! every second would not be cheap; they are recomputed in full every minute, at midnight and
//! on the first of the month, and whenever the row ids look reset.
use std::path::{Path, PathBuf};

use jiff::{Timestamp, Zoned};
use rusqlite::{params, Connection, Row};

use super::rates::{Sums, WindowRow};
use crate::ledger::schema::{self, LedgerError, IS_ERROR_SQL};
use crate::money::Pico;

const NS_PER_S: i64 = 1_000_000_000;
/// How often the incrementally kept totals are recomputed from scratch.
const FULL_RECOMPUTE_S: i64 = 60;

/// One reading of the ledger.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Calls in `(now − window, now]`.
    pub rows: Vec<WindowRow>,
    /// Calls since local midnight and since the first of the month (local time).
    pub today: Sums,
    pub month: Sums,
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    totals: Totals,
}

#[derive(Debug, Default, Clone)]
struct Totals {
    day_start_ns: i64,
    month_start_ns: i64,
    /// The highest `calls.id` already in the sums.
    last_id: i64,
    computed_at_s: i64,
    today: Sums,
    month: Sums,
    valid: bool,
}

impl Ledger {
    /// Opens the ledger read-only; a missing, foreign or corrupt file is refused with its name.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let conn = schema::open_read_only(path)?;
        // The agent holds the write lock briefly each second; a reader waits rather than fails.
        conn.busy_timeout(std::time::Duration::from_secs(2)).map_err(|e| LedgerError::sqlite(path, e))?;
        Ok(Ledger { conn, path: path.to_path_buf(), totals: Totals::default() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The window `(now − window_s, now]` and the totals, as of `now`.
    pub fn read(&mut self, now: &Zoned, window_s: u64) -> Result<Snapshot, String> {
        let err = |e: rusqlite::Error| format!("{}: {e}", self.path.display());
        let tx = self.conn.unchecked_transaction().map_err(err)?;
        let to_ns = ns(now.timestamp());
        let from_ns = to_ns.saturating_sub(i64::try_from(window_s).unwrap_or(i64::MAX).saturating_mul(NS_PER_S));
        let rows = window(&tx, from_ns, to_ns).map_err(err)?;
        update_totals(&tx, &mut self.totals, now).map_err(err)?;
        tx.finish().map_err(err)?;
        Ok(Snapshot { rows, today: self.totals.today, month: self.totals.month })
    }
}

fn ns(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

fn window(conn: &Connection, from_ns: i64, to_ns: i64) -> rusqlite::Result<Vec<WindowRow>> {
    let sql = format!(
        "SELECT team, coalesce(response_model, request_model), pid, comm, exe, {SUMS}
         FROM calls WHERE ts_ns > ?1 AND ts_ns <= ?2 GROUP BY 1, 2, 3, 4, 5",
        SUMS = sums_sql()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![from_ns, to_ns], |r| {
        Ok(WindowRow {
            team: r.get(0)?,
            model: r.get(1)?,
            pid: u32::try_from(r.get::<_, i64>(2)?).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(2, -1))?,
            comm: r.get(3)?,
            exe: r.get(4)?,
            sums: sums(r, 5)?,
        })
    })?;
    rows.collect()
}

/// The `calls` columns read by [`sums`], in its order.
fn sums_sql() -> String {
    format!(
        "count(*), sum({IS_ERROR_SQL}), sum(input_tokens), sum(output_tokens),
         sum(coalesce(cost_pusd, 0)), sum(cost_pusd IS NULL)"
    )
}

/// The same six sums from `rollups`.
const ROLLUP_SUMS: &str = "sum(calls), sum(errors), sum(input_tokens), sum(output_tokens), sum(cost_pusd),
     sum(CASE WHEN priced_model IS NULL THEN calls ELSE 0 END)";

fn sums(r: &Row, at: usize) -> rusqlite::Result<Sums> {
    let count = |i: usize| -> rusqlite::Result<u64> {
        let v: Option<i64> = r.get(at + i)?;
        u64::try_from(v.unwrap_or(0)).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(at + i, v.unwrap_or(0)))
    };
    Ok(Sums {
        calls: count(0)?,
        errors: count(1)?,
        input_tokens: count(2)?,
        output_tokens: count(3)?,
        cost: Pico(i128::from(r.get::<_, Option<i64>>(at + 4)?.unwrap_or(0))),
        unpriced: count(5)?,
    })
}

/// Brings the totals up to `now`. They change only when every query succeeded: a read that
/// fails half-way must not leave sums that the next read would add to again.
fn update_totals(conn: &Connection, totals: &mut Totals, now: &Zoned) -> rusqlite::Result<()> {
    let mut next = totals.clone();
    let t = &mut next;
    let day = now.start_of_day().map(|z| ns(z.timestamp())).unwrap_or(0);
    let month = now.first_of_month().and_then(|z| z.start_of_day()).map(|z| ns(z.timestamp())).unwrap_or(0);
    let max_id: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM calls", [], |r| r.get(0))?;
    let now_s = now.timestamp().as_second();
    let stale = !t.valid
        || t.day_start_ns != day
        || t.month_start_ns != month
        || max_id < t.last_id
        || now_s - t.computed_at_s >= FULL_RECOMPUTE_S;
    if stale {
        *t =
            Totals { day_start_ns: day, month_start_ns: month, computed_at_s: now_s, valid: true, ..Totals::default() };
        // Per hour, then added here in i128: a month's cost in pico-USD can exceed SQLite's
        // 64-bit sum.
        let sql = format!(
            "SELECT ts_ns >= ?2, {SUMS} FROM calls WHERE ts_ns >= ?1 AND id <= ?3
             GROUP BY ts_ns / 3600000000000, ts_ns >= ?2",
            SUMS = sums_sql()
        );
        add_sums(conn, &sql, params![month, day, max_id], t)?;
        let sql = format!("SELECT hour >= ?2, {ROLLUP_SUMS} FROM rollups WHERE hour >= ?1 GROUP BY hour, hour >= ?2");
        add_sums(conn, &sql, params![month / NS_PER_S, day / NS_PER_S], t)?;
    } else if max_id > t.last_id {
        let sql = format!(
            "SELECT ts_ns >= ?2, {SUMS} FROM calls WHERE id > ?3 AND id <= ?4 AND ts_ns >= ?1 GROUP BY ts_ns >= ?2",
            SUMS = sums_sql()
        );
        let last = t.last_id;
        add_sums(conn, &sql, params![month, day, last, max_id], t)?;
    }
    t.last_id = max_id;
    *totals = next;
    Ok(())
}

/// Adds rows of (is today, the six sums) to the month and, when today, the day.
fn add_sums(conn: &Connection, sql: &str, p: impl rusqlite::Params, t: &mut Totals) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(p)?;
    while let Some(r) = rows.next()? {
        let s = sums(r, 1)?;
        t.month += s;
        if r.get::<_, bool>(0)? {
            t.today += s;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    /// Inserts a call as the ledger writer does (only the columns `top` reads vary).
    /// `who`: team, model, pid, comm; `tokens`: input, output.
    pub(crate) fn insert(
        conn: &Connection,
        ts_ns: i64,
        who: (&str, Option<&str>, u32, &str),
        tokens: (u64, u64),
        cost: Option<i64>,
        status: u16,
    ) {
        let (team, model, pid, comm) = who;
        conn.execute(
            "INSERT INTO calls (ts_ns, host, pid, comm, exe, cgroup_id, provider, operation, server_address,
                 server_port, request_model, response_model, input_tokens, output_tokens, cached_input_tokens,
                 reasoning_tokens, usage_source, streaming, http_status, duration_ms, tls_library, truncated,
                 team, cost_pusd, pricing_version)
             VALUES (?1, 'h', ?2, ?3, '/usr/bin/' || ?3, 1, 'openai', 'chat', 'api', 443, ?4, NULL, ?5, ?6, 0,
                 0, 'reported', 0, ?7, 12.5, 'openssl', 0, ?8, ?9, 'v1')",
            params![ts_ns, pid, comm, model, tokens.0 as i64, tokens.1 as i64, status, team, cost],
        )
        .unwrap();
    }

    /// A fresh directory of the test's own (no tempfile crate in the agent).
    pub(crate) fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tokentap-top-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn at(s: &str) -> Zoned {
        s.parse::<Timestamp>().unwrap().to_zoned(TimeZone::UTC)
    }

    fn t(s: &str) -> i64 {
        ns(s.parse::<Timestamp>().unwrap())
    }

    #[test]
    fn window_and_totals_from_calls_and_rollups() {
        let dir = scratch("window");
        let path = dir.join("ledger.db");
        let w = schema::open_for_write(&path).unwrap();
        insert(&w, t("2026-10-31T23:00:00Z"), ("a", Some("m"), 1, "x"), (1, 1), Some(1), 200); // last month
        insert(&w, t("2026-11-27T10:00:00Z"), ("a", Some("m"), 1, "x"), (10, 1), Some(100), 200); // yesterday
        insert(&w, t("2026-11-28T11:59:00Z"), ("a", Some("m"), 1, "x"), (20, 2), Some(1_000), 200); // today, before the window
        insert(&w, t("2026-11-28T11:59:30Z"), ("a", Some("m"), 7, "curl"), (300, 30), Some(10_000), 200);
        insert(&w, t("2026-11-28T11:59:40Z"), ("a", Some("m"), 7, "curl"), (400, 40), None, 500);
        insert(&w, t("2026-11-28T11:59:50Z"), ("b", None, 8, "py"), (5, 5), Some(7), 200);
        w.execute(
            "INSERT INTO rollups (hour, host, provider, model, team, pricing_version, calls, errors, input_tokens,
                 output_tokens, cached_input_tokens, reasoning_tokens, estimated_calls, cost_pusd)
             VALUES (?1, 'h', 'openai', 'm', 'a', 'v1', 3, 1, 1000, 100, 0, 0, 0, 50000)",
            params![t("2026-11-02T05:00:00Z") / NS_PER_S],
        )
        .unwrap();
        let mut l = Ledger::open(&path).unwrap();
        let s = l.read(&at("2026-11-28T12:00:00Z"), 45).unwrap();
        let mut rows = s.rows.clone();
        rows.sort_by(|a, b| a.team.cmp(&b.team));
        assert_eq!(rows.len(), 2, "{rows:?}");
        let a = &rows[0];
        assert_eq!(
            (a.team.as_str(), a.model.as_deref(), a.pid, a.comm.as_str(), a.exe.as_str()),
            ("a", Some("m"), 7, "curl", "/usr/bin/curl")
        );
        assert_eq!(
            a.sums,
            Sums { calls: 2, errors: 1, input_tokens: 700, output_tokens: 70, cost: Pico(10_000), unpriced: 1 }
        );
        assert_eq!(rows[1].model, None);
        assert_eq!(s.today.calls, 4);
        assert_eq!(s.today.cost, Pico(11_007));
        assert_eq!(s.month.calls, 8, "3 rolled up + 5 calls this month");
        assert_eq!(s.month.cost, Pico(61_107));
        assert_eq!(s.month.errors, 2);

        // A new call is added to the totals incrementally.
        insert(&w, t("2026-11-28T12:00:01Z"), ("b", Some("m"), 8, "py"), (1, 1), Some(3), 200);
        let s = l.read(&at("2026-11-28T12:00:02Z"), 45).unwrap();
        assert_eq!((s.today.calls, s.today.cost), (5, Pico(11_010)));
        assert_eq!(s.month.calls, 9);
        assert_eq!(s.rows.iter().map(|r| r.sums.calls).sum::<u64>(), 4);

        // Past midnight, yesterday's calls leave the day's totals.
        let s = l.read(&at("2026-11-29T00:00:01Z"), 45).unwrap();
        assert_eq!((s.today.calls, s.month.calls), (0, 9));
        assert!(s.rows.is_empty());
        // A new month.
        let s = l.read(&at("2026-12-01T00:00:00Z"), 45).unwrap();
        assert_eq!(s.month.calls, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_and_foreign_files_are_refused_by_name() {
        let dir = scratch("refused");
        let missing = dir.join("nope.db");
        let e = Ledger::open(&missing).err().unwrap().to_string();
        assert!(e.contains("nope.db"), "{e}");
        let foreign = dir.join("foreign.db");
        std::fs::write(&foreign, b"not a database at all, just some text that is long enough").unwrap();
        let e = Ledger::open(&foreign).err().unwrap().to_string();
        assert!(e.contains("foreign.db") && e.contains("not a tokentap ledger"), "{e}");
        assert_eq!(std::fs::read(&foreign).unwrap().len(), 57, "the foreign file is untouched");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
