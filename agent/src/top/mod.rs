//! `tokentap top`: a live terminal view of a running agent, read from its ledger.
use std::process::ExitCode;

use crate::cli::TopArgs;

pub fn run(args: &TopArgs) -> ExitCode {
    let _ = args;
    eprintln!("tokentap top: not built yet");
    ExitCode::FAILURE
}
