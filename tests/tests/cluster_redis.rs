//! `enforce::cluster` against a real Redis (Debian `redis-server`, started here): the shared
//! counters of `scope = "cluster"` entitlements. No root needed.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokentap::enforce::cluster::{window_key, Cluster, ClusterConfig, ClusterUsage, FailMode, Share, EXPIRY_MARGIN_MS};
use tokentap_tests::{env, redis::RedisServer};

const WAIT: Duration = Duration::from_secs(10);

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The current 1-hour window (start, end).
fn window() -> (i64, i64) {
    let start = now_unix() / 3600 * 3600;
    (start, start + 3600)
}

fn node(redis: &RedisServer, name: &str, prefix: &str, mode: FailMode, interval_ms: u64) -> Cluster {
    let mut cfg = ClusterConfig::new(&redis.url());
    cfg.node = name.to_string();
    cfg.key_prefix = prefix.to_string();
    cfg.fail_mode = mode;
    cfg.sync_interval = Duration::from_millis(interval_ms);
    Cluster::start(cfg).expect("start cluster sync")
}

fn share(entitlement: &str, (start, end): (i64, i64), value: u128) -> Share {
    Share { entitlement: entitlement.to_string(), window_start: start, window_end: end, value }
}

/// A key prefix of its own per test: the tests of this file may share nothing.
fn prefix() -> String {
    format!("tt-{}:", env::random_hex(4))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

#[test]
fn two_nodes_see_the_sum_and_the_key_expires_after_its_window() {
    let dir = env::temp_subdir("cluster-sum");
    let redis = RedisServer::start(&dir);
    let p = prefix();
    let a = node(&redis, "node-a", &p, FailMode::Closed, 100);
    let b = node(&redis, "node-b", &p, FailMode::Closed, 100);
    let w = window();
    a.publish([share("blue", w, 30)]);
    b.publish([share("blue", w, 12)]);
    wait_for("both nodes to see 42", || {
        a.usage("blue", w.0, 30) == ClusterUsage::Fresh(42) && b.usage("blue", w.0, 12) == ClusterUsage::Fresh(42)
    });
    assert_eq!(a.totals().get(&("blue".to_string(), w.0)), Some(&42));
    // Live local usage counts at once; the other node's share comes from the last sync.
    assert_eq!(a.usage("blue", w.0, 35), ClusterUsage::Fresh(47));

    let key = window_key(&p, "blue", w.0);
    let mut fields = redis.hgetall(&key);
    fields.sort();
    assert_eq!(fields, [("node-a".into(), "30".into()), ("node-b".into(), "12".into())]);
    let expires_in = redis.pttl(&key);
    let want =
        (w.1 * 1000 + EXPIRY_MARGIN_MS) - SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((expires_in - want).abs() < 5_000, "PTTL {expires_in} ms, want about {want} ms");

    // A window that has just ended expires within the margin.
    let old = (now_unix() - 61, now_unix() - 1);
    a.publish([share("blue", old, 5)]);
    let old_key = window_key(&p, "blue", old.0);
    wait_for("the old window's key", || redis.pttl(&old_key) > 0);
    assert!(redis.pttl(&old_key) <= EXPIRY_MARGIN_MS);

    let h = a.health();
    assert!(h.up && h.operations > 0 && h.syncs > 0 && h.last_success.is_some(), "{h:?}");
    assert_eq!(h.failures, 0, "{h:?}");
}

#[test]
fn values_beyond_doubles_and_u64_sum_exactly() {
    let dir = env::temp_subdir("cluster-big");
    let redis = RedisServer::start(&dir);
    let p = prefix();
    let a = node(&redis, "a", &p, FailMode::Open, 100);
    let b = node(&redis, "b", &p, FailMode::Open, 100);
    let w = window();
    // Pico-USD: 2^53 + 1 (no Lua double holds it) and a value past u64.
    let (va, vb) = ((1u128 << 53) + 1, (1u128 << 66) + 3);
    a.publish([share("spend", w, va)]);
    b.publish([share("spend", w, vb)]);
    wait_for("the exact sum", || a.usage("spend", w.0, va) == ClusterUsage::Fresh(va + vb));
}

#[test]
fn a_restarted_empty_redis_gets_every_share_back() {
    let dir = env::temp_subdir("cluster-restart");
    let mut redis = RedisServer::start(&dir);
    let p = prefix();
    let a = node(&redis, "a", &p, FailMode::Closed, 200);
    let b = node(&redis, "b", &p, FailMode::Closed, 200);
    let w = window();
    a.publish([share("team", w, 1000)]);
    b.publish([share("team", w, 234)]);
    wait_for("the sum", || a.usage("team", w.0, 1000) == ClusterUsage::Fresh(1234));

    let key = window_key(&p, "team", w.0);
    redis.restart();
    assert!(redis.hgetall(&key).is_empty(), "a restart without persistence must start empty");
    let took = wait_for("both shares rewritten", || redis.hgetall(&key).len() == 2);
    let mut fields = redis.hgetall(&key);
    fields.sort();
    assert_eq!(fields, [("a".into(), "1000".into()), ("b".into(), "234".into())]);
    wait_for("fresh totals again", || {
        a.usage("team", w.0, 1000) == ClusterUsage::Fresh(1234)
            && b.usage("team", w.0, 234) == ClusterUsage::Fresh(1234)
    });
    eprintln!("shares back {took:?} after the restart");
    // The new server had never seen the script: EVALSHA failed, EVAL ran it.
    assert!(redis.command_calls("eval") > 0, "{}", redis.cli(&["INFO", "commandstats"]));
}

#[test]
fn redis_down_follows_the_fail_mode_and_recovers() {
    let dir = env::temp_subdir("cluster-down");
    let mut redis = RedisServer::start(&dir);
    let p = prefix();
    let open = node(&redis, "open", &p, FailMode::Open, 100);
    let closed = node(&redis, "closed", &p, FailMode::Closed, 100);
    let w = window();
    open.publish([share("e", w, 10)]);
    closed.publish([share("e", w, 5)]);
    wait_for("the sum", || {
        open.usage("e", w.0, 10) == ClusterUsage::Fresh(15) && closed.usage("e", w.0, 5) == ClusterUsage::Fresh(15)
    });

    redis.stop();
    let stopped = Instant::now();
    wait_for("both nodes to see Redis down", || !open.health().up && !closed.health().up);
    let bound = closed.config().staleness_bound();
    // Within the bound the last totals still count as fresh; past it, the fail mode rules.
    let took = wait_for("closed mode to refuse", || closed.usage("e", w.0, 5) == ClusterUsage::Unavailable);
    assert!(stopped.elapsed() >= bound.saturating_sub(Duration::from_millis(300)), "unavailable after {took:?}");
    assert!(took <= bound + Duration::from_millis(500), "closed mode took {took:?} (bound {bound:?})");
    // Open: local usage plus the other node's last known share.
    assert_eq!(open.usage("e", w.0, 11), ClusterUsage::Stale(16));
    let h = closed.health();
    assert!(!h.up && h.failures > 0 && h.last_error.is_some(), "{h:?}");
    let failures = h.failures;
    std::thread::sleep(Duration::from_millis(1500));
    assert!(closed.health().failures > failures, "reconnects go on while Redis is down");
    assert_eq!(closed.usage("e", w.0, 5), ClusterUsage::Unavailable);

    redis.restart();
    let took = wait_for("both nodes fresh again", || {
        open.usage("e", w.0, 10) == ClusterUsage::Fresh(15) && closed.usage("e", w.0, 5) == ClusterUsage::Fresh(15)
    });
    // Reconnect backoff is capped at 1 s.
    assert!(took < Duration::from_secs(3), "recovery took {took:?}");
    assert!(closed.health().up);
}

#[test]
fn another_nodes_usage_is_seen_within_the_staleness_bound() {
    let dir = env::temp_subdir("cluster-stale");
    let redis = RedisServer::start(&dir);
    let p = prefix();
    // The default interval (500 ms): the bound is two of them, 1 s.
    let a = node(&redis, "a", &p, FailMode::Closed, 500);
    let b = node(&redis, "b", &p, FailMode::Closed, 500);
    let bound = a.config().staleness_bound();
    assert_eq!(bound, Duration::from_secs(1));
    let w = window();
    a.publish([share("s", w, 1)]);
    b.publish([share("s", w, 1)]);
    wait_for("first sync", || b.usage("s", w.0, 1) == ClusterUsage::Fresh(2));
    let mut worst = Duration::ZERO;
    for v in 2..=6u128 {
        // Publish at a random phase of both threads' cycles.
        std::thread::sleep(Duration::from_millis(137 * v as u64 % 500));
        a.publish([share("s", w, v)]);
        let seen = wait_for("b to see a's new value", || b.usage("s", w.0, 1) == ClusterUsage::Fresh(v + 1));
        worst = worst.max(seen);
    }
    eprintln!("worst staleness {worst:?} (bound {bound:?})");
    assert!(worst <= bound + Duration::from_millis(500), "b saw a's usage {worst:?} late (bound {bound:?})");
}

#[test]
fn many_updates_are_batched_into_one_script_call_per_window_and_interval() {
    let dir = env::temp_subdir("cluster-batch");
    let redis = RedisServer::start(&dir);
    let p = prefix();
    let a = node(&redis, "a", &p, FailMode::Open, 500);
    let w = window();
    let entitlements = ["e1", "e2", "e3", "e4"];
    a.publish(entitlements.iter().map(|e| share(e, w, 0)));
    wait_for("first sync", || a.totals().len() == entitlements.len());
    let before = redis.command_calls("evalsha") + redis.command_calls("eval");
    let t0 = Instant::now();
    let mut calls = 0u128;
    // 100 calls per second for 3 s, each one an update of every entitlement.
    while t0.elapsed() < Duration::from_secs(3) {
        calls += 1;
        a.publish(entitlements.iter().map(|e| share(e, w, calls)));
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = t0.elapsed();
    let scripts = redis.command_calls("evalsha") + redis.command_calls("eval") - before;
    let syncs = elapsed.as_millis() as u64 / 500 + 2;
    eprintln!("{calls} calls x {} entitlements in {elapsed:?}: {scripts} script calls", entitlements.len());
    assert!(scripts <= syncs * entitlements.len() as u64, "{scripts} script calls for {calls} updates");
    assert!(scripts >= entitlements.len() as u64 * 4, "too few syncs: {scripts}");
    wait_for("the last value", || a.totals().get(&("e1".to_string(), w.0)) == Some(&calls));
}

#[test]
fn a_url_that_is_not_redis_is_refused_and_an_unreachable_one_is_a_health_state() {
    let cfg = ClusterConfig::new("http://127.0.0.1:1/");
    assert!(Cluster::start(cfg).is_err());
    let mut cfg = ClusterConfig::new("redis://:secretpw@127.0.0.1:1/");
    cfg.fail_mode = FailMode::Closed;
    let c = Cluster::start(cfg).unwrap();
    wait_for("a failure", || c.health().failures > 0);
    let h = c.health();
    assert!(!h.up);
    assert!(!format!("{h:?}").contains("secretpw"), "credentials in health: {h:?}");
}
