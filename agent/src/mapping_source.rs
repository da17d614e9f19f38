//! The mapping file as a live source: loaded at start, re-read when it changes (checked every
//! tick) or on SIGHUP. An invalid edit is reported and the mapping in force stays.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::attribution::{Mapping, MappingError};

/// What identifies one version of the file: editors replace files (new inode) or rewrite them
/// in place (new mtime/size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { ino: m.ino(), size: m.size(), mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128 })
}

pub struct MappingSource {
    path: Option<PathBuf>,
    stamp: Option<Stamp>,
    current: Mapping,
}

/// The outcome of a reload attempt.
#[derive(Debug, PartialEq)]
pub enum Reload {
    Unchanged,
    Loaded { rules: usize },
    Rejected(MappingError),
}

impl MappingSource {
    /// Loads the file, if any; an invalid file at start is an error (the agent refuses to run
    /// with attribution it cannot honour).
    pub fn open(path: Option<&Path>) -> Result<MappingSource, MappingError> {
        let Some(path) = path else {
            return Ok(MappingSource { path: None, stamp: None, current: Mapping::empty() });
        };
        let stamp = stamp(path);
        let current = Mapping::load(path)?;
        Ok(MappingSource { path: Some(path.to_path_buf()), stamp, current })
    }

    pub fn mapping(&self) -> &Mapping {
        &self.current
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-reads the file if it changed since the last attempt.
    pub fn reload_if_changed(&mut self) -> Reload {
        let Some(path) = &self.path else { return Reload::Unchanged };
        let now = stamp(path);
        if now == self.stamp {
            return Reload::Unchanged;
        }
        self.stamp = now;
        self.reload()
    }

    /// Re-reads the file unconditionally (SIGHUP).
    pub fn reload(&mut self) -> Reload {
        let Some(path) = &self.path else { return Reload::Unchanged };
        match Mapping::load(path) {
            Ok(mapping) => {
                self.current = mapping;
                Reload::Loaded { rules: self.current.rule_count() }
            }
            Err(e) => Reload::Rejected(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE_A: &str = "[[rule]]\nname = \"a\"\n[rule.set]\nteam = \"alpha\"\n";
    const RULE_B: &str = "[[rule]]\nname = \"b\"\n[rule.set]\nteam = \"beta\"\n";

    fn team(src: &MappingSource) -> String {
        src.mapping().attribute(&Default::default(), &|_| None).team
    }

    #[test]
    fn edits_are_picked_up_and_bad_edits_keep_the_old_mapping() {
        let dir = std::env::temp_dir().join(format!("tokentap-mapping-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mapping.toml");
        std::fs::write(&file, RULE_A).unwrap();
        let mut src = MappingSource::open(Some(&file)).unwrap();
        assert_eq!(team(&src), "alpha");
        assert_eq!(src.reload_if_changed(), Reload::Unchanged);

        std::fs::write(&file, format!("{RULE_B}\n")).unwrap();
        assert_eq!(src.reload_if_changed(), Reload::Loaded { rules: 1 });
        assert_eq!(team(&src), "beta");

        std::fs::write(&file, "[[rule]]\nname = \"c\"\n[rule.set]\nteem = \"x\"\n").unwrap();
        match src.reload_if_changed() {
            Reload::Rejected(MappingError::Invalid { line, .. }) => assert_eq!(line, 4),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(team(&src), "beta", "the previous mapping stays in force");
        assert_eq!(src.reload_if_changed(), Reload::Unchanged, "a rejected version is not retried until it changes");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_file_means_everything_unattributed() {
        let mut src = MappingSource::open(None).unwrap();
        assert_eq!(team(&src), "unattributed");
        assert_eq!(src.reload(), Reload::Unchanged);
        assert!(MappingSource::open(Some(Path::new("/nonexistent/mapping.toml"))).is_err());
    }
}
