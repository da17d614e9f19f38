//! Fixtures are whole `/proc/PID/cgroup` files as the kernel prints them on cgroup v2-only hosts
//! (one `0::` line) and hybrid hosts (v1 controllers plus the unified `0::` line).
use super::*;

const ID: &str = "3f9e6c1d2b7a4e8f90c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3";
const ID2: &str = "b4a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1";
const UID: &str = "1f3a9c2e-5b7d-4e0f-9a1b-2c3d4e5f6a7b";
const UID_SYSTEMD: &str = "1f3a9c2e_5b7d_4e0f_9a1b_2c3d4e5f6a7b";

/// A hybrid host's file where every v1 controller but those listed in `root` carries `path`.
fn hybrid(path: &str, unified: &str, root: &[&str]) -> String {
    let controllers = [
        "12:hugetlb",
        "11:cpuset",
        "10:blkio",
        "9:memory",
        "8:devices",
        "7:perf_event",
        "6:net_cls,net_prio",
        "5:freezer",
        "4:cpu,cpuacct",
        "3:pids",
        "2:rdma",
        "1:name=systemd",
    ];
    let mut text = String::new();
    for c in controllers {
        let name = c.split_once(':').unwrap().1;
        let p = if root.contains(&name) || name == "rdma" { "/" } else { path };
        text.push_str(&format!("{c}:{p}\n"));
    }
    text.push_str(&format!("0::{unified}\n"));
    text
}

fn v2(path: &str) -> String {
    format!("0::{path}\n")
}

#[track_caller]
fn check(
    text: &str,
    path: &str,
    id: Option<&str>,
    runtime: Option<Runtime>,
    pod: Option<&str>,
    qos: Option<QosClass>,
    unit: Option<&str>,
) {
    let info = from_proc_cgroup(text).expect("a path");
    let want = CgroupInfo {
        path: path.to_string(),
        container_id: id.map(str::to_string),
        runtime,
        pod_uid: pod.map(str::to_string),
        qos_class: qos,
        systemd_unit: unit.map(str::to_string),
    };
    assert_eq!(info, want, "for {text:?}");
}

#[track_caller]
fn check_container(text: &str, path: &str, runtime: Runtime) {
    check(text, path, Some(ID), Some(runtime), None, None, None);
}

#[track_caller]
fn check_pod(text: &str, path: &str, runtime: Option<Runtime>, qos: QosClass) {
    check(text, path, Some(ID), runtime, Some(UID), Some(qos), None);
}

#[track_caller]
fn check_unit(text: &str, path: &str, unit: Option<&str>) {
    check(text, path, None, None, None, None, unit);
}

#[test]
fn containerd_systemd_driver() {
    use QosClass::*;
    for (qos, slice) in [(Burstable, "kubepods-burstable"), (BestEffort, "kubepods-besteffort")] {
        let p = format!("/kubepods.slice/{slice}.slice/{slice}-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope");
        check_pod(&v2(&p), &p, Some(Runtime::Containerd), qos);
        // Hybrid: systemd creates the scope in the unified hierarchy too.
        check_pod(&hybrid(&p, &p, &[]), &p, Some(Runtime::Containerd), qos);
    }
    let p = format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope");
    check_pod(&v2(&p), &p, Some(Runtime::Containerd), Guaranteed);
}

#[test]
fn containerd_cgroupfs_driver() {
    use QosClass::*;
    for (qos, dir) in
        [(Burstable, "/kubepods/burstable"), (Guaranteed, "/kubepods"), (BestEffort, "/kubepods/besteffort")]
    {
        let p = format!("{dir}/pod{UID}/{ID}");
        check_pod(&v2(&p), &p, Some(Runtime::Containerd), qos);
        check_pod(&hybrid(&p, "/", &[]), &p, Some(Runtime::Containerd), qos);
    }
}

#[test]
fn cri_o() {
    let p =
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-{ID}.scope");
    check_pod(&v2(&p), &p, Some(Runtime::CriO), QosClass::Burstable);
    // crun under the systemd driver moves the payload into a `container` child.
    let nested = format!("{p}/container");
    check_pod(&v2(&nested), &nested, Some(Runtime::CriO), QosClass::Burstable);
    let conmon = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"
    );
    check_pod(&v2(&conmon), &conmon, Some(Runtime::CriO), QosClass::BestEffort);
    let fs = format!("/kubepods/burstable/pod{UID}/crio-{ID}");
    check_pod(&hybrid(&fs, "/", &[]), &fs, Some(Runtime::CriO), QosClass::Burstable);
}

#[test]
fn docker() {
    let p = format!("/system.slice/docker-{ID}.scope");
    check_container(&v2(&p), &p, Runtime::Docker);
    check_container(&hybrid(&p, &p, &[]), &p, Runtime::Docker);
    let fs = format!("/docker/{ID}");
    check_container(&v2(&fs), &fs, Runtime::Docker);
    // Hybrid with the cgroupfs driver: runc leaves the unified hierarchy at the shim's cgroup.
    check_container(&hybrid(&fs, "/system.slice/containerd.service", &[]), &fs, Runtime::Docker);
    // moby#33352: name=systemd stayed at "/" while the controllers carried the container.
    check_container(&hybrid(&fs, "/", &["name=systemd", "pids"]), &fs, Runtime::Docker);
    // dockershim + cgroupfs is byte-for-byte containerd's layout.
    let shim = format!("/kubepods/besteffort/pod{UID}/{ID}");
    check_pod(&hybrid(&shim, "/", &[]), &shim, Some(Runtime::Containerd), QosClass::BestEffort);
    // dockershim + systemd is not.
    let shim = format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/docker-{ID}.scope");
    check_pod(&hybrid(&shim, "/", &[]), &shim, Some(Runtime::Docker), QosClass::Guaranteed);
    // systemd inside a container: the inner unit is not the host's.
    let inner = format!("/docker/{ID}/system.slice/opendkim.service");
    check_container(&hybrid(&inner, "/", &[]), &inner, Runtime::Docker);
    // Docker-in-Docker: the innermost container.
    let dind = format!("/docker/{ID2}/docker/{ID}");
    check_container(&v2(&dind), &dind, Runtime::Docker);
    check_unit(&v2("/system.slice/docker.service"), "/system.slice/docker.service", Some("docker.service"));
}

#[test]
fn podman() {
    for p in [
        format!("/machine.slice/libpod-{ID}.scope"),
        format!("/machine.slice/libpod-conmon-{ID}.scope"),
        format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
        format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"),
        format!("/libpod_parent/libpod-{ID}"),
    ] {
        check_container(&v2(&p), &p, Runtime::Podman);
    }
    let p = format!("/machine.slice/libpod-{ID}.scope");
    check_container(&hybrid(&p, &p, &[]), &p, Runtime::Podman);
}

#[test]
fn nested_kubernetes() {
    // kind: a Docker container per node, kubelet's tree under its own slice.
    let kind = format!(
        "/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
         kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
    );
    check_pod(&v2(&kind), &kind, Some(Runtime::Containerd), QosClass::BestEffort);
    // Seen from inside the node, through its cgroup namespace.
    let inner = format!(
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
    );
    check_pod(&v2(&inner), &inner, Some(Runtime::Containerd), QosClass::Guaranteed);
    // k3d: k3s's cgroupfs tree inside a Docker node container.
    let k3d = format!("/docker/{ID2}/kubepods/burstable/pod{UID}/{ID}");
    check_pod(&hybrid(&k3d, "/", &[]), &k3d, Some(Runtime::Containerd), QosClass::Burstable);
    let k3s = format!("/k3s/kubepods/pod{UID}/{ID}");
    check_pod(&v2(&k3s), &k3s, Some(Runtime::Containerd), QosClass::Guaranteed);
    // A pod-level process (no container yet) under a node container: the node is not the pod's container.
    let sandbox = format!("/docker/{ID2}/kubepods/burstable/pod{UID}");
    check(&v2(&sandbox), &sandbox, None, None, Some(UID), Some(QosClass::Burstable), None);
    // cgroup namespaces can show the path relative to an ancestor.
    let rel = format!("/../../kubepods/besteffort/pod{UID}/crio-{ID}");
    check_pod(&v2(&rel), &rel, Some(Runtime::CriO), QosClass::BestEffort);
}

#[test]
fn static_pod_uid_is_an_md5_digest() {
    let uid = "8a4f1d2b3c6e7f90a1b2c3d4e5f60718";
    let p =
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope");
    check(&v2(&p), &p, Some(ID), Some(Runtime::Containerd), Some(uid), Some(QosClass::Burstable), None);
}

#[test]
fn systemd_units() {
    for (p, unit) in [
        ("/system.slice/nginx.service", "nginx.service"),
        ("/system.slice/system-getty.slice/getty@tty1.service", "getty@tty1.service"),
        ("/user.slice/user-0.slice/session-3.scope", "session-3.scope"),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.service", "app-foo.service"),
        ("/user.slice/user-1000.slice/user@1000.service/init.scope", "init.scope"),
        ("/init.scope", "init.scope"),
    ] {
        check_unit(&v2(p), p, Some(unit));
        check_unit(&hybrid(p, p, &[]), p, Some(unit));
    }
    check_unit(&v2("/"), "/", None);
    check_unit(&v2("/system.slice"), "/system.slice", None);
    check_unit(&v2("/.service"), "/.service", None);
}

#[test]
fn look_alikes_are_not_workloads() {
    // Not a kubelet slice, short ids, uppercase hex, a uid that is not one.
    for p in [
        format!("/system.slice/system-pod{UID_SYSTEMD}.slice/x.service"),
        "/system.slice/docker-3f9e6c1d2b7a.scope".to_string(),
        format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
        "/kubepods/burstable/podnotauid/x.service".to_string(),
    ] {
        let info = classify(&p);
        assert_eq!((info.container_id, info.pod_uid), (None, None), "{p}");
    }
    // An id under an unknown parent is still an id; the runtime stays unknown.
    let p = format!("/custom-parent/{ID}");
    check(&v2(&p), &p, Some(ID), None, None, None, None);
}

#[test]
fn line_selection() {
    // v1-only host: name=systemd first, then pids, memory, cpu.
    let v1 = "5:memory:/m\n4:pids:/p\n3:cpu,cpuacct:/c\n1:name=systemd:/s\n";
    assert_eq!(path_from_proc_cgroup(v1).as_deref(), Some("/s"));
    assert_eq!(path_from_proc_cgroup("5:memory:/m\n4:pids:/p\n3:cpu,cpuacct:/c\n").as_deref(), Some("/p"));
    assert_eq!(path_from_proc_cgroup("5:memory:/m\n3:cpu,cpuacct:/c\n").as_deref(), Some("/m"));
    assert_eq!(path_from_proc_cgroup("7:blkio:/b\n3:cpuacct,cpu:/c\n").as_deref(), Some("/c"));
    assert_eq!(path_from_proc_cgroup("3:cpu:/c\n").as_deref(), Some("/c"));
    assert_eq!(path_from_proc_cgroup("7:blkio:/b\n").as_deref(), Some("/b"));
    // Hybrid host: a real unified path wins, "/" defers to v1.
    assert_eq!(path_from_proc_cgroup("1:name=systemd:/s\n0::/u\n").as_deref(), Some("/u"));
    assert_eq!(path_from_proc_cgroup("1:name=systemd:/s\n0::/\n").as_deref(), Some("/s"));
    assert_eq!(path_from_proc_cgroup("1:name=systemd:/\n4:pids:/p\n0::/\n").as_deref(), Some("/p"));
    assert_eq!(path_from_proc_cgroup("1:name=systemd:/\n0::/\n").as_deref(), Some("/"));
    assert_eq!(path_from_proc_cgroup("0::/\n").as_deref(), Some("/"));
    // A removed cgroup still names the workload.
    let zombie = format!("0::/system.slice/docker-{ID}.scope (deleted)\n");
    assert_eq!(from_proc_cgroup(&zombie).unwrap().container_id.as_deref(), Some(ID));
    // Colons are legal in a path; only the first two separate fields.
    assert_eq!(path_from_proc_cgroup("0::/a:b\n").as_deref(), Some("/a:b"));
    for bad in ["", "\n", "garbage", "x::/a", "0:/a", "0::relative", "::/"] {
        assert_eq!(path_from_proc_cgroup(bad), None, "{bad:?}");
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    // Fragments that steer the parser into its interesting branches, plus raw bytes.
    let words = "0|1|:|::|/|\n|-|_|.slice|.scope|.service|pod|kubepods|burstable|besteffort|cri-containerd-|crio-|\
        crio-conmon-|docker|docker-|libpod-|name=systemd|pids|cpu,cpuacct| (deleted)|é|\u{1F600}|\0|4294967296";
    let mut fragments: Vec<&str> = words.split('|').collect();
    fragments.extend([ID, UID, UID_SYSTEMD]);
    for _ in 0..20_000 {
        let mut text = String::new();
        for _ in 0..rng.below(24) {
            if rng.below(4) == 0 {
                text.push(char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('?'));
            } else {
                text.push_str(fragments[rng.below(fragments.len())]);
            }
        }
        let _ = from_proc_cgroup(&text);
        let info = classify(&text);
        assert_eq!(info.path, text);
        if let Some(id) = info.container_id {
            assert!(is_hex64(&id));
        }
    }
}
