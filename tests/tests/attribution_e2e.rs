//! Workload identity and team attribution, end to end: clients run inside real cgroups with
//! kubelet- and systemd-style paths, a stand-in Kubernetes API server describes their pods,
//! and a mapping file turns them into teams. One agent for this binary, configured with both;
//! tests run one at a time because some edit the shared mapping file.
use std::{
    path::PathBuf,
    sync::{Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokentap_tests::{
    agent::{self, agent, agent_bin},
    env,
    kube::{self, Cgroup, KubeApi, PodFixture},
    require_bpf, Case,
};

const NODE: &str = "test-node-1";

const MAPPING: &str = r#"
[[rule]]
name = "by-header"
[rule.match]
headers = { "x-team" = "*" }
[rule.set]
team = "{header.x-team}"

[[rule]]
name = "payments-by-label"
[rule.match]
namespace = "payments"
pod_labels = { matchLabels = { app = "checkout" }, matchExpressions = [ { key = "tier", operator = "In", values = ["api"] } ] }
[rule.set]
team = "{labels.team}"
cost_center = "{annotations.billing.example.com/cost-center}"
app = "{workload}"

[[rule]]
name = "ml-namespace"
[rule.match]
namespace = "ml"
[rule.set]
team = "ml-platform"
product = "{workload}"

[[rule]]
name = "batch-units"
[rule.match]
systemd_unit = "llm-batch*.service"
[rule.set]
team = "data"
app = "{unit}"

[[rule]]
name = "curl-by-exe"
[rule.match]
exe_name = "curl"
[rule.set]
team = "ops-{comm}"
"#;

/// The Deployment's pod whose labels the tests select on (and change).
fn checkout_pod((uid, cid): &(String, String), labels: Value) -> Value {
    PodFixture {
        namespace: "payments",
        name: "checkout-5f7b9c6d8-x2x9q",
        uid,
        node: NODE,
        labels,
        annotations: json!({"billing.example.com/cost-center": "cc-42"}),
        owners: json!([kube::owner("apps/v1", "ReplicaSet", "checkout-5f7b9c6d8")]),
        qos: "Burstable",
        container_id: cid,
    }
    .json()
}

struct World {
    api: KubeApi,
    mapping: PathBuf,
    config: PathBuf,
    checkout: (String, String),
    batch: (String, String),
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let checkout = (kube::pod_uid(), kube::container_id());
        let batch = (kube::pod_uid(), kube::container_id());
        let objects = json!([
            checkout_pod(
                &checkout,
                json!({"app": "checkout", "team": "payments", "tier": "api", "pod-template-hash": "5f7b9c6d8"})
            ),
            kube::replicaset("payments", "checkout-5f7b9c6d8", "checkout"),
            PodFixture {
                namespace: "ml",
                name: "batch-runner-0",
                uid: &batch.0,
                node: NODE,
                labels: json!({"app": "batch-runner"}),
                annotations: json!({}),
                owners: json!([kube::owner("apps/v1", "StatefulSet", "batch-runner")]),
                qos: "BestEffort",
                container_id: &batch.1,
            }
            .json(),
        ]);
        let api = KubeApi::start(&objects);
        let dir = env::temp_subdir("attribution");
        let mapping = dir.join("mapping.toml");
        std::fs::write(&mapping, MAPPING).unwrap();
        let config_text = format!(
            "[attribution]\nmapping_file = \"{}\"\n\n[kubernetes]\nkubeconfig = \"{}\"\nnode_name = \"{NODE}\"\n",
            mapping.display(),
            api.kubeconfig().display()
        );
        let config = dir.join("tokentap.toml");
        std::fs::write(&config, &config_text).unwrap();
        agent::configure(&config_text);
        agent();
        let deadline = Instant::now() + Duration::from_secs(20);
        while api.watchers() == 0 {
            assert!(Instant::now() < deadline, "the agent never watched pods on the stand-in API");
            std::thread::sleep(Duration::from_millis(100));
        }
        World { api, mapping, config, checkout, batch }
    })
}

/// Serialises the tests of this binary.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn kubelet_cgroup(qos: &str, pod_uid: &str, cid: &str) -> Cgroup {
    let pod = pod_uid.replace('-', "_");
    Cgroup::create(&format!(
        "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{pod}.slice/cri-containerd-{cid}.scope"
    ))
}

fn one_python_call(case: &Case, prefix: &[std::ffi::OsString]) -> Value {
    case.one_openai("chat", 1, prefix).remove(0)
}

fn field<'a>(r: &'a Value, key: &str) -> &'a Value {
    r.get(key).unwrap_or_else(|| panic!("record has no {key}"))
}

#[test]
fn pod_selected_by_labels_gets_pod_workload_and_team() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let w = world();
    let cg = kubelet_cgroup("burstable", &w.checkout.0, &w.checkout.1);
    let r = one_python_call(&Case::new(), &cg.prefix());
    assert_eq!(field(&r, "k8s_namespace"), "payments");
    assert_eq!(field(&r, "k8s_pod"), "checkout-5f7b9c6d8-x2x9q");
    assert_eq!(field(&r, "k8s_workload"), "checkout");
    assert_eq!(field(&r, "k8s_workload_kind"), "Deployment");
    assert_eq!(field(&r, "k8s_node"), NODE);
    assert_eq!(field(&r, "container_id").as_str(), Some(w.checkout.1.as_str()));
    assert_eq!(field(&r, "container_runtime"), "containerd");
    assert_eq!(field(&r, "team"), "payments");
    assert_eq!(field(&r, "cost_center"), "cc-42");
    assert_eq!(field(&r, "app"), "checkout");
    assert_eq!(field(&r, "uid"), 0);
    assert_eq!(field(&r, "user"), "root");
    assert_eq!(field(&r, "systemd_unit"), &Value::Null);
    let cg_id = std::fs::metadata(cg.path()).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    assert_eq!(field(&r, "cgroup_id").as_u64(), Some(cg_id), "cgroup_id is the cgroup directory's inode");
}

#[test]
fn namespace_rule_templates_the_statefulset_name() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let w = world();
    let cg = kubelet_cgroup("besteffort", &w.batch.0, &w.batch.1);
    let r = one_python_call(&Case::new(), &cg.prefix());
    assert_eq!(field(&r, "k8s_namespace"), "ml");
    assert_eq!(field(&r, "k8s_workload"), "batch-runner");
    assert_eq!(field(&r, "k8s_workload_kind"), "StatefulSet");
    assert_eq!(field(&r, "team"), "ml-platform");
    assert_eq!(field(&r, "product"), "batch-runner");
}

#[test]
fn label_change_in_the_api_changes_the_next_calls_team() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let w = world();
    let cg = kubelet_cgroup("burstable", &w.checkout.0, &w.checkout.1);
    let mut labels = json!({"app": "checkout", "team": "payments-v2", "tier": "api", "pod-template-hash": "5f7b9c6d8"});
    let relabel = |labels: &Value| {
        w.api.control("/_control/pods", &json!({"apply": checkout_pod(&w.checkout, labels.clone())}));
    };
    relabel(&labels);
    // The watch event reaches the agent asynchronously; a bounded retry, not a fixed sleep.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = one_python_call(&Case::new(), &cg.prefix());
        if field(&r, "team") == "payments-v2" {
            break;
        }
        assert!(Instant::now() < deadline, "the relabelled pod never changed the team");
    }
    labels["team"] = json!("payments");
    relabel(&labels);
}

#[test]
fn systemd_service_is_attributed_by_unit() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    world();
    let cg = Cgroup::create(&format!("system.slice/llm-batch-{}.service", env::random_hex(3)));
    let unit = cg.path().file_name().unwrap().to_string_lossy().into_owned();
    let r = one_python_call(&Case::new(), &cg.prefix());
    assert_eq!(field(&r, "systemd_unit").as_str(), Some(unit.as_str()));
    assert_eq!(field(&r, "team"), "data");
    assert_eq!(field(&r, "app").as_str(), Some(unit.as_str()));
    assert_eq!(field(&r, "k8s_pod"), &Value::Null);
}

#[test]
fn executable_rule_with_template_and_unattributed_fallback() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    world();
    assert_eq!(curl_team(), "ops-curl");
    // A Python client in no pod, unit or header rule: nobody claims it.
    let r = one_python_call(&Case::new(), &[]);
    assert_eq!(field(&r, "team"), "unattributed");
    assert_eq!(field(&r, "cost_center"), &Value::Null);
}

#[test]
fn header_rule_wins_first_and_only_the_mapped_value_leaves() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    world();
    let case = Case::new();
    let private_value = format!("tenant-secret-{}", env::random_hex(6));
    case.add_secret(private_value.clone());
    let x_team = format!("x-team: research-{}", env::random_hex(2));
    let team = x_team.trim_start_matches("x-team: ").to_string();
    let extra = format!("x-tenant-token: {private_value}");
    // curl would match "curl-by-exe" too: the header rule comes first. The checks search
    // every output for the unmapped header's value and the API key.
    let r = case.one_curl_chat(&["-H", &x_team, "-H", &extra]);
    assert_eq!(field(&r, "team").as_str(), Some(team.as_str()));
}

fn wait_stderr(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::fs::read_to_string(&agent().stderr).unwrap_or_default().contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "agent never logged {needle:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn curl_team() -> String {
    field(&Case::new().one_curl_chat(&[]), "team").as_str().unwrap().to_string()
}

#[test]
fn hot_reload_applies_to_the_next_call_and_a_bad_edit_keeps_the_old_mapping() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let w = world();
    let before = std::fs::read_to_string(&agent().stderr).unwrap_or_default().matches("mapping reloaded").count();
    std::fs::write(&w.mapping, MAPPING.replace("team = \"ops-{comm}\"", "team = \"sre-{comm}\"")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&agent().stderr).unwrap_or_default().matches("mapping reloaded").count() == before {
        assert!(Instant::now() < deadline, "the edit was not reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(curl_team(), "sre-curl");

    // Line 4 of this text holds an unknown key.
    let bad = "[[rule]]\nname = \"broken\"\n[rule.set]\nteem = \"x\"\n";
    std::fs::write(&w.mapping, bad).unwrap();
    wait_stderr(&format!("{}:4: rule[1].set.teem", w.mapping.display()));
    assert_eq!(curl_team(), "sre-curl", "the previous mapping stays in force");

    // SIGHUP re-reads too.
    std::fs::write(&w.mapping, MAPPING).unwrap();
    // SAFETY: kill(2) of the agent this binary started.
    unsafe { libc::kill(agent().pid as libc::pid_t, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl_team() != "ops-curl" {
        assert!(Instant::now() < deadline, "the restored mapping never took effect");
    }
}

#[test]
fn identity_command_explains_a_pods_attribution() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let w = world();
    let cg = kubelet_cgroup("burstable", &w.checkout.0, &w.checkout.1);
    let mut sleeper = std::process::Command::new("sh")
        .args(["-c", r#"echo $$ > "$0/cgroup.procs" && exec sleep 30"#])
        .arg(cg.path())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = std::process::Command::new(agent_bin())
        .args(["identity", &sleeper.id().to_string(), "--config"])
        .arg(&w.config)
        .output()
        .unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "payments/checkout-5f7b9c6d8-x2x9q",
        "Deployment/checkout",
        &w.checkout.1,
        "team=payments",
        "matched rule \"payments-by-label\"",
        "by-header: no match",
        "billing.example.com/cost-center",
    ] {
        assert!(text.contains(needle), "identity output lacks {needle:?}:\n{text}");
    }
    let annotations = text.lines().find(|l| l.starts_with("annotations")).expect("an annotations line");
    assert!(!annotations.contains("cc-42"), "annotation values are not shown, only keys: {annotations}");
    assert!(text.contains("cost_center=cc-42"), "the mapped label is shown");
}
