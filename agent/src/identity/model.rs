//! What the agent knows about the workload behind a process. Plain data shared by the
//! resolvers (proc, cgroup, Kubernetes) and the attribution rules.
use std::collections::BTreeMap;

/// Container runtime recognised from a cgroup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

/// Kubernetes QoS class, as kubelet encodes it in the pod's cgroup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// What a cgroup path says about a process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupInfo {
    /// The cgroup v2 path (or, on a v1-only host, the `name=systemd` / first controller path),
    /// e.g. `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`.
    pub path: String,
    /// Full 64-hex container id.
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    /// Pod UID with dashes (kubelet's systemd driver writes underscores; they are converted back).
    pub pod_uid: Option<String>,
    pub qos_class: Option<QosClass>,
    /// The systemd unit (`*.service`, or a `*.scope` that is not a container's) owning the process.
    pub systemd_unit: Option<String>,
}

/// One container of a pod, from the pod's spec and status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    pub name: String,
    pub image: String,
    /// Runtime's container id without the `containerd://`-style prefix, once running.
    pub id: Option<String>,
}

/// A pod as the Kubernetes API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The controller at the top of the owner chain: a Deployment (via its ReplicaSet), a
    /// StatefulSet, DaemonSet, CronJob (via its Job), Job, or the ReplicaSet itself.
    pub workload_name: Option<String>,
    pub workload_kind: Option<String>,
    pub service_account: Option<String>,
    pub qos_class: Option<String>,
    pub containers: Vec<ContainerInfo>,
}

impl PodInfo {
    pub fn container_by_id(&self, id: &str) -> Option<&ContainerInfo> {
        self.containers.iter().find(|c| c.id.as_deref() == Some(id))
    }
}

/// Everything known about the process behind a call, resolved at first sight.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Workload {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub cgroup: CgroupInfo,
    /// Filled from the Kubernetes API when the process runs in a pod the agent knows.
    pub pod: Option<PodInfo>,
    /// The container of `pod` this process runs in.
    pub container: Option<ContainerInfo>,
}
