//! `scope = "cluster"` end to end: two real agents (standing for two hosts, each with its own
//! policy matching only its own cgroup subtree and its own upstream) share one real Redis and
//! enforce one joint budget. Redis stopped: each follows its `fail_mode`; Redis restarted empty:
//! every node's committed usage is back. The upstreams' logs are the ground truth.
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokentap_tests::{
    env,
    quota::{total_tokens, Calls, QuotaWorld},
    redis::RedisServer,
    require_bpf,
};

const WAIT: Duration = Duration::from_secs(20);

/// One test at a time: each starts two agents, and four agents plus their clients on two cores
/// make the agents lag (what they count must match the upstreams exactly).
static SERIAL: Mutex<()> = Mutex::new(());

/// Each node's policy: the same cluster entitlement (same name, so the same Redis key), each
/// matching its own team only.
fn policy(name: &str, limit: u64) -> impl Fn(&str) -> String + '_ {
    move |tag: &str| {
        format!(
            "[[entitlement]]\nname = \"{name}\"\nscope = \"cluster\"\nmatch = {{ team = \"q-{tag}-blue\" }}\n\
             limit = {{ total_tokens = {limit} }}\nwindow = \"1d\"\naction = \"deny\"\n"
        )
    }
}

/// Appended to `[enforcement]`: every request held for approval, so that each decision sees
/// the budget as it is; a short sync interval.
fn config(redis: &RedisServer, prefix: &str, node: &str, fail_mode: &str) -> String {
    format!(
        "hold_at = 0.001\n\n[enforcement.redis]\nurl = \"{}\"\nnode = \"{node}\"\nfail_mode = \"{fail_mode}\"\n\
         key_prefix = \"{prefix}\"\nsync_interval_ms = 200\n",
        redis.url()
    )
}

fn used(w: &QuotaWorld) -> u64 {
    w.upstream("blue").iter().map(total_tokens).sum()
}

fn status(w: &QuotaWorld, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    eprintln!("waiting for {what}");
    w.status_until(name, &pred, WAIT)
}

/// The Redis hash of the entitlement's current window, as (node, value).
fn shares(redis: &RedisServer, prefix: &str, name: &str) -> Vec<(String, u64)> {
    let keys = redis.cli(&["KEYS", &format!("{prefix}{name}:*")]);
    let key = keys.lines().next().unwrap_or_default().to_string();
    let mut v: Vec<(String, u64)> =
        redis.hgetall(&key).into_iter().map(|(n, x)| (n, x.parse().expect("an integer share"))).collect();
    v.sort();
    v
}

fn wait_shares(redis: &RedisServer, prefix: &str, name: &str, want: &[(&str, u64)]) {
    let want: Vec<(String, u64)> = want.iter().map(|(n, x)| (n.to_string(), *x)).collect();
    let t0 = std::time::Instant::now();
    loop {
        let got = shares(redis, prefix, name);
        if got == want {
            return;
        }
        assert!(t0.elapsed() < WAIT, "Redis shares {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_agents_enforce_one_joint_budget() {
    if !require_bpf() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = env::temp_subdir("cluster-joint");
    let redis = RedisServer::start(&dir);
    let (name, prefix) = (format!("joint-{}", env::random_hex(3)), format!("ttc-{}:", env::random_hex(3)));
    // 7,000 to 9,500 tokens a call: node a takes 5, node b a few more.
    let limit = 80_000;
    let a = QuotaWorld::start("cluster-a", &["blue"], &policy(&name, limit), &config(&redis, &prefix, "a", "open"));
    let b = QuotaWorld::start("cluster-b", &["blue"], &policy(&name, limit), &config(&redis, &prefix, "b", "open"));

    // A first call makes node b's team a known target (held from then on); then node a uses
    // part of the budget.
    assert_eq!(b.run("blue", &Calls::sequential(1)).ok(), 1);
    let warm_b = used(&b);
    let first = a.run("blue", &Calls::sequential(5));
    assert_eq!(first.ok(), 5, "{:?}", first.calls);
    let used_a = used(&a);
    assert!(used_a + warm_b < limit, "6 calls ({} tokens) must leave budget for node b", used_a + warm_b);
    wait_shares(&redis, &prefix, &name, &[("a", used_a), ("b", warm_b)]);
    let seen = (used_a + warm_b) as f64;
    status(&b, &name, "node b to count node a's usage", |e| e["used"].as_f64() == Some(seen));

    // Node b's client stops right after the call that exhausts the joint budget.
    let run = b.run("blue", &Calls::sequential(40));
    assert!(run.status.success(), "the denied process survives");
    let up_b = &b.upstream("blue")[1..];
    let mut joint = used_a + warm_b;
    let k = up_b.iter().position(|e| {
        joint += total_tokens(e);
        joint >= limit
    });
    let k = k.expect("40 calls exhaust the joint budget") + 1;
    assert_eq!(up_b.len(), k, "zero requests from node b after the call that exhausted the joint budget (call {k})");
    assert_eq!((run.ok(), run.failed()), (k, 40 - k), "{:?}", run.calls);
    let used_b = used(&b);
    let st = status(&b, &name, "node b exhausted", |e| e["state"] == "exhausted");
    assert_eq!(st["used"].as_f64(), Some((used_a + used_b) as f64), "node b counts both nodes");
    assert_eq!(st["scope"], "cluster");
    wait_shares(&redis, &prefix, &name, &[("a", used_a), ("b", used_b)]);

    // Node a learns it from Redis alone, and denies.
    status(&a, &name, "node a exhausted by node b's usage", |e| e["state"] == "exhausted");
    let again = a.run("blue", &Calls::sequential(3));
    assert!(again.status.success());
    assert_eq!((again.ok(), a.upstream("blue").len()), (0, 5), "node a sends nothing more: {:?}", again.calls);
    // Refused as a deny refuses: a connection error, not an answer.
    assert!(again.calls.iter().all(|c| c["error"] == "APIConnectionError"), "{:?}", again.calls);
}

#[test]
fn redis_down_follows_each_fail_mode_and_a_restart_loses_no_usage() {
    if !require_bpf() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = env::temp_subdir("cluster-failmode");
    let mut redis = RedisServer::start(&dir);
    let (name, prefix) = (format!("fm-{}", env::random_hex(3)), format!("ttc-{}:", env::random_hex(3)));
    let limit = 10_000_000;
    let a =
        QuotaWorld::start("cluster-closed", &["blue"], &policy(&name, limit), &config(&redis, &prefix, "a", "closed"));
    let b = QuotaWorld::start("cluster-open", &["blue"], &policy(&name, limit), &config(&redis, &prefix, "b", "open"));
    assert_eq!(a.run("blue", &Calls::sequential(2)).ok(), 2);
    assert_eq!(b.run("blue", &Calls::sequential(2)).ok(), 2);
    let (used_a, used_b) = (used(&a), used(&b));
    wait_shares(&redis, &prefix, &name, &[("a", used_a), ("b", used_b)]);
    let sum = (used_a + used_b) as f64;
    status(&a, &name, "node a to see the sum", |e| e["used"].as_f64() == Some(sum));
    status(&b, &name, "node b to see the sum", |e| e["used"].as_f64() == Some(sum));

    redis.stop();
    // Closed: past the staleness bound the entitlement counts as exhausted.
    status(&a, &name, "fail closed", |e| e["state"] == "exhausted");
    let closed = a.run("blue", &Calls::sequential(2));
    assert_eq!((closed.ok(), a.upstream("blue").len()), (0, 2), "fail closed: nothing leaves: {:?}", closed.calls);
    // Open: the node goes on with its own usage and the last known share of the other.
    let open = b.run("blue", &Calls::sequential(2));
    assert_eq!((open.ok(), b.upstream("blue").len()), (2, 4), "fail open: calls go on: {:?}", open.calls);
    let st = status(&b, &name, "node b's own new usage counted", |e| e["used"].as_f64() > Some(sum));
    assert_eq!(st["state"], "ok");

    // An empty Redis on the same port: each node writes its absolute share again, including
    // what node b used while Redis was down.
    redis.restart();
    let used_b = used(&b);
    wait_shares(&redis, &prefix, &name, &[("a", used_a), ("b", used_b)]);
    let sum = (used_a + used_b) as f64;
    status(&a, &name, "node a back, with node b's usage", |e| e["used"].as_f64() == Some(sum) && e["state"] == "ok");
    let back = a.run("blue", &Calls::sequential(1));
    assert_eq!((back.ok(), a.upstream("blue").len()), (1, 3), "node a calls again: {:?}", back.calls);
    assert!(a.agent_stderr().contains("Redis unreachable"), "the outage is logged");
}
