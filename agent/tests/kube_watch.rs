//! `identity::kube` against a stand-in API server (`tests/fixtures/kube_api.py`, plain HTTP on
//! loopback, token auth): list, watch, owner lookups, recovery. No root, no cluster needed.
//! Every test runs on a current-thread runtime, as the agent does.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokentap::identity::kube::{self, KubeConfig, PodCache, WatchOptions};

const NODE: &str = "node-1";
const TOKEN: &str = "test-token-1";

/// The stand-in server, killed (and its scratch directory removed) on drop.
struct ApiServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl ApiServer {
    fn start(objects: &Value) -> ApiServer {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tokentap-kube-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pods = dir.join("pods.json");
        std::fs::write(&pods, objects.to_string()).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/kube_api.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--pods")
            .arg(&pods)
            .args(["--token", TOKEN, "--bookmark-interval", "1", "--exit-with-stdin"])
            .stdin(Stdio::piped()) // closed when this test process dies: the server exits too
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
            .spawn()
            .expect("python3 on PATH");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("no port from kube_api.py: {line:?}"));
        let server = ApiServer { child, port, dir };
        server.write_kubeconfig(TOKEN);
        server
    }

    fn write_kubeconfig(&self, token: &str) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{token}"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: agent\n  user:\n    token: {token}\ncontexts:\n- name: stand-in\n  context:\n    \
             cluster: stand-in\n    user: agent\ncurrent-context: stand-in\n",
            self.port
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn config(&self) -> KubeConfig {
        KubeConfig {
            enabled: None, // a kubeconfig alone enables it
            kubeconfig: Some(self.dir.join(format!("kubeconfig-{TOKEN}"))),
            node_name: Some(NODE.into()),
            cluster_name: Some("test".into()),
        }
    }

    /// One request to the control endpoints (blocking; the server answers at once).
    fn http(&self, method: &str, path: &str, body: &Value) -> Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let body = body.to_string();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
        serde_json::from_str(body).unwrap()
    }

    fn control(&self, path: &str, body: Value) -> Value {
        self.http("POST", path, &body)
    }

    fn requests(&self) -> Vec<String> {
        serde_json::from_value(self.http("GET", "/_control/requests", &json!({}))).unwrap()
    }

    async fn wait_watching(&self) {
        wait_for("an open watch", || (self.http("GET", "/_control/watchers", &json!({}))["open"] == 1).then_some(()))
            .await;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("stand-in API server log kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `f` every 50 ms for up to 15 s (the watcher's backoff after errors reaches seconds).
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn synced(cache: &PodCache) {
    wait_for("the initial list", || cache.is_synced().then_some(())).await;
}

fn cid(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

fn owner(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{kind}-{name}"),
           "controller": true, "blockOwnerDeletion": true})
}

/// A pod as the API server returns it, with the fields kubelet and the scheduler fill in.
fn pod(ns: &str, name: &str, node: &str, owners: Value, labels: Value, qos: &str, seed: u8) -> Value {
    let container = |cname: &str, image: &str| {
        json!({"name": cname, "image": image, "imagePullPolicy": "IfNotPresent",
               "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
               "env": [{"name": "MODE", "value": "prod"}],
               "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
               "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
               "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"})
    };
    let state = |cname: &str, image: &str, id: String| {
        json!({"name": cname, "image": format!("docker.io/{image}"), "imageID": format!("docker.io/{image}@sha256:{}", cid(0xee)),
               "containerID": format!("containerd://{id}"), "ready": true, "started": true, "restartCount": 0,
               "state": {"running": {"startedAt": "2024-05-01T10:00:05Z"}}, "lastState": {}})
    };
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": format!("pod-uid-{name}"), "labels": labels,
                     "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z", "example.com/api-key": "s3cret"},
                     "ownerReferences": owners, "creationTimestamp": "2024-05-01T10:00:00Z", "generateName": format!("{name}-")},
        "spec": {"nodeName": node, "serviceAccountName": format!("{name}-sa"), "serviceAccount": format!("{name}-sa"),
                 "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                 "terminationGracePeriodSeconds": 30, "enableServiceLinks": true, "priority": 0,
                 "preemptionPolicy": "PreemptLowerPriority", "securityContext": {},
                 "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                 "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
                 "initContainers": [container("init", "busybox:1.36")],
                 "containers": [container("app", "example/app:1.0"), container("proxy", "envoyproxy/envoy:v1.30")]},
        "status": {"phase": "Running", "qosClass": qos, "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}],
                   "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}], "startTime": "2024-05-01T10:00:00Z",
                   "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2024-05-01T10:00:06Z"}],
                   "initContainerStatuses": [{"name": "init", "image": "docker.io/library/busybox:1.36", "imageID": "", "ready": false, "started": false, "restartCount": 0,
                                              "containerID": format!("containerd://{}", cid(seed + 2)),
                                              "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2024-05-01T10:00:01Z", "finishedAt": "2024-05-01T10:00:02Z"}}}],
                   "containerStatuses": [state("app", "example/app:1.0", cid(seed)), state("proxy", "envoyproxy/envoy:v1.30", cid(seed + 1))]}
    })
}

fn replicaset(ns: &str, name: &str, deployment: &str) -> Value {
    json!({"kind": "ReplicaSet", "apiVersion": "apps/v1",
           "metadata": {"name": name, "namespace": ns, "uid": format!("uid-ReplicaSet-{name}"), "labels": {"app": deployment},
                        "annotations": {"deployment.kubernetes.io/revision": "3"}, "ownerReferences": [owner("apps/v1", "Deployment", deployment)]},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": deployment}},
                    "template": {"metadata": {"labels": {"app": deployment}}, "spec": {"containers": [{"name": "app", "image": "example/app:1.0"}]}}},
           "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "observedGeneration": 3}})
}

fn job(ns: &str, name: &str, cronjob: &str) -> Value {
    json!({"kind": "Job", "apiVersion": "batch/v1",
           "metadata": {"name": name, "namespace": ns, "uid": format!("uid-Job-{name}"), "ownerReferences": [owner("batch/v1", "CronJob", cronjob)]},
           "spec": {"backoffLimit": 6, "completions": 1, "parallelism": 1,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "example/backup:2"}]}}},
           "status": {"active": 1, "startTime": "2024-05-01T10:00:00Z"}})
}

fn web_pod(name: &str, node: &str, seed: u8) -> Value {
    let rs = owner("apps/v1", "ReplicaSet", "web-7d9c5b8f6");
    pod("shop", name, node, json!([rs]), json!({"app": "web", "pod-template-hash": "7d9c5b8f6"}), "Burstable", seed)
}

/// The node's pods (two of one Deployment, a CronJob's, a StatefulSet's, a bare one), one pod
/// of another node, and the ReplicaSet and Job the agent has to look up.
fn cluster() -> Value {
    json!([
        web_pod("web-7d9c5b8f6-abcde", NODE, 0x10),
        web_pod("web-7d9c5b8f6-fghij", NODE, 0x20),
        web_pod("web-7d9c5b8f6-other", "node-2", 0x30),
        pod(
            "ops",
            "backup-28391220-xk2p9",
            NODE,
            json!([owner("batch/v1", "Job", "backup-28391220")]),
            json!({"job-name": "backup-28391220"}),
            "BestEffort",
            0x40
        ),
        pod(
            "data",
            "db-0",
            NODE,
            json!([owner("apps/v1", "StatefulSet", "db")]),
            json!({"app": "db"}),
            "Guaranteed",
            0x50
        ),
        pod("default", "debug", NODE, json!([]), json!({}), "BestEffort", 0x60),
        replicaset("shop", "web-7d9c5b8f6", "web"),
        job("ops", "backup-28391220", "backup"),
    ])
}

fn workload(cache: &PodCache, uid: &str) -> Option<(String, String)> {
    let p = cache.get(uid)?;
    Some((p.workload_kind?, p.workload_name?))
}

fn wl(kind: &str, name: &str) -> Option<(String, String)> {
    Some((kind.into(), name.into()))
}

#[tokio::test]
async fn initial_list_fills_the_cache_with_this_nodes_pods() {
    let api = ApiServer::start(&cluster());
    let cache = kube::start(&api.config()).await.unwrap().expect("enabled by the kubeconfig");
    synced(&cache).await;

    assert_eq!(cache.len(), 5, "only node-1's pods");
    assert!(cache.get("pod-uid-web-7d9c5b8f6-other").is_none());
    assert_eq!((cache.node_name(), cache.cluster_name()), (NODE, Some("test")));

    let web = cache.get("pod-uid-web-7d9c5b8f6-abcde").unwrap();
    assert_eq!(
        (web.name.as_str(), web.namespace.as_str(), web.node.as_deref()),
        ("web-7d9c5b8f6-abcde", "shop", Some(NODE))
    );
    assert_eq!(web.labels["app"], "web");
    assert_eq!(web.annotations["example.com/api-key"], "s3cret");
    assert_eq!(web.service_account.as_deref(), Some("web-7d9c5b8f6-abcde-sa"));
    assert_eq!(web.qos_class.as_deref(), Some("Burstable"));
    let containers: Vec<_> =
        web.containers.iter().map(|c| (c.name.as_str(), c.image.as_str(), c.id.clone().unwrap())).collect();
    assert_eq!(
        containers,
        [
            ("app", "example/app:1.0", cid(0x10)),
            ("proxy", "envoyproxy/envoy:v1.30", cid(0x11)),
            ("init", "busybox:1.36", cid(0x12))
        ]
    );

    assert_eq!(workload(&cache, "pod-uid-web-7d9c5b8f6-abcde"), wl("Deployment", "web"));
    assert_eq!(workload(&cache, "pod-uid-web-7d9c5b8f6-fghij"), wl("Deployment", "web"));
    assert_eq!(workload(&cache, "pod-uid-backup-28391220-xk2p9"), wl("CronJob", "backup"));
    assert_eq!(workload(&cache, "pod-uid-db-0"), wl("StatefulSet", "db"));
    let debug = cache.get("pod-uid-debug").unwrap();
    assert_eq!((debug.workload_kind, debug.workload_name), (None, None));
    assert_eq!(cache.get("pod-uid-db-0").unwrap().qos_class.as_deref(), Some("Guaranteed"));

    let (p, c) = cache.find_container(&cid(0x21)).unwrap();
    assert_eq!((p.name.as_str(), c.name.as_str()), ("web-7d9c5b8f6-fghij", "proxy"));
    assert!(cache.find_container(&format!("containerd://{}", cid(0x51))).is_some());
    assert!(cache.find_container(&cid(0x31)).is_none(), "other node's container");

    let requests = api.requests();
    let lists: Vec<_> =
        requests.iter().filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch=")).collect();
    assert_eq!(lists.len(), 1, "{requests:?}");
    assert!(
        lists[0].contains("fieldSelector=spec.nodeName%3Dnode-1") && lists[0].contains("resourceVersion=0"),
        "{lists:?}"
    );
    let rs_gets = requests.iter().filter(|r| r.contains("/replicasets/web-7d9c5b8f6")).count();
    assert_eq!(rs_gets, 1, "one lookup for two pods of the same ReplicaSet: {requests:?}");
    assert_eq!(requests.iter().filter(|r| r.contains("/jobs/backup-28391220")).count(), 1);
}

#[tokio::test]
async fn watch_follows_added_modified_and_deleted_pods() {
    let api = ApiServer::start(&cluster());
    let grace = Duration::from_secs(2);
    let cache = kube::start_with(&api.config(), WatchOptions { deleted_grace: grace }).await.unwrap().unwrap();
    synced(&cache).await;
    api.wait_watching().await;

    // A pod of a new ReplicaSet: appears, and its owner is looked up.
    let rs = owner("apps/v1", "ReplicaSet", "api-6f8b9");
    let new_pod = pod(
        "shop",
        "api-6f8b9-q1",
        NODE,
        json!([rs]),
        json!({"app": "api", "pod-template-hash": "6f8b9"}),
        "Burstable",
        0x70,
    );
    api.control("/_control/objects", json!({"apply": replicaset("shop", "api-6f8b9", "api")}));
    api.control("/_control/pods", json!({"apply": new_pod}));
    api.control("/_control/pods", json!({"apply": web_pod("web-7d9c5b8f6-late", "node-2", 0x80)}));
    wait_for("the added pod", || cache.get("pod-uid-api-6f8b9-q1")).await;
    wait_for("its workload", || (workload(&cache, "pod-uid-api-6f8b9-q1") == wl("Deployment", "api")).then_some(()))
        .await;

    // Labels changed.
    let mut changed = web_pod("web-7d9c5b8f6-abcde", NODE, 0x10);
    changed["metadata"]["labels"]["team"] = json!("payments");
    api.control("/_control/pods", json!({"apply": changed}));
    wait_for("the new label", || cache.get("pod-uid-web-7d9c5b8f6-abcde")?.labels.get("team").cloned()).await;

    // Deleted: still served during the grace period, then forgotten.
    api.control("/_control/pods", json!({"delete": {"namespace": "data", "name": "db-0"}}));
    let deleted_at = Instant::now();
    tokio::time::sleep(grace / 2).await;
    assert!(cache.get("pod-uid-db-0").is_some(), "deleted pod kept for its grace period");
    assert!(cache.find_container(&cid(0x50)).is_some());
    wait_for("the deleted pod to expire", || cache.get("pod-uid-db-0").is_none().then_some(())).await;
    assert!(deleted_at.elapsed() >= grace - Duration::from_millis(100));

    assert!(cache.get("pod-uid-web-7d9c5b8f6-late").is_none(), "another node's pod never arrives");
    assert_eq!(cache.len(), 5);
}

#[tokio::test]
async fn watch_survives_closed_streams_and_expired_resource_versions() {
    let api = ApiServer::start(&cluster());
    let cache =
        kube::start_with(&api.config(), WatchOptions { deleted_grace: Duration::from_secs(1) }).await.unwrap().unwrap();
    synced(&cache).await;

    for (abrupt, name, seed) in [(false, "after-close", 0x90u8), (true, "after-drop", 0xa0)] {
        api.wait_watching().await;
        api.control("/_control/close-watches", json!({"abrupt": abrupt}));
        let p = pod("default", name, NODE, json!([]), json!({}), "BestEffort", seed);
        api.control("/_control/pods", json!({"apply": p}));
        wait_for(name, || cache.get(&format!("pod-uid-{name}"))).await;
    }

    // Changes while the agent cannot watch, then history compacted: the resumed watch gets 410
    // Gone and the watcher relists, which is how it learns of the deletion it never saw.
    api.wait_watching().await;
    api.control("/_control/forbid", json!({"resource": "pods", "verb": "watch"}));
    api.control("/_control/close-watches", json!({}));
    api.control("/_control/pods", json!({"delete": {"namespace": "default", "name": "debug"}}));
    api.control(
        "/_control/pods",
        json!({"apply": pod("default", "while-away", NODE, json!([]), json!({}), "BestEffort", 0xb0)}),
    );
    api.control("/_control/compact", json!({}));
    api.control("/_control/forbid", json!({"clear": true}));
    wait_for("the pod added while away", || cache.get("pod-uid-while-away")).await;
    wait_for("the pod deleted while away", || cache.get("pod-uid-debug").is_none().then_some(())).await;
    let lists = api.requests().iter().filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch=")).count();
    assert_eq!(lists, 2, "one relist after 410");
    assert!(cache.is_synced());
}

#[tokio::test]
async fn list_once_lists_the_node_with_workloads() {
    let api = ApiServer::start(&cluster());
    let cache = kube::list_once(&api.config()).await.unwrap().unwrap();
    assert!(cache.is_synced());
    assert_eq!(cache.len(), 5);
    assert_eq!(workload(&cache, "pod-uid-web-7d9c5b8f6-fghij"), wl("Deployment", "web"));
    assert_eq!(workload(&cache, "pod-uid-backup-28391220-xk2p9"), wl("CronJob", "backup"));
    assert!(cache.find_container(&cid(0x41)).is_some());
    assert!(api.requests().iter().all(|r| !r.contains("watch=")), "no watch for a one-shot list");

    // Wrong credentials are an error here (the watcher would retry instead).
    let bad = KubeConfig { kubeconfig: Some(api.write_kubeconfig("wrong")), ..api.config() };
    assert!(matches!(kube::list_once(&bad).await, Err(kube::KubeError::List { .. })));
}

#[tokio::test]
async fn forbidden_owner_lookups_fall_back_to_names() {
    let api = ApiServer::start(&cluster());
    api.control("/_control/forbid", json!({"resource": "replicasets", "verb": "get"}));
    api.control("/_control/forbid", json!({"resource": "jobs", "verb": "get"}));
    let cache = kube::start(&api.config()).await.unwrap().unwrap();
    synced(&cache).await;
    assert_eq!(workload(&cache, "pod-uid-web-7d9c5b8f6-abcde"), wl("Deployment", "web"), "from pod-template-hash");
    assert_eq!(workload(&cache, "pod-uid-backup-28391220-xk2p9"), wl("Job", "backup-28391220"), "a Job stays a Job");
    assert_eq!(workload(&cache, "pod-uid-db-0"), wl("StatefulSet", "db"));
    assert!(api.requests().iter().any(|r| r.contains("/replicasets/web-7d9c5b8f6")), "it did try");

    let once = kube::list_once(&api.config()).await.unwrap().unwrap();
    assert_eq!(workload(&once, "pod-uid-web-7d9c5b8f6-fghij"), wl("Deployment", "web"));
}
