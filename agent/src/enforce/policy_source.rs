//! The policy file as a live source, like the mapping file: loaded at start, re-read when it
//! changes (checked every tick) or on SIGHUP. An invalid edit is reported with its
//! file:line:key and the policy in force stays.
use std::path::{Path, PathBuf};

use super::policy::{Policy, PolicyError};
use crate::mapping_source::{stamp, Stamp};

pub struct PolicySource {
    path: Option<PathBuf>,
    stamp: Option<Stamp>,
    current: Policy,
}

/// The outcome of a reload attempt.
#[derive(Debug, PartialEq)]
pub enum Reload {
    Unchanged,
    Loaded { entitlements: usize },
    Rejected(PolicyError),
}

impl PolicySource {
    /// Loads the file, if any; an invalid policy at start is an error (the agent refuses to
    /// enforce a policy it cannot read).
    pub fn open(path: Option<&Path>) -> Result<PolicySource, PolicyError> {
        let Some(path) = path else {
            return Ok(PolicySource { path: None, stamp: None, current: Policy::default() });
        };
        let stamp = stamp(path);
        let current = Policy::load(path)?;
        Ok(PolicySource { path: Some(path.to_path_buf()), stamp, current })
    }

    pub fn policy(&self) -> &Policy {
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
        match Policy::load(path) {
            Ok(policy) => {
                self.current = policy;
                Reload::Loaded { entitlements: self.current.entitlements.len() }
            }
            Err(e) => Reload::Rejected(e),
        }
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
        assert_eq!(src.reload_if_changed(), Reload::Loaded { entitlements: 1 });
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
