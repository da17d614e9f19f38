//! Command-line interface.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "tokentap", version, about = "Meters LLM API traffic at the TLS library, per process")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Capture and meter LLM calls on this host until interrupted.
    Run {
        /// Configuration file (TOML); without it, the built-in defaults meter the whole host.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Write one JSON object per completed call to PATH (`-` for stdout) instead of the
        /// live summary.
        #[arg(long, value_name = "PATH|-")]
        usage_log: Option<PathBuf>,
        /// The usage ledger's file, instead of `[ledger] path` (the ledger is enabled).
        #[arg(long, value_name = "PATH")]
        ledger: Option<PathBuf>,
        /// The entitlement policy file, instead of `[enforcement] policy_file` (enforcement on).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Where the quota status is written, instead of `[enforcement] status_file`.
        #[arg(long, value_name = "PATH")]
        status_file: Option<PathBuf>,
    },
    /// Showback reports and invoices from usage ledgers or a Prometheus-compatible backend.
    Report(ReportArgs),
    /// A live view of a running agent's calls, tokens and cost, from its ledger.
    Top(TopArgs),
    /// Entitlements: what a running agent enforces.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Check a configuration file (and the mapping file it names) and exit.
    CheckConfig { file: PathBuf },
    /// Show what the agent resolves for a process (cgroup, container, pod, workload) and which
    /// mapping rule attributes its calls.
    Identity {
        pid: u32,
        /// The agent's configuration file, for its mapping file and Kubernetes settings.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// `tokentap report`. See docs/chargeback.md.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// A ledger file to read (repeatable: several hosts' ledgers are merged). Default: the
    /// ledger of `--config`'s agent, else /var/lib/tokentap/ledger.db.
    #[arg(long, value_name = "PATH")]
    pub ledger: Vec<PathBuf>,
    /// Read the agents' `tokentap.*` counters from this Prometheus-compatible API instead of
    /// ledgers (e.g. http://prometheus:9090).
    #[arg(long, value_name = "URL", conflicts_with = "ledger")]
    pub prometheus: Option<String>,
    /// The agent's configuration file (its ledger path and pricing table).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// A calendar month, YYYY-MM (default: the current month).
    #[arg(long, value_name = "YYYY-MM", conflicts_with_all = ["from", "to"])]
    pub month: Option<String>,
    /// Start of the period (inclusive): RFC 3339 or a date (midnight in `--tz`).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// End of the period (exclusive): RFC 3339 or a date (midnight in `--tz`). Default: now.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Time zone for dates, months and days (IANA name, e.g. Europe/Paris). Default: UTC.
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Attribution keys to group by, comma-separated or repeated: team, cost_center, product,
    /// tenant, app, namespace, workload, provider, model, user, unit.
    #[arg(long, value_delimiter = ',', default_value = "team")]
    pub by: Vec<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Write to FILE (with `--invoice`: a directory) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write one invoice per value of `--by` (HTML and CSV) into the `--output` directory.
    #[arg(long, requires = "output")]
    pub invoice: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
    Markdown,
    Html,
}

/// `tokentap top`.
#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// The running agent's ledger. Default: the one of `--config`, else
    /// /var/lib/tokentap/ledger.db.
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// The agent's configuration file (for its ledger path).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Seconds of calls the rates are averaged over.
    #[arg(long, default_value_t = 60)]
    pub window: u64,
    /// Print one plain-text snapshot of every view and exit (for scripts; no terminal needed).
    #[arg(long)]
    pub once: bool,
    /// The enforcing agent's quota status file, for the quota bars. Default: the
    /// `[enforcement] status_file` of `--config`, else /run/tokentap/quota.json (bars are shown
    /// when that file exists).
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
}

/// `tokentap quota ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum QuotaCommand {
    /// Each entitlement's use, reservations, remaining budget, window end and state, from the
    /// status file the enforcing agent rewrites every second.
    Status(QuotaStatusArgs),
}

/// `tokentap quota status`.
#[derive(clap::Args, Debug, Clone)]
pub struct QuotaStatusArgs {
    /// The agent's configuration file (for its `[enforcement] status_file`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The status file to read. Default: the one of `--config`, else
    /// /run/tokentap/quota.json.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub status_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = QuotaFormat::Table)]
    pub format: QuotaFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaFormat {
    Table,
    Json,
}
