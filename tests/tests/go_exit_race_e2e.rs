//! A process's exit must not be handled before its last reads. The agent reads process events
//! (exec, exit) in a loop that inspects every new executable, which takes long on a busy
//! machine; an exit read in that loop may be newer than the last drain of the data ring, and
//! ending the connection then completed the response from what had arrived: a streaming
//! record without its last events (usage missing, too few output tokens) — the flaky
//! `go_*_streaming` failures seen while other builds ran.
//!
//! Reproduced deterministically: the agent is frozen, a burst of fresh executables is exec'd
//! (each one the agent must inspect and probe), a Go client starts streaming, and the agent
//! resumes mid-stream, so the client's exit arrives while the agent works through the burst.
//!
//! One agent per test binary, with the default configuration.
use std::process::{Command, Stdio};
use std::time::Duration;

use tokentap_tests::expect::record_mismatches;
use tokentap_tests::go::{self, Build, GoRun};
use tokentap_tests::{agent, records, require_bpf, Case, Expected, ServerOpts};

/// Fresh Go executables in the burst: each costs the agent an ELF walk and 18 uprobes.
const BURST: usize = 30;

/// Resumes the agent however the test ends, so a failure cannot leave it frozen.
struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the agent this test binary started.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

#[test]
fn go_stream_ending_while_the_agent_inspects_new_programs_is_metered_exactly() {
    if !require_bpf() {
        return;
    }
    let a = agent::agent();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    // New inodes the agent has never seen.
    let copies: Vec<_> = (0..BURST)
        .map(|i| {
            let p = server.dir.join(format!("burst-{i}"));
            std::fs::copy(go::client(Build::Default), &p).expect("copy the Go client");
            p
        })
        .collect();
    let bin = go::client(Build::Default);
    let opts = GoRun { build: Build::Default, scenario: "chat_stream_usage", http2: false };

    // Alive until the end: the agent inspects a program through its /proc entry.
    let mut burst = Vec::new();
    let mut frozen = None;
    let run = std::thread::scope(|s| {
        let mut release = || {
            // SAFETY: as in `Frozen`.
            assert_eq!(unsafe { libc::kill(a.pid as libc::pid_t, libc::SIGSTOP) }, 0, "SIGSTOP the agent");
            frozen = Some(Frozen(a.pid));
            for p in &copies {
                let child = Command::new(p)
                    .arg("-wait-stdin")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start a burst program");
                burst.push(child);
            }
            // Resume mid-stream (the server paces its events): the stream's start is drained,
            // then the burst keeps the agent busy until after the client exits.
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                // SAFETY: as in `Frozen`.
                unsafe { libc::kill(a.pid as libc::pid_t, libc::SIGCONT) };
            });
        };
        go::run_bin_hooked(&case, &server, &bin, &opts, true, &mut release)
    });
    drop(frozen);
    for mut child in burst {
        let _ = child.kill();
        let _ = child.wait();
    }

    let recs = case.wait_records(&server, 1);
    assert_eq!(records::records_with_pid(run.pid).len(), 1, "one record for the client");
    let entry = &server.entries()[0];
    let exp = Expected::from_entry(entry, server.port).with_process(run.pid, run.comm.as_deref(), run.exe.as_deref());
    // Naming a client whose start the frozen agent missed is not this test's business.
    let wrong: Vec<String> = record_mismatches(&recs[0], &exp, case.started, &case.secrets())
        .into_iter()
        .filter(|m| !["comm:", "exe:", "tls_library:"].iter().any(|p| m.starts_with(p)))
        .collect();
    assert!(wrong.is_empty(), "a wrong record for the stream:\n  {}", wrong.join("\n  "));
    case.finish(&server);
}
