//! Retention by age: calls older than `retention_days` are summed into hourly `rollups` and
//! deleted, in one transaction, so a call is always in exactly one of the two tables (a crash
//! mid-way rolls the whole move back); rollups older than `rollup_retention_days` are deleted.
use rusqlite::{Connection, TransactionBehavior};

use super::schema::{IS_ERROR_SQL, ROLLUP_KEYS};

const NS_PER_HOUR: i64 = 3_600_000_000_000;
const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub days: u32,
    pub rollup_days: u32,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub calls_rolled_up: u64,
    pub rollups_deleted: u64,
}

/// The `calls` expression for each rollup key (`model` is the model the call was answered by,
/// else the one asked for, as reports group it).
fn call_column(key: &str) -> &str {
    if key == "model" {
        "coalesce(response_model, request_model)"
    } else {
        key
    }
}

fn rollup_sql() -> String {
    let keys = ROLLUP_KEYS.join(", ");
    let exprs: Vec<&str> = ROLLUP_KEYS.iter().map(|k| call_column(k)).collect();
    let exprs = exprs.join(", ");
    // Every key is a grouping column; NULLs group together in SQLite, as wanted.
    format!(
        "INSERT INTO rollups (hour, {keys}, calls, errors, input_tokens, output_tokens,
            cached_input_tokens, reasoning_tokens, estimated_calls, cost_pusd)
         SELECT (ts_ns / {NS_PER_HOUR}) * 3600, {exprs}, count(*), sum({IS_ERROR_SQL}),
            sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(reasoning_tokens),
            sum(usage_source = 'estimated'), coalesce(sum(cost_pusd), 0)
         FROM calls WHERE ts_ns < ?1
         GROUP BY ts_ns / {NS_PER_HOUR}, {exprs}"
    )
}

/// One retention pass at `now_ns` (unix ns). Cut-offs fall on whole hours, so an hour's calls
/// are either all rows or all rolled up.
pub fn apply(conn: &mut Connection, now_ns: i64, r: Retention) -> rusqlite::Result<Moved> {
    let hour_floor = |ns: i64| ns.div_euclid(NS_PER_HOUR) * NS_PER_HOUR;
    let calls_before = hour_floor(now_ns.saturating_sub(i64::from(r.days) * NS_PER_DAY));
    let rollups_before_secs = hour_floor(now_ns.saturating_sub(i64::from(r.rollup_days) * NS_PER_DAY)) / 1_000_000_000;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let old: i64 = tx.query_row("SELECT count(*) FROM calls WHERE ts_ns < ?1", [calls_before], |r| r.get(0))?;
    if old > 0 {
        tx.execute(&rollup_sql(), [calls_before])?;
        tx.execute("DELETE FROM calls WHERE ts_ns < ?1", [calls_before])?;
    }
    let deleted = tx.execute("DELETE FROM rollups WHERE hour < ?1", [rollups_before_secs])?;
    tx.commit()?;
    Ok(Moved { calls_rolled_up: old as u64, rollups_deleted: deleted as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{open, schema};

    const SUMS_CALLS: &str = "SELECT count(*), coalesce(sum(input_tokens),0), coalesce(sum(output_tokens),0),
        coalesce(sum(cached_input_tokens),0), coalesce(sum(reasoning_tokens),0), coalesce(sum(cost_pusd),0),
        coalesce(sum(usage_source = 'estimated'),0), coalesce(sum(http_status >= 400 OR error_type IS NOT NULL),0)
        FROM calls";
    const SUMS_ROLLUPS: &str = "SELECT coalesce(sum(calls),0), coalesce(sum(input_tokens),0),
        coalesce(sum(output_tokens),0), coalesce(sum(cached_input_tokens),0), coalesce(sum(reasoning_tokens),0),
        coalesce(sum(cost_pusd),0), coalesce(sum(estimated_calls),0), coalesce(sum(errors),0) FROM rollups";

    fn sums(conn: &Connection, sql: &str) -> [i64; 8] {
        conn.query_row(sql, [], |r| {
            let mut out = [0i64; 8];
            for (i, v) in out.iter_mut().enumerate() {
                *v = r.get(i)?;
            }
            Ok(out)
        })
        .unwrap()
    }

    fn total(conn: &Connection) -> [i64; 8] {
        let (a, b) = (sums(conn, SUMS_CALLS), sums(conn, SUMS_ROLLUPS));
        std::array::from_fn(|i| a[i] + b[i])
    }

    /// Inserts a call `age_h` hours before `now` with the given team, model and status.
    fn call(conn: &Connection, now: i64, age_h: i64, team: &str, model: Option<&str>, status: u16, cost: Option<i64>) {
        let ts = now - age_h * NS_PER_HOUR;
        conn.execute(
            "INSERT INTO calls (ts_ns, host, pid, comm, exe, cgroup_id, provider, operation, server_address,
                server_port, request_model, response_model, input_tokens, output_tokens, cached_input_tokens,
                reasoning_tokens, usage_source, streaming, http_status, duration_ms, tls_library, truncated,
                team, priced_model, price_input, price_cached_input, price_output, price_reasoning, cost_pusd,
                pricing_version)
             VALUES (?1, 'h', 1, 'c', '/e', 1, 'openai', 'chat', 's', 443, 'req', ?2, ?3, ?4, 1, 2,
                CASE WHEN ?5 = 200 THEN 'reported' ELSE 'estimated' END, 0, ?5, 1.0, 'openssl', 0,
                ?6, ?2, 1, 2, 3, 4, ?7, 'v1')",
            rusqlite::params![ts, model, age_h * 10 + 5, age_h + 7, status, team, cost],
        )
        .unwrap();
    }

    #[test]
    fn moves_old_calls_into_rollups_without_changing_sums() {
        let dir = crate::ledger::test_dir("retention");
        let mut conn = open::open(&dir.join("l.db"), "h").unwrap();
        let now = 1_800_000_000 * 1_000_000_000i64 + 1234;
        let day = 24;
        for (age, team, model, status, cost) in [
            (1, "a", Some("m1"), 200, Some(10)),
            (2 * day, "a", Some("m1"), 200, Some(11)),
            (2 * day, "a", Some("m1"), 500, Some(12)),
            (2 * day, "b", None, 200, None),
            (3 * day + 5, "a", Some("m2"), 404, Some(13)),
            (400 * day, "old", Some("m1"), 200, Some(99)),
        ] {
            call(&conn, now, age, team, model, status, cost);
        }
        let before = total(&conn);
        let moved = apply(&mut conn, now, Retention { days: 1, rollup_days: 500 }).unwrap();
        assert_eq!(moved, Moved { calls_rolled_up: 5, rollups_deleted: 0 });
        assert_eq!(total(&conn), before);
        let calls: i64 = conn.query_row("SELECT count(*) FROM calls", [], |r| r.get(0)).unwrap();
        assert_eq!(calls, 1);
        // Same hour, team and model: one rollup row of two calls, one of them an error.
        let (n, errors, model): (i64, i64, Option<String>) = conn
            .query_row("SELECT calls, errors, model FROM rollups WHERE team = 'a' AND calls = 2", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((n, errors, model.as_deref()), (2, 1, Some("m1")));
        let rows: i64 = conn.query_row("SELECT count(*) FROM rollups", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 4);
        let hours_ok: bool = conn.query_row("SELECT min(hour % 3600 = 0) FROM rollups", [], |r| r.get(0)).unwrap();
        assert!(hours_ok);

        // Again: nothing moves twice. Then the 400-day-old rollup expires (and only it).
        assert_eq!(apply(&mut conn, now, Retention { days: 1, rollup_days: 500 }).unwrap(), Moved::default());
        assert_eq!(total(&conn), before);
        let moved = apply(&mut conn, now, Retention { days: 1, rollup_days: 30 }).unwrap();
        assert_eq!(moved.rollups_deleted, 1);
        let after = total(&conn);
        assert_eq!((after[0], after[5]), (before[0] - 1, before[5] - 99));
        drop(conn);
        assert!(schema::open_read_only(&dir.join("l.db")).is_ok());
    }
}
