//! Rule evaluation: every match key, selectors, templates, order, defaults, headers, explain.
use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;
use crate::identity::model::{CgroupInfo, ContainerInfo, PodInfo};

pub(super) fn pod_workload() -> Workload {
    let container = ContainerInfo {
        name: "api".into(),
        image: "registry.example.com/payments/api:1.2".into(),
        id: Some("abc123".into()),
    };
    let labels: BTreeMap<String, String> =
        [("team", "payments"), ("tier", "api"), ("app.kubernetes.io/name", "checkout")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let annotations = [("billing.example.com/cost-center".to_string(), "cc-1".to_string())].into_iter().collect();
    Workload {
        pid: 4242,
        comm: "python3".into(),
        exe: "/usr/bin/python3.11".into(),
        uid: Some(1000),
        user: Some("svc-pay".into()),
        cgroup: CgroupInfo {
            path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc123.scope"
                .into(),
            ..Default::default()
        },
        pod: Some(PodInfo {
            uid: "1".into(),
            name: "checkout-api-7d9f-x2x".into(),
            namespace: "payments".into(),
            labels,
            annotations,
            workload_name: Some("checkout-api".into()),
            workload_kind: Some("Deployment".into()),
            containers: vec![container.clone()],
            ..Default::default()
        }),
        container: Some(container),
    }
}

pub(super) fn host_workload() -> Workload {
    Workload {
        pid: 7,
        comm: "curl".into(),
        exe: "/usr/bin/curl".into(),
        uid: Some(0),
        user: Some("root".into()),
        cgroup: CgroupInfo {
            path: "/system.slice/llm-batch-1.service".into(),
            systemd_unit: Some("llm-batch-1.service".into()),
            ..Default::default()
        },
        pod: None,
        container: None,
    }
}

pub(super) fn no_headers(_: &str) -> Option<String> {
    None
}

fn with_headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name: &str| map.get(name).cloned()
}

/// A one-rule mapping whose match table is the inline-table body `m`.
fn one(m: &str) -> Mapping {
    let text = format!("[[rule]]\nname = \"r\"\nmatch = {{ {m} }}\nset = {{ team = \"t\" }}\n");
    Mapping::parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"))
}

fn hits(m: &str, w: &Workload) -> bool {
    one(m).attribute(w, &no_headers).rule.is_some()
}

#[test]
fn every_match_key_matches_and_rejects() {
    let (pod, host) = (pod_workload(), host_workload());
    let cases: &[(&str, bool, bool)] = &[
        // (match body, matches the pod workload, matches the host workload)
        (r#"namespace = "payments""#, true, false),
        (r#"namespace = ["billing", "pay*"]"#, true, false),
        (r#"namespace = "default""#, false, false),
        (r#"workload = "checkout-*""#, true, false),
        (r#"workload = "search-*""#, false, false),
        (r#"workload_kind = "Deployment""#, true, false),
        (r#"workload_kind = ["StatefulSet", "DaemonSet"]"#, false, false),
        (r#"container_image = "registry.example.com/payments/*""#, true, false),
        (r#"container_image = "docker.io/*""#, false, false),
        (r#"container_name = "api""#, true, false),
        (r#"container_name = "sidecar""#, false, false),
        (r#"systemd_unit = "llm-batch*.service""#, false, true),
        (r#"systemd_unit = "nginx.service""#, false, false),
        (r#"cgroup_path = "/kubepods.slice/**""#, true, false),
        (r#"cgroup_path = "/kubepods.slice/*""#, false, false),
        (r#"cgroup_path = "/system.slice/*""#, false, true),
        (r#"exe = "/usr/bin/python3*""#, true, false),
        (r#"exe = "/usr/*""#, false, false),
        (r#"exe = "/usr/**""#, true, true),
        (r#"exe_name = "python*""#, true, false),
        (r#"exe_name = ["curl", "wget"]"#, false, true),
        (r#"comm = "curl""#, false, true),
        (r#"comm = "python?""#, true, false),
        (r#"user = "svc-*""#, true, false),
        (r#"user = "root""#, false, true),
        (r#"uid = 1000"#, true, false),
        (r#"uid = [0, 1000]"#, true, true),
        (r#"uid = 0x3e8"#, true, false),
        (r#"uid = 4294967295"#, false, false),
        (r#"pod_labels = { matchLabels = { team = "payments" } }"#, true, false),
        (r#"pod_labels = { matchLabels = { team = "search" } }"#, false, false),
        (r#"pod_labels = {}"#, true, false),
        (r#"pod_annotations = { matchLabels = { "billing.example.com/cost-center" = "cc-1" } }"#, true, false),
        (r#"pod_annotations = { matchLabels = { "billing.example.com/cost-center" = "cc-2" } }"#, false, false),
        // AND of several keys
        (r#"namespace = "payments", comm = "python3", uid = 1000"#, true, false),
        (r#"namespace = "payments", comm = "curl""#, false, false),
        ("", true, true),
    ];
    for (m, want_pod, want_host) in cases {
        assert_eq!(hits(m, &pod), *want_pod, "pod: {m}");
        assert_eq!(hits(m, &host), *want_host, "host: {m}");
    }
}

#[test]
fn missing_values_never_match_even_catch_all_globs() {
    let mut w = host_workload();
    w.user = None;
    w.uid = None;
    w.comm.clear();
    w.exe.clear();
    w.cgroup = CgroupInfo::default();
    for m in [
        r#"user = "*""#,
        "uid = 0",
        r#"comm = "*""#,
        r#"exe = "**""#,
        r#"exe_name = "*""#,
        r#"cgroup_path = "**""#,
        r#"systemd_unit = "*""#,
        r#"namespace = "*""#,
        r#"workload = "*""#,
        r#"container_name = "*""#,
        r#"pod_labels = { matchExpressions = [ { key = "x", operator = "DoesNotExist" } ] }"#,
    ] {
        assert!(!hits(m, &w), "{m}");
    }
}

#[test]
fn selector_operators_follow_kubernetes() {
    let pod = pod_workload(); // labels: team=payments, tier=api, app.kubernetes.io/name=checkout
    let expr = |key: &str, op: &str, values: &str| {
        let values = if values.is_empty() { String::new() } else { format!(", values = [{values}]") };
        format!(r#"pod_labels = {{ matchExpressions = [ {{ key = "{key}", operator = "{op}"{values} }} ] }}"#)
    };
    let cases = [
        ("tier", "In", r#""backend", "api""#, true),
        ("tier", "In", r#""backend""#, false),
        ("absent", "In", r#""api""#, false),
        ("tier", "NotIn", r#""backend""#, true),
        ("tier", "NotIn", r#""api""#, false),
        ("absent", "NotIn", r#""api""#, true), // NotIn matches when the key is absent
        ("tier", "Exists", "", true),
        ("absent", "Exists", "", false),
        ("tier", "DoesNotExist", "", false),
        ("absent", "DoesNotExist", "", true),
        ("app.kubernetes.io/name", "In", r#""checkout""#, true),
    ];
    for (key, op, values, want) in cases {
        let m = expr(key, op, values);
        assert_eq!(hits(&m, &pod), want, "{m}");
        let m = m.replace("pod_labels", "pod_annotations").replace("\"tier\"", "\"billing.example.com/cost-center\"");
        let m = m.replace("\"api\"", "\"cc-1\"");
        if key == "tier" {
            assert_eq!(hits(&m, &pod), want, "{m}");
        }
    }
    // matchLabels and every expression are AND-ed.
    let both = r#"pod_labels = { matchLabels = { team = "payments" }, matchExpressions = [
        { key = "tier", operator = "In", values = ["api"] }, { key = "canary", operator = "Exists" } ] }"#;
    assert!(!hits(both, &pod));
    assert!(hits(&both.replace("\"Exists\"", "\"DoesNotExist\""), &pod));
    // Exists with an explicitly empty list is allowed, as in Kubernetes.
    assert!(hits(
        r#"pod_labels = { matchExpressions = [ { key = "tier", operator = "Exists", values = [] } ] }"#,
        &pod
    ));
}

#[test]
fn templates_fill_labels_and_sanitise() {
    let text = r#"
[[rule]]
name = "all"
[rule.set]
team = "{labels.team}"
cost_center = "{annotations.billing.example.com/cost-center}"
product = "{namespace}/{workload_kind}/{workload}/{pod}"
tenant = "{container}@{image} {{literal}}"
app = "{labels.app.kubernetes.io/name}-{exe_name}-{comm}-{user}-{uid}"
"#;
    let m = Mapping::parse("t.toml", text).unwrap();
    let a = m.attribute(&pod_workload(), &no_headers);
    assert_eq!(
        a,
        Attribution {
            team: "payments".into(),
            cost_center: Some("cc-1".into()),
            product: Some("payments/Deployment/checkout-api/checkout-api-7d9f-x2x".into()),
            tenant: Some("api@registry.example.com/payments/api:1.2 {literal}".into()),
            app: Some("checkout-python3.11-python3-svc-pay-1000".into()),
            rule: Some("all".into()),
        }
    );
    let m = Mapping::parse("t.toml", "[[rule]]\nset.team = \"{unit}\"\n").unwrap();
    assert_eq!(m.attribute(&host_workload(), &no_headers).team, "llm-batch-1.service");
    assert_eq!(m.attribute(&host_workload(), &no_headers).rule.as_deref(), Some("rule-1"));

    // Control characters are dropped and values cut to 128 characters.
    let mut w = pod_workload();
    w.pod.as_mut().unwrap().labels.insert("team".into(), format!("pay\u{1b}[31mments\n{}", "x".repeat(300)));
    let m = Mapping::parse("t.toml", "[[rule]]\nset.team = \"{labels.team}\"\n").unwrap();
    let team = m.attribute(&w, &no_headers).team;
    assert!(team.starts_with("pay[31mmentsx"), "{team}");
    assert_eq!(team.chars().count(), 128);
}

#[test]
fn missing_template_value_falls_through() {
    let text = r#"
[[rule]]
name = "by-label"
set = { team = "{labels.team}" }
[[rule]]
name = "by-cost-center"
set = { team = "finance", cost_center = "{annotations.billing.example.com/cost-center}" }
[[rule]]
name = "rest"
set = { team = "platform" }
"#;
    let m = Mapping::parse("t.toml", text).unwrap();
    let mut w = pod_workload();
    assert_eq!(m.attribute(&w, &no_headers).rule.as_deref(), Some("by-label"));
    w.pod.as_mut().unwrap().labels.remove("team");
    assert_eq!(m.attribute(&w, &no_headers).rule.as_deref(), Some("by-cost-center"));
    // An empty value counts as missing.
    w.pod.as_mut().unwrap().annotations.insert("billing.example.com/cost-center".into(), String::new());
    assert_eq!(m.attribute(&w, &no_headers).rule.as_deref(), Some("rest"));
    assert_eq!(m.attribute(&host_workload(), &no_headers).team, "platform");
}

#[test]
fn first_matching_rule_wins() {
    let text = r#"
[[rule]]
name = "a"
match = { comm = "nope" }
set = { team = "A" }
[[rule]]
name = "b"
match = { namespace = "payments" }
set = { team = "B" }
[[rule]]
name = "c"
set = { team = "C" }
"#;
    let m = Mapping::parse("t.toml", text).unwrap();
    assert_eq!(m.rule_count(), 3);
    assert_eq!(m.attribute(&pod_workload(), &no_headers).team, "B");
    assert_eq!(m.attribute(&host_workload(), &no_headers).team, "C");
}

#[test]
fn unattributed_defaults() {
    let unattributed = Attribution {
        team: "unattributed".into(),
        cost_center: None,
        product: None,
        tenant: None,
        app: None,
        rule: None,
    };
    assert_eq!(Mapping::empty().attribute(&pod_workload(), &no_headers), unattributed);
    assert_eq!(Mapping::empty().rule_count(), 0);
    assert!(Mapping::empty().header_names().is_empty());
    assert_eq!(Mapping::parse("t.toml", "").unwrap().attribute(&host_workload(), &no_headers), unattributed);
    let m = Mapping::parse(
        "t.toml",
        "[unattributed]\nteam = \"nobody\"\ncost_center = \"cc-0\"\n[[rule]]\nmatch.comm = \"x\"\nset.team = \"y\"\n",
    )
    .unwrap();
    let a = m.attribute(&host_workload(), &no_headers);
    assert_eq!((a.team.as_str(), a.cost_center.as_deref(), a.rule), ("nobody", Some("cc-0"), None));
    let m = Mapping::parse("t.toml", "[unattributed]\nproduct = \"p\"\n").unwrap();
    assert_eq!(m.attribute(&host_workload(), &no_headers).team, "unattributed");
}

#[test]
fn headers_match_and_fill_templates() {
    let text = r#"
[[rule]]
name = "gw"
match = { headers = { "X-Team" = "*", "x-tenant" = ["acme", "globex-*"] } }
set = { team = "{header.x-team}", tenant = "{header.X-Tenant}", app = "{header.x-app}" }
[[rule]]
name = "rest"
set = { team = "platform" }
"#;
    let m = Mapping::parse("t.toml", text).unwrap();
    assert_eq!(m.header_names(), ["x-team", "x-tenant", "x-app"]);
    let w = host_workload();
    let a = m.attribute(&w, &with_headers(&[("x-team", "search"), ("x-tenant", "globex-eu"), ("x-app", "bot")]));
    assert_eq!((a.team.as_str(), a.tenant.as_deref(), a.app.as_deref()), ("search", Some("globex-eu"), Some("bot")));
    assert_eq!(a.rule.as_deref(), Some("gw"));
    // Wrong tenant, missing x-team, missing templated x-app: all fall through.
    for h in [
        with_headers(&[("x-team", "search"), ("x-tenant", "initech"), ("x-app", "bot")]),
        with_headers(&[("x-tenant", "acme"), ("x-app", "bot")]),
        with_headers(&[("x-team", "search"), ("x-tenant", "acme")]),
    ] {
        assert_eq!(m.attribute(&w, &h).rule.as_deref(), Some("rest"));
    }
    // `*` accepts any value, `/` included; the empty value is present too.
    let a = m.attribute(&w, &with_headers(&[("x-team", "a/b"), ("x-tenant", "acme"), ("x-app", "z")]));
    assert_eq!(a.team, "a/b");
}

#[test]
fn headers_are_read_lazily_once_and_only_by_name() {
    let text = r#"
[[rule]]
match = { comm = "nope", headers = { "x-a" = "1" } }
set = { team = "{header.x-b}" }
[[rule]]
match = { headers = { "x-a" = "1" } }
set = { team = "{header.x-b}" }
"#;
    let m = Mapping::parse("t.toml", text).unwrap();
    let calls = RefCell::new(Vec::new());
    let h = |name: &str| {
        calls.borrow_mut().push(name.to_string());
        Some("1".to_string())
    };
    assert_eq!(m.attribute(&host_workload(), &h).team, "1");
    assert_eq!(*calls.borrow(), ["x-a", "x-b"]);
    calls.borrow_mut().clear();
    m.explain(&host_workload(), &h);
    assert_eq!(*calls.borrow(), ["x-a", "x-b"]);
    // Rules that need no headers never ask for any.
    calls.borrow_mut().clear();
    assert_eq!(
        Mapping::parse("t.toml", "[[rule]]\nset.team = \"x\"\n").unwrap().attribute(&host_workload(), &h).team,
        "x"
    );
    assert!(calls.borrow().is_empty());
}

#[test]
fn explain_lists_every_rule_without_header_values() {
    let text = r#"
[[rule]]
name = "payments-by-label"
match = { namespace = ["payments", "billing"] }
set = { team = "payments" }
[[rule]]
name = "gateway"
match = { headers = { "x-team" = "search-*" } }
set = { team = "{header.x-team}" }
[[rule]]
name = "tenant"
match = { headers = { "x-tenant" = "*" } }
set = { team = "t" }
[[rule]]
name = "labelled"
set = { team = "{labels.team}" }
[[rule]]
name = "by-selector"
match = { pod_labels = { matchExpressions = [ { key = "tier", operator = "NotIn", values = ["api"] } ] } }
set = { team = "s" }
[[rule]]
name = "curl"
match = { comm = "curl", uid = [0, 1000] }
set = { team = "ops" }
[[rule]]
name = "catch-all"
set = { team = "platform" }
"#;
    let m = Mapping::parse("t.toml", text).unwrap();
    let secret = "SECRET-TOKEN-123";
    let h = with_headers(&[("x-team", secret)]);
    let mut w = host_workload();
    w.pod = Some(PodInfo { namespace: "default".into(), ..Default::default() });
    let (a, lines) = m.explain(&w, &h);
    assert_eq!(a.team, "s");
    assert_eq!(
        lines,
        [
            r#"payments-by-label: no match: namespace: "default" not in [payments, billing]"#,
            "gateway: no match: header x-team: no match",
            "tenant: no match: header x-tenant: missing",
            "labelled: no match: set.team: {labels.team} has no value",
            "by-selector: matched",
            r#"curl: matches too, but "by-selector" comes first"#,
            r#"catch-all: matches too, but "by-selector" comes first"#,
        ]
    );
    assert_eq!(a, Attribution { team: "s".into(), rule: Some("by-selector".into()), ..m.attribute(&w, &h) });
    // A header whose value matches is still not shown when the template copies it.
    let (a, lines) = m.explain(&w, &with_headers(&[("x-team", "search-eu")]));
    assert_eq!(a.team, "search-eu");
    assert_eq!(lines[1], "gateway: matched");
    assert!(!format!("{lines:?}{m:?}").contains(secret));

    let (a, lines) = m.explain(&pod_workload(), &no_headers);
    assert_eq!(a.rule.as_deref(), Some("payments-by-label"));
    assert_eq!(lines[0], "payments-by-label: matched");
    assert_eq!(lines[2], r#"tenant: no match: header x-tenant: missing"#);
    assert_eq!(lines[4], r#"by-selector: no match: pod_labels: "tier" = "api" is in [api] (NotIn)"#);
    let (_, lines) = m.explain(&host_workload(), &no_headers);
    assert_eq!(lines[0], "payments-by-label: no match: namespace: not in a pod");
    assert_eq!(lines[4], "by-selector: no match: pod_labels: not in a pod");
    let mut w = host_workload();
    w.comm = "wget".into();
    w.uid = Some(5);
    let (_, lines) = m.explain(&w, &no_headers);
    assert_eq!(lines[5], r#"curl: no match: comm: "wget" does not match "curl""#);
    w.comm = "curl".into();
    let (_, lines) = m.explain(&w, &no_headers);
    assert_eq!(lines[5], "curl: no match: uid: 5 not in [0, 1000]");
    assert_eq!(lines[6], "catch-all: matched");
    assert!(Mapping::empty().explain(&w, &no_headers).1.is_empty());
}

#[test]
fn explain_describes_selector_failures() {
    let m = |sel: &str| {
        Mapping::parse("t.toml", &format!("[[rule]]\nmatch.pod_labels = {sel}\nset.team = \"x\"\n")).unwrap()
    };
    let why = |sel: &str| m(sel).explain(&pod_workload(), &no_headers).1.remove(0);
    assert_eq!(
        why(r#"{ matchLabels = { team = "search" } }"#),
        r#"rule-1: no match: pod_labels: "team" = "payments", matchLabels wants "search""#
    );
    assert_eq!(
        why(r#"{ matchLabels = { owner = "a" } }"#),
        r#"rule-1: no match: pod_labels: "owner" is missing (matchLabels wants "a")"#
    );
    let e = |op: &str, v: &str| format!(r#"{{ matchExpressions = [ {{ key = "tier", operator = "{op}"{v} }} ] }}"#);
    assert_eq!(
        why(&e("In", r#", values = ["db", "x"]"#)),
        r#"rule-1: no match: pod_labels: "tier" = "api" not in [db, x]"#
    );
    assert_eq!(why(&e("DoesNotExist", "")), r#"rule-1: no match: pod_labels: "tier" exists (DoesNotExist)"#);
    let absent = |op: &str, v: &str| e(op, v).replace("tier", "zone");
    assert_eq!(why(&absent("Exists", "")), r#"rule-1: no match: pod_labels: "zone" does not exist"#);
    assert_eq!(
        why(&absent("In", r#", values = ["a"]"#)),
        r#"rule-1: no match: pod_labels: "zone" is missing (In [a])"#
    );
}

#[test]
fn debug_shows_names_only() {
    let m =
        Mapping::parse("t.toml", "[[rule]]\nname = \"a\"\nmatch.headers = { x-k = \"sekrit\" }\nset.team = \"t\"\n")
            .unwrap();
    let d = format!("{m:?}");
    assert_eq!(d, r#"Mapping { rule_count: 1, rules: ["a"] }"#);
}

#[test]
fn example_file_parses_and_attributes() {
    let text = include_str!("../../../deploy/examples/mapping.toml");
    let m = Mapping::parse("mapping.toml", text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.rule_count(), 9);
    assert_eq!(m.header_names(), ["x-team", "x-tenant"]);
    let a = m.attribute(&pod_workload(), &no_headers);
    assert_eq!(a.rule.as_deref(), Some("payments-by-label"));
    assert_eq!((a.team.as_str(), a.cost_center.as_deref()), ("payments", Some("cc-1")));
    // A labelled pod without app.kubernetes.io/name falls from rule 3 to rule 4.
    let mut w = pod_workload();
    let pod = w.pod.as_mut().unwrap();
    pod.namespace = "search".into();
    pod.labels.insert("team".into(), "search".into());
    pod.labels.remove("app.kubernetes.io/name");
    let a = m.attribute(&w, &no_headers);
    assert_eq!(
        (a.rule.as_deref(), a.team.as_str(), a.app.as_deref()),
        (Some("team-label-no-app"), "search", Some("checkout-api"))
    );
    let mut w = pod_workload();
    w.pod.as_mut().unwrap().namespace = "llm-gateway".into();
    let a = m.attribute(&w, &with_headers(&[("x-team", "ads"), ("x-tenant", "initech-us")]));
    assert_eq!(
        (a.team.as_str(), a.tenant.as_deref(), a.product.as_deref()),
        ("ads", Some("initech-us"), Some("gateway"))
    );
    let a = m.attribute(&host_workload(), &no_headers);
    assert_eq!((a.rule.as_deref(), a.app.as_deref()), (Some("batch-units"), Some("llm-batch-1.service")));
    let mut w = host_workload();
    w.cgroup = CgroupInfo { path: "/user.slice/user-0.slice/session-1.scope".into(), ..Default::default() };
    assert_eq!(m.attribute(&w, &no_headers).team, "root");
    w.comm = "bash".into();
    assert_eq!(m.attribute(&w, &no_headers).rule.as_deref(), Some("host-default"));
}

#[test]
fn mapping_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Mapping>();
    assert_eq!(format!("{:?}", Mapping::default()), "Mapping { rule_count: 0, rules: [] }");
}

#[test]
fn empty_header_value_is_present() {
    let m = one(r#"headers = { "x-team" = "*" }"#);
    assert!(m.attribute(&host_workload(), &with_headers(&[("x-team", "")])).rule.is_some());
    assert!(m.attribute(&host_workload(), &no_headers).rule.is_none());
}
