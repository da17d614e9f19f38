//! `tokentap identity PID`: what the agent resolves for a process and which mapping rule
//! matches — the first thing to run when attribution looks wrong.
use std::fmt::Write as _;

use crate::{
    attribution::Mapping,
    identity::{self, kube::PodCache, model::Workload, users::Users, ProcessInfo},
};

fn or_dash(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or("-")
}

/// Resolves `pid` now and renders the report.
pub fn identity_report(pid: u32, mapping: &Mapping, mapping_file: Option<&str>, pods: Option<&PodCache>) -> String {
    let info = ProcessInfo::read(pid, &mut Users::new());
    let workload = identity::workload(pid, &info, pods);
    render(&workload, mapping, mapping_file, pods.is_some())
}

pub fn render(w: &Workload, mapping: &Mapping, mapping_file: Option<&str>, kubernetes: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "process      pid {}  comm {}  exe {}", w.pid, or_dash(Some(&w.comm)), or_dash(Some(&w.exe)));
    let uid = w.uid.map(|u| u.to_string());
    let _ = writeln!(s, "user         {} (uid {})", or_dash(w.user.as_deref()), or_dash(uid.as_deref()));
    let _ = writeln!(s, "cgroup       {}", or_dash(Some(&w.cgroup.path)));
    let _ = writeln!(s, "systemd unit {}", or_dash(w.cgroup.systemd_unit.as_deref()));
    let runtime = w.cgroup.runtime.map(|r| r.as_str());
    let _ = writeln!(s, "container    {} ({})", or_dash(w.cgroup.container_id.as_deref()), or_dash(runtime));
    let qos = w.cgroup.qos_class.map(|q| q.as_str());
    let _ = writeln!(s, "pod uid      {} (QoS {})", or_dash(w.cgroup.pod_uid.as_deref()), or_dash(qos));
    match &w.pod {
        Some(p) => {
            let _ = writeln!(s, "k8s pod      {}/{} on node {}", p.namespace, p.name, or_dash(p.node.as_deref()));
            let _ = writeln!(
                s,
                "k8s workload {}/{}",
                or_dash(p.workload_kind.as_deref()),
                or_dash(p.workload_name.as_deref())
            );
            let _ = writeln!(s, "service acct {}", or_dash(p.service_account.as_deref()));
            let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "labels       {}", if labels.is_empty() { "-".into() } else { labels.join(", ") });
            // Annotation values can be sensitive: keys only.
            let annotations: Vec<&str> = p.annotations.keys().map(String::as_str).collect();
            let _ = writeln!(
                s,
                "annotations  {}",
                if annotations.is_empty() { "-".into() } else { annotations.join(", ") }
            );
            if let Some(c) = &w.container {
                let _ = writeln!(s, "k8s container {} image {}", c.name, c.image);
            }
        }
        None if w.cgroup.pod_uid.is_some() && !kubernetes => {
            let _ = writeln!(s, "k8s pod      (Kubernetes API not configured: see [kubernetes] in the config)");
        }
        None if w.cgroup.pod_uid.is_some() => {
            let _ = writeln!(s, "k8s pod      (not found in the API's pods on this node)");
        }
        None => {}
    }
    let (a, lines) = mapping.explain(w, &|_| None);
    let _ = writeln!(
        s,
        "attribution  team={} cost_center={} product={} tenant={} app={}",
        a.team,
        or_dash(a.cost_center.as_deref()),
        or_dash(a.product.as_deref()),
        or_dash(a.tenant.as_deref()),
        or_dash(a.app.as_deref())
    );
    match (&a.rule, mapping_file) {
        (Some(rule), _) => {
            let _ = writeln!(s, "matched rule {rule:?}");
        }
        (None, Some(_)) => {
            let _ = writeln!(s, "matched rule none: the call would be counted as unattributed");
        }
        (None, None) => {
            let _ = writeln!(s, "matched rule none: no mapping file configured ([attribution] mapping_file)");
        }
    }
    if let Some(file) = mapping_file {
        let _ = writeln!(s, "rules in {file}:");
        for line in lines {
            let _ = writeln!(s, "  {line}");
        }
    }
    if !mapping.header_names().is_empty() {
        let _ = writeln!(
            s,
            "note: rules on request headers ({}) are evaluated per request; none are known here",
            mapping.header_names().join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::model::{CgroupInfo, PodInfo, Runtime};

    #[test]
    fn report_names_the_pod_and_the_matching_rule() {
        let mapping = Mapping::parse(
            "m.toml",
            "[[rule]]\nname = \"by-ns\"\n[rule.match]\nnamespace = \"payments\"\n[rule.set]\nteam = \"{labels.team}\"\n",
        )
        .unwrap();
        let mut pod = PodInfo { name: "checkout-1".into(), namespace: "payments".into(), ..Default::default() };
        pod.labels.insert("team".into(), "pay".into());
        pod.annotations.insert("secret-ish".into(), "value-not-shown".into());
        let w = Workload {
            pid: 42,
            comm: "python3".into(),
            cgroup: CgroupInfo {
                container_id: Some("ab".repeat(32)),
                runtime: Some(Runtime::Containerd),
                ..Default::default()
            },
            pod: Some(pod),
            ..Default::default()
        };
        let r = render(&w, &mapping, Some("m.toml"), true);
        assert!(r.contains("k8s pod      payments/checkout-1"), "{r}");
        assert!(r.contains("team=pay"), "{r}");
        assert!(r.contains("matched rule \"by-ns\""), "{r}");
        assert!(r.contains("by-ns: matched"), "{r}");
        assert!(r.contains("secret-ish") && !r.contains("value-not-shown"), "{r}");
        let r = render(&Workload::default(), &Mapping::empty(), None, false);
        assert!(r.contains("team=unattributed") && r.contains("no mapping file configured"), "{r}");
    }
}
