//! The usage ledger: a SQLite file on the host that keeps every metered call (counts, labels,
//! exact prices and cost; never payloads) for reports, invoices and quotas.
pub mod read;
pub mod schema;
