//! One usage record as a `calls` row: the record's own fields (never payloads), plus the host,
//! the record's time in unix nanoseconds, and the exact unit prices and cost it was priced at.
use rusqlite::{params, Statement};

use crate::usage::UsageRecord;

/// Token counts above this are clamped: no real call comes near (it is ~1.1 × 10¹² tokens),
/// and it keeps `sum()` over millions of rows inside SQLite's 64-bit integers (an overflowing
/// sum is an error there, which would make the whole ledger unreportable).
pub const MAX_TOKENS: u64 = 1 << 40;
/// Costs above 10 000 USD for one call are clamped, for the same reason.
pub const MAX_COST_PUSD: i128 = 10_000 * crate::money::PICO_PER_USD;

pub const INSERT_SQL: &str = "INSERT INTO calls (
    ts_ns, host, pid, comm, exe, cgroup_id, provider, operation, server_address, server_port,
    request_model, response_model, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens, usage_source, streaming, http_status, error_type, duration_ms,
    time_to_first_chunk_ms, tls_library, truncated, uid, user, container_id, container_runtime,
    k8s_namespace, k8s_pod, k8s_workload, k8s_workload_kind, k8s_container, k8s_node,
    systemd_unit, team, cost_center, product, tenant, app, priced_model, price_input,
    price_cached_input, price_output, price_reasoning, cost_pusd, pricing_version
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36, ?37, ?38,
    ?39, ?40, ?41, ?42, ?43, ?44, ?45, ?46, ?47)";

/// A record waiting to be written, with the time it stands for.
#[derive(Debug, Clone)]
pub struct Pending {
    pub ts_ns: i64,
    pub record: UsageRecord,
}

impl Pending {
    pub fn new(record: UsageRecord) -> Pending {
        Pending { ts_ns: ts_ns(&record.ts), record }
    }
}

/// The record's RFC 3339 time as unix nanoseconds; a record whose time cannot be read (never
/// seen: the agent formats it) is filed at the moment it is written rather than lost.
pub fn ts_ns(ts: &str) -> i64 {
    let t = ts.parse::<jiff::Timestamp>().unwrap_or_else(|_| jiff::Timestamp::now());
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

fn tokens(n: u64) -> i64 {
    n.min(MAX_TOKENS) as i64
}

/// Binds and runs the prepared [`INSERT_SQL`] for one record.
pub fn insert(stmt: &mut Statement<'_>, host: &str, pricing_version: &str, p: &Pending) -> rusqlite::Result<()> {
    let r = &p.record;
    let cost = r.cost.as_ref();
    let price = cost.map(|c| c.price);
    let cost_pusd = cost.map(|c| c.amount.0.clamp(0, MAX_COST_PUSD) as i64);
    stmt.execute(params![
        p.ts_ns,
        host,
        r.pid,
        r.comm,
        r.exe,
        // cgroup ids are inode numbers, far below 2⁶³; the bit pattern is kept either way.
        r.cgroup_id as i64,
        r.provider,
        r.operation,
        r.server_address,
        r.server_port,
        r.request_model,
        r.response_model,
        tokens(r.input_tokens),
        tokens(r.output_tokens),
        tokens(r.cached_input_tokens),
        tokens(r.reasoning_tokens),
        r.usage_source,
        r.streaming,
        r.http_status,
        r.error_type,
        r.duration_ms,
        r.time_to_first_chunk_ms,
        r.tls_library,
        r.truncated,
        r.uid,
        r.user,
        r.container_id,
        r.container_runtime,
        r.k8s_namespace,
        r.k8s_pod,
        r.k8s_workload,
        r.k8s_workload_kind,
        r.k8s_container,
        r.k8s_node,
        r.systemd_unit,
        r.team,
        r.cost_center,
        r.product,
        r.tenant,
        r.app,
        cost.map(|c| c.model.as_str()),
        price.map(|p| p.input.0),
        price.map(|p| p.cached_input.0),
        price.map(|p| p.output.0),
        price.map(|p| p.reasoning.0),
        cost_pusd,
        pricing_version,
    ])
    .map(drop)
}
