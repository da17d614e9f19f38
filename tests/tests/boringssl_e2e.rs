//! Privileged end-to-end tests: Bun (BoringSSL linked in, its symbols stripped) running the
//! real `openai` npm package. The agent finds `SSL_read`/`SSL_write` in the executable by
//! their machine-code signatures; every record is checked against the fake server's ground
//! truth (exact counts), the client's pid/comm/exe, tls_library "boringssl", and the privacy
//! scan.
//!
//! Needs what `node_e2e` needs; `cargo xtask test` installs Bun from npm under
//! `target/node-clients`. Never prints payloads.

use serde_json::Value;
use tokentap_tests::node::{bun_path, run_openai_js};
use tokentap_tests::{require_bpf, Case, Expected, LlmServer, ServerOpts};

/// The binary really is stripped of BoringSSL's names: otherwise this test would only repeat
/// the symbol-based one.
fn assert_stripped(exe: &std::path::Path) {
    let bytes = std::fs::read(exe).expect("read bun");
    for name in [&b"SSL_read\0"[..], b"SSL_write\0"] {
        assert!(bytes.windows(name.len()).all(|w| w != name), "bun carries a symbol name it should not");
    }
}

fn bun_case(scenario: &str, n: usize) -> (Case, LlmServer, Vec<Value>) {
    let bun = bun_path();
    assert_stripped(&bun);
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let prompt = case.prompt_file(&server);
    let run = run_openai_js(&bun, &server, &case.api_key, scenario, &prompt);
    case.expect_ok(&run);
    assert_eq!(run.exe.as_deref(), bun.to_str(), "client exe");
    let recs = case.wait_records(&server, n);
    let entries = server.entries();
    assert_eq!(entries.len(), n, "server log entries");
    for (rec, entry) in recs.iter().zip(&entries) {
        let exp = Expected::from_entry(entry, server.port)
            .with_process(run.pid, run.comm.as_deref(), run.exe.as_deref())
            .with_library("boringssl");
        case.check(rec, &exp);
    }
    (case, server, recs)
}

#[test]
fn bun_openai_chat_plain() {
    if !require_bpf() {
        return;
    }
    let (case, server, _recs) = bun_case("chat", 1);
    assert!(!server.entries()[0].streaming());
    case.finish(&server);
}

#[test]
fn bun_openai_chat_streaming() {
    if !require_bpf() {
        return;
    }
    let (case, server, recs) = bun_case("chat_stream_usage", 1);
    assert!(server.entries()[0].streaming());
    assert_eq!(recs[0]["streaming"], true);
    case.finish(&server);
}

#[test]
fn bun_openai_three_calls() {
    if !require_bpf() {
        return;
    }
    let (case, _server, _recs) = bun_case("keepalive3", 3);
    case.finish(&_server);
}

/// A stripped BoringSSL build whose `SSL_read` does not match the signature (here: Bun with
/// one byte of that prologue changed, as another compiler or version would) gets no probes,
/// and the agent says so: logged once as an unprobed TLS executable, never silently missed.
/// The unchanged Bun and node, which are probed, are not reported.
#[test]
fn unmatched_stripped_boringssl_is_reported_unprobed() {
    if !require_bpf() {
        return;
    }
    let agent = tokentap_tests::agent();
    let bun = bun_path();
    let mut bytes = std::fs::read(&bun).expect("read bun");
    // `cmp qword [rdi+0x98],0` right after SSL_read's register saves.
    let sig = [0x55, 0x48, 0x89, 0xe5, 0x41, 0x57, 0x41, 0x56, 0x53, 0x50, 0x48, 0x83, 0xbf, 0x98];
    let at: Vec<usize> = bytes.windows(sig.len()).enumerate().filter(|(_, w)| *w == sig).map(|(i, _)| i).collect();
    assert!(!at.is_empty(), "SSL_read prologue not in this bun");
    for i in at {
        bytes[i + 13] = 0x99;
    }
    let dir = tokentap_tests::env::temp_subdir("unprobed");
    let copy = dir.join(format!("bun-unmatched-{}", tokentap_tests::env::random_hex(3)));
    std::fs::write(&copy, &bytes).expect("write copy");
    drop(bytes);
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    // The copy twice: one report per executable file, not per process. Each lives a while: the
    // agent inspects a program through its process, after the exec.
    for exe in [copy.as_path(), copy.as_path(), bun.as_path()] {
        let out = std::process::Command::new(exe).args(["-e", "await Bun.sleep(1500)"]).output().expect("run bun");
        assert!(out.status.success(), "{} -e failed", exe.display());
    }
    let name = copy.file_name().unwrap().to_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let reported = |log: &str| {
        log.lines().any(|l| l.contains("no probes") && l.contains(&name) && l.contains("stack=\"boringssl\""))
    };
    loop {
        let log = std::fs::read_to_string(&agent.stderr).unwrap_or_default();
        if reported(&log) {
            let unprobed: Vec<&str> = log.lines().filter(|l| l.contains("no probes")).collect();
            assert_eq!(unprobed.iter().filter(|l| l.contains(&name)).count(), 1, "reported more than once");
            for probed in ["bun.exe", "/usr/bin/node"] {
                assert!(!unprobed.iter().any(|l| l.contains(probed)), "{probed} is probed but was reported unprobed");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not report {name} as an unprobed TLS executable; stderr tail:\n{}",
            agent.stderr_tail(20, &[])
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
