//! Test ledgers: real SQLite files made with the schema's own `open_for_write`, filled with
//! INSERTs of calls and rollups whose sums the tests know.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::{params, Connection};

use crate::ledger::schema;
use crate::money::UnitPrice;
use crate::pricing::{Price, Tokens};

/// A fresh directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tokentap-report-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 2.50 / 10.00 USD per 1M (cached 1.25, reasoning = output).
pub fn price() -> Price {
    Price {
        input: UnitPrice(2_500_000),
        output: UnitPrice(10_000_000),
        cached_input: UnitPrice(1_250_000),
        reasoning: UnitPrice(10_000_000),
    }
}

/// One call's fields that reports look at.
#[derive(Clone)]
pub struct Call {
    pub ts: &'static str,
    pub team: &'static str,
    pub cost_center: Option<&'static str>,
    pub model: &'static str,
    pub provider: &'static str,
    pub tokens: Tokens,
    pub http_status: i64,
    pub estimated: bool,
    /// `None`: unpriced.
    pub price: Option<Price>,
    pub unit: Option<&'static str>,
}

impl Call {
    pub fn new(ts: &'static str, team: &'static str, model: &'static str, input: u64, output: u64) -> Call {
        Call {
            ts,
            team,
            cost_center: None,
            model,
            provider: "openai",
            tokens: Tokens { input, output, cached_input: 0, reasoning: 0 },
            http_status: 200,
            estimated: false,
            price: Some(price()),
            unit: None,
        }
    }

    pub fn cost_pusd(&self) -> Option<i64> {
        self.price.map(|p| p.cost(self.tokens).0 as i64)
    }
}

pub fn ledger(path: &Path, id: &str, calls: &[Call]) -> Connection {
    let conn = schema::open_for_write(path).unwrap();
    conn.execute("INSERT INTO meta (key, value) VALUES ('ledger_id', ?1)", [id]).unwrap();
    for c in calls {
        insert(&conn, c);
    }
    conn
}

pub fn insert(conn: &Connection, c: &Call) {
    let ts: jiff::Timestamp = c.ts.parse().unwrap();
    let p = c.price;
    conn.execute(
        "INSERT INTO calls (ts_ns, host, pid, comm, exe, cgroup_id, provider, operation, server_address,
            server_port, request_model, response_model, input_tokens, output_tokens, cached_input_tokens,
            reasoning_tokens, usage_source, streaming, http_status, error_type, duration_ms, tls_library,
            truncated, team, cost_center, systemd_unit, priced_model, price_input, price_cached_input,
            price_output, price_reasoning, cost_pusd, pricing_version)
         VALUES (?1, 'host1', 42, 'python3', '/usr/bin/python3', 1, ?2, 'chat', 'api.example', 443,
            ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, 12.5, 'openssl', 0, ?12, ?13, ?14, ?15, ?16, ?17,
            ?18, ?19, ?20, '2026-11-01')",
        params![
            ts.as_nanosecond() as i64,
            c.provider,
            c.model,
            // A snapshot name from the response wins over the request's alias.
            format!("{}-snap", c.model),
            c.tokens.input as i64,
            c.tokens.output as i64,
            c.tokens.cached_input as i64,
            c.tokens.reasoning as i64,
            if c.estimated { "estimated" } else { "reported" },
            c.http_status,
            (c.http_status >= 400).then_some("rate_limit"),
            c.team,
            c.cost_center,
            c.unit,
            p.map(|_| c.model),
            p.map(|p| p.input.0),
            p.map(|p| p.cached_input.0),
            p.map(|p| p.output.0),
            p.map(|p| p.reasoning.0),
            c.cost_pusd(),
        ],
    )
    .unwrap();
}

/// A rollup row (hour in unix seconds) with these sums: `[calls, input, output, cost_pusd]`.
pub fn insert_rollup(conn: &Connection, hour: i64, team: &str, model: &str, sums: [i64; 4]) {
    let [calls, input, output, cost] = sums;
    let p = price();
    conn.execute(
        "INSERT INTO rollups (hour, host, provider, model, team, priced_model, price_input, price_cached_input,
            price_output, price_reasoning, pricing_version, calls, errors, input_tokens, output_tokens,
            cached_input_tokens, reasoning_tokens, estimated_calls, cost_pusd)
         VALUES (?1, 'host1', 'openai', ?2, ?3, ?4, ?5, ?6, ?7, ?8, '2026-11-01', ?9, 0, ?10, ?11, 0, 0, 0, ?12)",
        params![
            hour,
            model,
            team,
            model,
            p.input.0,
            p.cached_input.0,
            p.output.0,
            p.reasoning.0,
            calls,
            input,
            output,
            cost
        ],
    )
    .unwrap();
}
