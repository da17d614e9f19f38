use std::process::ExitCode;

use clap::Parser;
use tokentap::{
    app,
    cli::{Cli, Command},
    config::Config,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TOKENTAP_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tokentap: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config, usage_log } => {
            let mut config = match config.as_deref().map(Config::load).transpose() {
                Ok(c) => c.unwrap_or_default(),
                Err(e) => {
                    eprintln!("tokentap: {e}");
                    return ExitCode::from(2);
                }
            };
            if usage_log.is_some() {
                config.output.usage_log = usage_log;
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("tokentap: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(app::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tokentap: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
