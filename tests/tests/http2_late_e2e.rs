//! Privileged end-to-end test with its own agent (one per test binary): the agent starts after
//! an HTTP/2 connection opened. Calls on that connection reference HPACK table entries the
//! agent never saw, so they must yield no record (counted as unparseable instead), while the
//! next connection is metered exactly.

use std::time::{Duration, Instant};

use tokentap_tests::http2::{assert_all_http2, LateClient};
use tokentap_tests::{agent, records, require_bpf, Case, Expected, LlmServer, ServerOpts};

#[test]
fn agent_started_after_http2_connection_opened() {
    if !require_bpf() {
        return;
    }
    let case = Case::new();
    // No agent yet in this test binary: the server and the client's first call come first.
    let mut server = LlmServer::start(ServerOpts { http2: true, ..Default::default() });
    let late = LateClient::start(&case, &server);
    let agent = agent::agent();
    server.usage_offset = records::usage_log_len();
    // Call 2 on the old connection, then call 3 on a new one.
    let run = late.go();

    let entries = server.entries();
    assert_eq!(entries.len(), 3, "server log entries");
    assert_all_http2(&server);
    assert_eq!(entries[0].client_port(), entries[1].client_port(), "call 2 did not reuse the old connection");
    assert_ne!(entries[1].client_port(), entries[2].client_port(), "call 3 did not open a new connection");
    // Exactly one record for this server: call 3's (usage numbers differ per call).
    let recs = case.wait_records(&server, 1);
    let exp =
        Expected::from_entry(&entries[2], server.port).with_process(run.pid, run.comm.as_deref(), run.exe.as_deref());
    case.check(&recs[0], &exp);

    // The old connection was seen and counted as unparseable, not silently missed.
    // SAFETY: kill(2) of the agent this test binary started.
    unsafe { libc::kill(agent.pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let stopped = loop {
        let text = std::fs::read_to_string(&agent.stderr).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("tokentap: stopped")) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "agent did not stop within 30s ({})", agent.status());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(stopped.contains("h2_unknown_headers:"), "no h2_unknown_headers failure in the agent's stats");
    case.finish(&server);
}
