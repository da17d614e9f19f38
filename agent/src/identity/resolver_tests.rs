use std::path::PathBuf;

use super::*;

/// No such pid: its /proc entry is gone, as for a client that exited already.
const GONE: u32 = u32::MAX - 7;

/// A directory tree standing for the cgroup2 mount (ids are inodes there too), holding `paths`.
fn tree(paths: &[&str]) -> (PathBuf, CgroupPaths) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let root = std::env::temp_dir().join(format!("tokentap-resolver-{}-{nanos}", std::process::id()));
    for p in paths {
        std::fs::create_dir_all(root.join(p.trim_start_matches('/'))).unwrap();
    }
    let cgroups = CgroupPaths::at(Some((root.clone(), "/".into())), false);
    (root, cgroups)
}

fn id(root: &std::path::Path, path: &str) -> u64 {
    cgroup_ids::id_of(&root.join(path.trim_start_matches('/'))).unwrap()
}

#[test]
fn a_process_gone_before_its_exec_notice_is_named_by_what_the_kernel_saw() {
    let (root, cgroups) = tree(&["/tokentap-sl/team"]);
    let team = id(&root, "/tokentap-sl/team");
    let mut cache = Resolver::with_cgroups(None, cgroups);
    // Its data was parsed first (observe), so an empty identity is cached before the notice.
    cache.observe(GONE, team, 50);
    let seen = ExecSeen { comm: "curl".into(), filename: "/bin/sh".into(), uid: 0, cgroup_id: team };
    cache.on_exec(GONE, 40, 60, &seen);
    let w = cache.workload(GONE, team, 70);
    assert_eq!(w.comm, "curl");
    let sh = std::fs::canonicalize("/bin/sh").unwrap().display().to_string();
    assert_eq!(w.exe, sh, "the executed file, its symlinks resolved as /proc/PID/exe would");
    assert_eq!(w.uid, Some(0));
    assert_eq!(w.cgroup.path, "/tokentap-sl/team", "the cgroup, by the id in its records");
    assert_eq!(unattributed_reason(&w), "no_rule_matched");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn identity_read_after_exec_survives_a_late_exec_notice() {
    let me = std::process::id();
    let mut cache = Resolver::new(None);
    cache.observe(me, 0, 200);
    cache.entries.get_mut(&me).unwrap().info.comm = "marker".into();
    cache.on_exec(me, 100, 300, &ExecSeen::default());
    assert_eq!(cache.workload(me, 0, 300).comm, "marker");
    cache.on_exec(me, 250, 300, &ExecSeen::default());
    let w = cache.workload(me, 0, 300);
    assert_ne!(w.comm, "marker");
    assert!(!w.exe.is_empty());
    assert_eq!(w.uid, Some(unsafe { libc::getuid() }));
    assert!(!w.cgroup.path.is_empty(), "this process has a cgroup");
    cache.remove(me, 400);
    assert!(cache.is_empty());
}

#[test]
fn a_late_record_of_a_departed_process_keeps_its_identity() {
    let mut cache = Resolver::with_cgroups(None, CgroupPaths::at(None, false));
    let seen = ExecSeen { comm: "python".into(), filename: "/bin/sh".into(), uid: 0, cgroup_id: 0 };
    cache.on_exec(GONE, 10, 20, &seen);
    cache.remove(GONE, 1_000);
    assert!(cache.is_empty());
    assert_eq!(cache.workload(GONE, 0, 2_000).comm, "python", "a late chunk, read after the exit");
    cache.remove(GONE, 3_000);
    // Long after: a new process with that pid is read afresh (here: nothing to read).
    let w = cache.workload(GONE, 0, 3_000 + DEPARTED_NS);
    assert_eq!(w.comm, "");
    assert_eq!(unattributed_reason(&w), "process_gone_no_exec");
}

/// The workload of a gone process, named by its cgroup id alone, is classified exactly as
/// `/proc/PID/cgroup` with that path would have been (containers, pods, systemd units).
#[test]
fn a_cgroup_id_classifies_like_the_proc_cgroup_text() {
    let cid = "3f1c2a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19";
    let paths = [
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_5b6a_4789_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{cid}.scope"),
        format!("/kubepods/besteffort/pod1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b/{cid}"),
        format!("/system.slice/docker-{cid}.scope"),
        format!("/docker/{cid}"),
        "/system.slice/llm-batch.service".to_string(),
        "/user.slice/user-1000.slice/session-3.scope".to_string(),
        "/".to_string(),
    ];
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let (root, cgroups) = tree(&refs);
    let mut cache = Resolver::with_cgroups(None, cgroups);
    for (n, path) in paths.iter().enumerate() {
        let pid = GONE - 100 - n as u32;
        let w = cache.workload(pid, id(&root, path), 10);
        let from_proc = cgroup::from_proc_cgroup(&format!("0::{path}\n")).unwrap();
        assert_eq!(w.cgroup, from_proc, "{path}");
        assert_eq!(unattributed_reason(&w), "process_gone_no_exec", "no comm, no exe: {path}");
    }
    assert!(cache.workload(GONE - 99, id(&root, &paths[0]), 10).cgroup.container_id.is_some());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_call_from_another_cgroup_than_at_first_sight_is_named_by_its_own() {
    let me = std::process::id();
    let (root, cgroups) = tree(&["/a.service", "/b.service"]);
    let (a, b) = (id(&root, "/a.service"), id(&root, "/b.service"));
    let mut cache = Resolver::with_cgroups(None, cgroups);
    cache.observe(me, a, 10);
    let first = cache.workload(me, a, 20);
    assert!(!first.cgroup.path.is_empty(), "read from /proc while alive");
    let moved = cache.workload(me, b, 30);
    assert_eq!(moved.cgroup.path, "/b.service");
    assert_eq!(moved.cgroup.systemd_unit.as_deref(), Some("b.service"));
    assert_eq!(moved.comm, first.comm);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn an_unknown_cgroup_id_is_a_reason_of_its_own() {
    let mut cache = Resolver::with_cgroups(None, CgroupPaths::at(None, false));
    let seen = ExecSeen { comm: "curl".into(), filename: "/usr/bin/curl".into(), uid: 0, cgroup_id: 77 };
    cache.on_exec(GONE, 10, 20, &seen);
    let w = cache.workload(GONE, 77, 30);
    assert_eq!((w.comm.as_str(), w.cgroup.path.as_str()), ("curl", ""));
    assert_eq!(unattributed_reason(&w), "cgroup_unknown");
}

#[test]
fn of_two_exec_notices_of_a_gone_process_the_later_names_it() {
    // `sh -c 'echo $$ > cgroup.procs && exec curl …'`: both notices are handled after the exit.
    let mut cache = Resolver::with_cgroups(None, CgroupPaths::at(None, false));
    let sh = ExecSeen { comm: "sh".into(), filename: "/bin/sh".into(), uid: 0, cgroup_id: 0 };
    let curl = ExecSeen { comm: "curl".into(), filename: "/nonexistent/curl".into(), uid: 0, cgroup_id: 0 };
    cache.observe(GONE, 0, 100);
    cache.on_exec(GONE, 10, 110, &sh);
    cache.on_exec(GONE, 20, 120, &curl);
    cache.on_exec(GONE, 15, 130, &sh);
    let w = cache.workload(GONE, 0, 140);
    assert_eq!((w.comm.as_str(), w.exe.as_str()), ("curl", "/nonexistent/curl"));
}

/// On this host's real cgroup2 tree: a gone process of this test's cgroup gets exactly what
/// `/proc/self/cgroup` says of it — on a hybrid host a v1 controller's path may be that, not
/// the v2 path its cgroup id resolves to.
#[test]
fn a_gone_process_is_classified_as_a_live_one_of_its_cgroup_was() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let (point, _) = cgroup_ids::cgroup2_mount(&mountinfo).expect("a cgroup2 mount on this host");
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let v2 = cgroup::v2_path(&text).expect("a cgroup v2 line");
    let my_id = cgroup_ids::id_of(&point.join(v2.trim_start_matches('/'))).unwrap();
    let mut cache = Resolver::new(None);
    let me = cache.workload(std::process::id(), my_id, 10);
    assert_eq!(me.cgroup, cgroup::from_proc_cgroup(&text).unwrap());
    let gone = cache.workload(GONE, my_id, 20);
    assert_eq!(gone.cgroup, me.cgroup, "named by the cgroup id alone");
}

#[test]
fn the_v2_line_is_found_whatever_the_other_lines_say() {
    let hybrid = "9:name=systemd:/\n4:memory:/process_api/1dc3\n0::/\n";
    assert_eq!(cgroup::v2_path(hybrid).as_deref(), Some("/"));
    assert_eq!(cgroup::path_from_proc_cgroup(hybrid).as_deref(), Some("/process_api/1dc3"));
    assert_eq!(cgroup::v2_path("0::/a/b (deleted)\n").as_deref(), Some("/a/b"));
    assert_eq!(cgroup::v2_path("4:memory:/x\n"), None);
}

/// A cgroup with no process seen yet (the enforcer's walk for new cgroups): classified from
/// its path as a process in it would be, nothing of a process invented.
#[test]
fn a_cgroup_alone_is_classified_from_its_path() {
    let cache = Resolver::with_cgroups(None, CgroupPaths::at(None, false));
    let w = cache.cgroup_workload("/system.slice/ttq-new.service");
    assert_eq!(w.cgroup.systemd_unit.as_deref(), Some("ttq-new.service"));
    assert_eq!(w.cgroup.path, "/system.slice/ttq-new.service");
    assert_eq!((w.pid, w.comm.as_str(), w.exe.as_str(), w.uid), (0, "", "", None));
    let pod = cache.cgroup_workload(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234abcd_5678_90ab_cdef_1234567890ab.slice",
    );
    assert_eq!(pod.cgroup.pod_uid.as_deref(), Some("1234abcd-5678-90ab-cdef-1234567890ab"));
}
