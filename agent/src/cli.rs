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
    },
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
