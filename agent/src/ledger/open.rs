//! Opening the ledger for the writer: a look at the file's header before SQLite touches it, the
//! schema (via [`schema::open_for_write`]), and the `meta` rows set once at creation.
use std::{io::Read, path::Path};

use rusqlite::{Connection, OpenFlags};

use super::schema::{self, LedgerError, APPLICATION_ID};

/// The 100-byte SQLite header: magic, then `user_version` at 60 and `application_id` at 68.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses, from its first bytes alone, a file that is not (or not yet) a tokentap ledger.
/// Opening a foreign SQLite database is not harmless: a WAL-mode one gets its log checkpointed
/// into the file when the last connection closes. An empty file is a ledger to be.
pub fn check_header(path: &Path) -> Result<(), LedgerError> {
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
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).is_ok_and(|m| m.len() > 0)
}

/// Opens the ledger for writing and makes sure its identity rows exist.
pub fn open(path: &Path, host: &str) -> Result<Connection, LedgerError> {
    check_header(path)?;
    let conn = schema::open_for_write(path)?;
    ensure_meta(&conn, host).map_err(|e| LedgerError::sqlite(path, e))?;
    Ok(conn)
}

/// `ledger_id` (random), `host` and `created`, written once when the ledger is new: the id
/// tells ledgers apart when several hosts' files are merged, even after a host is renamed.
fn ensure_meta(conn: &Connection, host: &str) -> rusqlite::Result<()> {
    let has_id: bool = conn.query_row("SELECT count(*) > 0 FROM meta WHERE key = 'ledger_id'", [], |r| r.get(0))?;
    if has_id {
        return Ok(());
    }
    let created = jiff::Timestamp::now().to_string();
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('ledger_id', ?1), ('host', ?2), ('created', ?3)",
        rusqlite::params![random_id(), host, created],
    )?;
    Ok(())
}

/// 128 random bits as hex.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    let from_kernel = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_kernel.is_err() {
        // Never seen on Linux; time and pid still make a collision between hosts unlikely.
        let seed = jiff::Timestamp::now().as_nanosecond() ^ ((std::process::id() as i128) << 64);
        bytes = seed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_meta_once_and_refuses_foreign_files_untouched() {
        let dir = crate::ledger::test_dir("open");
        let path = dir.join("sub/ledger.db");
        let conn = open(&path, "h1").unwrap();
        let id: String = conn.query_row("SELECT value FROM meta WHERE key = 'ledger_id'", [], |r| r.get(0)).unwrap();
        assert_eq!(id.len(), 32);
        drop(conn);
        let conn = open(&path, "h2").unwrap();
        let (id2, host): (String, String) = conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'ledger_id'), (SELECT value FROM meta WHERE key = 'host')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((id2.as_str(), host.as_str()), (id.as_str(), "h1"));

        // Killed before the first checkpoint: the identity is only in the log.
        let fresh = dir.join("fresh.db");
        std::mem::forget(open(&fresh, "h").unwrap());
        let mut raw = [0u8; 72];
        std::io::Read::read_exact(&mut std::fs::File::open(&fresh).unwrap(), &mut raw).unwrap();
        assert_eq!(&raw[68..72], &[0, 0, 0, 0], "the header is still the empty database's");
        open(&fresh, "h").unwrap();

        let text = dir.join("notes.txt");
        std::fs::write(&text, b"hello, not a database at all").unwrap();
        assert!(matches!(open(&text, "h"), Err(LedgerError::Foreign { .. })));
        assert_eq!(std::fs::read(&text).unwrap(), b"hello, not a database at all");

        let other = dir.join("other.db");
        let c = Connection::open(&other).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
        let before = std::fs::read(&other).unwrap();
        let e = open(&other, "h").unwrap_err();
        assert!(matches!(e, LedgerError::Foreign { .. }), "{e}");
        assert_eq!(std::fs::read(&other).unwrap(), before);
        drop(c);
    }
}
