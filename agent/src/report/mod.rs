//! `tokentap report`: showback reports and invoices from ledgers or a Prometheus-compatible
//! backend. Sources produce [`rows::Row`]s; everything else is built from rows.
pub mod prometheus;
pub mod rows;

use std::process::ExitCode;

use crate::cli::ReportArgs;

pub fn run(args: &ReportArgs) -> ExitCode {
    let _ = args;
    eprintln!("tokentap report: not built yet");
    ExitCode::FAILURE
}
