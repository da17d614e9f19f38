//! `tokentap report`: showback reports and invoices from ledgers or a Prometheus-compatible
//! backend. Sources produce [`rows::Row`]s; everything else is built from rows.
//!
//! Exit codes: 0 ok; 2 bad input or arguments (a file that is not a ledger, the same ledger
//! twice, an unknown `--by` key, a bad or empty period, a period without calls); 1 a source
//! that could not be read (I/O, locking) or an output that could not be written.
pub mod format;
pub mod invoice;
pub mod period;
pub mod prometheus;
pub mod rows;
#[cfg(test)]
pub(crate) mod test_ledger;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::Timestamp;

use crate::cli::{ReportArgs, ReportFormat};
use crate::ledger::read::{LedgerSource, OpenError};
use format::Report;
use period::{rfc3339, PeriodArgs};
use rows::{Dim, Period, Row, UsageSource};

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// Exit 2: the arguments or input files are wrong; the message names which.
    Input(String),
    /// Exit 1: a source or the output could not be read or written.
    Unreadable(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Input(_) => 2,
            Failure::Unreadable(_) => 1,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Input(m) | Failure::Unreadable(m) => m,
        }
    }
}

impl From<OpenError> for Failure {
    fn from(e: OpenError) -> Failure {
        match e {
            OpenError::Input(m) => Failure::Input(m),
            OpenError::Unreadable(m) => Failure::Unreadable(m),
        }
    }
}

pub fn run(args: &ReportArgs) -> ExitCode {
    match execute(args, Timestamp::now()) {
        Ok(outputs) => {
            for p in outputs {
                eprintln!("tokentap report: wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("tokentap report: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

/// The whole command; returns the files written (none when the report went to stdout).
pub fn execute(args: &ReportArgs, now: Timestamp) -> Result<Vec<PathBuf>, Failure> {
    // Arguments first: a typo fails fast, before any file is opened.
    let by = parse_by(&args.by).map_err(Failure::Input)?;
    if args.invoice && by.len() > 1 {
        let keys: Vec<&str> = by.iter().map(|d| d.name()).collect();
        return Err(Failure::Input(format!(
            "--by: an invoice is per value of one key (e.g. --by cost_center), not of {}",
            keys.join(",")
        )));
    }
    let period = period::resolve(
        PeriodArgs {
            month: args.month.as_deref(),
            from: args.from.as_deref(),
            to: args.to.as_deref(),
            tz: args.tz.as_deref(),
        },
        now,
    )
    .map_err(Failure::Input)?;
    let source = open_source(args)?;
    let rows = source.rows(&period).map_err(Failure::Unreadable)?;
    if rows.iter().all(|r| r.counters.calls == 0) {
        return Err(Failure::Input(no_calls_message(&source, &period)?));
    }
    if args.invoice {
        let dir = args.output.as_deref().ok_or_else(|| Failure::Input("--invoice: needs --output DIR".into()))?;
        // One invoice per value of the `--by` key (e.g. `--by cost_center`).
        return invoice::write(&rows, &period, by[0], dir, &source.describe()).map_err(Failure::Unreadable);
    }
    let report = Report::new(rows, period, by, source.describe());
    let text = match args.format {
        ReportFormat::Table => format::table::render(&report),
        ReportFormat::Csv => format::csv::render(&report).map_err(Failure::Unreadable)?,
        ReportFormat::Json => format::json::render(&report),
        ReportFormat::Markdown => format::markdown::render(&report),
        ReportFormat::Html => format::html::render(&report),
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| Failure::Unreadable(format!("--output: {}: {e}", path.display())))?;
            Ok(vec![path.clone()])
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
            Ok(vec![])
        }
    }
}

/// `--by team,model` (or repeated): known keys, each once, at least one.
pub fn parse_by(values: &[String]) -> Result<Vec<Dim>, String> {
    let mut by = Vec::new();
    for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let d: Dim = v.parse().map_err(|e| format!("--by: {e}"))?;
        if by.contains(&d) {
            return Err(format!("--by: {v:?} is given twice"));
        }
        by.push(d);
    }
    if by.is_empty() {
        return Err("--by: no key given (e.g. --by team)".into());
    }
    Ok(by)
}

/// The rows' source: `--prometheus`, else the `--ledger` files, else the configured ledger.
enum Source {
    Ledgers(LedgerSource),
    Prometheus(prometheus::PromSource),
}

impl Source {
    fn as_dyn(&self) -> &dyn UsageSource {
        match self {
            Source::Ledgers(l) => l,
            Source::Prometheus(p) => p,
        }
    }

    fn describe(&self) -> String {
        self.as_dyn().describe()
    }

    fn rows(&self, period: &Period) -> Result<Vec<Row>, String> {
        self.as_dyn().rows(period)
    }
}

fn open_source(args: &ReportArgs) -> Result<Source, Failure> {
    if let Some(url) = &args.prometheus {
        return Ok(Source::Prometheus(prometheus::PromSource::new(url).map_err(Failure::Input)?));
    }
    let paths =
        if args.ledger.is_empty() { vec![configured_ledger(args.config.as_deref())?] } else { args.ledger.clone() };
    Ok(Source::Ledgers(LedgerSource::open(&paths)?))
}

/// The ledger of the agent configured in `--config` (`[ledger] path`), else the default path.
fn configured_ledger(config: Option<&Path>) -> Result<PathBuf, Failure> {
    match config {
        Some(file) => {
            let config = crate::config::Config::load(file).map_err(|e| Failure::Input(format!("--config: {e}")))?;
            Ok(config.ledger.path)
        }
        None => Ok(PathBuf::from(crate::config::DEFAULT_LEDGER_PATH)),
    }
}

/// Says that the period holds no call, and (for ledgers) when the calls they do hold are.
fn no_calls_message(source: &Source, period: &Period) -> Result<String, Failure> {
    let range = format!("{} to {}", rfc3339(period.from, &period.tz), rfc3339(period.to, &period.tz));
    let tip = "(choose the period with --month or --from/--to)";
    let held = match source {
        Source::Ledgers(l) => {
            let they = if l.paths().count() > 1 { "they hold" } else { "it holds" };
            match l.held_range().map_err(Failure::Unreadable)? {
                Some((lo, hi)) => {
                    format!("; {they} calls from {} to {} {tip}", rfc3339(lo, &period.tz), rfc3339(hi, &period.tz))
                }
                None => format!("; {they} no calls yet (the agent adds each call it meters)"),
            }
        }
        Source::Prometheus(_) => format!(" in its tokentap_* counters {tip}"),
    };
    Ok(format!("{}: no calls from {range}{held}", source.describe()))
}
