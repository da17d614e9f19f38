//! Cgroup ids (directory inodes) to paths, for cgroups known only by id: those the ledger
//! names after a restart. A bounded walk of the cgroup v2 tree, done once at start.
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
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0;
    while let Some((dir, depth)) = stack.pop() {
        seen += 1;
        if seen > MAX_DIRS || found.len() == ids.len() {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else { continue };
        if ids.contains(&meta.ino()) {
            let rel = dir.strip_prefix(root).map(|p| format!("/{}", p.display())).unwrap_or_default();
            found.insert(meta.ino(), rel);
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
    found
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
        std::fs::remove_dir_all(&root).unwrap();
    }
}
