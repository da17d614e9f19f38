//! Cgroup ids (directory inodes) to paths, for cgroups known only by id: those the ledger
//! names after a restart (a bounded walk done once at start), and the whole tree for the cgroups
//! the enforcer has not met yet (each tick while a budget is gated).
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Depth and size bounds: a host's cgroup tree is a few hundred directories; a pathological
/// one must not stall the agent's start.
const MAX_DEPTH: usize = 12;
const MAX_DIRS: usize = 100_000;

/// The paths (relative to `root`, with a leading `/`) of the cgroups in `ids` that exist.
pub fn paths_of(root: &Path, ids: &HashSet<u64>) -> HashMap<u64, String> {
    let mut found = HashMap::new();
    walk(root, |id, rel| {
        if ids.contains(&id) {
            found.insert(id, rel.to_string());
        }
        found.len() < ids.len()
    });
    found
}

/// Every cgroup under `root`: (id, path relative to `root` with a leading `/`). The tick's
/// look for cgroups the enforcer has not met yet.
pub fn all(root: &Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    walk(root, |id, rel| {
        out.push((id, rel.to_string()));
        true
    });
    out
}

/// Depth-first over the tree within the bounds; `visit` returns false to stop.
fn walk(root: &Path, mut visit: impl FnMut(u64, &str) -> bool) {
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0;
    while let Some((dir, depth)) = stack.pop() {
        seen += 1;
        if seen > MAX_DIRS {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else { continue };
        let rel = dir.strip_prefix(root).map(|p| format!("/{}", p.display())).unwrap_or_default();
        if !visit(meta.ino(), &rel) {
            break;
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_directories_by_inode() {
        let root = std::env::temp_dir().join(format!("tokentap-cg-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let ino = std::fs::metadata(root.join("a/b")).unwrap().ino();
        let found = paths_of(&root, &HashSet::from([ino, 1]));
        assert_eq!(found, HashMap::from([(ino, "/a/b".to_string())]));
        let every = all(&root);
        assert!(every.contains(&(ino, "/a/b".to_string())) && every.len() == 3, "{every:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
