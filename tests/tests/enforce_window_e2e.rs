//! Budgets over time, end to end: a `1m` window rolling over re-allows the team, an agent
//! restart keeps the counters (rebuilt from its ledger), and a policy edit lifting the limit
//! re-allows at once (while an invalid edit is refused and the old policy kept).
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokentap_tests::{
    quota::{Calls, QuotaWorld},
    require_bpf,
};

const LIMIT: u64 = 20_000;

fn policy(name: &'static str, window: &'static str, limit: u64) -> impl Fn(&str) -> String {
    move |tag: &str| policy_text(name, tag, window, limit)
}

fn policy_text(name: &str, tag: &str, window: &str, limit: u64) -> String {
    format!(
        "[[entitlement]]\nname = \"{name}\"\nmatch = {{ team = \"q-{tag}-blue\" }}\n\
         limit = {{ total_tokens = {limit} }}\nwindow = \"{window}\"\naction = \"deny\"\n"
    )
}

fn secs_into_minute() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() % 60
}

#[test]
fn a_one_minute_window_rolling_over_re_allows_the_team() {
    if !require_bpf() {
        return;
    }
    let name = "blue-minute";
    // Start early in a minute: warm-up and exhaustion must fall in one window.
    if secs_into_minute() > 10 {
        std::thread::sleep(Duration::from_secs(61 - secs_into_minute()));
    }
    let w = QuotaWorld::start("enforce-window", &["blue"], &policy(name, "1m", LIMIT), "hold_at = 0.001\n");
    if secs_into_minute() > 30 {
        std::thread::sleep(Duration::from_secs(61 - secs_into_minute()));
    }
    let up = w.exhaust("blue", name, LIMIT, 30);
    let end = w.status_now(name).expect("status")["window_end"].as_str().unwrap().to_string();
    // The next window: the verdict is lifted on the agent's next tick.
    w.status_until(
        name,
        &|e| e["window_end"].as_str() != Some(end.as_str()) && e["state"] == "ok",
        Duration::from_secs(120),
    );
    let r = w.run("blue", &Calls::sequential(2));
    assert_eq!(r.ok(), 2, "the new window re-allows the team: {:?} (client {:?})", r.calls, r.status);
    assert_eq!(w.upstream("blue").len(), up.len() + 2);
}

#[test]
fn an_agent_restart_keeps_the_counters() {
    if !require_bpf() {
        return;
    }
    let name = "blue-restart";
    let mut w = QuotaWorld::start("enforce-restart", &["blue"], &policy(name, "1d", LIMIT), "hold_at = 0.001\n");
    let up = w.exhaust("blue", name, LIMIT, 30);
    let before = w.status_now(name).expect("status")["used"].as_f64().unwrap();
    w.agent.restart();
    let st = w.status_until(name, &|e| e["used"].as_f64() == Some(before), Duration::from_secs(120));
    assert_eq!(st["state"], "exhausted", "the budget is still used up after the restart");
    // The restarted agent knows the team's cgroup from its ledger: a new process is refused
    // from its first request.
    std::thread::sleep(Duration::from_secs(2));
    let r = w.run("blue", &Calls::sequential(3));
    assert_eq!(r.ok(), 0, "still denied after the restart: {:?}", r.calls);
    assert_eq!(w.upstream("blue").len(), up.len(), "nothing more reached the upstream");
}

#[test]
fn a_policy_edit_lifting_the_limit_re_allows_at_once_and_a_bad_edit_is_refused() {
    if !require_bpf() {
        return;
    }
    let name = "blue-edit";
    let w = QuotaWorld::start("enforce-edit", &["blue"], &policy(name, "1d", LIMIT), "hold_at = 0.001\n");
    let up = w.exhaust("blue", name, LIMIT, 30);
    // An invalid edit: refused with file:line:key, the old policy (and the denial) stay.
    w.write_policy(&policy_text(name, &w.tag, "1d", LIMIT).replace("action = \"deny\"", "action = \"block\""));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !w.agent_stderr().contains("policy not reloaded") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = w.agent_stderr();
    let line = log.lines().find(|l| l.contains("policy not reloaded")).expect("the bad edit is reported");
    assert!(line.contains("policy.toml:6: entitlement[1].action"), "file:line:key in {line:?}");
    assert_eq!(w.run("blue", &Calls::sequential(1)).ok(), 0, "the old policy still denies");
    // Lifting the limit: the same entitlement (its counter kept) with 100× the limit.
    w.write_policy(&policy_text(name, &w.tag, "1d", LIMIT * 100));
    w.status_until(name, &|e| e["limit"].as_f64() == Some((LIMIT * 100) as f64), Duration::from_secs(60));
    let st = w.status_now(name).unwrap();
    assert!(st["used"].as_f64().unwrap() >= LIMIT as f64, "the counter survived the reload");
    let r = w.run("blue", &Calls::sequential(2));
    assert_eq!(r.ok(), 2, "re-allowed at once: {:?}", r.calls);
    assert_eq!(w.upstream("blue").len(), up.len() + 2);
}
