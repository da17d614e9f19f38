//! Lost capture data must never become a wrong record. A real agent with a small ring buffer
//! is frozen (SIGSTOP) while a Go client streams a chat completion and a second Go client
//! floods the ring with a large upload: the stream's later reads cannot be shipped. Before
//! the fix, a read whose first (here: only) chunk was dropped left no trace, the chunked
//! framing of the remaining reads still parsed, and the process's exit completed the
//! response from what had arrived: a record with too few output tokens (the flaky
//! `go_*_streaming` failures under CPU load, where the agent falls behind the same way).
//! Now the kernel marks the connection, and the call is counted unparseable instead.
//!
//! One agent per test binary, configured here.
use std::process::Command;
use std::time::Duration;

use tokentap_tests::expect::record_mismatches;
use tokentap_tests::go::{self, Build, GoRun};
use tokentap_tests::{agent, certs, records, require_bpf, Case, Expected, ServerOpts};

/// 1 MiB ring (the smallest accepted) and a cap that lets it hold four calls.
const CONFIG: &str = "[capture]\nring_buffer_bytes = 1048576\ncall_cap_bytes = 262144\n";
/// Bytes of the flooding client's prompt: its request writes overflow the ring on their own.
const FLOOD_BYTES: usize = 3 << 20;

/// Resumes the agent however the test ends, so a failure cannot leave it frozen.
struct Frozen(u32);

impl Frozen {
    fn freeze(pid: u32) -> Frozen {
        // SAFETY: kill(2) of the agent this test binary started.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0, "SIGSTOP the agent");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

/// One plain chat call of the Go client with a `FLOOD_BYTES` prompt; its success is not
/// the point (only its bytes are), but it must have run.
fn flood(server: &tokentap_tests::LlmServer) {
    let prompt = server.dir.join("flood-prompt.txt");
    let filler = tokentap_tests::case::BIG_PROMPT_FILLER;
    std::fs::write(&prompt, filler.repeat(FLOOD_BYTES / filler.len())).expect("write flood prompt");
    let out = Command::new(go::client(Build::Default))
        .arg("-base-url")
        .arg(server.openai_base_url())
        .arg("-ca")
        .arg(&certs::certs().ca)
        .arg("-api-key")
        .arg("sk-test-flood")
        .arg("-scenario")
        .arg("chat")
        .arg("-prompt-file")
        .arg(&prompt)
        .env_remove("SSLKEYLOGFILE")
        .output()
        .expect("run the flooding Go client");
    assert!(out.status.success(), "flooding client failed ({})", out.status);
}

#[test]
fn go_stream_whose_reads_are_lost_is_never_a_wrong_record() {
    if !require_bpf() {
        return;
    }
    agent::configure(CONFIG);
    let a = agent::agent();
    let case = Case::new();
    case.add_secret(tokentap_tests::case::BIG_PROMPT_FILLER);
    let server = case.server(ServerOpts::default());
    let flood_server = case.server(ServerOpts::default());
    let bin = go::client(Build::Default);
    let opts = GoRun { build: Build::Default, scenario: "chat_stream_no_usage", http2: false };
    let log_before = std::fs::read_to_string(&a.stderr).unwrap_or_default().len();

    let mut frozen = None;
    let run = std::thread::scope(|s| {
        let mut release = || {
            frozen = Some(Frozen::freeze(a.pid));
            // The stream's request and first events fit in the ring; the flood then fills it.
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(150));
                flood(&flood_server);
            });
        };
        go::run_bin_hooked(&case, &server, &bin, &opts, true, &mut release)
    });
    drop(frozen);
    // The agent warns of the loss on its first tick after the backlog (the event loop
    // serves data before ticks): wait for it before the next client, which must find the
    // agent caught up to be named.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&a.stderr).unwrap_or_default()[log_before..].contains("capture events lost") {
        assert!(std::time::Instant::now() < deadline, "the flood did not overflow the ring: the test proves nothing");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A later call, fully metered, shows the agent recovered and (rings being read in order)
    // that it has handled the stream's reads and its client's exit.
    let sentinel = case.server(ServerOpts::default());
    let probe = go::run(&case, &sentinel, &GoRun { build: Build::Default, scenario: "chat", http2: false });
    let recs = case.wait_records(&sentinel, 1);
    go::check_all(&case, &sentinel, &recs, &probe);

    // The stream: no record (counted unparseable) or an exact one, never a wrong one.
    let streamed = records::records_with_pid(run.pid);
    assert!(streamed.len() <= 1, "{} records for one call", streamed.len());
    if let Some(rec) = streamed.first() {
        let entry = &server.entries()[0];
        let exp =
            Expected::from_entry(entry, server.port).with_process(run.pid, run.comm.as_deref(), run.exe.as_deref());
        // The client lived and died while the agent was frozen: naming it is not this
        // test's business (nor is the library label, checked by the other Go tests).
        let wrong: Vec<String> = record_mismatches(rec, &exp, case.started, &case.secrets())
            .into_iter()
            .filter(|m| !["comm:", "exe:", "tls_library:"].iter().any(|p| m.starts_with(p)))
            .collect();
        assert!(wrong.is_empty(), "a wrong record for the stream:\n  {}", wrong.join("\n  "));
    }
    eprintln!("stream under loss: {} record(s) of 1 (0 = counted as data_lost)", streamed.len());
    case.finish(&server);
    case.finish(&sentinel);
}
