use super::*;
use crate::enforce::policy::Policy;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn policy(extra: &str) -> Policy {
    let text = format!(
        "[[entitlement]]\nname = \"blue\"\nmatch = {{ team = \"blue\" }}\nlimit = {{ total_tokens = 1000 }}\n\
         window = \"1m\"\nwarn_at = 0.8\naction = \"deny\"\n{extra}"
    );
    Policy::parse("p.toml", &text).unwrap()
}

fn blue() -> Labels {
    Labels { team: "blue".into(), ..Default::default() }
}

const T0: &str = "2026-11-28T14:23:10Z";

#[test]
fn settle_reserve_and_levels() {
    let now = ts(T0);
    let mut b: Budgets<u32> = Budgets::new(&policy(""), 0.5, 100, now);
    assert_eq!(b.matching(&blue()), vec![0]);
    assert!(b.matching(&Labels { team: "red".into(), ..Default::default() }).is_empty());
    assert_eq!(b.level(0), Level::Free);
    b.reserve(1, &blue(), b.estimate(300, Some(250), 0), None);
    assert_eq!((b.counters()[0].reserved(), b.counters()[0].remaining()), (550, 450));
    assert_eq!(b.level(0), Level::Gate, "used + reserved ≥ 50 %");
    b.settle(Some(&1), &blue(), Usage::call(300, 100, 0), now);
    assert_eq!((b.counters()[0].used(), b.counters()[0].reserved()), (400, 0));
    assert_eq!((b.level(0), b.counters()[0].state()), (Level::Free, State::Ok));
    b.settle(None, &blue(), Usage::call(350, 100, 0), now);
    assert_eq!(b.counters()[0].state(), State::Warning);
    assert_eq!(b.take_warnings(), vec![0]);
    assert!(b.take_warnings().is_empty(), "once per window");
    assert_eq!(b.level(0), Level::Gate, "less than one default call left");
    b.settle(None, &blue(), Usage::call(100, 100, 0), now);
    assert_eq!((b.level(0), b.counters()[0].state()), (Level::Exhausted, State::Exhausted));
    assert_eq!(b.counters()[0].overrun(), 50);
    assert!(b.counters()[0].refuses());
}

#[test]
fn concurrent_reservations_refuse_the_rest() {
    let now = ts(T0);
    let mut b: Budgets<u32> = Budgets::new(&policy(""), 0.5, 100, now);
    let granted: Vec<u32> = (0..8)
        .filter(|&k| {
            let ok = !b.counters()[0].refuses();
            if ok {
                b.reserve(k, &blue(), b.estimate(50, Some(200), 0), None);
            }
            ok
        })
        .collect();
    assert_eq!(granted, vec![0, 1, 2, 3], "4 × 250 reserved covers the 1000-token limit");
    // The provisional estimate is replaced by the parsed request's.
    b.reserve(10, &blue(), b.estimate(10, Some(10), 0), Some(&0));
    assert_eq!(b.counters()[0].reserved(), 770);
    b.release(&10);
    b.release(&1);
    assert_eq!(b.counters()[0].reserved(), 500);
}

#[test]
fn fixed_windows_roll_over() {
    let mut b: Budgets<u32> = Budgets::new(&policy(""), 0.5, 100, ts(T0));
    b.settle(None, &blue(), Usage::call(1000, 0, 0), ts(T0));
    assert_eq!(b.level(0), Level::Exhausted);
    assert!(b.roll(ts("2026-11-28T14:23:59Z")).is_empty());
    assert_eq!(b.roll(ts("2026-11-28T14:24:00Z")), vec!["blue".to_string()]);
    assert_eq!((b.counters()[0].used(), b.level(0)), (0, Level::Free));
    // A late record of the past window does not count.
    b.settle(None, &blue(), Usage::call(5, 0, 0), ts("2026-11-28T14:23:58Z"));
    assert_eq!(b.counters()[0].used(), 0);
    // A record in the next window opens it before the tick does.
    b.settle(None, &blue(), Usage::call(7, 0, 0), ts("2026-11-28T14:25:01Z"));
    assert_eq!(b.counters()[0].used(), 7);
}

#[test]
fn sliding_windows_forget_minute_by_minute() {
    let p = policy("").entitlements[0].clone();
    let mut p2 = Policy { entitlements: vec![p] };
    p2.entitlements[0].window =
        crate::enforce::window::Window { span: crate::enforce::window::Span::Hour, time_zone: None, sliding: true };
    let mut b: Budgets<u32> = Budgets::new(&p2, 0.5, 100, ts("2026-11-28T14:00:30Z"));
    b.settle(None, &blue(), Usage::call(600, 0, 0), ts("2026-11-28T14:00:30Z"));
    b.settle(None, &blue(), Usage::call(300, 0, 0), ts("2026-11-28T14:30:00Z"));
    assert_eq!(b.counters()[0].used(), 900);
    b.roll(ts("2026-11-28T14:59:59Z"));
    assert_eq!(b.counters()[0].used(), 900);
    b.roll(ts("2026-11-28T15:00:00Z"));
    assert_eq!(b.counters()[0].used(), 300, "the 14:00 minute left the last hour");
}

#[test]
fn reload_keeps_counters_and_a_lifted_limit_frees_at_once() {
    let now = ts(T0);
    let mut b: Budgets<u32> = Budgets::new(&policy(""), 0.5, 100, now);
    b.settle(None, &blue(), Usage::call(1000, 0, 0), now);
    assert_eq!(b.level(0), Level::Exhausted);
    let lifted = Policy::parse(
        "p.toml",
        "[[entitlement]]\nname = \"blue\"\nmatch = { team = \"blue\" }\nlimit = { total_tokens = 100000 }\n\
         window = \"1m\"\nwarn_at = 0.8\naction = \"deny\"\n",
    )
    .unwrap();
    assert_eq!(b.replace_policy(&lifted, now), vec!["blue".to_string()]);
    assert_eq!((b.counters()[0].used(), b.level(0)), (1000, Level::Free));
    // Another window: a new counter.
    let other = policy("").entitlements[0].clone();
    let mut p = Policy { entitlements: vec![other] };
    p.entitlements[0].window = crate::enforce::window::Window::fixed(crate::enforce::window::Span::Hour);
    assert!(b.replace_policy(&p, now).is_empty());
    assert_eq!(b.counters()[0].used(), 0);
}

#[test]
fn amounts_by_kind_and_cluster_usage() {
    let u = Usage::call(3, 4, 5);
    assert_eq!(
        [
            LimitKind::TotalTokens,
            LimitKind::InputTokens,
            LimitKind::OutputTokens,
            LimitKind::CostUsd,
            LimitKind::Requests
        ]
        .map(|k| u.amount(k)),
        [7, 3, 4, 5, 1]
    );
    let now = ts(T0);
    let mut b: Budgets<u32> = Budgets::new(&policy(""), 0.5, 100, now);
    let start = b.counters()[0].bounds().start;
    b.set_remote("blue", start, 990);
    b.settle(None, &blue(), Usage::call(20, 0, 0), now);
    assert_eq!((b.counters()[0].local_used(), b.counters()[0].used()), (20, 1010));
    assert_eq!(b.counters()[0].overrun(), 10);
}
