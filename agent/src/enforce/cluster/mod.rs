//! Cluster-scoped entitlements (`scope = "cluster"`): one budget shared by every node, counted
//! in Redis (docs/enforcement.md, "Cluster scope and Redis sizing").
//!
//! Each node owns one field of a per-(entitlement, window) hash and writes its *absolute*
//! usage there; the cluster total is the sum of the fields. Absolute values make every sync
//! idempotent: a lost reply, a reconnect or a Redis that restarted empty is repaired by the
//! next sync, and no committed usage is lost as long as the nodes live.
//!
//! The agent's event loop never waits on Redis: [`Cluster::publish`] stores the latest values
//! and returns, a background thread syncs them every `sync_interval` (one pipelined round trip
//! for all windows), and [`Cluster::usage`] answers from what the last sync learned.
mod exchange;
mod store;
mod worker;

use std::{
    collections::HashMap,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

pub use exchange::exchange;
pub use store::{window_key, EXPIRY_MARGIN_MS};
use tokio::sync::watch;

pub use crate::config::FailMode;
use crate::config::RedisConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port/db` (also `rediss://`, `unix://`).
    pub url: String,
    pub fail_mode: FailMode,
    /// Prefix of every key (several clusters may share one Redis).
    pub key_prefix: String,
    /// Time between two syncs. Another node's usage is seen here at most two intervals after
    /// it happened (its sync, then ours).
    pub sync_interval: Duration,
    /// This node's field name in the shared hashes: the host name unless configured.
    pub node: String,
    /// Connect, read and write timeout of every Redis operation.
    pub timeout: Duration,
}

pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(500);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

impl ClusterConfig {
    pub fn new(url: &str) -> ClusterConfig {
        ClusterConfig {
            url: url.to_string(),
            fail_mode: FailMode::Open,
            key_prefix: "tokentap:".to_string(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            node: host_name(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// From `[enforcement.redis]` (already validated).
    pub fn from_config(r: &RedisConfig) -> ClusterConfig {
        ClusterConfig {
            fail_mode: r.fail_mode,
            key_prefix: r.key_prefix.clone(),
            sync_interval: Duration::from_millis(r.sync_interval_ms),
            node: r.node.clone().unwrap_or_else(host_name),
            ..ClusterConfig::new(&r.url)
        }
    }

    /// How old the totals may be before Redis counts as down: two intervals (the other node's
    /// sync, then ours), at least one second so that one slow round trip is not an outage.
    pub fn staleness_bound(&self) -> Duration {
        (self.sync_interval * 2).max(Duration::from_secs(1))
    }
}

/// Whether the redis client accepts `url` (the message names it without its password).
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url).map(|_| ()).map_err(|e| format!("{}: {e}", redact(url)))
}

/// The kernel's host name (`/proc/sys/kernel/hostname`), `localhost` if unreadable.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// This node's absolute usage of one cluster entitlement in one window, in the entitlement's
/// integer unit (tokens, requests, pico-USD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub entitlement: String,
    /// Unix seconds: the window's id in the key.
    pub window_start: i64,
    /// Unix seconds: the key expires this long after (plus [`EXPIRY_MARGIN_MS`]).
    pub window_end: i64,
    pub value: u128,
}

/// (entitlement, window start).
pub type WindowId = (String, i64);

/// A cluster entitlement's usage as the engine must count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterUsage {
    /// Local usage plus the other nodes' share, synced within the staleness bound.
    Fresh(u128),
    /// Redis is down past the bound and `fail_mode = "open"`: local usage plus the other
    /// nodes' last known share.
    Stale(u128),
    /// Redis is down past the bound and `fail_mode = "closed"`: treat as exhausted.
    Unavailable,
}

/// Redis health for logs, the status file and metrics (`tokentap.enforcement.redis.*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// The last sync succeeded.
    pub up: bool,
    pub last_success: Option<SystemTime>,
    /// Redis commands sent (script calls, script reloads, pings): `.operations`.
    pub operations: u64,
    /// Syncs or connection attempts that failed, and keys whose reply was unusable: `.failures`.
    pub failures: u64,
    /// Round trips that succeeded.
    pub syncs: u64,
    /// The last error (no URL, no credentials: the redis crate's error text).
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Synced {
    total: u128,
    /// This node's value in that total (what it wrote in the same script call).
    own: u128,
}

#[derive(Default)]
struct State {
    shares: HashMap<WindowId, Share>,
    synced: HashMap<WindowId, Synced>,
    health: Health,
    last_success_at: Option<Instant>,
    /// A window appeared that Redis has not seen: sync now rather than at the next tick.
    urgent: bool,
    stop: bool,
}

struct Shared {
    cfg: ClusterConfig,
    state: Mutex<State>,
    wake: Condvar,
    /// Bumped after every sync attempt: the engine re-evaluates cluster budgets when it moves.
    changes: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in the worker must not take the engine down with a poisoned lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle the engine holds. Dropping it stops the thread (bounded by the timeouts).
pub struct Cluster {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Cluster {
    /// Starts the sync thread. Fails only on a URL the redis crate refuses; an unreachable
    /// Redis is a health state, not an error.
    pub fn start(cfg: ClusterConfig) -> anyhow::Result<Cluster> {
        let store = store::Store::new(&cfg.url, &cfg.node, &cfg.key_prefix, cfg.timeout)
            .map_err(|e| anyhow::anyhow!("enforcement.redis.url {}: {e}", redact(&cfg.url)))?;
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared { cfg, state: Mutex::new(State::default()), wake: Condvar::new(), changes });
        let worker = shared.clone();
        let thread =
            std::thread::Builder::new().name("tokentap-redis".into()).spawn(move || worker::run(&worker, store))?;
        Ok(Cluster { shared, thread: Some(thread) })
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.shared.cfg
    }

    /// Records this node's latest absolute usage per (entitlement, window); never blocks on
    /// Redis. Values replace earlier ones for the same window; windows whose key has expired
    /// are forgotten by the thread.
    pub fn publish(&self, shares: impl IntoIterator<Item = Share>) {
        let mut st = self.shared.lock();
        for share in shares {
            let id = (share.entitlement.clone(), share.window_start);
            if !st.shares.contains_key(&id) {
                st.urgent = true;
            }
            st.shares.insert(id, share);
        }
        if st.urgent {
            self.shared.wake.notify_one();
        }
    }

    /// The cluster totals (all nodes, this one included) as of the last successful sync.
    pub fn totals(&self) -> HashMap<WindowId, u128> {
        self.shared.lock().synced.iter().map(|(k, s)| (k.clone(), s.total)).collect()
    }

    /// The usage the engine must count for a cluster entitlement whose live local usage is
    /// `local`: the other nodes' share comes from the last sync (this node's own share is
    /// taken live, so a node never waits for Redis to see its own calls).
    pub fn usage(&self, entitlement: &str, window_start: i64, local: u128) -> ClusterUsage {
        let st = self.shared.lock();
        let others =
            st.synced.get(&(entitlement.to_string(), window_start)).map_or(0, |s| s.total.saturating_sub(s.own));
        let total = local.saturating_add(others);
        let fresh = st.last_success_at.is_some_and(|t| t.elapsed() <= self.shared.cfg.staleness_bound());
        match (fresh, self.shared.cfg.fail_mode) {
            (true, _) => ClusterUsage::Fresh(total),
            (false, FailMode::Open) => ClusterUsage::Stale(total),
            (false, FailMode::Closed) => ClusterUsage::Unavailable,
        }
    }

    /// The other nodes' usage to add to this node's own, `None` when the entitlement must be
    /// treated as exhausted (Redis down past the staleness bound, `fail_mode = "closed"`).
    pub fn others(&self, entitlement: &str, window_start: i64) -> Option<u128> {
        match self.usage(entitlement, window_start, 0) {
            ClusterUsage::Fresh(o) | ClusterUsage::Stale(o) => Some(o),
            ClusterUsage::Unavailable => None,
        }
    }

    pub fn health(&self) -> Health {
        self.shared.lock().health.clone()
    }

    /// Changes after every sync attempt (success or failure).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_the_client_refuses_are_named_without_password() {
        assert_eq!(check_url("redis://127.0.0.1:6379/0"), Ok(()));
        assert_eq!(check_url("unix:///run/redis.sock"), Ok(()));
        let e = check_url("rediss://:pw@h:6380").unwrap_err();
        assert!(e.starts_with("rediss://***@h:6380: ") && !e.contains("pw"), "{e}");
        assert!(check_url("redis://h:notaport").is_err());
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("redis://:s3cret@10.0.0.1:6379/0"), "redis://***@10.0.0.1:6379/0");
        assert_eq!(redact("redis://u:p@h/1"), "redis://***@h/1");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn staleness_bound_is_two_intervals_and_at_least_a_second() {
        let mut c = ClusterConfig::new("redis://127.0.0.1:1");
        assert_eq!(c.staleness_bound(), Duration::from_secs(1));
        c.sync_interval = Duration::from_millis(800);
        assert_eq!(c.staleness_bound(), Duration::from_millis(1600));
        c.sync_interval = Duration::from_millis(100);
        assert_eq!(c.staleness_bound(), Duration::from_secs(1));
    }

    #[test]
    fn down_before_the_first_sync_follows_the_fail_mode() {
        // Port 1 on loopback: refused at once.
        for (mode, want) in [(FailMode::Open, ClusterUsage::Stale(7)), (FailMode::Closed, ClusterUsage::Unavailable)] {
            let mut cfg = ClusterConfig::new("redis://127.0.0.1:1");
            cfg.fail_mode = mode;
            let cluster = Cluster::start(cfg).unwrap();
            assert_eq!(cluster.usage("e", 0, 7), want);
            assert!(!cluster.health().up);
        }
    }
}
