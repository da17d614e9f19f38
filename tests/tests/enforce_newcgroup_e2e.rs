//! A cgroup the agent has never seen, of a team already past its limit: the agent finds it in
//! the cgroup tree (it walks the tree each tick while a hard entitlement is gated) and gives
//! it the team's verdict before any of its processes calls, so the very first request of a new
//! pod or unit of an exhausted team never reaches the upstream. The upstream's log is the
//! ground truth.
use std::time::{Duration, Instant};

use tokentap_tests::{
    kube::Cgroup,
    quota::{Calls, QuotaWorld},
    require_bpf,
};

const LIMIT: u64 = 15_000;

fn policy(name: &str) -> impl Fn(&str) -> String + '_ {
    move |tag: &str| {
        format!(
            "[[entitlement]]\nname = \"{name}\"\nmatch = {{ team = \"q-{tag}-blue\" }}\n\
             limit = {{ total_tokens = {LIMIT} }}\nwindow = \"1d\"\naction = \"deny\"\n"
        )
    }
}

fn wait_log(w: &QuotaWorld, what: &dyn Fn(&str) -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if w.agent_stderr().lines().any(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_new_cgroup_of_an_exhausted_team_gets_not_one_request_through() {
    if !require_bpf() {
        return;
    }
    let name = "blue-newcgroup";
    let mut w = QuotaWorld::start("enforce-newcg", &["blue"], &policy(name), "hold_at = 0.001\n");
    // A second unit of the same team, in the mapping from the start; its cgroup does not exist.
    let unit = format!("ttq-{}-bluenew.service", w.tag);
    let mapping = w.dir.join("mapping.toml");
    let mut rules = std::fs::read_to_string(&mapping).expect("read mapping");
    rules.push_str(&format!(
        "[[rule]]\nname = \"blue-new\"\n[rule.match]\nsystemd_unit = \"{unit}\"\n[rule.set]\nteam = \"{}\"\n",
        w.team("blue")
    ));
    std::fs::write(&mapping, rules).expect("write mapping");
    assert!(wait_log(&w, &|l| l.contains("mapping reloaded"), Duration::from_secs(30)), "the mapping was reloaded");

    // Cgroup A exhausts the team's budget (zero requests after the exhausting call).
    w.exhaust("blue", name, LIMIT, 40);

    // Cgroup B is created only now: no process of it ever made a call.
    let b = Cgroup::create(&format!("system.slice/{unit}"));
    let b_path = format!("/system.slice/{unit}");
    assert!(
        wait_log(
            &w,
            &|l| l.contains("a new cgroup of a gated entitlement") && l.contains(&b_path),
            Duration::from_secs(15)
        ),
        "the agent found the new cgroup within its ticks"
    );
    w.cgroups.insert("bluenew".into(), b);
    let r = w.run("bluenew", &Calls::sequential(3));
    assert_eq!(w.upstream("bluenew").len(), 0, "zero requests of the new cgroup reached the upstream");
    assert!(r.status.success(), "the client ran to its end, not left stopped: {:?}", r.status);
    assert_eq!((r.ok(), r.failed()), (0, 3), "every call of the new cgroup fails: {:?}", r.calls);
    assert!(
        r.calls.iter().all(|c| c["error"].as_str().is_some_and(|e| e.contains("Connection"))),
        "a connection error each time: {:?}",
        r.calls
    );
}
