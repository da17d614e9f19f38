//! Pods on this node from the Kubernetes API (list + watch), for pod/workload/labels.
//!
//! [`start`] lists the pods whose `spec.nodeName` is this node and then watches them, keeping a
//! [`PodCache`] current; [`list_once`] does the list alone for one-shot commands. Workloads come
//! from the owner chain: a pod's ReplicaSet or Job is fetched once (per UID) to find its
//! Deployment or CronJob. The client speaks TLS through rustls (ring), never the system
//! libssl: the agent uprobes that library and must not meter its own traffic.
//!
//! RBAC needed by the agent's service account: `list`/`watch` pods (cluster-wide; the field
//! selector narrows to the node), `get` replicasets (apps) and jobs (batch). Without the two
//! `get`s workloads are inferred from names (see [`convert::infer_from_replicaset`]).
pub mod convert;

mod cache;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde::Deserialize;

pub use cache::PodCache;

/// The `[kubernetes]` section of the agent configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeConfig {
    /// Unset: enabled when running in a cluster (`KUBERNETES_SERVICE_HOST` is set) or when
    /// `kubeconfig` is given. `true` without either uses `$KUBECONFIG` / `~/.kube/config`.
    pub enabled: Option<bool>,
    /// A kubeconfig file to use instead of the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name as the API knows it. Default: `$NODE_NAME` (set it from the downward
    /// API, `spec.nodeName`), else the host name, lowercased as kubelet does.
    pub node_name: Option<String>,
    /// A name for the cluster to label records with; the API has no notion of its own name.
    pub cluster_name: Option<String>,
}

impl KubeConfig {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or_else(|| self.kubeconfig.is_some() || env_set("KUBERNETES_SERVICE_HOST"))
    }

    /// The node whose pods to watch; None when nothing names it.
    pub fn resolved_node_name(&self) -> Option<String> {
        self.node_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .or_else(|| hostname().map(|h| h.to_lowercase()))
    }
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it (or
    // truncates, which a node name never needs).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned()).filter(|h| !h.is_empty())
}

/// Settings tests (and only tests, so far) need to change.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How long a deleted pod is still served: its processes may report calls a little after.
    pub deleted_grace: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { deleted_grace: Duration::from_secs(300) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig { path: PathBuf, source: kube::config::KubeconfigError },
    #[error("no in-cluster Kubernetes credentials: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("no Kubernetes credentials (in-cluster or kubeconfig): {0}")]
    NoCredentials(#[from] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("cannot tell this node's name: set kubernetes.node_name or NODE_NAME")]
    NoNodeName,
    #[error("cannot list the pods of node {node}: {source}")]
    List { node: String, source: kube::Error },
    #[error("listing the pods of node {node} timed out")]
    ListTimeout { node: String },
}

/// How long the one-shot list may take, owner lookups included.
const LIST_ONCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the watcher as a task on the current tokio runtime; returns at once. Errors only for
/// bad config (unreadable kubeconfig, no credentials); API trouble is retried in the background.
pub async fn start(config: &KubeConfig) -> Result<Option<PodCache>, KubeError> {
    start_with(config, WatchOptions::default()).await
}

/// [`start`] with non-default settings.
pub async fn start_with(config: &KubeConfig, options: WatchOptions) -> Result<Option<PodCache>, KubeError> {
    let Some((client, node)) = connect(config).await? else { return Ok(None) };
    let cache = PodCache::new(node, config.cluster_name.clone(), options.deleted_grace);
    // Pruning is also what notices the agent dropped the cache; a fraction of the grace keeps
    // memory tight without waking often.
    let prune_every = (options.deleted_grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    tokio::spawn(watch::run(client, cache.clone(), prune_every));
    Ok(Some(cache))
}

/// For the one-shot `tokentap identity PID` command: list pods on the node once, with their
/// workloads resolved. Unlike [`start`], API errors are returned.
pub async fn list_once(config: &KubeConfig) -> Result<Option<PodCache>, KubeError> {
    let Some((client, node)) = connect(config).await? else { return Ok(None) };
    let cache = PodCache::new(node.clone(), config.cluster_name.clone(), WatchOptions::default().deleted_grace);
    let work = async {
        let pods = Api::<Pod>::all(client.clone()).list(&watch::list_params(&node)).await;
        let pods = pods.map_err(|source| KubeError::List { node: node.clone(), source })?;
        let lookups: Vec<_> = pods.items.iter().filter_map(|p| cache.apply(p)).collect();
        let shared = watch::Lookups::default();
        let answers = join_all(lookups.iter().map(|l| watch::resolve_owner(&client, l, &shared))).await;
        for (lookup, (workload, inferred)) in lookups.iter().zip(answers) {
            cache.owner_resolved(&lookup.uid, workload, inferred);
        }
        Ok::<_, KubeError>(())
    };
    tokio::time::timeout(LIST_ONCE_TIMEOUT, work)
        .await
        .map_err(|_| KubeError::ListTimeout { node: node.clone() })??;
    cache.set_synced();
    Ok(Some(cache))
}

/// The client and node name, or None when disabled.
async fn connect(config: &KubeConfig) -> Result<Option<(Client, String)>, KubeError> {
    if !config.is_enabled() {
        return Ok(None);
    }
    let node = config.resolved_node_name().ok_or(KubeError::NoNodeName)?;
    // rustls picks its provider from the process default; pin ring so that another crate
    // enabling aws-lc-rs cannot leave it ambiguous (a panic at first connection). Ignoring the
    // error: a provider installed earlier by the agent is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client_config = if let Some(path) = &config.kubeconfig {
        let file =
            Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig { path: path.clone(), source })?;
        kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(|source| KubeError::Kubeconfig { path: path.clone(), source })?
    } else if env_set("KUBERNETES_SERVICE_HOST") {
        kube::Config::incluster()?
    } else {
        kube::Config::infer().await?
    };
    let client = Client::try_from(client_config).map_err(KubeError::Client)?;
    Ok(Some((client, node)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_section_parses_and_rejects_unknown_fields() {
        let c: KubeConfig = toml::from_str("kubeconfig = \"/k\"\nnode_name = \"n1\"\ncluster_name = \"prod\"").unwrap();
        assert_eq!(c.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!(c.resolved_node_name().as_deref(), Some("n1"));
        assert!(c.is_enabled(), "a kubeconfig enables it");
        let off: KubeConfig = toml::from_str("enabled = false\nkubeconfig = \"/k\"").unwrap();
        assert!(!off.is_enabled());
        assert!(toml::from_str::<KubeConfig>("node = \"x\"").is_err());
        assert_eq!(toml::from_str::<KubeConfig>("").unwrap(), KubeConfig::default());
    }

    #[test]
    fn node_name_falls_back_to_something() {
        // NODE_NAME or the host name: either way a non-empty name on any test machine.
        assert!(KubeConfig::default().resolved_node_name().is_some_and(|n| !n.is_empty()));
    }

    #[tokio::test]
    async fn disabled_is_none_and_a_bad_kubeconfig_is_an_error() {
        let off = KubeConfig { enabled: Some(false), ..KubeConfig::default() };
        assert!(start(&off).await.unwrap().is_none());
        assert!(list_once(&off).await.unwrap().is_none());
        let bad = KubeConfig { kubeconfig: Some("/nonexistent/kubeconfig".into()), ..KubeConfig::default() };
        assert!(matches!(start(&bad).await, Err(KubeError::Kubeconfig { .. })));
    }
}
