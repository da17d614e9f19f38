//! Unprivileged self-test of the e2e fixtures (no agent, no BPF): the fake
//! LLM server, the SDK clients and curl work together and the server's
//! ground-truth log says what the privileged tests rely on.
//!
//! Needs `TOKENTAP_PYTHON` (default `python3`) with the packages of
//! `tests/fixtures/requirements.txt`. If they are missing and
//! `TOKENTAP_PYTHON` is unset the tests print SKIPPED; if it is set, they fail.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;
use tokentap_tests::case::{CHAT_MODEL, SYSTEM_PROMPT};
use tokentap_tests::clients::{self, ClientRun};
use tokentap_tests::expect::{Expected, Tokens};
use tokentap_tests::{env, LlmServer, ServerEntry, ServerOpts};

const KEY: &str = "sk-test-selftest-not-a-secret";

fn sdks_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        Command::new(env::python()).args(["-c", "import openai, anthropic"]).output().is_ok_and(|o| o.status.success())
    });
    if ok {
        return true;
    }
    if std::env::var_os("TOKENTAP_PYTHON").is_some() {
        panic!(
            "TOKENTAP_PYTHON={} cannot import openai and anthropic \
             (pip install -r tests/fixtures/requirements.txt)",
            env::python()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED (needs openai + anthropic for {}): {}",
        env::python(),
        env::current_test_name()
    );
    false
}

fn ok(run: &ClientRun) {
    assert!(run.success(), "{} failed ({}): {}", run.what, run.status, run.stderr_tail);
}

fn prompt_file(server: &LlmServer) -> std::path::PathBuf {
    let p = server.dir.join("prompt.txt");
    std::fs::write(&p, "Self-test prompt: name three primary colours.").unwrap();
    p
}

fn openai(server: &LlmServer, scenario: &str) -> ClientRun {
    let p = prompt_file(server);
    let run = clients::run_openai(server, KEY, scenario, Some(&p));
    ok(&run);
    assert!(run.comm.is_some() && run.exe.is_some() && run.starttime_ticks.is_some());
    run
}

fn only(entries: &[ServerEntry], path: &str, streaming: bool) -> Expected {
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.path(), path);
    assert_eq!(e.streaming(), streaming);
    assert!(!e.text().is_empty() || path == "/v1/embeddings");
    Expected::from_entry(e, 1)
}

#[test]
fn openai_scenarios_against_fake_server() {
    if !sdks_available() {
        return;
    }
    let cases: &[(&str, &str, bool, &str)] = &[
        ("chat", "/v1/chat/completions", false, "reported"),
        ("chat_stream_usage", "/v1/chat/completions", true, "reported"),
        ("chat_stream_no_usage", "/v1/chat/completions", true, "estimated"),
        ("responses", "/v1/responses", false, "reported"),
        ("responses_stream", "/v1/responses", true, "reported"),
        ("embeddings", "/v1/embeddings", false, "reported"),
    ];
    for &(scenario, path, streaming, source) in cases {
        let server = LlmServer::start(ServerOpts::default());
        openai(&server, scenario);
        let entries = server.entries();
        let exp = only(&entries, path, streaming);
        assert_eq!(exp.usage_source, source, "{scenario}");
        match exp.input_tokens {
            Tokens::Exact(n) => assert!(n > 1000, "{scenario}"),
            Tokens::Approx { expected, .. } => assert!(expected > 10, "{scenario}"),
        }
        if scenario == "chat_stream_no_usage" {
            assert!(entries[0].usage().is_none());
            assert!(matches!(exp.output_tokens, Tokens::Exact(n) if n > 10));
        }
        if path != "/v1/embeddings" {
            if source == "reported" {
                assert!(exp.cached_input_tokens >= 128 && exp.reasoning_tokens >= 16);
            }
            assert_ne!(exp.response_model, exp.request_model);
        }
        assert!(server.stderr_tail().is_empty(), "{scenario}: server errors");
    }
}

#[test]
fn keepalive_and_big_prompt() {
    if !sdks_available() {
        return;
    }
    let server = LlmServer::start(ServerOpts::default());
    openai(&server, "keepalive20");
    let entries = server.entries();
    assert_eq!(entries.len(), 20);
    let ports: BTreeSet<u64> = entries.iter().map(ServerEntry::client_port).collect();
    assert_eq!(ports.len(), 1, "keepalive20 used more than one connection");
    let inputs: BTreeSet<u64> = entries.iter().map(|e| e.usage().unwrap()["prompt_tokens"].as_u64().unwrap()).collect();
    assert_eq!(inputs.len(), 20, "usage not distinct per request");

    let server = LlmServer::start(ServerOpts::default());
    openai(&server, "big_prompt");
    let entries = server.entries();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].request_bytes() >= 1024 * 1024);
    assert_eq!(entries[0].request_model(), CHAT_MODEL);
}

#[test]
fn anthropic_scenarios_against_fake_server() {
    if !sdks_available() {
        return;
    }
    for (scenario, streaming) in [("messages", false), ("messages_stream", true)] {
        let server = LlmServer::start(ServerOpts::default());
        let p = prompt_file(&server);
        ok(&clients::run_anthropic(&server, KEY, scenario, Some(&p)));
        let entries = server.entries();
        let exp = only(&entries, "/v1/messages", streaming);
        let u = entries[0].usage().unwrap();
        let sum = ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
            .iter()
            .map(|k| u[*k].as_u64().unwrap())
            .sum::<u64>();
        assert_eq!(exp.input_tokens, Tokens::Exact(sum));
        assert_eq!(exp.cached_input_tokens, u["cache_read_input_tokens"].as_u64().unwrap());
        assert_eq!(exp.provider, "anthropic");
    }
}

#[test]
fn curl_gzip_and_health() {
    let server = LlmServer::start(ServerOpts::default());
    let body = json!({"model": CHAT_MODEL, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "hi"}]});
    let plain = clients::curl_post_json(&server, "/v1/chat/completions", KEY, &body, &[]);
    ok(&plain);
    assert_eq!(plain.stdout.trim(), "200");
    assert_eq!(plain.comm.as_deref(), Some("curl"));
    let gz =
        clients::curl_post_json(&server, "/v1/chat/completions", KEY, &body, &["--compressed", "-H", "x-test-gzip: 1"]);
    ok(&gz);
    let health = clients::curl_get(&server, &["/health", "/v1/models", "/health"]);
    ok(&health);
    assert_eq!(health.stdout.lines().filter(|l| l.trim() == "200").count(), 3);
    let entries = server.entries();
    assert_eq!(entries.len(), 2, "/health and /v1/models must not be logged");
    assert_eq!(entries[0].content_encoding(), None);
    assert_eq!(entries[1].content_encoding(), Some("gzip"));
    // a request without credentials is refused (and not logged)
    let unauth = clients::run_curl(
        &server,
        &[
            "-o".into(),
            server.dir.join("unauth").into(),
            "--data-binary".into(),
            "{}".into(),
            format!("{}/v1/chat/completions", server.origin()).into(),
        ],
    );
    assert_eq!(unauth.stdout.trim(), "401");
    assert_eq!(server.entries().len(), 2);

    let server = LlmServer::start(ServerOpts { gzip: true, ..Default::default() });
    ok(&clients::curl_post_json(&server, "/v1/chat/completions", KEY, &body, &["--compressed"]));
    ok(&clients::curl_post_json(&server, "/v1/chat/completions", KEY, &body, &[]));
    let entries = server.entries();
    assert_eq!(entries[0].content_encoding(), Some("gzip"));
    assert_eq!(entries[1].content_encoding(), None, "gzip without Accept-Encoding");
}
