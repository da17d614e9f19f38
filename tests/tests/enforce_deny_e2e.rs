//! `deny` end to end: a real agent with a policy, real OpenAI-SDK clients in real cgroups that
//! the mapping gives to this test's teams, the fake upstream's log as the ground truth. A team
//! past its limit gets nothing more to the upstream — not one request after the call that
//! exhausted it — while its process survives, and another team keeps working.
use std::time::Duration;

use tokentap_tests::{
    quota::{exhausting_call, total_tokens, Calls, QuotaWorld},
    require_bpf,
};

const LIMIT: u64 = 40_000;

fn policy(name: &str, limit: u64) -> impl Fn(&str) -> String + '_ {
    move |tag: &str| {
        format!(
            "[[entitlement]]\nname = \"{name}\"\nmatch = {{ team = \"q-{tag}-blue\" }}\n\
             limit = {{ total_tokens = {limit} }}\nwindow = \"1d\"\nwarn_at = 0.5\naction = \"deny\"\n"
        )
    }
}

/// No payload (the prompts' markers) in anything the agent wrote.
fn assert_private(w: &QuotaWorld) {
    let marker = w.marker("");
    for text in [w.all_agent_stderr(), std::fs::read_to_string(&w.status).unwrap_or_default()] {
        assert!(!text.contains(&marker), "PRIVACY VIOLATION: a prompt marker in the agent's output");
    }
}

#[test]
fn a_sequential_client_stops_reaching_the_upstream_right_after_the_exhausting_call() {
    if !require_bpf() {
        return;
    }
    let name = "blue-daily";
    // Every request of a team with usage is held for approval (hold_at tiny): the verdict at
    // a hold sees every earlier response settled.
    let w = QuotaWorld::start("enforce-seq", &["blue", "red"], &policy(name, LIMIT), "hold_at = 0.001\n");
    let blue = w.run("blue", &Calls::sequential(30));
    assert!(blue.status.success(), "the denied process survives: {:?}", blue.status);
    let up = w.upstream("blue");
    let k = exhausting_call(&up, LIMIT).expect("30 calls exhaust the budget");
    assert_eq!(up.len(), k, "zero requests reach the upstream after the exhausting call (call {k})");
    assert_eq!((blue.ok(), blue.failed()), (k, 30 - k), "calls after it fail fast: {:?}", blue.calls);
    let used: u64 = up.iter().map(total_tokens).sum();
    let st = w.status_until(name, &|e| e["state"] == "exhausted", Duration::from_secs(10));
    assert_eq!(st["used"].as_f64(), Some(used as f64), "the agent counted what the upstream served");
    assert_eq!(st["overrun"].as_f64(), Some((used - LIMIT) as f64));

    // Another team is not touched.
    let red = w.run("red", &Calls::sequential(3));
    assert_eq!((red.ok(), w.upstream("red").len()), (3, 3), "another team keeps working: {:?}", red.calls);

    let log = w.agent_stderr();
    let actions: Vec<&str> = log.lines().filter(|l| l.contains("enforcement: action")).collect();
    assert!(!actions.is_empty(), "every action is logged");
    assert!(actions.iter().all(|l| l.contains(name) && l.contains("deny") && l.contains(&blue.pid.to_string())));
    assert!(log.contains("warning threshold reached"), "warn_at = 0.5 raised a warning");
    assert_private(&w);
}

#[test]
fn eight_concurrent_callers_overrun_by_at_most_the_calls_in_flight() {
    if !require_bpf() {
        return;
    }
    let name = "blue-concurrent";
    let w = QuotaWorld::start("enforce-conc", &["blue"], &policy(name, LIMIT), "hold_at = 0.001\n");
    // One call first, so the team is known and gated from the start of the burst.
    assert_eq!(w.run("blue", &Calls::sequential(1)).ok(), 1);
    let c = w.run("blue", &Calls { calls: 64, threads: 8, ..Calls::sequential(0) });
    assert!(c.status.success(), "the denied process survives");
    let up = w.upstream("blue");
    let k = exhausting_call(&up, LIMIT).expect("64 calls exhaust the budget");
    let after = up.len() - k;
    assert!(after <= 7, "overrun bounded by the 7 other callers in flight: {after} requests after the exhausting one");
    let used: u64 = up.iter().map(total_tokens).sum();
    let st = w.status_until(name, &|e| e["state"] == "exhausted", Duration::from_secs(10));
    assert_eq!(st["used"].as_f64(), Some(used as f64));
    let overrun = used - LIMIT;
    assert_eq!(st["overrun"].as_f64(), Some(overrun as f64), "the overrun is measured");
    eprintln!("concurrent overrun: {overrun} tokens, {after} requests after the exhausting call");
    assert_private(&w);
}
