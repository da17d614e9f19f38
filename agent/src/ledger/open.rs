//! Opening the ledger for the writer: the file and schema (via [`schema::open_for_write`], which
//! refuses a foreign file untouched) and the `meta` rows set once at creation.
use std::{io::Read, path::Path};

use rusqlite::Connection;

use super::schema::{self, LedgerError};

/// Opens the ledger for writing and makes sure its identity rows exist.
pub fn open(path: &Path, host: &str) -> Result<Connection, LedgerError> {
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
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
        let before = std::fs::read(&other).unwrap();
        let e = open(&other, "h").unwrap_err();
        assert!(matches!(e, LedgerError::Foreign { .. }), "{e}");
        assert_eq!(std::fs::read(&other).unwrap(), before);
        drop(c);
    }
}
