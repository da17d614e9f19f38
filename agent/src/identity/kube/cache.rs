//! The shared, always-current set of pods on this node, and the owner (ReplicaSet/Job →
//! workload) answers they depend on.
//!
//! One `std::sync::Mutex` guards everything: the critical sections are map operations (never
//! an `.await`), and `Arc` rather than `Rc` keeps the watcher a plain `tokio::spawn` task, which
//! needs no `LocalSet` on the agent's current-thread runtime.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;

use super::convert::{self, OwnerLink, OwnerLookup, WorkloadRef};
use crate::identity::model::{ContainerInfo, PodInfo};

/// How long an owner answer that had to be inferred (GET refused or failed) is trusted before
/// the next pod of that owner asks again: RBAC may be fixed, the API may come back.
const INFERRED_RETRY: Duration = Duration::from_secs(600);

struct Entry {
    info: PodInfo,
    /// UID of the ReplicaSet/Job this pod's workload comes from, to update it when the answer lands.
    owner_uid: Option<String>,
    /// When the API said the pod was deleted; it is still served until the grace period ends.
    deleted_at: Option<Instant>,
}

enum OwnerState {
    Pending,
    Known { workload: WorkloadRef, inferred: bool, at: Instant },
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Entry>,
    owners: HashMap<String, OwnerState>,
    pending: usize,
    synced: bool,
}

struct Shared {
    state: Mutex<State>,
    grace: Duration,
    node: String,
    cluster: Option<String>,
    /// Woken when the last pending owner lookup lands.
    settled: Notify,
}

/// Pods on this node, kept current by the watcher task. Clones share one store.
#[derive(Clone)]
pub struct PodCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PodCache {
    // Deliberately not the pods: annotations may hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCache").field("node", &self.shared.node).field("pods", &self.len()).finish()
    }
}

impl PodCache {
    pub(super) fn new(node: String, cluster: Option<String>, grace: Duration) -> PodCache {
        let state = Mutex::new(State::default());
        PodCache { shared: Arc::new(Shared { state, grace, node, cluster, settled: Notify::new() }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain maps behind: still usable.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn visible(&self, e: &Entry, now: Instant) -> bool {
        e.deleted_at.is_none_or(|at| now.duration_since(at) < self.shared.grace)
    }

    /// The pod with this UID, including one deleted less than the grace period ago.
    pub fn get(&self, pod_uid: &str) -> Option<PodInfo> {
        let st = self.lock();
        st.pods.get(pod_uid).filter(|e| self.visible(e, Instant::now())).map(|e| e.info.clone())
    }

    /// The pod and container running the container with this runtime id (bare 64-hex, or with
    /// its `containerd://`-style scheme).
    pub fn find_container(&self, container_id: &str) -> Option<(PodInfo, ContainerInfo)> {
        let id = convert::strip_runtime_prefix(container_id);
        if id.is_empty() {
            return None;
        }
        let st = self.lock();
        let now = Instant::now();
        // A linear scan: a node runs at most a few hundred pods, and this is asked once per process.
        st.pods
            .values()
            .filter(|e| self.visible(e, now))
            .find_map(|e| e.info.container_by_id(id).map(|c| (e.info.clone(), c.clone())))
    }

    /// Pods known, counting deleted ones still within their grace period.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock().pods.values().filter(|e| self.visible(e, now)).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the first complete list of the node's pods has been applied (and the owner
    /// lookups it started have answered, or a few seconds have passed).
    pub fn is_synced(&self) -> bool {
        self.lock().synced
    }

    pub fn node_name(&self) -> &str {
        &self.shared.node
    }

    pub fn cluster_name(&self) -> Option<&str> {
        self.shared.cluster.as_deref()
    }

    pub(super) fn set_synced(&self) {
        self.lock().synced = true;
    }

    /// True when this is the last handle: the agent dropped the cache and the watcher may stop.
    pub(super) fn is_orphaned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// Adds or replaces a pod. Returns the owner lookup to start, if this pod's ReplicaSet/Job
    /// is neither known nor already being fetched (at most one request in flight per owner).
    pub(super) fn apply(&self, pod: &Pod) -> Option<OwnerLookup> {
        let mut info = convert::pod_info(pod)?;
        let mut st = self.lock();
        let now = Instant::now();
        let (owner_uid, start) = match convert::owner_link(pod) {
            OwnerLink::None | OwnerLink::Direct(..) => (None, None),
            OwnerLink::Lookup(lookup) => {
                let uid = lookup.uid.clone();
                match st.owners.get(&uid) {
                    Some(OwnerState::Known { workload, inferred, at })
                        if !*inferred || now.duration_since(*at) < INFERRED_RETRY =>
                    {
                        set_workload(&mut info, workload);
                        (Some(uid), None)
                    }
                    // Meanwhile `info` carries the lookup's fallback (see `convert::pod_info`).
                    Some(OwnerState::Pending) => (Some(uid), None),
                    _ => {
                        st.owners.insert(uid.clone(), OwnerState::Pending);
                        st.pending += 1;
                        (Some(uid), Some(lookup))
                    }
                }
            }
        };
        let uid = info.uid.clone();
        st.pods.insert(uid, Entry { info, owner_uid, deleted_at: None });
        start
    }

    /// Marks a pod deleted: it stays visible for the grace period, so calls still being
    /// reported by its processes are attributed.
    pub(super) fn delete(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else { return };
        let mut st = self.lock();
        if let Some(e) = st.pods.get_mut(uid) {
            e.deleted_at.get_or_insert_with(Instant::now);
        }
    }

    /// After a complete (re)list: pods not in it were deleted while the watch was down.
    pub(super) fn relisted(&self, seen: &HashSet<String>) {
        let mut st = self.lock();
        let now = Instant::now();
        for (uid, e) in st.pods.iter_mut() {
            if !seen.contains(uid) {
                e.deleted_at.get_or_insert(now);
            }
        }
    }

    /// Records what an owner lookup found and updates every pod it owns.
    pub(super) fn owner_resolved(&self, owner_uid: &str, workload: WorkloadRef, inferred: bool) {
        let mut st = self.lock();
        for e in st.pods.values_mut().filter(|e| e.owner_uid.as_deref() == Some(owner_uid)) {
            set_workload(&mut e.info, &workload);
        }
        let was = st.owners.insert(owner_uid.to_string(), OwnerState::Known { workload, inferred, at: Instant::now() });
        if matches!(was, Some(OwnerState::Pending)) {
            st.pending -= 1;
            if st.pending == 0 {
                self.shared.settled.notify_waiters();
            }
        }
    }

    /// Waits (bounded) until no owner lookup is in flight, so that `is_synced` means the
    /// workloads are the fetched ones, not provisional guesses.
    pub(super) async fn owners_settled(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Created before the check: `notify_waiters` reaches it even before it is polled.
            let notified = self.shared.settled.notified();
            if self.lock().pending == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Forgets pods whose grace period is over, and owner answers no remaining pod needs.
    pub(super) fn prune(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        let grace = self.shared.grace;
        st.pods.retain(|_, e| e.deleted_at.is_none_or(|at| now.duration_since(at) < grace));
        let used: HashSet<String> = st.pods.values().filter_map(|e| e.owner_uid.clone()).collect();
        st.owners.retain(|uid, o| matches!(o, OwnerState::Pending) || used.contains(uid));
    }
}

fn set_workload(info: &mut PodInfo, workload: &WorkloadRef) {
    (info.workload_kind, info.workload_name) = match workload {
        Some((kind, name)) => (Some(kind.clone()), Some(name.clone())),
        None => (None, None),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, rs: &str, cid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("p-{uid}"), "namespace": "ns", "uid": uid, "labels": {"pod-template-hash": "h1"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("rs-{rs}"), "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0, "containerID": format!("containerd://{cid}")}]}
        }))
        .unwrap()
    }

    #[test]
    fn one_lookup_per_owner_and_answers_update_all_its_pods() {
        let cache = PodCache::new("n".into(), None, Duration::from_secs(60));
        let lookup = cache.apply(&pod("a", "web-h1", "c1")).expect("first pod starts the lookup");
        assert_eq!(lookup.uid, "rs-web-h1");
        assert!(cache.apply(&pod("b", "web-h1", "c2")).is_none(), "already in flight");
        assert_eq!(cache.get("a").unwrap().workload_kind.as_deref(), Some("Deployment"));
        cache.owner_resolved("rs-web-h1", Some(("Rollout".into(), "web".into())), false);
        for uid in ["a", "b"] {
            assert_eq!(cache.get(uid).unwrap().workload_kind.as_deref(), Some("Rollout"));
        }
        assert!(cache.apply(&pod("c", "web-h1", "c3")).is_none(), "answer cached");
        assert_eq!(cache.get("c").unwrap().workload_kind.as_deref(), Some("Rollout"));
        let (p, c) = cache.find_container("containerd://c2").unwrap();
        assert_eq!((p.uid.as_str(), c.name.as_str()), ("b", "c"));
        assert!(cache.find_container("").is_none());
    }

    #[test]
    fn deleted_pods_stay_for_the_grace_period() {
        let cache = PodCache::new("n".into(), None, Duration::from_millis(50));
        cache.apply(&pod("a", "rs-h1", "c1"));
        cache.apply(&pod("b", "rs-h1", "c2"));
        cache.delete(&pod("a", "rs-h1", "c1"));
        cache.relisted(&HashSet::from(["a".to_string()]));
        cache.prune();
        assert!(cache.get("a").is_some() && cache.get("b").is_some());
        assert_eq!(cache.len(), 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("a").is_none() && cache.find_container("c2").is_none());
        cache.prune();
        assert!(cache.is_empty());
        assert!(cache.lock().owners.contains_key("rs-rs-h1"), "pending lookups survive pruning");
        cache.owner_resolved("rs-rs-h1", None, true);
        cache.prune();
        assert!(cache.lock().owners.is_empty());
    }
}
