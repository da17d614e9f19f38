//! Pure translation of Kubernetes API objects into [`PodInfo`] and owner links: no I/O, so
//! every rule about names, ids and owner chains is unit-tested here.
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::identity::model::{ContainerInfo, PodInfo};

/// The workload at the top of a pod's owner chain: (kind, name).
pub type WorkloadRef = Option<(String, String)>;

/// The two intermediate controllers whose own owner is the workload people think in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    ReplicaSet,
    Job,
}

impl LookupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LookupKind::ReplicaSet => "ReplicaSet",
            LookupKind::Job => "Job",
        }
    }
}

/// A ReplicaSet or Job that owns a pod and must be fetched to learn its own owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLookup {
    pub kind: LookupKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// What to report until the lookup answers, or if it fails (RBAC, object gone).
    pub fallback: WorkloadRef,
}

/// How a pod's workload is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerLink {
    /// A bare pod, or a static pod whose mirror is "owned" by its Node (not a workload).
    None,
    /// StatefulSet, DaemonSet, ReplicationController, or any other controller kind: the
    /// owner reference itself names the workload.
    Direct(String, String),
    Lookup(OwnerLookup),
}

/// The runtime's container id without its scheme (`containerd://`, `cri-o://`, `docker://`,
/// or any other `<runtime>://`): cgroup paths carry the bare id, and that is what callers match.
pub fn strip_runtime_prefix(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// A pod as the agent keeps it. None for an object without a UID, which the API never sends
/// for a real pod and which could not be keyed anyway.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();

    // Statuses of all three container lists: names are unique across them within a pod.
    let statuses: Vec<&ContainerStatus> = status
        .map(|s| {
            [&s.container_statuses, &s.init_container_statuses, &s.ephemeral_container_statuses]
                .into_iter()
                .flatten()
                .flatten()
                .collect()
        })
        .unwrap_or_default();
    let container = |name: &str, image: Option<&String>| {
        let st = statuses.iter().find(|s| s.name == name);
        ContainerInfo {
            name: name.to_string(),
            // The spec's image is what the owner asked for; the status one is a resolved
            // reference and only fills in for an ephemeral container created without one.
            image: image.cloned().or_else(|| st.map(|s| s.image.clone())).unwrap_or_default(),
            id: st
                .and_then(|s| s.container_id.as_deref())
                .map(strip_runtime_prefix)
                .filter(|id| !id.is_empty())
                .map(str::to_string),
        }
    };
    let mut containers = Vec::new();
    if let Some(spec) = spec {
        containers.extend(spec.containers.iter().map(|c| container(&c.name, c.image.as_ref())));
        containers.extend(spec.init_containers.iter().flatten().map(|c| container(&c.name, c.image.as_ref())));
        containers.extend(spec.ephemeral_containers.iter().flatten().map(|c| container(&c.name, c.image.as_ref())));
    }

    let (workload_kind, workload_name) = match owner_link(pod) {
        OwnerLink::None => (None, None),
        OwnerLink::Direct(kind, name) => (Some(kind), Some(name)),
        OwnerLink::Lookup(l) => l.fallback.map_or((None, None), |(k, n)| (Some(k), Some(n))),
    };
    Some(PodInfo {
        uid,
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        node: spec.and_then(|s| s.node_name.clone()),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        workload_name,
        workload_kind,
        service_account: spec.and_then(|s| s.service_account_name.clone()),
        qos_class: status.and_then(|s| s.qos_class.clone()),
        containers,
    })
}

/// The controlling owner reference (`controller: true`); else the first one, since some
/// operators set owners without marking one as the controller.
fn controller_of(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    let refs = refs?;
    refs.iter().find(|r| r.controller == Some(true)).or_else(|| refs.first())
}

/// `apps/v1` → `apps`; `v1` → "" (the core group).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

pub fn owner_link(pod: &Pod) -> OwnerLink {
    let Some(owner) = controller_of(pod.metadata.owner_references.as_ref()) else {
        return OwnerLink::None;
    };
    let group = group_of(&owner.api_version);
    let lookup = match (owner.kind.as_str(), group) {
        ("Node", "") => return OwnerLink::None,
        ("ReplicaSet", "apps") => LookupKind::ReplicaSet,
        ("Job", "batch") => LookupKind::Job,
        _ => return OwnerLink::Direct(owner.kind.clone(), owner.name.clone()),
    };
    let fallback = match lookup {
        LookupKind::ReplicaSet => {
            let hash = pod.metadata.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
            Some(infer_from_replicaset(&owner.name, hash.map(String::as_str)))
        }
        LookupKind::Job => Some(("Job".to_string(), owner.name.clone())),
    };
    OwnerLink::Lookup(OwnerLookup {
        kind: lookup,
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        fallback,
    })
}

/// When the ReplicaSet cannot be read: the Deployment controller names its ReplicaSets
/// `<deployment>-<pod-template-hash>` and copies that hash into the pods' labels, so a name
/// ending in `-<hash>` is a Deployment's. Anything else stays a ReplicaSet. Jobs have no such
/// marker a CronJob always leaves, so the Job fallback is the Job itself.
pub fn infer_from_replicaset(rs_name: &str, template_hash: Option<&str>) -> (String, String) {
    if let Some(hash) = template_hash.filter(|h| !h.is_empty()) {
        if let Some(prefix) = rs_name.strip_suffix(hash).and_then(|p| p.strip_suffix('-')) {
            if !prefix.is_empty() {
                return ("Deployment".to_string(), prefix.to_string());
            }
        }
    }
    ("ReplicaSet".to_string(), rs_name.to_string())
}

/// The workload above a fetched ReplicaSet/Job: its controller (Deployment, CronJob, or
/// whatever else controls it, e.g. an Argo Rollout), else the object itself. One level only:
/// what owns a Deployment (an operator) is not what its pods are attributed to.
pub fn workload_above(kind: LookupKind, name: &str, owners: Option<&Vec<OwnerReference>>) -> (String, String) {
    match controller_of(owners) {
        Some(o) => (o.kind.clone(), o.name.clone()),
        None => (kind.as_str().to_string(), name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn owner(api_version: &str, kind: &str, name: &str) -> serde_json::Value {
        json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true, "blockOwnerDeletion": true})
    }

    #[test]
    fn pod_fields_and_container_ids() {
        let id = "a".repeat(64);
        let p = pod(json!({
            "metadata": {"name": "web-7d9c-x2", "namespace": "shop", "uid": "u1",
                         "labels": {"app": "web", "pod-template-hash": "7d9c"}, "annotations": {"k": "v"},
                         "ownerReferences": [owner("apps/v1", "ReplicaSet", "web-7d9c")]},
            "spec": {"nodeName": "n1", "serviceAccountName": "web-sa",
                     "initContainers": [{"name": "init", "image": "busybox:1"}],
                     "containers": [{"name": "app", "image": "shop/web:2"}, {"name": "side", "image": "envoy:1"}],
                     "ephemeralContainers": [{"name": "dbg"}]},
            "status": {"qosClass": "Burstable",
                       "containerStatuses": [
                           {"name": "app", "image": "docker.io/shop/web:2", "imageID": "x", "ready": true, "restartCount": 0, "containerID": format!("containerd://{id}")},
                           {"name": "side", "image": "envoy:1", "imageID": "", "ready": false, "restartCount": 0}],
                       "initContainerStatuses": [{"name": "init", "image": "busybox:1", "imageID": "", "ready": false, "restartCount": 0, "containerID": "cri-o://bbb"}],
                       "ephemeralContainerStatuses": [{"name": "dbg", "image": "docker.io/library/busybox:latest", "imageID": "", "ready": false, "restartCount": 0, "containerID": "docker://ccc"}]}
        }));
        let info = pod_info(&p).unwrap();
        assert_eq!((info.uid.as_str(), info.name.as_str(), info.namespace.as_str()), ("u1", "web-7d9c-x2", "shop"));
        assert_eq!(info.node.as_deref(), Some("n1"));
        assert_eq!(info.service_account.as_deref(), Some("web-sa"));
        assert_eq!(info.qos_class.as_deref(), Some("Burstable"));
        assert_eq!(info.labels["app"], "web");
        assert_eq!(info.annotations["k"], "v");
        // Inferred until the ReplicaSet is fetched.
        assert_eq!(info.workload_kind.as_deref(), Some("Deployment"));
        assert_eq!(info.workload_name.as_deref(), Some("web"));
        let names: Vec<_> = info.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", "side", "init", "dbg"]);
        assert_eq!(info.container_by_id(&id).unwrap().image, "shop/web:2");
        assert_eq!(info.containers[1].id, None);
        assert_eq!(info.containers[2].id.as_deref(), Some("bbb"));
        assert_eq!(info.containers[3].id.as_deref(), Some("ccc"));
        assert_eq!(info.containers[3].image, "docker.io/library/busybox:latest");
    }

    #[test]
    fn pod_without_uid_is_skipped_and_minimal_pod_converts() {
        assert!(pod_info(&pod(json!({"metadata": {"name": "x"}}))).is_none());
        let info = pod_info(&pod(json!({"metadata": {"name": "x", "uid": "u"}}))).unwrap();
        assert!(info.containers.is_empty() && info.workload_kind.is_none() && info.node.is_none());
    }

    #[test]
    fn strips_any_runtime_scheme() {
        assert_eq!(strip_runtime_prefix("containerd://abc"), "abc");
        assert_eq!(strip_runtime_prefix("cri-o://abc"), "abc");
        assert_eq!(strip_runtime_prefix("docker://abc"), "abc");
        assert_eq!(strip_runtime_prefix("abc"), "abc");
    }

    fn link(owners: serde_json::Value, labels: serde_json::Value) -> OwnerLink {
        owner_link(&pod(
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": labels, "ownerReferences": owners}}),
        ))
    }

    #[test]
    fn owner_links() {
        assert_eq!(link(json!([]), json!({})), OwnerLink::None);
        assert_eq!(link(json!([owner("v1", "Node", "n1")]), json!({})), OwnerLink::None);
        assert_eq!(
            link(json!([owner("apps/v1", "StatefulSet", "db")]), json!({})),
            OwnerLink::Direct("StatefulSet".into(), "db".into())
        );
        assert_eq!(
            link(json!([owner("v1", "ReplicationController", "rc")]), json!({})),
            OwnerLink::Direct("ReplicationController".into(), "rc".into())
        );
        // A CRD that happens to be called ReplicaSet is not the apps one.
        assert_eq!(
            link(json!([owner("example.com/v1", "ReplicaSet", "x")]), json!({})),
            OwnerLink::Direct("ReplicaSet".into(), "x".into())
        );
        let OwnerLink::Lookup(l) = link(json!([owner("batch/v1", "Job", "backup-2900")]), json!({})) else { panic!() };
        assert_eq!((l.kind, l.namespace.as_str(), l.uid.as_str()), (LookupKind::Job, "ns", "uid-backup-2900"));
        assert_eq!(l.fallback, Some(("Job".into(), "backup-2900".into())));
        // Non-controller references are used only when no controller is marked.
        let mut other = owner("apps/v1", "DaemonSet", "other");
        other["controller"] = json!(false);
        let ds = owner("apps/v1", "DaemonSet", "ds");
        assert_eq!(link(json!([other.clone(), ds]), json!({})), OwnerLink::Direct("DaemonSet".into(), "ds".into()));
        assert_eq!(link(json!([other]), json!({})), OwnerLink::Direct("DaemonSet".into(), "other".into()));
    }

    #[test]
    fn replicaset_inference() {
        let d = |k: &str, n: &str| (k.to_string(), n.to_string());
        assert_eq!(infer_from_replicaset("web-5f6d8b9c7", Some("5f6d8b9c7")), d("Deployment", "web"));
        assert_eq!(infer_from_replicaset("my-app-v2-5f6d", Some("5f6d")), d("Deployment", "my-app-v2"));
        assert_eq!(infer_from_replicaset("web-5f6d8b9c7", None), d("ReplicaSet", "web-5f6d8b9c7"));
        assert_eq!(infer_from_replicaset("web-5f6d8b9c7", Some("other")), d("ReplicaSet", "web-5f6d8b9c7"));
        assert_eq!(infer_from_replicaset("-abc", Some("abc")), d("ReplicaSet", "-abc"));
    }

    #[test]
    fn workload_above_uses_the_controller_or_the_object() {
        let refs: Vec<OwnerReference> =
            serde_json::from_value(json!([owner("batch/v1", "CronJob", "backup")])).unwrap();
        assert_eq!(workload_above(LookupKind::Job, "backup-1", Some(&refs)), ("CronJob".into(), "backup".into()));
        assert_eq!(workload_above(LookupKind::ReplicaSet, "rs", None), ("ReplicaSet".into(), "rs".into()));
    }
}
