//! Worlds for the enforcement tests: an agent of the test's own (FleetAgent: its config,
//! ledger, policy and status file), a fake upstream, and real cgroups that a mapping file gives
//! to the test's teams (`q-<tag>-<team>`), so the policy only ever matches this test's clients.
//! The upstream's log is the ground truth of what left the host.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{certs, clients, env, fleet::FleetAgent, kube::Cgroup, server::ServerEntry, LlmServer, ServerOpts};

pub struct QuotaWorld {
    pub dir: PathBuf,
    pub tag: String,
    pub server: LlmServer,
    pub agent: FleetAgent,
    pub cgroups: BTreeMap<String, Cgroup>,
    pub policy: PathBuf,
    pub status: PathBuf,
    /// The agent's Prometheus endpoint (`127.0.0.1:prom`).
    pub prom: u16,
}

/// What a `quota_client.py` run saw, call by call.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub pid: u32,
    /// One `{"i", "thread", "ok", "error", "t"}` per call that returned (in completion order).
    pub calls: Vec<Value>,
}

impl Outcome {
    pub fn ok(&self) -> usize {
        self.calls.iter().filter(|c| c["ok"] == true).count()
    }
    pub fn failed(&self) -> usize {
        self.calls.len() - self.ok()
    }
}

/// Client options.
#[derive(Debug, Clone)]
pub struct Calls {
    pub calls: usize,
    pub threads: usize,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    pub gap_ms: u64,
    /// Streams R times as long (the upstream's `x-test-stream-repeat`).
    pub stream_repeat: Option<u32>,
}

impl Calls {
    pub fn sequential(calls: usize) -> Calls {
        Calls { calls, threads: 1, stream: false, max_tokens: None, gap_ms: 0, stream_repeat: None }
    }
}

impl QuotaWorld {
    /// `policy(world_tag)` is the policy text; teams are `q-<tag>-<team>`. `extra` is appended to
    /// the agent's configuration (e.g. an `[enforcement]` key).
    pub fn start(name: &str, teams: &[&str], policy: &dyn Fn(&str) -> String, extra: &str) -> QuotaWorld {
        let dir = env::temp_subdir(name);
        let tag = env::random_hex(3);
        let mut cgroups = BTreeMap::new();
        let mut rules = String::new();
        for team in teams {
            let unit = format!("ttq-{tag}-{team}.service");
            cgroups.insert(team.to_string(), Cgroup::create(&format!("system.slice/{unit}")));
            rules.push_str(&format!(
                "[[rule]]\nname = \"{team}\"\n[rule.match]\nsystemd_unit = \"{unit}\"\n[rule.set]\nteam = \"q-{tag}-{team}\"\n\n"
            ));
        }
        let mapping = dir.join("mapping.toml");
        std::fs::write(&mapping, rules).expect("write mapping");
        let policy_file = dir.join("policy.toml");
        std::fs::write(&policy_file, policy(&tag)).expect("write policy");
        let status = dir.join("quota.json");
        let prom = crate::collector::free_ports(1)[0];
        let config = format!(
            "[attribution]\nmapping_file = \"{}\"\n\n[export]\nprometheus_listen = \"127.0.0.1:{prom}\"\n\n\
             [enforcement]\npolicy_file = \"{}\"\nstatus_file = \"{}\"\n{extra}\n",
            mapping.display(),
            policy_file.display(),
            status.display()
        );
        let server = LlmServer::start(ServerOpts::default());
        let agent = FleetAgent::start("agent", &dir, 0, &config);
        QuotaWorld { dir, tag, server, agent, cgroups, policy: policy_file, status, prom }
    }

    /// The sum of the agent's Prometheus samples of metric `name` whose labels contain every one
    /// of `labels` (`key="value"` texts), `None` while there is none.
    pub fn metric_with(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let text = crate::ledger::scrape(self.prom).ok()?;
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    pub fn team(&self, team: &str) -> String {
        format!("q-{}-{team}", self.tag)
    }

    /// The marker a team's client puts in its prompts.
    pub fn marker(&self, team: &str) -> String {
        format!("mk-{}-{team}", self.tag)
    }

    /// Runs `quota_client.py` in `team`'s cgroup to its end.
    pub fn run(&self, team: &str, c: &Calls) -> Outcome {
        let out = self.dir.join(format!("calls-{team}-{}.jsonl", env::random_hex(3)));
        let mut args: Vec<OsString> = vec![
            "--base-url".into(),
            self.server.openai_base_url().into(),
            "--ca".into(),
            certs::certs().ca.clone().into(),
            "--api-key".into(),
            "sk-quota-test-not-a-real-key".into(),
            "--calls".into(),
            c.calls.to_string().into(),
            "--threads".into(),
            c.threads.to_string().into(),
            "--gap-ms".into(),
            c.gap_ms.to_string().into(),
            "--marker".into(),
            self.marker(team).into(),
            "--out".into(),
            out.clone().into(),
        ];
        if c.stream {
            args.push("--stream".into());
        }
        if let Some(r) = c.stream_repeat {
            args.push("--stream-repeat".into());
            args.push(r.to_string().into());
        }
        if let Some(m) = c.max_tokens {
            args.push("--max-tokens".into());
            args.push(m.to_string().into());
        }
        let prefix = self.cgroups[team].prefix();
        let run = clients::run_python_with("quota_client.py", &args, &self.dir, &prefix);
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let calls = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        Outcome { status: run.status, pid: run.pid, calls }
    }

    /// What reached the upstream from `team`'s clients, in arrival order.
    pub fn upstream(&self, team: &str) -> Vec<ServerEntry> {
        let marker = self.marker(team);
        self.server
            .entries()
            .into_iter()
            .filter(|e| {
                e.request_messages()
                    .is_some_and(|m| m.iter().any(|x| x["content"].as_str().is_some_and(|c| c.contains(&marker))))
            })
            .collect()
    }

    /// The agent's status file, once it names `entitlement` with `pred` true (polled).
    pub fn status_until(&self, entitlement: &str, pred: &dyn Fn(&Value) -> bool, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(v) =
                std::fs::read_to_string(&self.status).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                if let Some(e) = v["entitlements"].as_array().and_then(|a| a.iter().find(|e| e["name"] == entitlement))
                {
                    if pred(e) {
                        return e.clone();
                    }
                    last = e.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("status of {entitlement} never satisfied the test's condition; last seen: {last}");
    }

    /// The current run's stderr (action logs; never payloads).
    pub fn agent_stderr(&self) -> String {
        let n = self.agent.runs().len();
        std::fs::read_to_string(self.dir.join("agent").join(format!("agent-{n}.stderr"))).unwrap_or_default()
    }

    /// Every run's stderr, concatenated.
    pub fn all_agent_stderr(&self) -> String {
        (1..=self.agent.runs().len())
            .map(|n| {
                std::fs::read_to_string(self.dir.join("agent").join(format!("agent-{n}.stderr"))).unwrap_or_default()
            })
            .collect()
    }

    /// Calls from `team` until the agent has counted one: the team is a known target from
    /// then on. The agent meters the whole host and other tests' bursts can make it lag or
    /// lose events, so this retries. Returns the point the test's calls start from: how many
    /// of the team's requests the upstream has, and what the agent counted of them.
    pub fn warm_up(&self, team: &str, entitlement: &str) -> Baseline {
        for _ in 0..5 {
            let r = self.run(team, &Calls::sequential(1));
            assert_eq!(r.ok(), 1, "warm-up call: {:?}", r.calls);
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                if let Some(e) = self.status_now(entitlement).filter(|e| e["used"].as_f64().unwrap_or(0.0) > 0.0) {
                    std::thread::sleep(Duration::from_millis(500));
                    let used = self.status_now(entitlement).unwrap_or(e)["used"].as_f64().unwrap_or(0.0) as u64;
                    return Baseline { upstream: self.upstream(team).len(), used };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("the agent never counted a warm-up call of {team}");
    }

    /// The status of `entitlement` now, if the file names it.
    pub fn status_now(&self, entitlement: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&self.status).ok()?).ok()?;
        v["entitlements"].as_array()?.iter().find(|e| e["name"] == entitlement).cloned()
    }

    /// Warm-up, then sequential calls until the budget of `limit` tokens is exhausted: asserts
    /// that not one request reached the upstream after the exhausting call (counted from what
    /// the agent had metered at the warm-up), and that the client saw the rest fail. Returns
    /// the team's upstream entries.
    pub fn exhaust(&self, team: &str, entitlement: &str, limit: u64, calls: usize) -> Vec<ServerEntry> {
        let base = self.warm_up(team, entitlement);
        let r = self.run(team, &Calls::sequential(calls));
        let up = self.upstream(team);
        let k =
            base.exhausting_call(&up, limit).unwrap_or_else(|| panic!("{calls} calls did not exhaust {limit} tokens"));
        assert_eq!(up.len() - base.upstream, k, "zero requests after the exhausting call (call {k}): {:?}", r.calls);
        assert_eq!(r.ok(), k, "the calls after it failed: {:?}", r.calls);
        self.status_until(entitlement, &|e| e["state"] == "exhausted", Duration::from_secs(120));
        up
    }

    /// Replaces the policy file (the agent re-reads it on its next tick).
    pub fn write_policy(&self, text: &str) {
        let tmp = self.dir.join("policy.toml.new");
        std::fs::write(&tmp, text).expect("write policy");
        std::fs::rename(&tmp, &self.policy).expect("replace policy");
    }
}

/// Where a test's calls start: the team's upstream requests so far, and what the agent counted.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub upstream: usize,
    pub used: u64,
}

impl Baseline {
    /// The 1-based index, among the calls after the baseline, of the call whose usage made the
    /// agent's running total reach `limit`.
    pub fn exhausting_call(&self, entries: &[ServerEntry], limit: u64) -> Option<usize> {
        let mut sum = self.used;
        if sum >= limit {
            return Some(0);
        }
        for (i, e) in entries.iter().skip(self.upstream).enumerate() {
            sum += total_tokens(e);
            if sum >= limit {
                return Some(i + 1);
            }
        }
        None
    }

    /// What the agent should have counted once every call after the baseline settled.
    pub fn used_after(&self, entries: &[ServerEntry]) -> u64 {
        self.used + entries.iter().skip(self.upstream).map(total_tokens).sum::<u64>()
    }
}

/// Total tokens of an upstream entry (its usage object).
pub fn total_tokens(e: &ServerEntry) -> u64 {
    e.usage().and_then(|u| u["total_tokens"].as_u64()).unwrap_or(0)
}

/// The 1-based index of the call whose usage made the running total reach `limit`.
pub fn exhausting_call(entries: &[ServerEntry], limit: u64) -> Option<usize> {
    let mut sum = 0;
    for (i, e) in entries.iter().enumerate() {
        sum += total_tokens(e);
        if sum >= limit {
            return Some(i + 1);
        }
    }
    None
}
