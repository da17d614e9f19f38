//! Workload identity from /proc/PID/cgroup paths (container runtimes, kubelet, systemd).
//!
//! Everything here is pure text parsing: the path names are the only thing every runtime and
//! cgroup driver agree to expose, and they stay readable for a process that already exited
//! from our point of view (its cgroup text was read at first sight).
//!
//! Patterns are matched anywhere in the path, not only at its root, because nested setups
//! (kind nodes inside Docker, k3s/k3d, `--cgroup-root`, cgroup namespaces showing `/..`) put
//! arbitrary prefixes in front of the kubelet and runtime directories. The innermost match wins.
use super::model::{CgroupInfo, QosClass, Runtime};

/// The cgroup path to use from a `/proc/PID/cgroup` text: the cgroup v2 line (`0::/path`) when present
/// and not just "/" on a hybrid host where v1 controllers carry the real path; otherwise the v1 `name=systemd` line,
/// else the first of `pids`, `memory`, `cpu,cpuacct`/`cpu`, else any line. None if nothing parses.
///
/// One refinement over that order: the first candidate (in that order) whose path names a
/// container or pod wins. On hybrid hosts a runtime with the cgroupfs driver only manages the
/// v1 hierarchies, so the v2 line keeps the shim's parent (`0::/system.slice/containerd.service`)
/// while v1 lines say `/docker/<id>`; and a misconfigured `name=systemd` hierarchy can stay `/`
/// while the resource controllers carry the container.
pub fn path_from_proc_cgroup(text: &str) -> Option<String> {
    let lines: Vec<Line<'_>> = text.lines().filter_map(parse_line).collect();
    let is_v2 = |l: &Line<'_>| l.hierarchy == 0 && l.controllers.is_empty();
    let v2 = lines.iter().find(|l| is_v2(l)).map(|l| l.path);
    let mut v1: Vec<&Line<'_>> = lines.iter().filter(|l| !is_v2(l)).collect();
    // Stable: file order among equals, which is what "any line" falls back to.
    v1.sort_by_key(|l| v1_rank(l.controllers));
    let v1: Vec<&str> = v1.iter().map(|l| l.path).collect();

    if let Some(p) = v2.iter().chain(&v1).find(|p| names_workload(p)) {
        return Some(p.to_string());
    }
    if let Some(p) = v2.filter(|p| *p != "/" || v1.is_empty()) {
        return Some(p.to_string());
    }
    // A v1 controller left at "/" says nothing when another one carries a real path.
    v1.iter().find(|p| **p != "/").or(v1.first()).map(|p| p.to_string())
}

/// Everything a cgroup path says: container id (64 hex) + runtime, pod UID (dashes, from `pod<uid>` where
/// kubelet's systemd driver writes `_` for `-`), QoS class (guaranteed pods sit directly under `kubepods`),
/// systemd unit (`*.service`, or `*.scope` that is not a container scope such as `session-3.scope`; the innermost one).
///
/// Kubelet with dockershim and the cgroupfs driver writes `/kubepods/<qos>/pod<uid>/<64hex>`,
/// exactly what containerd writes; the runtime is reported as containerd there because
/// dockershim is gone from Kubernetes since 1.24 and the pod's own status, when the API is
/// reachable, names the real runtime anyway.
///
/// A process in a container or pod has no systemd unit: units inside the container (a systemd
/// running there) or around it (`docker.service`, `user@1000.service` for rootless Podman) are
/// not what owns it for attribution purposes.
pub fn classify(path: &str) -> CgroupInfo {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut pod: Option<(usize, String, Option<QosClass>)> = None;
    let mut container: Option<(usize, String, Option<Runtime>)> = None;
    let mut unit: Option<&str> = None;

    for (i, seg) in segments.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| segments[p]);
        if let Some((uid, qos)) = pod_in(seg, parent) {
            pod = Some((i, uid, qos));
        } else if let Some((id, runtime)) = container_in(seg, parent) {
            container = Some((i, id, runtime));
        } else if is_unit(seg) {
            unit = Some(seg);
        }
    }
    // A container outside the innermost pod is an outer layer (the kind or k3d node), not the
    // pod's container: reporting it would pair a pod with a container id it does not have.
    if let (Some((pod_at, ..)), Some((container_at, ..))) = (&pod, &container) {
        if container_at < pod_at {
            container = None;
        }
    }
    let workload = pod.is_some() || container.is_some();
    let (pod_uid, qos_class) = pod.map_or((None, None), |(_, uid, qos)| (Some(uid), qos));
    let (container_id, runtime) = container.map_or((None, None), |(_, id, rt)| (Some(id), rt));
    CgroupInfo {
        path: path.to_string(),
        container_id,
        runtime,
        pod_uid,
        qos_class,
        systemd_unit: if workload { None } else { unit.map(str::to_string) },
    }
}

/// The path of the cgroup v2 line (`0::/path`) of a `/proc/PID/cgroup` text: the cgroup the
/// process's cgroup id names, whichever path [`path_from_proc_cgroup`] prefers.
pub fn v2_path(text: &str) -> Option<String> {
    text.lines()
        .filter_map(parse_line)
        .find(|l| l.hierarchy == 0 && l.controllers.is_empty())
        .map(|l| l.path.to_string())
}

/// Convenience: both.
pub fn from_proc_cgroup(text: &str) -> Option<CgroupInfo> {
    path_from_proc_cgroup(text).map(|p| classify(&p))
}

struct Line<'a> {
    hierarchy: u32,
    controllers: &'a str,
    path: &'a str,
}

/// v1 controllers in order of preference; `name=systemd` mirrors the unit tree, the others
/// are the ones every runtime joins.
const V1_PREFERENCE: [&str; 4] = ["name=systemd", "pids", "memory", "cpu"];

fn v1_rank(controllers: &str) -> usize {
    let has = |c: &str| controllers.split(',').any(|x| x == c);
    V1_PREFERENCE.iter().position(|c| has(c)).unwrap_or(V1_PREFERENCE.len())
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    // The path is last and may itself contain ':'.
    let mut parts = line.splitn(3, ':');
    let hierarchy = parts.next()?.trim().parse().ok()?;
    let controllers = parts.next()?;
    let path = parts.next()?.trim_end();
    // The kernel appends this to a v2 path whose cgroup was removed under a zombie.
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.starts_with('/').then_some(Line { hierarchy, controllers, path })
}

fn names_workload(path: &str) -> bool {
    let info = classify(path);
    info.container_id.is_some() || info.pod_uid.is_some()
}

/// Directory-name prefixes of runtimes that embed the container id; the optional `.scope`
/// suffix is the systemd driver's. Longer prefixes first: `crio-conmon-` must not read as `crio-`.
const CONTAINER_PREFIXES: [(&str, Runtime); 7] = [
    ("cri-containerd-", Runtime::Containerd),
    ("crio-conmon-", Runtime::CriO),
    ("crio-", Runtime::CriO),
    ("docker-", Runtime::Docker),
    ("libpod-conmon-", Runtime::Podman),
    ("libpod-", Runtime::Podman),
    ("nerdctl-", Runtime::Containerd),
];

fn container_in(seg: &str, parent: Option<&str>) -> Option<(String, Option<Runtime>)> {
    let bare = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, runtime) in CONTAINER_PREFIXES {
        if let Some(id) = bare.strip_prefix(prefix).filter(|id| is_hex64(id)) {
            return Some((id.to_string(), Some(runtime)));
        }
    }
    // Bare ids: cgroupfs drivers name the directory after the id and nothing else, so only the
    // parent tells the runtime, and an unknown parent leaves it unknown rather than guessed.
    if !is_hex64(seg) {
        return None;
    }
    let runtime = match parent {
        Some("docker") => Some(Runtime::Docker),
        Some(p) if pod_in(p, None).is_some() => Some(Runtime::Containerd),
        _ => None,
    };
    Some((seg.to_string(), runtime))
}

/// A pod directory: `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd driver, also
/// with kind's `kubelet-` prefix) or `pod<uid>` under `kubepods[/<qos>]` (cgroupfs driver).
fn pod_in(seg: &str, parent: Option<&str>) -> Option<(String, Option<QosClass>)> {
    if let Some(stem) = seg.strip_suffix(".slice") {
        let (prefix, last) = stem.rsplit_once('-')?;
        let uid = pod_uid(last.strip_prefix("pod")?.replace('_', "-"))?;
        if !prefix.split('-').any(|c| c == "kubepods") {
            return None;
        }
        return Some((uid, qos_from(prefix.rsplit('-').next())));
    }
    let uid = pod_uid(seg.strip_prefix("pod")?.to_string())?;
    Some((uid, qos_from(parent)))
}

fn qos_from(dir: Option<&str>) -> Option<QosClass> {
    match dir? {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        // Guaranteed pods get no QoS level of their own: they sit right under kubepods.
        "kubepods" => Some(QosClass::Guaranteed),
        _ => None,
    }
}

/// API-created pods have UUIDs; static pods (kube-apiserver in kind, ...) get an md5 hex
/// digest of their manifest instead, 32 hex digits without dashes.
fn pod_uid(uid: String) -> Option<String> {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = uid.split('-').collect();
    let uuid = groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && hex(g));
    let digest = uid.len() == 32 && hex(&uid);
    (uuid || digest).then_some(uid)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_unit(seg: &str) -> bool {
    let stem = seg.strip_suffix(".service").or_else(|| seg.strip_suffix(".scope"));
    stem.is_some_and(|s| !s.is_empty())
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
