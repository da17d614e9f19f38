//! `tokentap top`: a live terminal view of a running agent, read from its ledger: calls/s,
//! tokens/s and cost/h over a sliding window, by team, model or process, sortable, redrawn
//! every second; `--once` prints the same numbers as plain text for scripts.
mod header;
mod input;
mod live;
mod query;
mod rates;
mod table;
mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::TopArgs;

pub fn run(args: &TopArgs) -> ExitCode {
    match start(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tokentap top: {e}");
            ExitCode::from(2)
        }
    }
}

/// Bad arguments and unusable ledgers are `Err` (exit 2); a failure of the screen itself is
/// reported here with exit 1.
fn start(args: &TopArgs) -> Result<ExitCode, String> {
    if args.window == 0 {
        return Err("--window must be at least 1 second".into());
    }
    let path = ledger_path(args)?;
    let mut ledger = query::Ledger::open(&path).map_err(|e| e.to_string())?;
    if args.once {
        let now = jiff::Zoned::now();
        let snap = ledger.read(&now, args.window)?;
        let clock = now.strftime("%Y-%m-%d %H:%M:%S %Z").to_string();
        print!(
            "{}",
            view::snapshot_text(&path.display().to_string(), args.window, &clock, &snap, rates::Sort::default())
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() {
        return Err("standard output is not a terminal; use --once for a plain-text snapshot".into());
    }
    match live::run(ledger, args.window) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("tokentap top: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `--ledger`, else the `[ledger] path` of `--config`, else the agent's default.
fn ledger_path(args: &TopArgs) -> Result<PathBuf, String> {
    if let Some(p) = &args.ledger {
        return Ok(p.clone());
    }
    match &args.config {
        Some(c) => crate::config::Config::load(c).map(|c| c.ledger.path).map_err(|e| e.to_string()),
        None => Ok(PathBuf::from(crate::config::DEFAULT_LEDGER_PATH)),
    }
}
