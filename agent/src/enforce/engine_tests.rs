use super::*;

const T0: &str = "2026-11-28T14:23:10Z";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn policy(action: &str, limit: u64) -> Policy {
    let text = format!(
        "[[entitlement]]\nname = \"blue\"\nmatch = {{ team = \"blue\" }}\nlimit = {{ total_tokens = {limit} }}\n\
         window = \"1m\"\naction = \"{action}\"\nexempt = [\"exempt.slice/*\"]\n"
    );
    Policy::parse("p.toml", &text).unwrap()
}

fn labels(team: &str) -> Labels {
    Labels { team: team.into(), ..Default::default() }
}

fn proc_in(cgroup_id: u64, path: &str, team: &str) -> ProcInfo {
    ProcInfo { cgroup_id, cgroup_path: path.into(), comm: "python3".into(), labels: labels(team) }
}

fn conn(tgid: u32) -> ConnId {
    ConnId { tgid, conn: 0xabc }
}

#[test]
fn sequential_calls_gate_then_deny_after_the_exhausting_call() {
    let now = ts(T0);
    let mut e = Engine::new(&policy("deny", 1000), 0.5, 100, now);
    e.observe(100, proc_in(7, "/test/blue", "blue"));
    e.observe(200, proc_in(8, "/test/red", "red"));
    assert!(e.recompute().is_empty(), "nothing used: nothing held");
    let s = e.on_record(conn(100), None, &labels("blue"), Usage::call(400, 100, 0), now);
    assert_eq!(s, vec![Step::Set(Who::Cgroup(7), Verdict::Gate)], "half used: every request is approved");
    // The next request is held: approved, with a provisional reservation.
    let s = e.on_hold(conn(100), None, now);
    assert_eq!(s, vec![Step::Pass(conn(100)), Step::Resume(100)]);
    assert_eq!(e.budgets.counters()[0].reserved(), 100);
    // Its record exhausts the budget: deny, and the connections go at once.
    let s = e.on_record(conn(100), None, &labels("blue"), Usage::call(400, 150, 0), now);
    assert_eq!(s, vec![Step::Set(Who::Cgroup(7), Verdict::Deny), Step::DestroyCgroup(7)]);
    assert_eq!(e.budgets.counters()[0].reserved(), 0, "the hold's reservation is settled");
    // A write after it is refused.
    let s = e.on_hold(conn(100), None, now);
    assert_eq!(s, vec![Step::DestroyConn(conn(100)), Step::Resume(100)]);
    let a = e.take_actions();
    assert_eq!(
        (a[0].entitlement.as_str(), a[0].pid, a[0].action, a[0].cgroup.as_str()),
        ("blue", 100, "deny", "/test/blue")
    );
    // Another team is never touched.
    assert!(!e.installed().keys().any(|w| *w == Who::Cgroup(8)));
    let s = e.on_hold(conn(200), None, now);
    assert_eq!(s, vec![Step::Pass(conn(200)), Step::Resume(200)]);
}

#[test]
fn concurrent_holds_are_refused_once_in_flight_covers_the_limit() {
    let now = ts(T0);
    let mut e = Engine::new(&policy("deny", 1000), 0.5, 300, now);
    for t in 1..=8 {
        e.observe(100 + t, proc_in(7, "/test/blue", "blue"));
    }
    e.on_record(conn(101), None, &labels("blue"), Usage::call(500, 0, 0), now);
    let passed = (1..=8).filter(|t| e.on_hold(conn(100 + t), None, now).contains(&Step::Pass(conn(100 + t)))).count();
    assert_eq!(passed, 2, "500 used + 2 × 300 in flight ≥ 1000");
}

#[test]
fn signal_exempt_and_observe() {
    let now = ts(T0);
    let mut e = Engine::new(&policy("signal", 10), 0.5, 5, now);
    e.observe(100, proc_in(7, "/test/blue", "blue"));
    e.observe(101, proc_in(9, "/exempt.slice/job", "blue"));
    let s = e.on_record(conn(100), None, &labels("blue"), Usage::call(10, 0, 0), now);
    assert_eq!(s, vec![Step::Set(Who::Cgroup(7), Verdict::Signal(libc::SIGTERM))]);
    assert_eq!(e.on_hold(conn(100), None, now), vec![Step::Signal(100, libc::SIGTERM), Step::Resume(100)]);
    assert_eq!(e.on_hold(conn(101), None, now), vec![Step::Pass(conn(101)), Step::Resume(101)], "exempt");

    let mut e = Engine::new(&policy("observe", 10), 0.5, 5, now);
    e.observe(100, proc_in(7, "/test/blue", "blue"));
    assert!(e.on_record(conn(100), None, &labels("blue"), Usage::call(10, 0, 0), now).is_empty());
    assert!(e.take_actions().is_empty(), "the call that exhausts it was allowed");
    assert!(e.on_record(conn(100), None, &labels("blue"), Usage::call(1, 0, 0), now).is_empty(), "never in the kernel");
    let a = e.take_actions();
    assert_eq!((a.len(), a[0].action), (1, "would_block"));
}

#[test]
fn a_process_of_another_team_in_the_same_cgroup_is_freed() {
    let now = ts(T0);
    let mut e = Engine::new(&policy("deny", 10), 0.5, 5, now);
    e.observe(100, proc_in(7, "/shared", "blue"));
    e.observe(200, proc_in(7, "/shared", "red"));
    let s = e.on_record(conn(100), None, &labels("blue"), Usage::call(10, 0, 0), now);
    assert!(s.contains(&Step::Set(Who::Cgroup(7), Verdict::Deny)), "{s:?}");
    assert!(s.contains(&Step::Set(Who::Process(200), Verdict::Free)), "{s:?}");
    // It exits: its entry goes.
    assert_eq!(e.on_exit(200), vec![Step::Clear(Who::Process(200))]);
}

#[test]
fn cut_past_the_limit_and_release_on_close() {
    let now = ts(T0);
    let mut e = Engine::new(&policy("cut", 1000), 0.5, 100, now);
    e.observe(100, proc_in(7, "/test/blue", "blue"));
    e.on_record(conn(100), None, &labels("blue"), Usage::call(600, 0, 0), now);
    let call = ResKey::Call(conn(100), 1);
    e.on_hold(conn(100), None, now);
    e.on_request(call, &labels("blue"), Usage::call(100, 2000, 0), now);
    assert_eq!(e.budgets.counters()[0].reserved(), 2100, "the parsed estimate replaced the hold's");
    assert!(e.on_progress(call, 250).is_empty());
    assert_eq!(e.on_progress(call, 301), vec![Step::DestroyConn(conn(100))]);
    assert_eq!(e.take_actions()[0].action, "cut");
    e.on_conn_closed(conn(100));
    assert_eq!(e.budgets.counters()[0].reserved(), 0);
}

#[test]
fn lifting_the_limit_and_rollover_free_at_once() {
    let now = ts(T0);
    let mut e = Engine::new(&policy("deny", 10), 0.5, 5, now);
    e.observe(100, proc_in(7, "/test/blue", "blue"));
    e.on_record(conn(100), None, &labels("blue"), Usage::call(10, 0, 0), now);
    assert_eq!(e.installed().get(&Who::Cgroup(7)), Some(&Verdict::Deny));
    let (kept, steps) = e.replace_policy(&policy("deny", 100_000), now);
    assert_eq!((kept, steps), (vec!["blue".to_string()], vec![Step::Clear(Who::Cgroup(7))]));
    e.replace_policy(&policy("deny", 10), now);
    assert_eq!(e.installed().get(&Who::Cgroup(7)), Some(&Verdict::Deny));
    assert_eq!(e.tick(ts("2026-11-28T14:24:00Z")), vec![Step::Clear(Who::Cgroup(7))]);
    // The cgroup stays known after its processes exit: a new one is held from its first write.
    e.on_exit(100);
    e.on_record(conn(300), None, &labels("blue"), Usage::call(10, 0, 0), ts("2026-11-28T14:24:01Z"));
    assert_eq!(e.installed().get(&Who::Cgroup(7)), Some(&Verdict::Deny));
}

#[test]
fn a_cgroup_found_in_the_tree_is_adopted_only_when_a_hard_entitlement_matches() {
    let now = ts(T0);
    let mut e = Engine::new(&policy("deny", 1000), 0.5, 100, now);
    assert!(!e.gated(), "nothing used: no walk needed");
    e.on_record(conn(100), None, &labels("blue"), Usage::call(600, 0, 0), now);
    assert!(e.gated(), "past the hold fraction");
    let info = |path: &str, team: &str| CgroupInfo { path: path.into(), labels: labels(team) };
    assert!(!e.adopt_cgroup(8, info("/test/red", "red")), "another team");
    assert!(!e.adopt_cgroup(9, info("/exempt.slice/job", "blue")), "an exempt cgroup");
    assert!(e.adopt_cgroup(7, info("/test/blue-new", "blue")));
    assert!(e.knows_cgroup(7) && !e.knows_cgroup(8) && !e.knows_cgroup(9));
    assert_eq!(e.recompute(), vec![Step::Set(Who::Cgroup(7), Verdict::Gate)]);
    let s = e.on_record(conn(100), None, &labels("blue"), Usage::call(400, 0, 0), now);
    assert_eq!(s, vec![Step::Set(Who::Cgroup(7), Verdict::Deny), Step::DestroyCgroup(7)]);
    assert_eq!(e.verdict_of(4242, 7), Some(Verdict::Deny), "a process in it, by its cgroup");
    assert_eq!(e.verdict_of(4242, 8), None);
}

#[test]
fn observe_entitlements_never_gate() {
    let now = ts(T0);
    let mut e = Engine::new(&policy("observe", 10), 0.5, 5, now);
    e.on_record(conn(100), None, &labels("blue"), Usage::call(20, 0, 0), now);
    assert!(!e.gated(), "observe never acts: no cgroup walk");
}
