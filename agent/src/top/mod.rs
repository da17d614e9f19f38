//! `tokentap top`: a live terminal view of a running agent, read from its ledger: calls/s,
//! tokens/s and cost/h over a sliding window, by team, model or process, sortable, redrawn
//! every second; `--once` prints the same numbers as plain text for scripts.
mod header;
mod input;
mod live;
mod query;
pub mod quota;
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
    let config = args.config.as_deref().map(crate::config::Config::load).transpose().map_err(|e| e.to_string())?;
    let path = ledger_path(args, config.as_ref());
    let quotas = quota_source(args, config.as_ref());
    let mut ledger = query::Ledger::open(&path).map_err(|e| e.to_string())?;
    if args.once {
        let now = jiff::Zoned::now();
        let snap = ledger.read(&now, args.window)?;
        let clock = now.strftime("%Y-%m-%d %H:%M:%S %Z").to_string();
        let quota = quotas.read(now.timestamp());
        let name = path.display().to_string();
        print!("{}", view::snapshot_text(&name, args.window, &clock, &snap, rates::Sort::default(), quota.as_ref()));
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() {
        return Err("standard output is not a terminal; use --once for a plain-text snapshot".into());
    }
    match live::run(ledger, args.window, quotas) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("tokentap top: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `--ledger`, else the `[ledger] path` of `--config`, else the agent's default.
fn ledger_path(args: &TopArgs, config: Option<&crate::config::Config>) -> PathBuf {
    match (&args.ledger, config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => c.ledger.path.clone(),
        (None, None) => PathBuf::from(crate::config::DEFAULT_LEDGER_PATH),
    }
}

/// `--status-file`, else the `[enforcement] status_file` of `--config`, else the default.
fn quota_source(args: &TopArgs, config: Option<&crate::config::Config>) -> quota::QuotaSource {
    match (&args.status_file, config) {
        (Some(p), _) => quota::QuotaSource { path: p.clone(), explicit: true },
        (None, Some(c)) => quota::QuotaSource { path: c.enforcement.status_file.clone(), explicit: false },
        (None, None) => quota::QuotaSource { path: PathBuf::from(crate::config::DEFAULT_STATUS_FILE), explicit: false },
    }
}
