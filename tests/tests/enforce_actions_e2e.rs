//! `signal`, `observe` and exempt cgroups end to end (real agent, real clients in real
//! cgroups, the upstream's log as ground truth).
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use tokentap_tests::{
    quota::{Calls, QuotaWorld},
    require_bpf,
};

const LIMIT: u64 = 20_000;

fn policy(
    name: &'static str,
    team_glob: &'static str,
    action: &'static str,
    extra: &'static str,
) -> impl Fn(&str) -> String {
    move |tag: &str| {
        format!(
            "[[entitlement]]\nname = \"{name}\"\nmatch = {{ team = \"q-{tag}-{team_glob}\" }}\n\
             limit = {{ total_tokens = {LIMIT} }}\nwindow = \"1d\"\naction = \"{action}\"\n{}",
            extra.replace("TAG", tag)
        )
    }
}

#[test]
fn signal_kills_the_caller_before_its_request_leaves() {
    if !require_bpf() {
        return;
    }
    let name = "blue-signal";
    let w = QuotaWorld::start(
        "enforce-signal",
        &["blue"],
        &policy(name, "blue", "signal", "signal = \"SIGTERM\"\n"),
        "hold_at = 0.001\n",
    );
    let base = w.warm_up("blue", name);
    let r = w.run("blue", &Calls::sequential(30));
    assert_eq!(r.status.signal(), Some(libc::SIGTERM), "the caller got the policy's signal: {:?}", r.status);
    let up = w.upstream("blue");
    let k = base.exhausting_call(&up, LIMIT).expect("the budget was exhausted");
    assert_eq!(up.len() - base.upstream, k, "the upstream never received the request the signal stopped");
    assert_eq!(r.ok(), k, "it died at the call after the exhausting one: {:?}", r.calls);
    assert!(r.failed() == 0, "no call failed: the process died first");
    let log = w.agent_stderr();
    assert!(
        log.lines().any(|l| (l.contains("enforcement: action") && l.contains("signal") && l.contains(name))
            || l.contains("enforcement: signal sent in-kernel")),
        "the signal is logged"
    );
    assert!(!log.contains(&w.marker("")), "PRIVACY VIOLATION");
}

#[test]
fn observe_blocks_nothing_and_records_would_block_events() {
    if !require_bpf() {
        return;
    }
    let name = "blue-observe";
    let w = QuotaWorld::start("enforce-observe", &["blue"], &policy(name, "blue", "observe", ""), "hold_at = 0.001\n");
    let base = w.warm_up("blue", name);
    // Calls serve 1 000 to 12 000 tokens each (the upstream's counter): 30 pass 20 000.
    let r = w.run("blue", &Calls::sequential(30));
    assert_eq!((r.ok(), r.failed()), (30, 0), "nothing blocked: {:?}", r.calls);
    let all = w.upstream("blue");
    assert_eq!(all.len() - base.upstream, 30, "every request reached the upstream");
    let k = base.exhausting_call(&all, LIMIT).expect("30 calls pass the limit");
    let up = &all[base.upstream..];
    let st = w.status_until(name, &|e| e["state"] == "exhausted", Duration::from_secs(120));
    // Every call started after the exhausting one's record is a would-block (the agent may
    // see a start before the previous record: at least the calls two after it).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let would = loop {
        let n = w.agent_stderr().lines().filter(|l| l.contains("would block (observe)") && l.contains(name)).count();
        if n + k + 1 >= up.len() || std::time::Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        would + k + 1 >= up.len() && would > 0,
        "would-block events: {would} for {} calls past call {k}",
        up.len() - k
    );
    assert!(would < up.len(), "never more would-blocks than calls");
    assert!(st["actions_taken"].as_u64().unwrap_or(0) > 0 || would > 0);
    assert!(!w.agent_stderr().contains("enforcement: action"), "observe never acts");
}

#[test]
fn an_exempt_cgroup_is_never_acted_on() {
    if !require_bpf() {
        return;
    }
    let name = "blue-exempt";
    // Both cgroups belong to the entitlement (team glob); the second is exempt.
    let w = QuotaWorld::start(
        "enforce-exempt",
        &["blue", "blueexempt"],
        &policy(name, "blue*", "deny", "exempt = [\"system.slice/ttq-TAG-blueexempt.service\"]\n"),
        "hold_at = 0.001\n",
    );
    w.exhaust("blue", name, LIMIT, 30);
    let r = w.run("blueexempt", &Calls::sequential(3));
    assert_eq!((r.ok(), w.upstream("blueexempt").len()), (3, 3), "the exempt cgroup keeps working: {:?}", r.calls);
    let log = w.agent_stderr();
    assert!(
        !log.lines().any(|l| l.contains("enforcement: action") && l.contains("blueexempt")),
        "no action names the exempt cgroup"
    );
}
