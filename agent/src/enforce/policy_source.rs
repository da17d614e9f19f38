//! The policy file as a live source, like the mapping file (see `watched_file`): an invalid
//! edit is reported with its file:line:key and the policy in force stays.
use std::path::Path;

use super::policy::{Policy, PolicyError};
use crate::watched_file::{Watched, WatchedFile};

pub type PolicySource = WatchedFile<Policy>;
pub type Reload = crate::watched_file::Reload<PolicyError>;

impl Watched for Policy {
    type Error = PolicyError;
    fn load(path: &Path) -> Result<Policy, PolicyError> {
        Policy::load(path)
    }
    fn empty() -> Policy {
        Policy::default()
    }
    fn entries(&self) -> usize {
        self.entitlements.len()
    }
}

impl PolicySource {
    pub fn policy(&self) -> &Policy {
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[[entitlement]]\nname = \"a\"\nmatch = { team = \"t\" }\nlimit = { requests = 5 }\n\
                        window = \"1h\"\naction = \"deny\"\n";

    #[test]
    fn edits_are_picked_up_and_bad_edits_keep_the_old_policy() {
        let dir = std::env::temp_dir().join(format!("tokentap-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.toml");
        std::fs::write(&file, GOOD).unwrap();
        let mut src = PolicySource::open(Some(&file)).unwrap();
        assert_eq!(src.policy().entitlements[0].limit.amount, 5);
        assert_eq!(src.reload_if_changed(), Reload::Unchanged);
        std::fs::write(&file, GOOD.replace("requests = 5", "requests = 50")).unwrap();
        assert_eq!(src.reload_if_changed(), Reload::Loaded(1));
        assert_eq!(src.policy().entitlements[0].limit.amount, 50);
        std::fs::write(&file, GOOD.replace("action = \"deny\"", "action = \"block\"")).unwrap();
        match src.reload_if_changed() {
            Reload::Rejected(PolicyError::Invalid { line, key, .. }) => {
                assert_eq!((line, key.as_str()), (6, "entitlement[1].action"))
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(src.policy().entitlements[0].limit.amount, 50, "the previous policy stays in force");
        assert_eq!(src.reload_if_changed(), Reload::Unchanged);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(PolicySource::open(Some(Path::new("/nonexistent/policy.toml"))).is_err());
        assert!(PolicySource::open(None).unwrap().policy().entitlements.is_empty());
    }
}
