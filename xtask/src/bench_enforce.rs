//! `cargo xtask bench`, enforcement part: the decision latency — from user space putting an
//! exhausted cgroup in DENY to the kernel acting on the next write or connect of a real client
//! in it (`agent/examples/enforce_latency.rs` does the measuring; this starts the upstream).
use std::{fs, path::Path, process::Command};

use anyhow::Result;

use crate::{
    bench::{make_certs, start_server},
    output, workspace_root,
};

/// Runs the measurement and returns its Markdown section body.
pub fn decision_latency(example: &Path, dir: &Path, runs: usize) -> Result<String> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    make_certs(dir)?;
    let (mut server, port) = start_server(dir)?;
    let table = output(
        Command::new(example)
            .args(["--port", &port.to_string(), "--runs", &runs.to_string(), "--ca"])
            .arg(dir.join("ca.pem"))
            .arg("--client")
            .arg(workspace_root().join("tests/fixtures/enforce_bench_client.py"))
            .stderr(std::process::Stdio::inherit()),
    );
    server.stop();
    // The server log holds the (synthetic) request bodies: do not leave it around.
    let _ = fs::remove_file(dir.join("server-log.jsonl"));
    let mut text = format!(
        "Each run: a fresh cgroup with one busy client (system libssl via Python `ssl`), then \
         `KernelEnforcement::set(Cgroup, Deny)`; the figure is the time from just before that map update to \
         the kernel acting (HELD notice timestamp for a client writing in a tight loop; the return of the first \
         refused `connect` for a client connecting in a tight loop), both CLOCK_MONOTONIC. {runs} runs, \
         interleaved. The engine's own decision time (budget arithmetic) comes on top.\n\n"
    );
    text.push_str(&table?);
    text.push('\n');
    Ok(text)
}
