//! The agent's configuration file (TOML). Every section has defaults, so the built-in config
//! (no file) meters the whole host. Errors name the file, line and key.
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use tokentap_common::{DEFAULT_CALL_CAP, MAX_CALL_CAP};

use crate::toml_source::{key_at, line_of};
pub use crate::{export::ExportConfig, identity::kube::KubeConfig};

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub capture: CaptureConfig,
    pub endpoints: EndpointsConfig,
    pub output: OutputConfig,
    pub attribution: AttributionConfig,
    pub kubernetes: KubeConfig,
    pub export: ExportConfig,
    pub pricing: PricingConfig,
    pub ledger: LedgerConfig,
    pub enforcement: EnforcementConfig,
}

/// The durable usage ledger (docs/chargeback.md): one SQLite row per call, hourly rollups
/// after `retention_days`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    pub enabled: bool,
    pub path: PathBuf,
    /// Days a call keeps its own row; older calls are summed into hourly rollups.
    pub retention_days: u32,
    /// Days hourly rollups are kept (at least `retention_days`).
    pub rollup_retention_days: u32,
    /// Records held in memory while the ledger cannot be written (full disk, unwritable or
    /// foreign file); beyond it new records are dropped from the ledger (and counted).
    pub max_pending_records: usize,
}

pub const DEFAULT_LEDGER_PATH: &str = "/var/lib/tokentap/ledger.db";

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            enabled: true,
            path: PathBuf::from(DEFAULT_LEDGER_PATH),
            retention_days: 90,
            rollup_retention_days: 800,
            max_pending_records: 100_000,
        }
    }
}

/// Entitlements enforced in real time (docs/enforcement.md). Off unless a policy file is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforcementConfig {
    /// The entitlement policy (`[[entitlement]]` tables), hot reloaded like the mapping file.
    pub policy_file: Option<PathBuf>,
    /// Where the quota status (JSON) is written each second for `tokentap quota status`.
    pub status_file: PathBuf,
    /// Output tokens reserved for a call whose request names no `max_tokens` (or the
    /// provider's equivalent): the bound on how far one such call can overrun a budget.
    pub default_max_output_tokens: u64,
    /// Fraction of a limit (used + reserved) from which every request of the entitlement's
    /// targets is held and approved one by one (the kernel's GATE mode).
    pub hold_at: f64,
    /// Shared counters for `scope = "cluster"` entitlements.
    pub redis: Option<RedisConfig>,
}

pub const DEFAULT_STATUS_FILE: &str = "/run/tokentap/quota.json";

impl Default for EnforcementConfig {
    fn default() -> Self {
        EnforcementConfig {
            policy_file: None,
            status_file: PathBuf::from(DEFAULT_STATUS_FILE),
            default_max_output_tokens: 4096,
            hold_at: 0.5,
            redis: None,
        }
    }
}

/// What a node does with cluster entitlements while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Enforce on this node's own counters (plus the last known cluster totals).
    #[default]
    Open,
    /// Treat the cluster entitlements as exhausted until Redis answers again.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db` (or `unix://`; TLS, `rediss://`, is not built in).
    pub url: String,
    #[serde(default)]
    pub fail_mode: FailMode,
    /// Prefix of every key this agent writes (several clusters may share one Redis).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Milliseconds between two pushes of this node's usage (the staleness bound, ≤ 1000).
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// This node's field in the shared counters; unset: the Kubernetes node name when
    /// `[kubernetes]` is enabled, else the host name. Must differ per node.
    #[serde(default)]
    pub node: Option<String>,
}

fn default_key_prefix() -> String {
    "tokentap:".to_string()
}

fn default_sync_interval_ms() -> u64 {
    500
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// Prices that replace or extend the shipped table (same format). See docs/pricing.md.
    pub override_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionConfig {
    /// The mapping file (rules from workload and request headers to team, cost centre, …).
    /// Re-read when it changes and on SIGHUP. Unset: every call is `unattributed`.
    pub mapping_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Bytes of one TLS library call shipped from the kernel; larger calls are flagged truncated.
    pub call_cap_bytes: u64,
    /// Size of the kernel-to-agent ring buffer (a power of two, at least 4 KiB pages).
    pub ring_buffer_bytes: u32,
    /// Largest HTTP body kept in memory for parsing (after de-chunking and decompression).
    pub max_body_bytes: usize,
    /// Seconds of silence after which a connection's state is dropped.
    pub idle_timeout_secs: u64,
    pub plain_http: PlainHttpConfig,
}

/// Plain (unencrypted) HTTP to local model servers and in-cluster gateways, seen at the socket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlainHttpConfig {
    /// Off: the socket tracepoints are not attached at all.
    pub enabled: bool,
    /// TCP ports whose client connections are inspected. Only these cost more than a map
    /// lookup per read/write; each connection's first request then decides whether it is kept.
    pub ports: Vec<u16>,
    /// Host names (`Host` header) to treat as AI APIs on these connections, besides the
    /// built-in provider hosts, AI paths and `endpoints.extra_hosts`.
    pub hosts: Vec<String>,
    /// Request path prefixes (e.g. `/llm/`) that mark a connection as AI traffic besides the
    /// built-in ones (`/v1/`, `/api/`, `/openai/`, `/v1beta/`): its bytes keep being captured.
    pub paths: Vec<String>,
}

/// Ollama 11434, vLLM 8000, LiteLLM proxy 4000, llama.cpp server and TGI (container) 8080,
/// LM Studio 1234.
pub const DEFAULT_PLAIN_PORTS: &[u16] = &[1234, 4000, 8000, 8080, 11434];

impl Default for PlainHttpConfig {
    fn default() -> Self {
        PlainHttpConfig { enabled: true, ports: DEFAULT_PLAIN_PORTS.to_vec(), hosts: Vec::new(), paths: Vec::new() }
    }
}

impl PlainHttpConfig {
    /// The ports handed to the kernel: none when disabled.
    pub fn kernel_ports(&self) -> Vec<u16> {
        if self.enabled {
            self.ports.clone()
        } else {
            Vec::new()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointsConfig {
    /// Hosts to treat as AI APIs besides the built-in provider hosts (e.g. an internal gateway).
    pub extra_hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Where usage records go as JSON lines (`-` for stdout). Unset: a live summary on stdout.
    pub usage_log: Option<PathBuf>,
    /// Seconds between refreshes of the live summary.
    pub summary_interval_secs: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            call_cap_bytes: DEFAULT_CALL_CAP,
            ring_buffer_bytes: 64 * 1024 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            idle_timeout_secs: 600,
            plain_http: PlainHttpConfig::default(),
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { usage_log: None, summary_interval_secs: 5 }
    }
}

/// Size of the kernel's port set (`PLAIN_PORTS`).
const MAX_PLAIN_PORTS: usize = 256;

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid { file: String, line: usize, key: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { file: path.display().to_string(), reason: e.to_string() })?;
        Config::parse(&path.display().to_string(), &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            let key = e.span().map(|s| key_at(text, s.start)).unwrap_or_else(|| "(document)".to_string());
            ConfigError::Invalid { file: file.to_string(), line, key, message: e.message().to_string() }
        })?;
        config.validate(file, text)?;
        Ok(config)
    }

    fn validate(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key.rsplit('.').next().unwrap_or(key)))
                .map(|i| i + 1)
                .unwrap_or(0);
            ConfigError::Invalid { file: file.to_string(), line, key: key.to_string(), message }
        };
        let c = &self.capture;
        if c.call_cap_bytes == 0 || c.call_cap_bytes > MAX_CALL_CAP {
            return Err(invalid("capture.call_cap_bytes", format!("must be between 1 and {MAX_CALL_CAP}")));
        }
        if !c.ring_buffer_bytes.is_power_of_two() || c.ring_buffer_bytes < 1 << 20 {
            return Err(invalid("capture.ring_buffer_bytes", "must be a power of two of at least 1 MiB".into()));
        }
        if (c.ring_buffer_bytes as u64) < 2 * c.call_cap_bytes {
            return Err(invalid(
                "capture.ring_buffer_bytes",
                "must hold at least two capped calls (2 × call_cap_bytes)".into(),
            ));
        }
        if c.plain_http.ports.len() > MAX_PLAIN_PORTS {
            return Err(invalid("capture.plain_http.ports", format!("at most {MAX_PLAIN_PORTS} ports")));
        }
        if let Some(bad) = c.plain_http.paths.iter().find(|p| !p.starts_with('/')) {
            return Err(invalid(
                "capture.plain_http.paths",
                format!("{bad:?} is not a path prefix (must start with /)"),
            ));
        }
        if c.plain_http.ports.contains(&0) {
            return Err(invalid("capture.plain_http.ports", "port 0 is not a port".into()));
        }
        if c.max_body_bytes < 1024 {
            return Err(invalid("capture.max_body_bytes", "must be at least 1024".into()));
        }
        if self.output.summary_interval_secs == 0 {
            return Err(invalid("output.summary_interval_secs", "must be at least 1".into()));
        }
        let l = &self.ledger;
        if l.path.as_os_str().is_empty() {
            return Err(invalid("ledger.path", "must not be empty".into()));
        }
        if l.retention_days == 0 {
            return Err(invalid("ledger.retention_days", "must be at least 1".into()));
        }
        if l.rollup_retention_days < l.retention_days {
            return Err(invalid(
                "ledger.rollup_retention_days",
                format!("must be at least ledger.retention_days ({})", l.retention_days),
            ));
        }
        if l.max_pending_records == 0 {
            return Err(invalid("ledger.max_pending_records", "must be at least 1".into()));
        }
        let e = &self.enforcement;
        if e.status_file.as_os_str().is_empty() {
            return Err(invalid("enforcement.status_file", "must not be empty".into()));
        }
        if e.default_max_output_tokens == 0 {
            return Err(invalid("enforcement.default_max_output_tokens", "must be at least 1".into()));
        }
        if !(e.hold_at > 0.0 && e.hold_at <= 1.0) {
            return Err(invalid("enforcement.hold_at", "must be a fraction in (0, 1]".into()));
        }
        if let Some(r) = &e.redis {
            if !["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|p| r.url.starts_with(p)) {
                return Err(invalid("enforcement.redis.url", format!("{:?} is not a redis:// URL", r.url)));
            }
            if let Err(e) = crate::enforce::cluster::check_url(&r.url) {
                return Err(invalid("enforcement.redis.url", e));
            }
            if r.node.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(invalid("enforcement.redis.node", "must not be empty".into()));
            }
            if r.sync_interval_ms == 0 || r.sync_interval_ms > 1000 {
                return Err(invalid("enforcement.redis.sync_interval_ms", "must be between 1 and 1000".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("t.toml", "").unwrap(), Config::default());
    }

    #[test]
    fn full_example_parses() {
        let text = include_str!("../../deploy/examples/tokentap.toml");
        let c = Config::parse("tokentap.toml", text).unwrap();
        assert_eq!(c.capture.call_cap_bytes, 4 * 1024 * 1024);
        assert_eq!(c.endpoints.extra_hosts, vec!["llm-gateway.internal".to_string()]);
    }

    #[test]
    fn plain_http_section() {
        let c = Config::parse("t.toml", "[capture.plain_http]\nports = [9000]\nhosts = [\"llm.lan\"]\n").unwrap();
        assert_eq!(c.capture.plain_http.kernel_ports(), vec![9000]);
        assert_eq!(c.capture.plain_http.hosts, vec!["llm.lan".to_string()]);
        let c = Config::parse("t.toml", "[capture.plain_http]\npaths = [\"/llm/\"]\n").unwrap();
        assert_eq!(c.capture.plain_http.paths, vec!["/llm/".to_string()]);
        let e = Config::parse("t.toml", "[capture]\n[capture.plain_http]\npaths = [\"llm\"]\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { key, .. } if key == "capture.plain_http.paths"), "{e}");
        assert!(Config::default().capture.plain_http.kernel_ports().contains(&11434));
        let c = Config::parse("t.toml", "[capture.plain_http]\nenabled = false\n").unwrap();
        assert!(c.capture.plain_http.kernel_ports().is_empty());
        let e = Config::parse("t.toml", "[capture.plain_http]\nports = [0]\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { key, .. } if key == "capture.plain_http.ports"), "{e}");
        let e = Config::parse("t.toml", "[capture.plain_http]\nports = [70000]\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 2, .. }), "{e}");
    }

    #[test]
    fn ledger_section() {
        let c = Config::parse("t.toml", "[ledger]\npath = \"/tmp/l.db\"\nretention_days = 7\n").unwrap();
        assert_eq!(c.ledger.path, PathBuf::from("/tmp/l.db"));
        assert_eq!((c.ledger.retention_days, c.ledger.rollup_retention_days), (7, 800));
        assert!(c.ledger.enabled);
        assert_eq!(Config::default().ledger.path, PathBuf::from(DEFAULT_LEDGER_PATH));
        let e = Config::parse("t.toml", "[ledger]\nretention_days = 30\nrollup_retention_days = 10\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { line: 3, key, .. } if key == "ledger.rollup_retention_days"),
            "{e}"
        );
        let e = Config::parse("t.toml", "[ledger]\nretention_days = 0\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 2, key, .. } if key == "ledger.retention_days"), "{e}");
        let e = Config::parse("t.toml", "[ledger]\nenabled = \"yes\"\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 2, key, .. } if key == "ledger.enabled"), "{e}");
    }

    #[test]
    fn enforcement_section() {
        let d = Config::default().enforcement;
        assert_eq!((d.policy_file, d.status_file.to_str(), d.redis), (None, Some(DEFAULT_STATUS_FILE), None));
        let text = "[enforcement]\npolicy_file = \"/etc/p.toml\"\ndefault_max_output_tokens = 100\nhold_at = 0.9\n\
                    [enforcement.redis]\nurl = \"redis://127.0.0.1:6379\"\nfail_mode = \"closed\"\n";
        let c = Config::parse("t.toml", text).unwrap();
        assert_eq!(c.enforcement.policy_file, Some(PathBuf::from("/etc/p.toml")));
        assert_eq!((c.enforcement.default_max_output_tokens, c.enforcement.hold_at), (100, 0.9));
        let r = c.enforcement.redis.unwrap();
        assert_eq!((r.fail_mode, r.key_prefix.as_str(), r.sync_interval_ms), (FailMode::Closed, "tokentap:", 500));
        let e = Config::parse("t.toml", "[enforcement]\nhold_at = 1.5\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 2, key, .. } if key == "enforcement.hold_at"), "{e}");
        let e = Config::parse("t.toml", "[enforcement.redis]\nurl = \"r\"\nfail_mode = \"maybe\"\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 3, key, .. } if key == "enforcement.redis.fail_mode"), "{e}");
        let e = Config::parse("t.toml", "[enforcement.redis]\nurl = \"http://x\"\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { key, .. } if key == "enforcement.redis.url"), "{e}");
        let e = Config::parse("t.toml", "[enforcement.redis]\nurl = \"rediss://:pw@h:6380\"\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 2, key, .. } if key == "enforcement.redis.url"), "{e}");
        assert!(!e.to_string().contains("pw@"), "{e}");
        let e = Config::parse("t.toml", "[enforcement.redis]\nurl = \"redis://h\"\nnode = \" \"\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 3, key, .. } if key == "enforcement.redis.node"), "{e}");
        let c = Config::parse("t.toml", "[enforcement.redis]\nurl = \"redis://h\"\nnode = \"n1\"\n").unwrap();
        assert_eq!(c.enforcement.redis.unwrap().node.as_deref(), Some("n1"));
        let e = Config::parse("t.toml", "[enforcement]\npolicy = \"x\"\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 2, key, .. } if key == "enforcement.policy"), "{e}");
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let text = "[capture]\nring_buffer_bytes = 67108864\ncall_cap_bytes = \"big\"\n";
        let e = Config::parse("/etc/tokentap.toml", text).unwrap_err();
        let ConfigError::Invalid { file, line, key, .. } = &e else { panic!("{e}") };
        assert_eq!((file.as_str(), *line, key.as_str()), ("/etc/tokentap.toml", 3, "capture.call_cap_bytes"));
    }

    #[test]
    fn unknown_key_and_bad_value_are_rejected() {
        let e = Config::parse("a.toml", "[output]\nsumary_interval_secs = 3\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 2, key, .. } if key == "output.sumary_interval_secs"), "{e}");
        let e = Config::parse("a.toml", "[capture]\ncall_cap_bytes = 0\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 2, key, .. } if key == "capture.call_cap_bytes"), "{e}");
        let e = Config::parse("a.toml", "[capture\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { line: 1, .. }), "{e}");
    }
}
