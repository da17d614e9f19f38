//! The subcommands, each returning the process exit code: 0 ok, 1 runtime failure, 2 bad
//! configuration (the message names file, line and key).
use std::{path::Path, process::ExitCode};

use crate::{app, attribution::Mapping, config::Config, explain, identity::kube};

fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    match path.map(Config::load).transpose() {
        Ok(c) => Ok(c.unwrap_or_default()),
        Err(e) => {
            eprintln!("tokentap: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn load_mapping(config: &Config) -> Result<Mapping, ExitCode> {
    match &config.attribution.mapping_file {
        None => Ok(Mapping::empty()),
        Some(file) => Mapping::load(file).map_err(|e| {
            eprintln!("tokentap: {e}");
            ExitCode::from(2)
        }),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("tokentap: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// The policy file, if the config names one: refused with its file:line:key.
fn load_policy(config: &Config) -> Result<Option<crate::enforce::policy::Policy>, ExitCode> {
    let Some(file) = &config.enforcement.policy_file else { return Ok(None) };
    crate::enforce::policy::Policy::load(file).map(Some).map_err(|e| {
        eprintln!("tokentap: {e}");
        ExitCode::from(2)
    })
}

pub fn check_config(file: &Path) -> ExitCode {
    let result =
        load_config(Some(file)).and_then(|c| load_policy(&c).map(|_| c)).and_then(|c| load_mapping(&c).map(|m| (c, m)));
    match result {
        Ok((config, mapping)) => {
            match &config.attribution.mapping_file {
                Some(m) => println!("{}: ok ({}: {} rules)", file.display(), m.display(), mapping.rule_count()),
                None => println!("{}: ok", file.display()),
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `tokentap run`'s options that override the configuration file.
pub struct RunArgs<'a> {
    pub config: Option<&'a Path>,
    pub usage_log: Option<&'a Path>,
    pub ledger: Option<&'a Path>,
    pub policy: Option<&'a Path>,
    pub status_file: Option<&'a Path>,
}

pub fn run(args: &RunArgs<'_>) -> ExitCode {
    let RunArgs { config, usage_log, ledger, policy, status_file } = *args;
    let mut config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(log) = usage_log {
        config.output.usage_log = Some(log.to_path_buf());
    }
    if let Some(path) = ledger {
        if path.as_os_str().is_empty() {
            eprintln!("tokentap: --ledger: the path must not be empty");
            return ExitCode::from(2);
        }
        config.ledger.path = path.to_path_buf();
        config.ledger.enabled = true;
    }
    if let Some(path) = policy {
        config.enforcement.policy_file = Some(path.to_path_buf());
    }
    if let Some(path) = status_file {
        if path.as_os_str().is_empty() {
            eprintln!("tokentap: --status-file: the path must not be empty");
            return ExitCode::from(2);
        }
        config.enforcement.status_file = path.to_path_buf();
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (app::AppError::Mapping(_) | app::AppError::Policy(_))) => {
            eprintln!("tokentap: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("tokentap: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn identity(pid: u32, config: Option<&Path>) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mapping = match load_mapping(&config) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if !Path::new(&format!("/proc/{pid}")).exists() {
        eprintln!("tokentap: no process {pid}");
        return ExitCode::FAILURE;
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let pods = match runtime.block_on(kube::list_once(&config.kubernetes)) {
        Ok(p) => p,
        Err(e) => {
            // Still useful without the API: say so and show what /proc tells.
            eprintln!("tokentap: kubernetes: {e}");
            None
        }
    };
    let file = config.attribution.mapping_file.as_ref().map(|p| p.display().to_string());
    print!("{}", explain::identity_report(pid, &mapping, file.as_deref(), pods.as_ref()));
    ExitCode::SUCCESS
}

/// `tokentap report`: 0 ok, 2 bad arguments or input (the message names the argument or file),
/// 1 a source that could not be read.
pub fn report(args: &crate::cli::ReportArgs) -> ExitCode {
    crate::report::run(args)
}

/// `tokentap top`: runs until `q`.
pub fn top(args: &crate::cli::TopArgs) -> ExitCode {
    crate::top::run(args)
}

/// `tokentap quota status`: 0 ok, 2 bad arguments or configuration, 1 a status file that is
/// missing, unreadable, invalid or stale (the message names it).
pub fn quota_status(args: &crate::cli::QuotaStatusArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = args.status_file.clone().unwrap_or(config.enforcement.status_file);
    crate::enforce::quota_cli::status(&path, args.format)
}
