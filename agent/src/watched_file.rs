//! A configuration file kept live: loaded at start, re-read when it changes (checked every
//! tick) or on SIGHUP. An invalid edit is reported (with the file's own file:line:key error)
//! and the version in force stays. Serves the mapping file and the entitlement policy.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// What a watched file holds.
pub trait Watched: Sized {
    type Error;
    fn load(path: &Path) -> Result<Self, Self::Error>;
    /// What is in force without a file.
    fn empty() -> Self;
    /// How many entries (rules, entitlements) a loaded version has, for the reload log line.
    fn entries(&self) -> usize;
}

/// What identifies one version of the file: editors replace files (new inode) or rewrite them
/// in place (new mtime/size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { ino: m.ino(), size: m.size(), mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128 })
}

/// The outcome of a reload attempt.
#[derive(Debug, PartialEq)]
pub enum Reload<E> {
    Unchanged,
    /// A new version is in force, with this many entries.
    Loaded(usize),
    Rejected(E),
}

pub struct WatchedFile<T> {
    path: Option<PathBuf>,
    stamp: Option<Stamp>,
    current: T,
}

impl<T: Watched> WatchedFile<T> {
    /// Loads the file, if any; an invalid file at start is an error (the agent refuses to run
    /// with a configuration it cannot honour).
    pub fn open(path: Option<&Path>) -> Result<Self, T::Error> {
        let Some(path) = path else {
            return Ok(WatchedFile { path: None, stamp: None, current: T::empty() });
        };
        let stamp = stamp(path);
        let current = T::load(path)?;
        Ok(WatchedFile { path: Some(path.to_path_buf()), stamp, current })
    }

    pub fn current(&self) -> &T {
        &self.current
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-reads the file if it changed since the last attempt (a rejected version is not
    /// retried until it changes again).
    pub fn reload_if_changed(&mut self) -> Reload<T::Error> {
        let Some(path) = &self.path else { return Reload::Unchanged };
        let now = stamp(path);
        if now == self.stamp {
            return Reload::Unchanged;
        }
        self.stamp = now;
        self.reload()
    }

    /// Re-reads the file unconditionally (SIGHUP).
    pub fn reload(&mut self) -> Reload<T::Error> {
        let Some(path) = &self.path else { return Reload::Unchanged };
        match T::load(path) {
            Ok(loaded) => {
                self.current = loaded;
                Reload::Loaded(self.current.entries())
            }
            Err(e) => Reload::Rejected(e),
        }
    }
}
