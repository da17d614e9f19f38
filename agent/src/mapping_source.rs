//! The mapping file as a live source (see `watched_file`): an invalid edit is reported and the
//! mapping in force stays.
use std::path::Path;

use crate::attribution::{Mapping, MappingError};
use crate::watched_file::{Watched, WatchedFile};

pub type MappingSource = WatchedFile<Mapping>;
pub type Reload = crate::watched_file::Reload<MappingError>;

impl Watched for Mapping {
    type Error = MappingError;
    fn load(path: &Path) -> Result<Mapping, MappingError> {
        Mapping::load(path)
    }
    fn empty() -> Mapping {
        Mapping::empty()
    }
    fn entries(&self) -> usize {
        self.rule_count()
    }
}

impl MappingSource {
    pub fn mapping(&self) -> &Mapping {
        self.current()
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
        assert_eq!(src.reload_if_changed(), Reload::Loaded(1));
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
