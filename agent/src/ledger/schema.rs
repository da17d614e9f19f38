//! The ledger file: its schema, its identity (application id + schema version), migrations, and
//! the checks that keep tokentap from writing to (or reporting from) a file that is not its own.
//!
//! One row per call in `calls` (the usage record's fields, never payloads, plus the exact unit
//! prices and cost); `rollups` holds hourly sums of calls older than the row retention. A call
//! is in exactly one of the two tables — rows move to rollups in the transaction that deletes
//! them — so a report adds both without counting anything twice.
//!
//! Money is exact: prices are micro-USD per 1M tokens, costs pico-USD (see [`crate::money`]),
//! as INTEGER columns. NULL prices and cost: the model was not in the pricing table.
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

/// `PRAGMA application_id`: "tktp". Any other value means the file is not a tokentap ledger.
pub const APPLICATION_ID: i32 = 0x746b_7470;
/// `PRAGMA user_version`: the schema this build writes. Older versions are migrated in place;
/// a newer one (a downgraded agent) is refused rather than misread.
pub const SCHEMA_VERSION: i32 = 1;

/// The grouping columns of `rollups`: every attribution key a report can group by, as stored
/// in `calls` (`model` is `coalesce(response_model, request_model)` there).
pub const ROLLUP_KEYS: &[&str] = &[
    "host",
    "provider",
    "model",
    "team",
    "cost_center",
    "product",
    "tenant",
    "app",
    "k8s_namespace",
    "k8s_workload",
    "user",
    "systemd_unit",
    "priced_model",
    "price_input",
    "price_cached_input",
    "price_output",
    "price_reasoning",
    "pricing_version",
];

const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE calls (
    id INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    comm TEXT NOT NULL,
    exe TEXT NOT NULL,
    cgroup_id INTEGER NOT NULL,
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    server_address TEXT NOT NULL,
    server_port INTEGER NOT NULL,
    request_model TEXT,
    response_model TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    usage_source TEXT NOT NULL,
    streaming INTEGER NOT NULL,
    http_status INTEGER NOT NULL,
    error_type TEXT,
    duration_ms REAL NOT NULL,
    time_to_first_chunk_ms REAL,
    tls_library TEXT NOT NULL,
    truncated INTEGER NOT NULL,
    uid INTEGER,
    user TEXT,
    container_id TEXT,
    container_runtime TEXT,
    k8s_namespace TEXT,
    k8s_pod TEXT,
    k8s_workload TEXT,
    k8s_workload_kind TEXT,
    k8s_container TEXT,
    k8s_node TEXT,
    systemd_unit TEXT,
    team TEXT NOT NULL,
    cost_center TEXT,
    product TEXT,
    tenant TEXT,
    app TEXT,
    priced_model TEXT,
    price_input INTEGER,
    price_cached_input INTEGER,
    price_output INTEGER,
    price_reasoning INTEGER,
    cost_pusd INTEGER,
    pricing_version TEXT NOT NULL
);
CREATE INDEX calls_ts ON calls (ts_ns);
CREATE TABLE rollups (
    hour INTEGER NOT NULL,
    host TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT,
    team TEXT NOT NULL,
    cost_center TEXT,
    product TEXT,
    tenant TEXT,
    app TEXT,
    k8s_namespace TEXT,
    k8s_workload TEXT,
    user TEXT,
    systemd_unit TEXT,
    priced_model TEXT,
    price_input INTEGER,
    price_cached_input INTEGER,
    price_output INTEGER,
    price_reasoning INTEGER,
    pricing_version TEXT NOT NULL,
    calls INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    estimated_calls INTEGER NOT NULL,
    cost_pusd INTEGER NOT NULL
);
CREATE INDEX rollups_hour ON rollups (hour);
";

/// What a `calls` row counts as an error, in SQL (the same rule as the metrics' `error.type`).
pub const IS_ERROR_SQL: &str = "(error_type IS NOT NULL OR http_status >= 400)";

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("{file}: not a tokentap ledger ({reason}); the file was not changed")]
    Foreign { file: String, reason: String },
    #[error("{file}: ledger schema version {found} is newer than this tokentap understands ({SCHEMA_VERSION}); upgrade tokentap")]
    TooNew { file: String, found: i32 },
    #[error("{file}: {reason}")]
    Sqlite { file: String, reason: String },
    #[error("{file}: no such ledger file")]
    Missing { file: String },
}

impl LedgerError {
    pub fn sqlite(path: &Path, e: impl std::fmt::Display) -> LedgerError {
        LedgerError::Sqlite { file: path.display().to_string(), reason: e.to_string() }
    }
}

/// Opens an existing ledger for reading only: nothing is created or changed, not even on a
/// foreign or corrupt file (which is refused with its name).
pub fn open_read_only(path: &Path) -> Result<Connection, LedgerError> {
    if !path.is_file() {
        return Err(LedgerError::Missing { file: path.display().to_string() });
    }
    // SQLite opening a WAL database read-only creates its `-wal` and `-shm` files when they are
    // absent, and leaves them. No `-wal` file means no writer has the ledger open (a writer's
    // connection keeps it) and every commit is in the main file: that is read as immutable,
    // creating nothing. With a `-wal` (a running agent, or one killed), reads go through it.
    let immutable = !wal_path(path).exists();
    let uri = format!("{}?mode=ro{}", file_uri(path), if immutable { "&immutable=1" } else { "" });
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| LedgerError::sqlite(path, e))?;
    check_identity(&conn, path, false)?;
    Ok(conn)
}

/// `file:` URI of a path, with every byte but unreserved ones and `/` percent-encoded (so `?`,
/// `#` and `%` in a file name stay part of it).
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// Opens (creating it if absent, mode 0600) the ledger for writing: WAL, schema migrated to
/// [`SCHEMA_VERSION`]. A file that exists but is not a tokentap ledger is refused untouched: its
/// header is read before SQLite opens it.
pub fn open_for_write(path: &Path) -> Result<Connection, LedgerError> {
    check_header(path)?;
    let existed = path.exists();
    if !existed {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| LedgerError::sqlite(path, format!("cannot create {}: {e}", dir.display())))?;
        }
        create_private(path)?;
    }
    let conn = Connection::open(path).map_err(|e| LedgerError::sqlite(path, e))?;
    // A non-empty file is checked before anything is written to it.
    let fresh = !existed || std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(false);
    if !fresh {
        check_identity(&conn, path, true)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| LedgerError::sqlite(path, e))?;
    // NORMAL in WAL mode: a crash of the agent loses nothing committed; a power loss at most
    // the last commits, never the file's integrity.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| LedgerError::sqlite(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| LedgerError::sqlite(path, e))?;
    migrate(&conn, path)?;
    Ok(conn)
}

fn create_private(path: &Path) -> Result<(), LedgerError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| LedgerError::sqlite(path, format!("cannot create: {e}")))
}

/// The 100-byte SQLite header: magic, then `user_version` at 60 and `application_id` at 68.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses, from its first bytes alone, a file that is not (or not yet) a tokentap ledger.
/// Opening a foreign SQLite database is not harmless: a WAL-mode one gets its log checkpointed
/// into the file when the last connection closes. An empty file is a ledger to be.
fn check_header(path: &Path) -> Result<(), LedgerError> {
    let foreign = |reason: &str| LedgerError::Foreign { file: path.display().to_string(), reason: reason.into() };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LedgerError::sqlite(path, format!("cannot read: {e}"))),
    };
    let mut header = Vec::with_capacity(100);
    file.by_ref()
        .take(100)
        .read_to_end(&mut header)
        .map_err(|e| LedgerError::sqlite(path, format!("cannot read: {e}")))?;
    if header.is_empty() {
        return Ok(());
    }
    if header.len() < 100 || &header[..16] != MAGIC {
        return Err(foreign("not an SQLite database"));
    }
    let app = i32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    if app == APPLICATION_ID {
        return Ok(());
    }
    // A new ledger's identity is written through the WAL: until the first checkpoint (or after
    // a `kill -9` before it) the file's own header still says 0. Then SQLite reads the header
    // through the log, on a read-only connection, which never checkpoints.
    if app == 0 && header[18] == 2 && has_log(path) {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| LedgerError::sqlite(path, e))?;
        let app: i32 =
            conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(|e| foreign(&e.to_string()))?;
        if app == APPLICATION_ID {
            return Ok(());
        }
        return Err(foreign(&format!("application id {app:#x}, expected {APPLICATION_ID:#x}")));
    }
    Err(foreign(&format!("application id {app:#x}, expected {APPLICATION_ID:#x}")))
}

fn has_log(path: &Path) -> bool {
    std::fs::metadata(wal_path(path)).is_ok_and(|m| m.len() > 0)
}

/// The ledger's write-ahead log, next to it.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Application id and schema version: both tell a ledger from any other file. An empty
/// database (application id 0, no tables) is accepted only for writing (it becomes a ledger).
fn check_identity(conn: &Connection, path: &Path, writing: bool) -> Result<(), LedgerError> {
    let file = path.display().to_string();
    let foreign = |reason: String| LedgerError::Foreign { file: file.clone(), reason };
    // The first read of the header is where a file that is not SQLite at all shows.
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(|e| foreign(e.to_string()))?;
    let version: i32 =
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| foreign(e.to_string()))?;
    if app == 0 && writing {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|e| foreign(e.to_string()))?;
        if tables == 0 {
            return Ok(());
        }
    }
    if app != APPLICATION_ID {
        return Err(foreign(format!("application id {app:#x}, expected {APPLICATION_ID:#x}")));
    }
    if version > SCHEMA_VERSION {
        return Err(LedgerError::TooNew { file, found: version });
    }
    let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| foreign(e.to_string()))?;
    if ok != "ok" {
        return Err(LedgerError::Sqlite { file, reason: format!("the database is corrupt ({ok})") });
    }
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`], one version per transaction.
fn migrate(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let version: i32 =
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| LedgerError::sqlite(path, e))?;
    if version == 0 {
        let sql = format!(
            "BEGIN IMMEDIATE; {SCHEMA_V1} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1; COMMIT;"
        );
        conn.execute_batch(&sql).map_err(|e| LedgerError::sqlite(path, e))?;
    }
    // Later versions: `if version < 2 { ... PRAGMA user_version = 2 ... }`, each in its own
    // transaction, so an interrupted upgrade resumes where it stopped.
    Ok(())
}
