//! The engine's budgets linked through `enforce::cluster::exchange` and a real Redis (no root):
//! two nodes' counters of one cluster entitlement add up; `fail_mode = "closed"` exhausts the
//! entitlement while Redis is down and frees it when Redis is back; a host-scope entitlement is
//! never published.
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokentap::enforce::{
    budget::{Budgets, State, Usage},
    cluster::{exchange, window_key, Cluster, ClusterConfig, FailMode},
    policy::{Labels, Policy},
};
use tokentap_tests::{env, redis::RedisServer};

const POLICY: &str = "[[entitlement]]\nname = \"shared\"\nscope = \"cluster\"\nmatch = { team = \"blue\" }\n\
                      limit = { total_tokens = 1000 }\nwindow = \"1h\"\naction = \"deny\"\n\n\
                      [[entitlement]]\nname = \"local\"\nmatch = { team = \"blue\" }\n\
                      limit = { total_tokens = 1000 }\nwindow = \"1h\"\naction = \"deny\"\n";

struct Node {
    budgets: Budgets<u32>,
    cluster: Cluster,
}

impl Node {
    fn new(redis: &RedisServer, name: &str, prefix: &str, mode: FailMode) -> Node {
        let policy = Policy::parse("p.toml", POLICY).unwrap();
        let mut cfg = ClusterConfig::new(&redis.url());
        (cfg.node, cfg.key_prefix, cfg.fail_mode) = (name.into(), prefix.into(), mode);
        cfg.sync_interval = Duration::from_millis(100);
        Node { budgets: Budgets::new(&policy, 0.5, 100, Timestamp::now()), cluster: Cluster::start(cfg).unwrap() }
    }

    /// A settled call, published at once (as the enforcer does after each record).
    fn call(&mut self, tokens: u64) {
        let blue = Labels { team: "blue".into(), ..Default::default() };
        self.budgets.settle(None, &blue, Usage::call(tokens, 0, 0), Timestamp::now());
        exchange(&self.cluster, &mut self.budgets);
    }

    /// What the engine's hooks do: exchange, then read the counter.
    fn shared(&mut self) -> (u128, State) {
        exchange(&self.cluster, &mut self.budgets);
        let c = &self.budgets.counters()[0];
        (c.used(), c.state())
    }

    fn until(&mut self, what: &str, want: (u128, State)) {
        let t0 = Instant::now();
        loop {
            let got = self.shared();
            if got == want {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{what}: {got:?}, want {want:?}; totals {:?} health {:?}",
                self.cluster.totals(),
                self.cluster.health()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn two_nodes_budgets_add_up_and_fail_closed_exhausts_while_redis_is_down() {
    let dir = env::temp_subdir("cluster-budgets");
    let mut redis = RedisServer::start(&dir);
    let prefix = format!("tb-{}:", env::random_hex(4));
    let mut a = Node::new(&redis, "a", &prefix, FailMode::Closed);
    let mut b = Node::new(&redis, "b", &prefix, FailMode::Open);
    a.call(300);
    b.call(450);
    a.until("a sees both", (750, State::Ok));
    b.until("b sees both", (750, State::Ok));
    b.call(300);
    a.until("a exhausted by b", (1050, State::Exhausted));
    // The host-scope entitlement counts this node only and never reaches Redis.
    assert_eq!(a.budgets.counters()[1].used(), 300);
    let keys = redis.cli(&["KEYS", &format!("{prefix}*")]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    let start = a.budgets.counters()[0].bounds().start.as_second();
    assert_eq!(keys.trim(), window_key(&prefix, "shared", start));

    // A new window for everyone would start from zero; here: Redis goes away.
    let mut fresh_a = Node::new(&redis, "a2", &format!("{prefix}x:"), FailMode::Closed);
    fresh_a.call(10);
    fresh_a.until("synced", (10, State::Ok));
    redis.stop();
    // Closed: the whole limit counts as the others' share once past the staleness bound.
    fresh_a.until("fail closed", (1010, State::Exhausted));
    let mut fresh_b = Node::new(&redis, "b2", &format!("{prefix}x:"), FailMode::Open);
    fresh_b.call(20);
    fresh_b.until("fail open: local only", (20, State::Ok));
    redis.restart();
    fresh_a.until("back: both shares", (30, State::Ok));
    fresh_b.until("back: both shares", (30, State::Ok));
}
