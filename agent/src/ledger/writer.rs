//! The ledger writer: a thread of its own that receives usage records over a channel and
//! commits them in batches, one transaction at most a second after a batch's first record, so a
//! `kill -9` loses at most that second and the capture loop never waits on the disk.
//!
//! While the ledger cannot be written (unwritable path, foreign or corrupt file, full disk)
//! records wait in memory, up to `max_pending_records`, and are committed once writing works
//! again; the problem is logged once per episode and shown by [`LedgerHealth`]. Metering and
//! export do not depend on any of this.
use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rusqlite::{Connection, ErrorCode};

use super::{
    open,
    retention::{self, Retention},
    row::{self, Pending},
};
use crate::{config::LedgerConfig, usage::UsageRecord};

/// The longest a record waits before its batch is committed.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A batch this large is committed at once (a burst need not wait out the second).
const BATCH_MAX: usize = 5_000;
/// Between attempts to open a ledger that could not be opened.
const REOPEN_EVERY: Duration = Duration::from_secs(5);
/// Between retention passes (one also runs right after the ledger is opened).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Counters the health metrics read; written by the writer thread only.
#[derive(Debug, Default)]
pub struct LedgerHealth {
    /// The last attempt to open or commit succeeded.
    pub healthy: AtomicBool,
    pub records_written: AtomicU64,
    /// Records that never reached the ledger: the pending queue was full.
    pub records_dropped: AtomicU64,
    /// Failed attempts to open the ledger or commit a batch.
    pub commits_failed: AtomicU64,
    pub records_pending: AtomicU64,
}

/// The health counters at one moment, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LedgerHealthSnapshot {
    pub healthy: bool,
    pub records_written: u64,
    pub records_dropped: u64,
    pub commits_failed: u64,
    pub records_pending: u64,
}

impl LedgerHealth {
    pub fn snapshot(&self) -> LedgerHealthSnapshot {
        LedgerHealthSnapshot {
            healthy: self.healthy.load(Ordering::Relaxed),
            records_written: self.records_written.load(Ordering::Relaxed),
            records_dropped: self.records_dropped.load(Ordering::Relaxed),
            commits_failed: self.commits_failed.load(Ordering::Relaxed),
            records_pending: self.records_pending.load(Ordering::Relaxed),
        }
    }
}

/// What the writer needs besides the records.
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: PathBuf,
    pub host: String,
    pub pricing_version: String,
    pub retention: Retention,
    pub max_pending: usize,
}

impl Settings {
    pub fn new(config: &LedgerConfig, host: &str, pricing_version: &str) -> Settings {
        Settings {
            path: config.path.clone(),
            host: host.to_string(),
            pricing_version: pricing_version.to_string(),
            retention: Retention { days: config.retention_days, rollup_days: config.rollup_retention_days },
            max_pending: config.max_pending_records,
        }
    }
}

enum Msg {
    Record(Box<UsageRecord>),
    Stop,
}

/// The agent's handle on the writer thread.
pub struct Ledger {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    pub health: Arc<LedgerHealth>,
    pub path: PathBuf,
}

impl Ledger {
    pub fn start(settings: Settings) -> std::io::Result<Ledger> {
        let (tx, rx) = mpsc::channel();
        let health = Arc::new(LedgerHealth::default());
        let path = settings.path.clone();
        let mut writer = Writer::new(settings, health.clone());
        let thread = std::thread::Builder::new().name("tokentap-ledger".into()).spawn(move || writer.run(rx))?;
        Ok(Ledger { tx, thread: Some(thread), health, path })
    }

    /// Hands a record to the writer; never blocks.
    pub fn record(&self, record: UsageRecord) {
        // The writer outlives every sender but on a panic; then the record is counted lost.
        if self.tx.send(Msg::Record(Box::new(record))).is_err() {
            self.health.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Commits what is pending (if the ledger can be written) and stops the writer.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    s: Settings,
    health: Arc<LedgerHealth>,
    conn: Option<Connection>,
    pending: VecDeque<Pending>,
    /// When the pending batch is due; `None` while nothing is pending.
    due: Option<Instant>,
    next_open: Instant,
    next_retention: Instant,
    /// The problem being reported, if any: logged when it starts or changes, not per record.
    problem: Option<String>,
    /// Drops already reported in the current episode.
    dropped_reported: bool,
}

impl Writer {
    fn new(s: Settings, health: Arc<LedgerHealth>) -> Writer {
        let now = Instant::now();
        Writer {
            s,
            health,
            conn: None,
            pending: VecDeque::new(),
            due: None,
            next_open: now,
            next_retention: now,
            problem: None,
            dropped_reported: false,
        }
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        self.ensure_open();
        loop {
            let wait = match self.due {
                Some(due) => due.saturating_duration_since(Instant::now()),
                None => FLUSH_EVERY,
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Record(r)) => {
                    self.push(*r);
                    // Whatever else is queued joins this batch.
                    loop {
                        match rx.try_recv() {
                            Ok(Msg::Record(r)) => self.push(*r),
                            Ok(Msg::Stop) => return self.stop(),
                            Err(_) => break,
                        }
                    }
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return self.stop(),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if self.due.is_some_and(|d| now >= d) || self.pending.len() >= BATCH_MAX {
                self.flush();
            }
            if now >= self.next_retention && self.conn.is_some() {
                self.retain();
            }
        }
    }

    fn stop(&mut self) {
        if !self.pending.is_empty() {
            // One last try even if a retry is not due yet.
            self.next_open = Instant::now();
            self.flush();
        }
        let left = self.pending.len() as u64;
        if left > 0 {
            self.health.records_dropped.fetch_add(left, Ordering::Relaxed);
            tracing::error!(records = left, path = %self.s.path.display(), "ledger: records not written at shutdown");
        }
    }

    fn push(&mut self, record: UsageRecord) {
        if self.pending.len() >= self.s.max_pending {
            self.health.records_dropped.fetch_add(1, Ordering::Relaxed);
            if !self.dropped_reported {
                self.dropped_reported = true;
                tracing::error!(
                    max_pending_records = self.s.max_pending,
                    path = %self.s.path.display(),
                    "ledger: pending records full, new records are dropped from the ledger until it can be written"
                );
            }
            return;
        }
        self.pending.push_back(Pending::new(record));
        self.due.get_or_insert_with(|| Instant::now() + FLUSH_EVERY);
        self.health.records_pending.store(self.pending.len() as u64, Ordering::Relaxed);
    }

    /// Opens the ledger if it is not open and an attempt is due; true when it is open.
    fn ensure_open(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        if Instant::now() < self.next_open {
            return false;
        }
        match open::open(&self.s.path, &self.s.host) {
            Ok(conn) => {
                self.conn = Some(conn);
                self.next_retention = Instant::now();
                self.health.healthy.store(true, Ordering::Relaxed);
                match self.problem.take() {
                    Some(_) => tracing::info!(path = %self.s.path.display(), "ledger: open again"),
                    None => tracing::info!(path = %self.s.path.display(), "ledger: open"),
                }
                true
            }
            Err(e) => {
                self.next_open = Instant::now() + REOPEN_EVERY;
                self.failed(format!("ledger cannot be opened, records wait in memory: {e}"));
                false
            }
        }
    }

    /// Commits every pending record in one transaction; on failure they stay pending.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            self.due = None;
            return;
        }
        if !self.ensure_open() {
            self.due = Some(self.next_open.max(Instant::now() + FLUSH_EVERY));
            return;
        }
        let Some(conn) = self.conn.as_mut() else { return };
        let started = Instant::now();
        match commit(conn, &self.s, &self.pending) {
            Ok(()) => {
                let n = self.pending.len() as u64;
                tracing::debug!(records = n, ms = started.elapsed().as_millis() as u64, "ledger: committed");
                self.pending.clear();
                self.due = None;
                self.health.records_written.fetch_add(n, Ordering::Relaxed);
                self.health.records_pending.store(0, Ordering::Relaxed);
                self.recovered(n);
            }
            Err(e) => {
                // A full disk leaves the connection sound; anything else may mean the file
                // changed under us, so it is opened (and checked) afresh.
                if e.sqlite_error_code() != Some(ErrorCode::DiskFull) {
                    self.conn = None;
                    self.next_open = Instant::now() + FLUSH_EVERY;
                }
                self.due = Some(Instant::now() + FLUSH_EVERY);
                self.failed(format!("ledger commit failed, records wait in memory: {}: {e}", self.s.path.display()));
            }
        }
    }

    fn retain(&mut self) {
        self.next_retention = Instant::now() + RETENTION_EVERY;
        let Some(conn) = self.conn.as_mut() else { return };
        let now_ns = i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX);
        match retention::apply(conn, now_ns, self.s.retention) {
            Ok(m) if m.calls_rolled_up > 0 || m.rollups_deleted > 0 => tracing::info!(
                calls_rolled_up = m.calls_rolled_up,
                rollups_deleted = m.rollups_deleted,
                "ledger: retention applied"
            ),
            Ok(_) => {}
            // Retried at the next pass; the rows stay where they are meanwhile.
            Err(e) => tracing::warn!(path = %self.s.path.display(), "ledger: retention failed: {e}"),
        }
    }

    fn failed(&mut self, message: String) {
        self.health.healthy.store(false, Ordering::Relaxed);
        self.health.commits_failed.fetch_add(1, Ordering::Relaxed);
        if self.problem.as_deref() != Some(message.as_str()) {
            tracing::error!(pending = self.pending.len(), "{message}");
            self.problem = Some(message);
        }
    }

    fn recovered(&mut self, committed: u64) {
        self.health.healthy.store(true, Ordering::Relaxed);
        if self.problem.take().is_some() || self.dropped_reported {
            tracing::info!(committed, path = %self.s.path.display(), "ledger: writing again, pending records committed");
        }
        self.dropped_reported = false;
    }
}

fn commit(conn: &mut Connection, s: &Settings, pending: &VecDeque<Pending>) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(row::INSERT_SQL)?;
        for p in pending {
            row::insert(&mut stmt, &s.host, &s.pricing_version, p)?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        money::{Pico, UnitPrice},
        pricing::{Cost, Price},
    };

    fn record(i: u64) -> UsageRecord {
        let price = Price {
            input: UnitPrice(2_500_000),
            output: UnitPrice(10_000_000),
            cached_input: UnitPrice(1_250_000),
            reasoning: UnitPrice(10_000_000),
        };
        UsageRecord {
            ts: format!("2026-11-28T10:00:{:02}.5Z", i % 60),
            input_tokens: 100 + i,
            cost_center: Some("cc-1".into()),
            cost_usd: Some(0.0),
            cost: Some(Cost { amount: Pico(250_000_000 + 1), usd: 0.0, model: "gpt-4o".into(), price }),
            ..UsageRecord::sample()
        }
    }

    fn settings(path: PathBuf, max_pending: usize) -> Settings {
        Settings {
            path,
            host: "host-1".into(),
            pricing_version: "2026-11-01".into(),
            retention: Retention { days: 90, rollup_days: 800 },
            max_pending,
        }
    }

    #[test]
    fn commits_every_record_and_the_last_batch_at_shutdown() {
        let dir = crate::ledger::test_dir("writer");
        let path = dir.join("ledger.db");
        let ledger = Ledger::start(settings(path.clone(), 100)).unwrap();
        for i in 0..10 {
            ledger.record(record(i));
        }
        let health = ledger.health.clone();
        ledger.shutdown();
        assert_eq!(health.records_written.load(Ordering::Relaxed), 10);
        assert!(health.healthy.load(Ordering::Relaxed));
        let conn = crate::ledger::schema::open_read_only(&path).unwrap();
        let (n, input, cost, price, ts, host, version): (i64, i64, i64, i64, i64, String, String) = conn
            .query_row(
                "SELECT count(*), sum(input_tokens), sum(cost_pusd), max(price_input), min(ts_ns), min(host),
                    min(pricing_version) FROM calls",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .unwrap();
        assert_eq!((n, input, cost, price), (10, 1045, 10 * 250_000_001, 2_500_000));
        assert_eq!(ts, "2026-11-28T10:00:00.5Z".parse::<jiff::Timestamp>().unwrap().as_nanosecond() as i64);
        assert_eq!((host.as_str(), version.as_str()), ("host-1", "2026-11-01"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_foreign_file_is_left_alone_and_records_wait_bounded() {
        let dir = crate::ledger::test_dir("writer-foreign");
        let path = dir.join("ledger.db");
        std::fs::write(&path, b"not a ledger").unwrap();
        let ledger = Ledger::start(settings(path.clone(), 3)).unwrap();
        for i in 0..5 {
            ledger.record(record(i));
        }
        let health = ledger.health.clone();
        ledger.shutdown();
        assert!(!health.healthy.load(Ordering::Relaxed));
        assert!(health.commits_failed.load(Ordering::Relaxed) >= 1);
        // Two over the bound, then the three pending ones at shutdown.
        assert_eq!(health.records_dropped.load(Ordering::Relaxed), 5);
        assert_eq!(health.records_written.load(Ordering::Relaxed), 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"not a ledger");
    }
}
