use super::*;

const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory
";

#[test]
fn the_cgroup2_mount_is_read_from_mountinfo() {
    assert_eq!(cgroup2_mount(HYBRID), Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".to_string())));
    let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n";
    assert_eq!(cgroup2_mount(unified), Some((PathBuf::from("/sys/fs/cgroup"), "/".to_string())));
    // A subtree bind-mounted at a path with a space (mountinfo escapes it as \040).
    let sub = "40 1 0:26 /kubepods.slice /run/my\\040cg rw - cgroup2 cgroup2 rw\n";
    assert_eq!(cgroup2_mount(sub), Some((PathBuf::from("/run/my cg"), "/kubepods.slice".to_string())));
    assert_eq!(cgroup2_mount(&HYBRID.replace("cgroup2 cgroup2", "tmpfs tmpfs")), None);
    assert_eq!(cgroup2_mount("garbage\n\n - cgroup2\n"), None);
}

#[test]
fn a_directory_under_the_mount_names_its_cgroup_path() {
    let point = Path::new("/sys/fs/cgroup/unified");
    assert_eq!(cgroup_path(point, "/", point).as_deref(), Some("/"));
    assert_eq!(cgroup_path(point, "/", &point.join("a/b.scope")).as_deref(), Some("/a/b.scope"));
    assert_eq!(cgroup_path(point, "/kubepods.slice", &point.join("x")).as_deref(), Some("/kubepods.slice/x"));
    assert_eq!(cgroup_path(point, "/kubepods.slice", point).as_deref(), Some("/kubepods.slice"));
    assert_eq!(cgroup_path(point, "/", Path::new("/elsewhere")), None);
}

/// A directory tree standing for a cgroup2 mount: ids are inodes there too.
fn tree() -> (PathBuf, CgroupPaths) {
    let root = std::env::temp_dir().join(format!("tokentap-cgids-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(root.join("system.slice/llm-batch.service")).unwrap();
    std::fs::create_dir_all(root.join("kubepods.slice/kubepods-besteffort.slice")).unwrap();
    std::fs::write(root.join("cgroup.procs"), "").unwrap();
    let paths = CgroupPaths::at(Some((root.clone(), "/".into())), false);
    (root, paths)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
}

#[test]
fn ids_resolve_by_walking_and_stay_known_after_removal() {
    let (root, mut paths) = tree();
    let unit = root.join("system.slice/llm-batch.service");
    let unit_id = id_of(&unit).unwrap();
    assert_eq!(paths.resolve(unit_id, 1).as_deref(), Some("/system.slice/llm-batch.service"));
    assert_eq!(paths.resolve(id_of(&root).unwrap(), 2).as_deref(), Some("/"));
    assert_eq!(paths.len(), 5, "one walk cached every directory, no file");
    assert_eq!(paths.resolve(0, 3), None, "id 0: no cgroup");

    // Removed: its last calls, parsed later, still find it. (The open directory keeps its
    // inode from being reused here, as kernfs never reuses an id.)
    let _held = std::fs::File::open(&unit).unwrap();
    std::fs::remove_dir(&unit).unwrap();
    assert_eq!(paths.resolve(unit_id, 10_000_000_000).as_deref(), Some("/system.slice/llm-batch.service"));

    // A cgroup made after the walk: a miss walks again, at most once per WALK_EVERY_NS.
    let new = root.join("kubepods.slice/kubepods-besteffort.slice/pod1");
    std::fs::create_dir(&new).unwrap();
    let new_id = id_of(&new).unwrap();
    assert_eq!(
        paths.resolve(new_id, 10_000_000_000).as_deref(),
        Some("/kubepods.slice/kubepods-besteffort.slice/pod1")
    );
    let _held_too = std::fs::File::open(&new).unwrap();
    std::fs::remove_dir(&new).unwrap();
    let newer = root.join("system.slice/late.service");
    std::fs::create_dir(&newer).unwrap();
    let newer_id = id_of(&newer).unwrap();
    assert_eq!(paths.resolve(newer_id, 10_000_000_001), None, "rate-limited: the walk was a moment ago");
    assert_eq!(paths.resolve(newer_id, 10_000_000_001 + WALK_EVERY_NS).as_deref(), Some("/system.slice/late.service"));

    // Unused for RETAIN_NS: a removed cgroup's path is dropped at last.
    let later = 20_000_000_000 + RETAIN_NS;
    assert_eq!(paths.resolve(unit_id, later), None, "pruned, and gone from the tree");
    assert_eq!(
        paths.resolve(newer_id, later + 60_000_000_000 + RETAIN_NS).as_deref(),
        Some("/system.slice/late.service")
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn without_a_cgroup2_mount_nothing_resolves() {
    let mut paths = CgroupPaths::at(None, true);
    assert_eq!(paths.resolve(12345, 1), None);
    assert!(!paths.uses_handles());
}

/// On this host's real cgroup2 mount: the file handle (as root) and the walk agree, and both
/// name this process's cgroup as `/proc/self/cgroup` does.
#[test]
fn the_real_cgroup2_tree_resolves_by_handle_and_by_walk_alike() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let (point, root) = cgroup2_mount(&mountinfo).expect("a cgroup2 mount on this host");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line").to_string();
    let dir = point.join(own.trim_start_matches('/'));
    let id = id_of(&dir).expect("own cgroup directory");
    let mut handles = CgroupPaths::at(Some((point.clone(), root.clone())), true);
    let mut walk = CgroupPaths::at(Some((point, root)), false);
    assert_eq!(handles.resolve(id, 1).as_deref(), Some(own.as_str()));
    assert_eq!(walk.resolve(id, 1).as_deref(), Some(own.as_str()));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(handles.uses_handles(), "root resolves cgroup ids by file handle");
        assert_eq!(handles.len(), 1, "by handle: no walk");
    }
}
