//! The usage ledger: a SQLite file on the host that keeps every metered call (counts, labels,
//! exact prices and cost; never payloads) for reports, invoices and quotas.
//!
//! The agent writes it from a thread of its own ([`writer::Ledger`]), in batches, so the
//! capture loop never waits on the disk.
pub mod open;
pub mod read;
pub mod retention;
pub mod row;
pub mod schema;
pub mod writer;

/// A fresh, empty directory for one unit test (under the system temp dir, named after the
/// test and the process, so parallel tests and runs do not meet).
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tokentap-ledger-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
