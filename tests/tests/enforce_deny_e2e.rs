//! `deny` end to end: a real agent with a policy, real OpenAI-SDK clients in real cgroups that
//! the mapping gives to this test's teams, the fake upstream's log as the ground truth. A team
//! past its limit gets nothing more to the upstream — not one request after the call that
//! exhausted it — while its process survives, and another team keeps working.
use std::time::Duration;

use tokentap::enforce::sockets::process_sockets;
use tokentap_tests::ledger::wait_for;
use tokentap_tests::{
    enforce::{proc_state, DrivenClient},
    quota::{Calls, QuotaWorld},
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
    let base = w.warm_up("blue", name);
    // Calls serve 1 000 to 12 000 tokens each (the upstream's counter): 60 pass 40 000.
    let blue = w.run("blue", &Calls::sequential(60));
    assert!(blue.status.success(), "the denied process survives: {:?}", blue.status);
    let up = w.upstream("blue");
    let k = base.exhausting_call(&up, LIMIT).expect("60 calls exhaust the budget");
    assert_eq!(up.len() - base.upstream, k, "zero requests reach the upstream after the exhausting call (call {k})");
    assert_eq!((blue.ok(), blue.failed()), (k, 60 - k), "calls after it fail fast: {:?}", blue.calls);
    let used = base.used_after(&up);
    let st = w.status_until(name, &|e| e["state"] == "exhausted", Duration::from_secs(120));
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

    // The metrics say the same: the budget, the action, the warning and the kernel's holds.
    let e = format!("tokentap_entitlement=\"{name}\"");
    let metric = |m: &str, labels: &str| w.metric_with(m, &[&e, labels]);
    wait_for("the quota metrics", Duration::from_secs(30), || {
        (metric("tokentap_quota_used", "") == Some(used as f64)).then_some(())
    });
    assert_eq!(metric("tokentap_quota_limit", ""), Some(LIMIT as f64));
    assert!(metric("tokentap_quota_actions_total", "tokentap_quota_action=\"deny\"").unwrap_or(0.0) >= 1.0);
    assert!(metric("tokentap_quota_warnings_total", "").unwrap_or(0.0) >= 1.0);
    let held = w.metric_with("tokentap_enforcement_events_total", &["tokentap_event=\"held\""]);
    assert!(held.unwrap_or(0.0) >= k as f64, "every approved request was held first: {held:?}");
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
    let base = w.warm_up("blue", name);
    // Requests the reservations of the others in flight would overrun are refused too (they
    // fail and the thread goes on), so there are calls enough to reach the limit regardless.
    let c = w.run("blue", &Calls { calls: 200, threads: 8, ..Calls::sequential(0) });
    assert!(c.status.success(), "the denied process survives");
    let up = w.upstream("blue");
    let k = base.exhausting_call(&up, LIMIT).expect("200 calls exhaust the budget");
    let after = up.len() - base.upstream - k;
    assert!(after <= 7, "overrun bounded by the 7 other callers in flight: {after} requests after the exhausting one");
    let served = base.used_after(&up);
    let st = w.status_until(name, &|e| e["state"] == "exhausted", Duration::from_secs(120));
    // Calls in flight when the budget ran out had their connections destroyed mid-response:
    // the agent meters them as far as they got (estimated), so its count is at most what the
    // upstream served, and its overrun is that count past the limit.
    let used = st["used"].as_f64().expect("used") as u64;
    assert!(used >= LIMIT && used <= served, "agent used {used}, upstream served {served}, limit {LIMIT}");
    let overrun = used - LIMIT;
    assert_eq!(st["overrun"].as_f64(), Some(overrun as f64), "the overrun is measured");
    eprintln!(
        "concurrent overrun: {overrun} tokens (upstream served {served}), {after} requests after the exhausting call"
    );
    assert_private(&w);
}

#[test]
fn deny_drops_keep_alive_connections_and_refuses_new_ones_while_the_process_survives() {
    if !require_bpf() {
        return;
    }
    let name = "blue-keepalive";
    let w = QuotaWorld::start("enforce-keepalive", &["blue"], &policy(name, LIMIT), "hold_at = 0.001\n");
    w.warm_up("blue", name);
    // One keep-alive connection, one request at a time, until the budget is exhausted.
    let mut c = DrivenClient::start(&w.server, &w.cgroups["blue"].prefix());
    let used = |w: &QuotaWorld| w.status_now(name).and_then(|e| e["used"].as_f64()).unwrap_or(0.0);
    let mut served = 0;
    let mut exhausted = false;
    for _ in 0..40 {
        let before = used(&w);
        let r = c.request();
        assert_eq!(r["ok"], true, "requests before exhaustion pass: {r}");
        served += 1;
        // Wait until the agent has counted this request (the status follows every record).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while used(&w) == before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if w.status_now(name).is_some_and(|e| e["state"] == "exhausted") {
            exhausted = true;
            break;
        }
    }
    assert!(exhausted, "{served} requests exhausted the budget");
    let upstream = w.server.entries().len();
    // The keep-alive connection is destroyed at exhaustion, before any further request.
    let port = w.server.port;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while process_sockets(c.pid).iter().any(|s| s.peer.port() == port) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!process_sockets(c.pid).iter().any(|s| s.peer.port() == port), "keep-alive connection dropped");
    // The next request fails; so does the one after, at connect().
    let first = c.request();
    assert_eq!(first["ok"], false, "a request after exhaustion fails: {first}");
    let second = c.request();
    assert_eq!(second["ok"], false, "a new connection is refused: {second}");
    assert_eq!(second["errno"].as_i64(), Some(libc::EPERM as i64), "connect() refused with EPERM: {second}");
    assert!(proc_state(c.pid).is_some_and(|s| s != 'T' && s != 'Z'), "the process survives, not stopped");
    assert_eq!(w.server.entries().len(), upstream, "the upstream received nothing more");
    assert_private(&w);
}
