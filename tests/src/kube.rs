//! A stand-in Kubernetes API server (`fixtures/kube_api.py`) and real cgroups with kubelet- and
//! systemd-style paths, for attribution tests.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

use serde_json::{json, Value};

use crate::env;

/// The stand-in API server. It exits when its stdin closes, i.e. when the test process dies,
/// so it may be shared by tests through a static.
pub struct KubeApi {
    pub port: u16,
    pub dir: PathBuf,
    _child: Child,
    _stdin: ChildStdin,
}

impl KubeApi {
    pub fn start(objects: &Value) -> KubeApi {
        let dir = env::temp_subdir("kube-api");
        let pods = dir.join("objects.json");
        std::fs::write(&pods, objects.to_string()).expect("write objects");
        let mut child = Command::new("python3")
            .arg(env::fixtures_dir().join("kube_api.py"))
            .arg("--pods")
            .arg(&pods)
            .args(["--bookmark-interval", "1", "--exit-with-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("server.log")).expect("server log"))
            .spawn()
            .expect("python3 runs kube_api.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("port line");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("no port from kube_api.py: {line:?}"));
        let stdin = child.stdin.take().expect("stdin");
        KubeApi { port, dir, _child: child, _stdin: stdin }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: agent\n  user:\n    token: test-token\ncontexts:\n- name: stand-in\n  context:\n    \
             cluster: stand-in\n    user: agent\ncurrent-context: stand-in\n",
            self.port
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// POST to a control endpoint with curl (plain HTTP: no TLS, nothing for the probes).
    pub fn control(&self, path: &str, body: &Value) -> Value {
        let mut child = Command::new("curl")
            .args(["-sS", "-X", "POST", "-H", "content-type: application/json", "--data-binary", "@-"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        child.stdin.take().expect("stdin").write_all(body.to_string().as_bytes()).expect("write body");
        let out = child.wait_with_output().expect("curl output");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Open watch streams: the agent's watcher has listed and is watching once this is > 0.
    pub fn watchers(&self) -> u64 {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://127.0.0.1:{}/_control/watchers", self.port)])
            .output()
            .expect("curl");
        serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v["open"].as_u64()).unwrap_or(0)
    }
}

pub fn container_id() -> String {
    env::random_hex(32)
}

pub fn pod_uid() -> String {
    let h = env::random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// What distinguishes the test pods; `json()` renders one as the API server returns it.
pub struct PodFixture<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
    pub labels: Value,
    pub annotations: Value,
    pub owners: Value,
    pub qos: &'a str,
    pub container_id: &'a str,
}

impl PodFixture<'_> {
    pub fn json(&self) -> Value {
        let (ns, name, cid) = (self.namespace, self.name, self.container_id);
        json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns, "uid": self.uid, "labels": self.labels,
                         "annotations": self.annotations, "ownerReferences": self.owners,
                         "creationTimestamp": "2026-11-01T10:00:00Z"},
            "spec": {"nodeName": self.node, "serviceAccountName": format!("{name}-sa"), "restartPolicy": "Always",
                     "containers": [{"name": "app", "image": "registry.example.com/team/app:1.4"}]},
            "status": {"phase": "Running", "qosClass": self.qos, "podIP": "10.244.1.7",
                       "containerStatuses": [{"name": "app", "image": "registry.example.com/team/app:1.4",
                                              "imageID": "", "containerID": format!("containerd://{cid}"),
                                              "ready": true, "started": true, "restartCount": 0,
                                              "state": {"running": {"startedAt": "2026-11-01T10:00:05Z"}}}]}
        })
    }
}

pub fn owner(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{kind}-{name}"),
           "controller": true, "blockOwnerDeletion": true})
}

pub fn replicaset(ns: &str, name: &str, deployment: &str) -> Value {
    json!({"kind": "ReplicaSet", "apiVersion": "apps/v1",
           "metadata": {"name": name, "namespace": ns, "uid": format!("uid-ReplicaSet-{name}"),
                        "ownerReferences": [owner("apps/v1", "Deployment", deployment)]},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": deployment}}}})
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified`
/// on a hybrid one).
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mounts
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next() != Some("cgroup2") {
                return None;
            }
            pre.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("a cgroup2 mount")
}

/// A real cgroup directory (created with its parents), removed when dropped.
pub struct Cgroup {
    pub dir: PathBuf,
}

impl Cgroup {
    pub fn create(relative: &str) -> Cgroup {
        let dir = cgroup2_root().join(relative.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Cgroup { dir }
    }

    /// A command prefix that moves the client into this cgroup, then execs it.
    pub fn prefix(&self) -> Vec<std::ffi::OsString> {
        vec!["sh".into(), "-c".into(), r#"echo $$ > "$0/cgroup.procs" && exec "$@""#.into(), self.dir.clone().into()]
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Only empty leaves can go; shared parents (kubepods.slice…) stay for other tests.
        let _ = std::fs::remove_dir(&self.dir);
    }
}
