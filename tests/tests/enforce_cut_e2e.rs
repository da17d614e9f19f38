//! `cut` end to end: a streaming response that takes a team past its hard limit has its
//! connection destroyed mid-stream, and the partial call is still metered.
use std::time::{Duration, Instant};

use tokentap_tests::{
    quota::{Calls, QuotaWorld},
    require_bpf,
};

fn policy_text(tag: &str, limit: u64) -> String {
    format!(
        "[[entitlement]]\nname = \"blue-cut\"\nmatch = {{ team = \"q-{tag}-blue\" }}\n\
         limit = {{ total_tokens = {limit} }}\nwindow = \"1d\"\naction = \"cut\"\n"
    )
}

#[test]
fn a_long_stream_is_cut_once_the_budget_is_passed_and_its_partial_usage_recorded() {
    if !require_bpf() {
        return;
    }
    let name = "blue-cut";
    let w = QuotaWorld::start("enforce-cut", &["blue"], &|tag| policy_text(tag, 100_000_000), "hold_at = 0.001\n");
    let base = w.warm_up("blue", name);
    // The limit just above what is used: the next stream passes the hold, and is cut once its
    // output passes the limit (the counter is kept across the reload).
    let limit = base.used + 300;
    w.write_policy(&policy_text(&w.tag, limit));
    w.status_until(name, &|e| e["limit"].as_f64() == Some(limit as f64), Duration::from_secs(60));
    let started = Instant::now();
    // ~3000 events 15 ms apart: 45 s if nothing cuts it.
    let r = w.run("blue", &Calls { stream: true, stream_repeat: Some(300), ..Calls::sequential(1) });
    let took = started.elapsed();
    assert_eq!(r.failed(), 1, "the stream ended in an error: {:?}", r.calls);
    assert!(took < Duration::from_secs(30), "cut mid-way, not served whole ({took:?})");
    assert!(r.status.success(), "the process survives");
    assert_eq!(w.upstream("blue").len(), base.upstream + 1, "the request itself was allowed");
    let log = w.agent_stderr();
    assert!(
        log.lines().any(|l| l.contains("enforcement: action") && l.contains(name) && l.contains("cut")),
        "the cut is logged"
    );
    // The partial call is metered: a streaming record of the team with its output so far.
    let team = w.team("blue");
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let found = w.agent.records(0).into_iter().rev().find(|r| r["team"] == team.as_str() && r["streaming"] == true);
        if found.is_some() || Instant::now() > deadline {
            break found.expect("a record of the cut stream");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = record["output_tokens"].as_u64().unwrap_or(0);
    assert!(out > 0, "partial output counted: {out}");
    assert!(!log.contains(&w.marker("")), "PRIVACY VIOLATION");
}
