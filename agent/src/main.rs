use std::process::ExitCode;

use clap::Parser;
use tokentap::{
    cli::{self, Cli, Command},
    commands,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TOKENTAP_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match cli.command {
        Command::Run { config, usage_log, ledger, policy, status_file } => commands::run(&commands::RunArgs {
            config: config.as_deref(),
            usage_log: usage_log.as_deref(),
            ledger: ledger.as_deref(),
            policy: policy.as_deref(),
            status_file: status_file.as_deref(),
        }),
        Command::Report(args) => commands::report(&args),
        Command::Top(args) => commands::top(&args),
        Command::Quota(cli::QuotaCommand::Status(args)) => commands::quota_status(&args),
        Command::CheckConfig { file } => commands::check_config(&file),
        Command::Identity { pid, config } => commands::identity(pid, config.as_deref()),
    }
}
