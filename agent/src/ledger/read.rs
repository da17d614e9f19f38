//! Reports from ledger files: [`LedgerSource`] sums `calls` (exact times) and `rollups` (whole
//! hours) into [`Row`]s. Files are opened read-only and never changed; several files (several
//! hosts' ledgers) merge by adding their rows, so the same ledger given twice is refused rather
//! than counted twice.
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rusqlite::{Connection, Row as SqlRow};

use super::schema::{self, LedgerError, IS_ERROR_SQL};
use crate::money::{Pico, UnitPrice};
use crate::pricing::Price;
use crate::report::rows::{Counters, Dim, Keys, Period, Priced, Row, UsageSource};

const NS_PER_HOUR: i64 = 3_600_000_000_000;

/// The report keys in the order the queries below select them (after the hour), as columns of
/// `calls`; `rollups` has the same columns except `model`, stored already coalesced.
const KEY_COLUMNS: [(Dim, &str); 11] = [
    (Dim::Team, "team"),
    (Dim::CostCenter, "cost_center"),
    (Dim::Product, "product"),
    (Dim::Tenant, "tenant"),
    (Dim::App, "app"),
    (Dim::Namespace, "k8s_namespace"),
    (Dim::Workload, "k8s_workload"),
    (Dim::Provider, "provider"),
    (Dim::Model, "coalesce(response_model, request_model)"),
    (Dim::User, "user"),
    (Dim::Unit, "systemd_unit"),
];
const PRICE_COLUMNS: &str =
    "priced_model, price_input, price_cached_input, price_output, price_reasoning, pricing_version";

/// One or more ledger files, read together.
pub struct LedgerSource {
    ledgers: Vec<(PathBuf, Connection)>,
}

/// Why ledgers could not be opened: `Input` is the caller's fault (a file that is not a ledger,
/// missing, or given twice), `Unreadable` the file's (I/O, locking, corruption found later).
#[derive(Debug)]
pub enum OpenError {
    Input(String),
    Unreadable(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Input(m) | OpenError::Unreadable(m) => f.write_str(m),
        }
    }
}

impl LedgerSource {
    /// Opens every file read-only (nothing is created or written, not even `-wal`/`-shm`
    /// files), refusing foreign or corrupt files and the same ledger given twice (by its
    /// `ledger_id`, or by being the same file under another name).
    pub fn open(paths: &[PathBuf]) -> Result<LedgerSource, OpenError> {
        let mut ledgers: Vec<(PathBuf, Connection)> = Vec::new();
        // Per file opened: its path, `ledger_id` and (device, inode).
        type Seen = (PathBuf, Option<String>, Option<(u64, u64)>);
        let mut seen: Vec<Seen> = Vec::new();
        for path in paths {
            let conn = schema::open_read_only(path).map_err(|e| match e {
                LedgerError::Sqlite { .. } => OpenError::Unreadable(e.to_string()),
                _ => OpenError::Input(e.to_string()),
            })?;
            let id = ledger_id(&conn).map_err(|e| OpenError::Unreadable(LedgerError::sqlite(path, e).to_string()))?;
            let inode = file_identity(path);
            for (other, other_id, other_inode) in &seen {
                let same_id = id.is_some() && id == *other_id;
                let same_file = inode.is_some() && inode == *other_inode;
                if same_id || same_file {
                    return Err(OpenError::Input(format!(
                        "{} and {} are the same ledger{}; each ledger may be given once (its calls would count twice)",
                        other.display(),
                        path.display(),
                        id.as_ref().filter(|_| same_id).map(|i| format!(" (ledger_id {i})")).unwrap_or_default(),
                    )));
                }
            }
            seen.push((path.clone(), id, inode));
            ledgers.push((path.clone(), conn));
        }
        if ledgers.is_empty() {
            return Err(OpenError::Input("no ledger file given".into()));
        }
        Ok(LedgerSource { ledgers })
    }

    /// The span of time the ledgers hold usage for, for an error that says where the data is:
    /// the first and last call times, widened by whole rollup hours. `None`: no usage at all.
    pub fn held_range(&self) -> Result<Option<(Timestamp, Timestamp)>, String> {
        let mut range: Option<(i64, i64)> = None;
        for (path, conn) in &self.ledgers {
            let (calls_min, calls_max): (Option<i64>, Option<i64>) = conn
                .query_row("SELECT min(ts_ns), max(ts_ns) FROM calls", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| LedgerError::sqlite(path, e).to_string())?;
            let (hour_min, hour_max): (Option<i64>, Option<i64>) = conn
                .query_row("SELECT min(hour), max(hour) FROM rollups", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| LedgerError::sqlite(path, e).to_string())?;
            let mins = [calls_min, hour_min.map(|h| h.saturating_mul(1_000_000_000))];
            let maxs = [calls_max, hour_max.map(|h| h.saturating_add(3600).saturating_mul(1_000_000_000))];
            for (lo, hi) in mins.into_iter().zip(maxs) {
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    range = Some(match range {
                        None => (lo, hi),
                        Some((a, b)) => (a.min(lo), b.max(hi)),
                    });
                }
            }
        }
        Ok(range.map(|(lo, hi)| (ts_from_ns(lo), ts_from_ns(hi))))
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.ledgers.iter().map(|(p, _)| p.as_path())
    }
}

impl UsageSource for LedgerSource {
    fn describe(&self) -> String {
        let names: Vec<String> = self.paths().map(|p| p.display().to_string()).collect();
        names.join(", ")
    }

    /// Calls with `from <= ts < to`, and rollup hours that start in `[from, to)`: an hour is
    /// counted in exactly one of two adjacent periods, even when a period boundary (a month in
    /// a half-hour time zone) falls inside it.
    fn rows(&self, period: &Period) -> Result<Vec<Row>, String> {
        let from_ns = ns(period.from);
        let to_ns = ns(period.to);
        let mut out = Vec::new();
        for (path, conn) in &self.ledgers {
            let err = |e: rusqlite::Error| LedgerError::sqlite(path, e).to_string();
            let mut stmt = conn.prepare_cached(&calls_query()).map_err(err)?;
            let rows = stmt.query_map([from_ns, to_ns], read_row).map_err(err)?;
            for r in rows {
                out.push(r.map_err(err)?);
            }
            // Rollup hours are unix seconds; an hour starting at `from` or later and before `to`.
            let from_s = period.from.as_second() + i64::from(period.from.subsec_nanosecond() > 0);
            let to_s = period.to.as_second() + i64::from(period.to.subsec_nanosecond() > 0);
            let mut stmt = conn.prepare_cached(&rollups_query()).map_err(err)?;
            let rows = stmt.query_map([from_s, to_s], read_row).map_err(err)?;
            for r in rows {
                out.push(r.map_err(err)?);
            }
        }
        Ok(out)
    }
}

/// `SELECT hour, <keys>, <prices>, <counters>` over calls in `[?1, ?2)` (nanoseconds).
fn calls_query() -> String {
    let keys: Vec<&str> = KEY_COLUMNS.iter().map(|(_, c)| *c).collect();
    let keys = keys.join(", ");
    // Division truncates towards zero: times before 1970 are not a ledger's.
    format!(
        "SELECT (ts_ns / {NS_PER_HOUR}) * 3600, {keys}, {PRICE_COLUMNS},
                count(*), sum({IS_ERROR_SQL}), sum(input_tokens), sum(output_tokens),
                sum(cached_input_tokens), sum(reasoning_tokens),
                sum(usage_source = 'estimated'), sum(cost_pusd)
         FROM calls WHERE ts_ns >= ?1 AND ts_ns < ?2
         GROUP BY 1, {keys}, {PRICE_COLUMNS}"
    )
}

/// The same columns from rollups whose hour (unix seconds) is in `[?1, ?2)`.
fn rollups_query() -> String {
    let keys: Vec<&str> = KEY_COLUMNS.iter().map(|(d, c)| if *d == Dim::Model { "model" } else { c }).collect();
    let keys = keys.join(", ");
    format!(
        "SELECT hour, {keys}, {PRICE_COLUMNS},
                sum(calls), sum(errors), sum(input_tokens), sum(output_tokens),
                sum(cached_input_tokens), sum(reasoning_tokens),
                sum(estimated_calls), sum(cost_pusd)
         FROM rollups WHERE hour >= ?1 AND hour < ?2
         GROUP BY hour, {keys}, {PRICE_COLUMNS}"
    )
}

fn read_row(r: &SqlRow<'_>) -> rusqlite::Result<Row> {
    let hour: i64 = r.get(0)?;
    let mut keys = Keys::default();
    for (i, (dim, _)) in KEY_COLUMNS.iter().enumerate() {
        keys.set(*dim, r.get(1 + i)?);
    }
    let p = 1 + KEY_COLUMNS.len();
    let priced_model: Option<String> = r.get(p)?;
    let prices: [Option<i64>; 4] = [r.get(p + 1)?, r.get(p + 2)?, r.get(p + 3)?, r.get(p + 4)?];
    let table: String = r.get(p + 5)?;
    let priced = match (priced_model, prices) {
        (Some(model), [Some(input), Some(cached_input), Some(output), Some(reasoning)]) => Some(Priced {
            model,
            price: Price {
                input: UnitPrice(input),
                output: UnitPrice(output),
                cached_input: UnitPrice(cached_input),
                reasoning: UnitPrice(reasoning),
            },
            table,
        }),
        _ => None,
    };
    let c = p + 6;
    let count = |i: usize| -> rusqlite::Result<u64> {
        let v: Option<i64> = r.get(c + i)?;
        // Counts are never negative in a ledger this agent wrote; a hand-edited one is clamped
        // rather than wrapped into a huge number.
        Ok(v.unwrap_or(0).max(0) as u64)
    };
    let cost: Option<i64> = r.get(c + 7)?;
    let counters = Counters {
        calls: count(0)?,
        errors: count(1)?,
        input_tokens: count(2)?,
        output_tokens: count(3)?,
        cached_input_tokens: count(4)?,
        reasoning_tokens: count(5)?,
        estimated_calls: count(6)?,
        cost: Pico(i128::from(cost.unwrap_or(0))),
    };
    Ok(Row { hour, keys, priced, counters })
}

fn ledger_id(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare("SELECT value FROM meta WHERE key = 'ledger_id'")?;
    let mut rows = stmt.query([])?;
    match rows.next()? {
        Some(r) => r.get(0),
        None => Ok(None),
    }
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Nanoseconds since the epoch, clamped to what the ledger's INTEGER column holds.
fn ns(t: Timestamp) -> i64 {
    t.as_nanosecond().clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn ts_from_ns(n: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(n)).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
