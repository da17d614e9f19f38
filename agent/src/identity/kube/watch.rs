//! Talking to the API server: the pod watch loop feeding [`PodCache`], and owner lookups.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::Semaphore;

use super::cache::PodCache;
use super::convert::{self, LookupKind, OwnerLookup, WorkloadRef};

/// A GET that takes longer than this is treated as failed (the fallback is used): the client
/// has no read timeout of its own, because watches legitimately stay silent for minutes.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first sync waits for owner lookups before calling the cache synced anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one warning per this period per kind of trouble; the rest go to debug.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Rate limit for warnings: an unreachable API server fails every backoff step, for hours.
#[derive(Default)]
pub(super) struct WarnLimit {
    last: Mutex<Option<Instant>>,
}

impl WarnLimit {
    fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// State shared by the watch loop and the owner lookups it spawns.
pub(super) struct Lookups {
    watch_warn: WarnLimit,
    owner_warn: WarnLimit,
    /// Bounds concurrent owner GETs: a first list can name a hundred ReplicaSets at once, and
    /// one agent per node must not burst the API server (client-go's default is 5 QPS).
    permits: Semaphore,
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups { watch_warn: WarnLimit::default(), owner_warn: WarnLimit::default(), permits: Semaphore::new(4) }
    }
}

/// The field selector the API server filters pods by: only this node's are ever sent.
pub(super) fn node_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Watcher settings: the initial list and every relist read the API server's watch cache
/// (`resourceVersion=0`, not a quorum read from etcd) in one page, which is what keeps one
/// agent per node cheap for the control plane, as client-go informers do. Watches ask for
/// bookmarks so that a reconnect resumes instead of relisting.
fn watcher_config(node: &str) -> watcher::Config {
    // `page_size: None`: kube-rs only sends resourceVersion=0 for unpaginated lists, and one
    // node's pods fit in a single response.
    watcher::Config { page_size: None, ..watcher::Config::default().fields(&node_selector(node)).any_semantic() }
}

/// Same request as the watcher's initial list, for the one-shot command.
pub(super) fn list_params(node: &str) -> ListParams {
    ListParams::default().fields(&node_selector(node)).match_any()
}

/// Runs until the agent drops every handle to `cache`. Never returns on API errors: the
/// watcher retries with client-go's backoff (0.8 s doubling to 30 s, jittered) and the cache
/// keeps serving the last known pods meanwhile.
pub(super) async fn run(client: Client, cache: PodCache, prune_every: Duration) {
    let node = cache.node_name().to_string();
    let lookups = Arc::new(Lookups::default());
    let api: Api<Pod> = Api::all(client.clone());
    let mut events = std::pin::pin!(watcher(api, watcher_config(&node)).default_backoff());
    let mut prune = tokio::time::interval(prune_every);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // UIDs seen since the last `Init`: a relist is the only news of deletions missed while down.
    let mut listing: Option<HashSet<String>> = None;
    let mut failing = false;

    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = prune.tick() => {
                cache.prune();
                if cache.is_orphaned() {
                    tracing::debug!(node, "pod cache dropped; stopping the pod watch");
                    return;
                }
                continue;
            }
        };
        let event = match event {
            Some(Ok(event)) => event,
            // 410 Gone: the resume point fell out of the server's history; the watcher simply
            // relists. Routine on busy clusters, not worth a warning.
            Some(Err(watcher::Error::WatchError(status))) if status.code == 410 => {
                tracing::debug!(node, "Kubernetes pod watch expired; relisting");
                continue;
            }
            Some(Err(err)) => {
                failing = true;
                if lookups.watch_warn.allow() {
                    tracing::warn!(node, error = %err, "Kubernetes pod watch failing; retrying, pod identities may be stale");
                } else {
                    tracing::debug!(node, error = %err, "Kubernetes pod watch failing");
                }
                continue;
            }
            None => return, // The watcher stream never ends; nothing left to do if it does.
        };
        if failing {
            failing = false;
            tracing::info!(node, "Kubernetes pod watch recovered");
        }
        match event {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                if let (Some(seen), Some(uid)) = (listing.as_mut(), pod.metadata.uid.as_ref()) {
                    seen.insert(uid.clone());
                }
                if let Some(lookup) = cache.apply(&pod) {
                    tokio::spawn(lookup_task(client.clone(), cache.clone(), lookup, lookups.clone()));
                }
            }
            watcher::Event::Delete(pod) => cache.delete(&pod),
            watcher::Event::InitDone => {
                if let Some(seen) = listing.take() {
                    cache.relisted(&seen);
                }
                if !cache.is_synced() {
                    cache.owners_settled(SETTLE_TIMEOUT).await;
                    cache.set_synced();
                    tracing::info!(node, pods = cache.len(), "Kubernetes pod list synced");
                }
            }
        }
    }
}

async fn lookup_task(client: Client, cache: PodCache, lookup: OwnerLookup, lookups: Arc<Lookups>) {
    let (workload, inferred) = resolve_owner(&client, &lookup, &lookups).await;
    cache.owner_resolved(&lookup.uid, workload, inferred);
}

/// The workload above a ReplicaSet/Job, from a metadata-only GET of it (less data than the
/// full object, which carries a whole pod template; same `get` permission). On failure the
/// lookup's fallback, flagged as inferred so that it is retried later.
pub(super) async fn resolve_owner(client: &Client, lookup: &OwnerLookup, lookups: &Lookups) -> (WorkloadRef, bool) {
    let (ns, name) = (lookup.namespace.as_str(), lookup.name.as_str());
    let get = async {
        match lookup.kind {
            LookupKind::ReplicaSet => {
                Api::<ReplicaSet>::namespaced(client.clone(), ns).get_metadata(name).await.map(|m| m.metadata)
            }
            LookupKind::Job => Api::<Job>::namespaced(client.clone(), ns).get_metadata(name).await.map(|m| m.metadata),
        }
    };
    // The semaphore is never closed, so acquiring only waits.
    let _permit = lookups.permits.acquire().await;
    let failure = match tokio::time::timeout(LOOKUP_TIMEOUT, get).await {
        // Same name, different UID: the owner was deleted and recreated; not this pod's.
        Ok(Ok(meta)) if meta.uid.as_deref().is_some_and(|u| u != lookup.uid) => "owner was replaced".to_string(),
        Ok(Ok(meta)) => {
            let top = convert::workload_above(lookup.kind, name, meta.owner_references.as_ref());
            return (Some(top), false);
        }
        Ok(Err(err)) => err.to_string(),
        Err(_) => "timed out".to_string(),
    };
    let kind = lookup.kind.as_str();
    if lookups.owner_warn.allow() {
        tracing::warn!(kind, namespace = ns, name, error = %failure, "cannot read pod owner; inferring the workload from names (check RBAC: get replicasets/jobs)");
    } else {
        tracing::debug!(kind, namespace = ns, name, error = %failure, "cannot read pod owner; inferring the workload");
    }
    (lookup.fallback.clone(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited() {
        let limit = WarnLimit::default();
        assert!(limit.allow());
        assert!(!limit.allow());
    }

    #[test]
    fn lists_read_the_watch_cache_for_this_node_only() {
        let cfg = watcher_config("node-1");
        assert_eq!(cfg.field_selector.as_deref(), Some("spec.nodeName=node-1"));
        assert_eq!(cfg.page_size, None);
        assert_eq!(cfg.list_semantic, watcher::ListSemantic::Any);
        assert!(cfg.bookmarks);
        let lp = list_params("node-1");
        assert_eq!(lp.resource_version.as_deref(), Some("0"));
        assert_eq!(lp.field_selector.as_deref(), Some("spec.nodeName=node-1"));
    }
}
