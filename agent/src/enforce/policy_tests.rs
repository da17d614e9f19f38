use super::*;

const ISSUE_FORM: &str = r#"
[[entitlement]]
name = "blue-daily"
match = { team = "blue" }
limit = { total_tokens = 50000 }
window = "1d"
warn_at = 0.8
action = "deny"
exempt = ["system.slice/*"]

[[entitlement]]
name = "green-cost"
match = { team = "green", provider = "openai", model = "gpt-4o*" }
limit = { cost_usd = 12.345678 }
window = "month"
time_zone = "Europe/Paris"
action = "signal"
signal = "SIGUSR1"
scope = "cluster"

[[entitlement]]
name = "red-rpm"
match = { namespace = "red", workload = "api" }
limit = { requests = 1_000 }
window = "1h"
sliding = true
action = "observe"
"#;

fn invalid(text: &str) -> (usize, String, String) {
    match Policy::parse("p.toml", text) {
        Err(PolicyError::Invalid { file, line, key, message }) => {
            assert_eq!(file, "p.toml");
            (line, key, message)
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn the_issue_form_parses() {
    let p = Policy::parse("p.toml", ISSUE_FORM).unwrap();
    assert_eq!(p.entitlements.len(), 3);
    let blue = &p.entitlements[0];
    assert_eq!(blue.name, "blue-daily");
    assert_eq!(blue.limit, Limit { kind: LimitKind::TotalTokens, amount: 50_000 });
    assert_eq!(blue.window, Window::fixed(Span::Day));
    assert_eq!((blue.warn_at_bp, blue.action, blue.scope), (Some(8000), Action::Deny, Scope::Host));
    assert!(blue.exempts("/system.slice/cron.service"));
    assert!(!blue.exempts("/user.slice/x"));
    let green = &p.entitlements[1];
    // 12.345678 USD, exactly, in pico-USD.
    assert_eq!(green.limit, Limit { kind: LimitKind::CostUsd, amount: 12_345_678_000_000 });
    assert_eq!((green.action, green.signal, green.scope), (Action::Signal, libc::SIGUSR1, Scope::Cluster));
    assert!(green.window.time_zone.is_some());
    let red = &p.entitlements[2];
    assert_eq!(red.limit, Limit { kind: LimitKind::Requests, amount: 1000 });
    assert!(red.window.sliding);
    assert_eq!(Policy::parse("p.toml", "").unwrap(), Policy::default());
}

#[test]
fn matching_needs_every_key_and_unknown_provider_or_model_matches() {
    let p = Policy::parse("p.toml", ISSUE_FORM).unwrap();
    let green = &p.entitlements[1].matcher;
    let mut l = Labels { team: "green".into(), ..Default::default() };
    assert!(green.matches(&l), "provider and model unknown before the request leaves");
    l.model = Some("gpt-4o-mini".into());
    l.provider = Some("openai".into());
    assert!(green.matches(&l));
    l.model = Some("claude-3".into());
    assert!(!green.matches(&l));
    let red = &p.entitlements[2].matcher;
    let l = Labels { team: "x".into(), namespace: Some("red".into()), ..Default::default() };
    assert!(!red.matches(&l), "an absent workload label does not match");
}

#[test]
fn errors_name_line_and_key() {
    let base = "[[entitlement]]\nname = \"a\"\nmatch = { team = \"b\" }\nlimit = { total_tokens = 10 }\nwindow = \"1d\"\naction = \"deny\"\n";
    assert!(Policy::parse("p.toml", base).is_ok());
    let (line, key, msg) = invalid(&format!("{base}colour = 1\n"));
    assert_eq!((line, key.as_str()), (7, "entitlement[1].colour"));
    assert!(msg.contains("unknown key"), "{msg}");
    let (line, key, _) = invalid(&base.replace("team = \"b\"", "teem = \"b\""));
    assert_eq!((line, key.as_str()), (3, "entitlement[1].match.teem"));
    let (line, key, _) = invalid(&base.replace("total_tokens = 10", "total_tokens = 10, requests = 3"));
    assert_eq!((line, key.as_str()), (4, "entitlement[1].limit"));
    let (line, key, _) = invalid(&base.replace("total_tokens = 10", "total_tokens = 0"));
    assert_eq!((line, key.as_str()), (4, "entitlement[1].limit.total_tokens"));
    let (_, key, _) = invalid(&base.replace("total_tokens = 10", "total_tokens = 1.5"));
    assert_eq!(key, "entitlement[1].limit.total_tokens");
    let (_, key, _) = invalid(&base.replace("total_tokens = 10", "cost_usd = 0.0000001"));
    assert_eq!(key, "entitlement[1].limit.cost_usd");
    let (line, key, _) = invalid(&base.replace("\"1d\"", "\"2d\""));
    assert_eq!((line, key.as_str()), (5, "entitlement[1].window"));
    let (line, key, _) = invalid(&base.replace("\"deny\"", "\"block\""));
    assert_eq!((line, key.as_str()), (6, "entitlement[1].action"));
    let (line, key, _) = invalid(&format!("{base}signal = \"SIGTERM\"\n"));
    assert_eq!((line, key.as_str()), (7, "entitlement[1].signal"));
    let (_, key, _) = invalid(&format!("{}signal = \"SIGSTOP\"\n", base.replace("\"deny\"", "\"signal\"")));
    assert_eq!(key, "entitlement[1].signal");
    let (line, key, _) = invalid(&format!("{base}warn_at = 1.2\n"));
    assert_eq!((line, key.as_str()), (7, "entitlement[1].warn_at"));
    let (line, key, _) = invalid(&format!("{base}time_zone = \"Mars/Olympus\"\n"));
    assert_eq!((line, key.as_str()), (7, "entitlement[1].time_zone"));
    let (_, key, _) = invalid(&format!("{base}scope = \"planet\"\n"));
    assert_eq!(key, "entitlement[1].scope");
    let (_, key, _) = invalid(&format!("{base}exempt = [\"a[b\"]\n"));
    assert_eq!(key, "entitlement[1].exempt[0]");
    let (line, key, _) = invalid(&base.replace("\"1d\"", "\"month\"\nsliding = true"));
    assert_eq!((line, key.as_str()), (5, "entitlement[1].window"));
    let (line, key, msg) = invalid(&format!("{base}{base}"));
    assert_eq!((line, key.as_str()), (8, "entitlement[2].name"));
    assert!(msg.contains("duplicate"), "{msg}");
    let (line, key, _) = invalid(&base.replace("action = \"deny\"\n", ""));
    assert_eq!((line, key.as_str()), (1, "entitlement[1].action"));
    let (line, key, _) = invalid("[[entitlement]]\nname = \"a\n");
    assert_eq!((line, key.as_str()), (2, "entitlement[1].name"));
    let (_, key, _) = invalid("entitlement = 3\n");
    assert_eq!(key, "entitlement");
}

#[test]
fn signals_by_name() {
    assert_eq!(signal_number("SIGKILL"), Some(libc::SIGKILL));
    assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
    assert_eq!(signal_number("SIGCONT"), None);
}
