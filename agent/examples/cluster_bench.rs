//! Redis load of cluster entitlements: one node's engine path at a steady call rate against a
//! real `redis-server` (Debian package, started here on a free loopback port, no persistence).
//!
//! Per call the agent does what the enforcer does: an exchange at the hold, the call settled on
//! every matching entitlement, an exchange after the record; plus one exchange per tick. The
//! exchanges only touch memory: the Redis traffic is the sync thread's, one pipelined round trip
//! per sync interval carrying one script call per (entitlement, window). Counted twice: by the
//! node (`Health::operations`) and by Redis itself (`INFO commandstats`). Also reports
//! `MEMORY USAGE` of one key as the number of nodes writing to it grows.
//!
//! Run by `cargo xtask bench`. Prints a Markdown section on stdout, progress on stderr.
//! `cargo run --release -p tokentap --example cluster_bench -- [--seconds S] [--rate CALLS_PER_S]`
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use jiff::Timestamp;
use tokentap::enforce::{
    budget::{Budgets, Usage},
    cluster::{exchange, Cluster, ClusterConfig},
    policy::{Labels, Policy},
};

struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start(dir: &std::path::Path) -> Result<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server (Debian package redis-server)")?;
        let url = format!("redis://127.0.0.1:{port}/");
        let r = Redis { child, url };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.conn().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not answer on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r)
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url.as_str())?.get_connection()
    }

    /// Calls of script commands and of all commands so far.
    fn calls(&self) -> Result<(u64, u64)> {
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut self.conn()?)?;
        let (mut scripts, mut all) = (0, 0);
        for line in info.lines() {
            let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(":calls=")) else {
                continue;
            };
            let n: u64 = rest.split(',').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            if name != "info" {
                all += n;
            }
            if name == "evalsha" || name == "eval" {
                scripts += n;
            }
        }
        Ok((scripts, all))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy(entitlements: usize) -> Policy {
    let mut text = String::new();
    for i in 0..entitlements {
        text.push_str(&format!(
            "[[entitlement]]\nname = \"team-{i}\"\nscope = \"cluster\"\nmatch = {{ team = \"team-{i}\" }}\n\
             limit = {{ total_tokens = 1000000000 }}\nwindow = \"1d\"\naction = \"deny\"\n\n"
        ));
    }
    Policy::parse("bench.toml", &text).expect("the bench policy parses")
}

struct Row {
    entitlements: usize,
    calls_per_s: f64,
    node_ops_per_s: f64,
    redis_scripts_per_s: f64,
    redis_commands_per_s: f64,
    round_trips_per_s: f64,
}

fn run(redis: &Redis, entitlements: usize, rate: f64, seconds: f64) -> Result<Row> {
    let policy = policy(entitlements);
    let mut cfg = ClusterConfig::new(&redis.url);
    cfg.node = "bench-node".into();
    cfg.key_prefix = format!("bench{entitlements}:");
    let cluster = Cluster::start(cfg)?;
    let mut budgets: Budgets<u64> = Budgets::new(&policy, 0.5, 4096, Timestamp::now());
    let teams: Vec<Labels> =
        (0..entitlements).map(|i| Labels { team: format!("team-{i}"), ..Default::default() }).collect();
    // Every window published once, then measured from a clean count.
    exchange(&cluster, &mut budgets);
    std::thread::sleep(Duration::from_secs(1));
    let (h0, (s0, c0)) = (cluster.health(), redis.calls()?);
    let t0 = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let (mut calls, mut next_tick) = (0u64, t0 + Duration::from_secs(1));
    while t0.elapsed().as_secs_f64() < seconds {
        let team = &teams[calls as usize % teams.len()];
        exchange(&cluster, &mut budgets); // at the hold
        budgets.settle(None, team, Usage::call(1200, 300, 0), Timestamp::now());
        exchange(&cluster, &mut budgets); // after the record
        calls += 1;
        if Instant::now() >= next_tick {
            exchange(&cluster, &mut budgets);
            next_tick += Duration::from_secs(1);
        }
        let due = t0 + gap * calls as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (h1, (s1, c1)) = (cluster.health(), redis.calls()?);
    if h1.failures > h0.failures {
        bail!("Redis failures during the run: {:?}", h1.last_error);
    }
    Ok(Row {
        entitlements,
        calls_per_s: calls as f64 / elapsed,
        node_ops_per_s: (h1.operations - h0.operations) as f64 / elapsed,
        redis_scripts_per_s: (s1 - s0) as f64 / elapsed,
        // Minus the INFO of the first count (the second is excluded by name).
        redis_commands_per_s: (c1 - c0) as f64 / elapsed,
        round_trips_per_s: (h1.syncs - h0.syncs) as f64 / elapsed,
    })
}

/// Bytes of one window's key with `nodes` fields (`MEMORY USAGE`, Redis's own estimate).
fn key_bytes(redis: &Redis, nodes: usize) -> Result<u64> {
    let mut c = redis.conn()?;
    let key = format!("tokentap:memory-probe-entitlement-name:{}", Timestamp::now().as_second() / 86400 * 86400);
    for n in 0..nodes {
        redis::cmd("HSET").arg(&key).arg(format!("node-{n:03}.example.internal")).arg("123456789012").exec(&mut c)?;
    }
    redis::cmd("PEXPIREAT").arg(&key).arg(i64::MAX / 2).exec(&mut c)?;
    let bytes: u64 = redis::cmd("MEMORY").arg("USAGE").arg(&key).arg("SAMPLES").arg(0).query(&mut c)?;
    redis::cmd("DEL").arg(&key).exec(&mut c)?;
    Ok(bytes)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (seconds, rate) = (opt("--seconds", 5.0), opt("--rate", 100.0));
    let dir = std::env::temp_dir().join(format!("tokentap-cluster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let redis = Redis::start(&dir)?;
    let mut rows = Vec::new();
    for n in [1, 10, 100] {
        eprintln!("cluster_bench: {n} cluster entitlements, {rate} calls/s for {seconds} s");
        rows.push(run(&redis, n, rate, seconds)?);
    }
    let memory: Vec<(usize, u64)> =
        [1, 2, 10, 50].iter().map(|&n| key_bytes(&redis, n).map(|b| (n, b))).collect::<Result<_>>()?;
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "One node, sync interval 500 ms (the default), {rate} calls/s spread over N cluster entitlements \
         (one window each), {seconds} s per row. Per call: an exchange at the hold and one after the record, \
         as the enforcer does; the Redis traffic is the sync thread's.\n"
    );
    println!("| cluster entitlements | calls/s | script calls/s (node) | script calls/s (Redis) | commands/s (Redis, with the 3 inside each script) | round trips/s |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.entitlements,
            r.calls_per_s,
            r.node_ops_per_s,
            r.redis_scripts_per_s,
            r.redis_commands_per_s,
            r.round_trips_per_s
        );
    }
    println!("\nMemory of one window's key (`MEMORY USAGE`, 12-digit values, 30-byte node names):\n");
    println!("| nodes writing the key | bytes |");
    println!("|---:|---:|");
    for (n, b) in memory {
        println!("| {n} | {b} |");
    }
    Ok(())
}
