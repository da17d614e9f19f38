//! The quota status file: what the enforcing agent knows about every entitlement, written
//! atomically each second so that `tokentap quota status` and `tokentap top` (other processes,
//! other users) read a whole, recent picture. Counts, names and times only: no payload.
use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A status older than this means its writer stopped: the agent rewrites it every second.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaStatus {
    /// RFC 3339 (UTC).
    pub written_at: String,
    pub host: String,
    pub entitlements: Vec<EntitlementStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    /// Past the entitlement's `warn_at`.
    Warning,
    /// `used >= limit`: its action applies.
    Exhausted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warning => "warning",
            State::Exhausted => "exhausted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntitlementStatus {
    pub name: String,
    /// `local` or `cluster`.
    pub scope: String,
    /// What the limit counts: `total_tokens`, `input_tokens`, `output_tokens`, `cost_usd`,
    /// `requests`.
    pub limit_kind: String,
    /// `tokens`, `usd` or `requests`.
    pub unit: String,
    pub limit: f64,
    /// Settled usage in the current window.
    pub used: f64,
    /// Reserved by calls in flight.
    pub reserved: f64,
    /// `limit - used - reserved`, never below zero.
    pub remaining: f64,
    /// RFC 3339.
    pub window_start: String,
    pub window_end: String,
    pub state: State,
    /// `observe`, `signal`, `deny` or `cut`.
    pub action: String,
    /// Times the action fired (or, for observe, would have) since the agent started.
    #[serde(default)]
    pub actions_taken: u64,
    /// Warnings raised since the agent started.
    #[serde(default)]
    pub warnings: u64,
    /// How far `used` went past the limit in this window (the overrun of calls in flight).
    #[serde(default)]
    pub overrun: f64,
}

#[derive(Debug, Error)]
pub enum StatusError {
    #[error("quota status file {path} does not exist: is an agent with [enforcement] running and writing it there?")]
    Missing { path: PathBuf },
    #[error("cannot read quota status file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("quota status file {path} is not a valid status (line {line}, column {column}): {reason}")]
    Invalid { path: PathBuf, line: usize, column: usize, reason: String },
    #[error(
        "quota status file {path} was last written at {written_at} ({age_s} s ago): the agent seems stopped, \
         its figures are out of date"
    )]
    Stale { path: PathBuf, written_at: String, age_s: u64 },
    #[error("cannot write quota status file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl QuotaStatus {
    /// Writes the status as JSON next to `path` and renames it into place, so a reader sees the
    /// old file or the new one, never a part. The directory is created; the file is 0644 (the
    /// figures are no secret; readers need not be root).
    pub fn write_atomic(&self, path: &Path) -> Result<(), StatusError> {
        let err = |source| StatusError::Write { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(io::Error::other(e)))?;
        let written = (|| {
            let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
            // The umask may have narrowed the mode.
            f.set_permissions(fs::Permissions::from_mode(0o644))?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(err)
    }

    /// Reads a status file; one not rewritten for [`STALE_AFTER`] (by `now`) is an error that
    /// says the agent seems stopped.
    pub fn read(path: &Path, now: Timestamp) -> Result<QuotaStatus, StatusError> {
        let status = Self::read_any_age(path)?;
        let invalid = |reason: String| StatusError::Invalid { path: path.to_path_buf(), line: 0, column: 0, reason };
        let written: Timestamp =
            status.written_at.parse().map_err(|e| invalid(format!("written_at is not an RFC 3339 time: {e}")))?;
        let age = now.duration_since(written);
        if age.as_secs() > STALE_AFTER.as_secs() as i64 {
            return Err(StatusError::Stale {
                path: path.to_path_buf(),
                written_at: status.written_at,
                age_s: age.as_secs().max(0) as u64,
            });
        }
        Ok(status)
    }

    /// Reads a status file whatever its age.
    pub fn read_any_age(path: &Path) -> Result<QuotaStatus, StatusError> {
        let bytes = fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StatusError::Missing { path: path.to_path_buf() },
            _ => StatusError::Read { path: path.to_path_buf(), source },
        })?;
        serde_json::from_slice(&bytes).map_err(|e| StatusError::Invalid {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
impl EntitlementStatus {
    /// A token entitlement of a daily window for tests of what reads the status.
    pub fn sample(name: &str, limit: f64, used: f64, reserved: f64, state: State) -> EntitlementStatus {
        EntitlementStatus {
            name: name.into(),
            scope: "local".into(),
            limit_kind: "total_tokens".into(),
            unit: "tokens".into(),
            limit,
            used,
            reserved,
            remaining: (limit - used - reserved).max(0.0),
            window_start: "2026-11-28T00:00:00Z".into(),
            window_end: "2026-11-29T00:00:00Z".into(),
            state,
            action: "deny".into(),
            actions_taken: 0,
            warnings: 0,
            overrun: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(written_at: &str) -> QuotaStatus {
        QuotaStatus {
            written_at: written_at.into(),
            host: "node-1".into(),
            entitlements: vec![EntitlementStatus {
                name: "blue-daily".into(),
                scope: "local".into(),
                limit_kind: "total_tokens".into(),
                unit: "tokens".into(),
                limit: 50_000.0,
                used: 41_000.0,
                reserved: 1_200.0,
                remaining: 7_800.0,
                window_start: "2026-11-28T00:00:00Z".into(),
                window_end: "2026-11-29T00:00:00Z".into(),
                state: State::Warning,
                action: "deny".into(),
                actions_taken: 0,
                warnings: 1,
                overrun: 0.0,
            }],
        }
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tokentap-status-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_through_an_atomic_write() {
        let d = dir();
        let path = d.join("sub/status.json");
        let now = Timestamp::now();
        let status = sample(&now.to_string());
        status.write_atomic(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(QuotaStatus::read(&path, now).unwrap(), status);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["entitlements"][0]["state"], "warning");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn missing_invalid_and_stale_files_are_clear_errors() {
        let d = dir();
        fs::create_dir_all(&d).unwrap();
        let path = d.join("status.json");
        let e = QuotaStatus::read(&path, Timestamp::now()).unwrap_err();
        assert!(matches!(e, StatusError::Missing { .. }) && e.to_string().contains("status.json"), "{e}");

        fs::write(&path, "{\n  \"written_at\": 5\n}").unwrap();
        let e = QuotaStatus::read(&path, Timestamp::now()).unwrap_err();
        assert!(matches!(e, StatusError::Invalid { line: 2, .. }), "{e}");

        let old = Timestamp::now() - jiff::SignedDuration::from_secs(60);
        sample(&old.to_string()).write_atomic(&path).unwrap();
        let e = QuotaStatus::read(&path, Timestamp::now()).unwrap_err();
        assert!(matches!(e, StatusError::Stale { age_s: 60..=61, .. }), "{e}");
        assert!(e.to_string().contains("seems stopped"), "{e}");
        assert!(QuotaStatus::read_any_age(&path).is_ok());

        sample("yesterday").write_atomic(&path).unwrap();
        let e = QuotaStatus::read(&path, Timestamp::now()).unwrap_err();
        assert!(e.to_string().contains("written_at"), "{e}");
        fs::remove_dir_all(d).unwrap();
    }
}
