//! `cargo xtask`: the project's build tool. `setup` bootstraps the eBPF toolchain
//! idempotently; `build`, `run` and `test` call it first, so a fresh machine needs nothing else.
mod bench;
mod bench_enforce;
mod setup;
mod testenv;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "tokentap build tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building the eBPF object needs (nightly rust-src, bpf-linker).
    Setup,
    /// Build the agent (eBPF object included).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and start the agent as root with the built-in default config.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments passed to `tokentap run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build, lint, and run every test, privileged end-to-end tests included.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Passed to `cargo test` after `--` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks: parsing pipeline, and capture overhead end to end (root); see docs/benchmarks.md.
    Bench {
        /// Repetitions of the pipeline benchmark and rounds of the capture benchmark.
        #[arg(long, default_value_t = 15)]
        reps: usize,
        /// Timed requests per client run in the capture benchmark.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Only the parsing pipeline (no root needed).
        #[arg(long)]
        no_capture: bool,
    },
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs `cmd` and returns its trimmed stdout; a failure carries its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn build(release: bool) -> Result<PathBuf> {
    setup::ensure()?;
    let mut cmd = cargo();
    cmd.args(["build", "--package", "tokentap"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(workspace_root().join("target").join(if release { "release" } else { "debug" }).join("tokentap"))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::ensure(),
        Cmd::Bench { reps, requests, no_capture } => bench::bench(bench::Options { reps, requests, no_capture }),
        Cmd::Build { release } => build(release).map(|_| ()),
        Cmd::Run { release, args } => {
            let bin = build(release)?;
            let mut cmd = Command::new(bin);
            cmd.arg("run");
            // A ledger under target/ so a development run needs no /var/lib/tokentap; an
            // explicit --ledger (or a config's `[ledger] path`, via --config) still wins.
            if !args.iter().any(|a| {
                a == "--ledger"
                    || a.starts_with("--ledger=")
                    || a == "--config"
                    || a == "-c"
                    || a.starts_with("--config=")
            }) {
                cmd.arg("--ledger").arg(workspace_root().join("target").join("ledger.db"));
            }
            // Likewise the quota status (with `--policy`): /run/tokentap needs root's setup.
            if !args.iter().any(|a| {
                a == "--status-file"
                    || a.starts_with("--status-file=")
                    || a == "--config"
                    || a == "-c"
                    || a.starts_with("--config=")
            }) {
                cmd.arg("--status-file").arg(workspace_root().join("target").join("quota.json"));
            }
            cmd.args(args);
            run(&mut cmd)
        }
        Cmd::Test { no_lint, args } => {
            let bin = build(false)?;
            let python = testenv::ensure()?;
            if !no_lint {
                run(cargo().args(["fmt", "--all", "--check"]))?;
                // The default members: the eBPF crate only builds for the BPF target, through aya-build.
                run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
            }
            let mut cmd = cargo();
            cmd.args(["test", "--no-fail-fast"]).env("TOKENTAP_BIN", &bin).env("TOKENTAP_PYTHON", &python);
            if !args.is_empty() {
                cmd.arg("--").args(args);
            }
            run(&mut cmd)
        }
    }
}
