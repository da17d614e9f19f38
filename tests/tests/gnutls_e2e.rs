//! Privileged end-to-end tests: a real tokentap agent meters `gnutls-cli` (libgnutls.so.30)
//! sending hand-built HTTP/1.1 OpenAI chat requests to the fake LLM server; every record is
//! compared with the server's own usage numbers and the agent's output is privacy-scanned.
//!
//! Needs root + kernel BTF (`TOKENTAP_REQUIRE_BPF=1` fails instead of skipping), `gnutls-cli`
//! (Debian `gnutls-bin`, installed by `cargo xtask test`). Never prints payloads.

use tokentap_tests::raw_tls::{chat_request, check_all_library, got_http_200, run_gnutls_cli, run_gnutls_cli_gated};
use tokentap_tests::{env, require_bpf, Case, ServerOpts};

/// One gnutls-cli chat call against a fresh server, fully checked.
fn gnutls_chat(stream: bool) {
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let request = chat_request(&case, &server, stream);
    let run = run_gnutls_cli(&server, &request);
    assert!(
        got_http_200(&run),
        "gnutls-cli got no HTTP 200 ({}); stderr tail (redacted):\n{}",
        run.status,
        env::redact(&run.stderr_tail, &case.secrets())
    );
    let recs = case.wait_records(&server, 1);
    let entries = server.entries();
    assert_eq!(entries.len(), 1, "server log entries");
    assert_eq!(entries[0].streaming(), stream);
    if stream {
        assert!(entries[0].include_usage() && entries[0].usage().is_some(), "server sent no usage");
    }
    check_all_library(&case, &server, &recs, &run, "gnutls");
    assert_eq!(recs[0]["comm"], "gnutls-cli");
    case.finish(&server);
}

#[test]
fn gnutls_cli_chat_plain() {
    if !require_bpf() {
        return;
    }
    gnutls_chat(false);
}

#[test]
fn gnutls_cli_chat_streaming() {
    if !require_bpf() {
        return;
    }
    gnutls_chat(true);
}

/// A libgnutls copy at a path no probe covers yet, loaded after the agent started: the kernel's
/// openat filter (or the exec rescan of the process's maps) reports it and the agent probes it.
#[test]
fn libgnutls_loaded_after_start_from_a_new_path_is_probed() {
    if !require_bpf() {
        return;
    }
    let a = tokentap_tests::agent();
    let system = ["/usr/lib/x86_64-linux-gnu/libgnutls.so.30", "/lib/x86_64-linux-gnu/libgnutls.so.30"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a system libgnutls.so.30");
    let libdir = env::temp_subdir("newgnutls");
    std::fs::copy(system, libdir.join("libgnutls.so.30")).expect("copy libgnutls");
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let request = chat_request(&case, &server, false);
    let attached = format!("{}/libgnutls.so.30", libdir.display());
    let logged = || {
        let stderr = std::fs::read_to_string(&a.stderr).unwrap_or_default();
        stderr.lines().any(|l| l.contains("attached GnuTLS probes") && l.contains(&attached))
    };
    // gnutls-cli finishes a whole exchange in a few ms, less than the agent needs to attach
    // six probes; the request waits until the agent says the new file is probed.
    let run = run_gnutls_cli_gated(&server, &request, &[("LD_LIBRARY_PATH", libdir.as_os_str())], &logged);
    assert!(run.spawned_at > a.ready_at);
    assert!(got_http_200(&run), "gnutls-cli got no HTTP 200 ({})", run.status);
    let recs = case.wait_records(&server, 1);
    check_all_library(&case, &server, &recs, &run, "gnutls");
    case.finish(&server);
}
