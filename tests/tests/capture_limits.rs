//! An agent with a small per-call capture cap, and libraries that appear after it started.
//! One agent per test binary: every test here configures it identically.
use std::ffi::OsString;

use serde_json::Value;
use tokentap_tests::{agent, case::BIG_PROMPT_FILLER, env, require_bpf, Case, ServerOpts};

/// 64 KiB: the 1 MiB prompt below crosses it, the ordinary calls do not.
const CONFIG: &str = "[capture]\ncall_cap_bytes = 65536\n";

fn usage_u64(entry: &Value, key: &str) -> u64 {
    entry["usage"][key].as_u64().unwrap_or_else(|| panic!("server usage has no {key}"))
}

fn system_libssl() -> &'static str {
    ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a system libssl.so.3")
}

#[test]
fn call_over_the_cap_is_flagged_truncated_and_still_counted_exactly() {
    if !require_bpf() {
        return;
    }
    agent::configure(CONFIG);
    let case = Case::new();
    case.add_secret(BIG_PROMPT_FILLER);
    let server = case.server(ServerOpts::default());
    let run = case.openai(&server, "big_prompt");
    let recs = case.wait_records(&server, 1);
    let (r, e) = (&recs[0], &server.entries()[0]);
    assert!(e.request_bytes() > 65536, "the request must exceed the cap");
    assert_eq!(r["truncated"], Value::Bool(true), "a call past the cap is flagged");
    assert_eq!(r["pid"].as_u64(), Some(run.pid as u64));
    assert_eq!(r["operation"], "chat");
    assert_eq!(r["usage_source"], "reported");
    assert_eq!(r["input_tokens"].as_u64(), Some(usage_u64(&e.0, "prompt_tokens")));
    assert_eq!(r["output_tokens"].as_u64(), Some(usage_u64(&e.0, "completion_tokens")));
    assert_eq!(r["response_model"].as_str(), Some(e.response_model()));
    let stderr = std::fs::read_to_string(&agent().stderr).unwrap_or_default();
    assert!(stderr.contains("tokentap: capture ready"));
    case.finish(&server);
}

#[test]
fn libssl_loaded_after_start_from_a_new_path_is_probed_before_its_first_call() {
    if !require_bpf() {
        return;
    }
    agent::configure(CONFIG);
    let a = agent();
    // A copy is a new inode that no probe covers yet; the client loads it via LD_LIBRARY_PATH.
    let system =
        ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("a system libssl.so.3");
    let libdir = env::temp_subdir("newlib");
    std::fs::copy(system, libdir.join("libssl.so.3")).expect("copy libssl");
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let mut lib_path = OsString::from("LD_LIBRARY_PATH=");
    lib_path.push(&libdir);
    let run = case.openai_with(&server, "chat", &["env".into(), lib_path]);
    assert!(run.spawned_at > a.ready_at);
    let recs = case.wait_records(&server, 1);
    case.check_all(&server, &recs, &run);
    let stderr = std::fs::read_to_string(&a.stderr).unwrap_or_default();
    let attached = format!("{}/libssl.so.3", libdir.display());
    assert!(
        stderr.lines().any(|l| l.contains("attached OpenSSL probes") && l.contains(&attached)),
        "the agent did not log attaching the new library {attached}"
    );
    case.finish(&server);
}

#[test]
fn libssl_visible_only_inside_a_container_mount_namespace_is_probed() {
    if !require_bpf() {
        return;
    }
    agent::configure(CONFIG);
    agent();
    // A "container": a private mount namespace with a tmpfs holding its own libssl copy, at a
    // path that shows an empty directory from the host. Only /proc/PID/root reaches it.
    let mountpoint = env::temp_subdir("ctr-root");
    let script =
        r#"mount -t tmpfs tokentap-ctr "$0" && cp "$1" "$0/" && export LD_LIBRARY_PATH="$0" && shift && exec "$@""#;
    let prefix: Vec<OsString> = vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
        mountpoint.clone().into(),
        system_libssl().into(),
    ];
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let run = case.openai_with(&server, "chat", &prefix);
    assert!(std::fs::read_dir(&mountpoint).unwrap().next().is_none(), "the host must not see the container's files");
    let recs = case.wait_records(&server, 1);
    case.check_all(&server, &recs, &run);
    let stderr = std::fs::read_to_string(&agent().stderr).unwrap_or_default();
    let attached = format!("/proc/{}/root{}/libssl.so.3", run.pid, mountpoint.display());
    assert!(
        stderr.lines().any(|l| l.contains("attached OpenSSL probes") && l.contains(&attached)),
        "the agent did not attach {attached} through the process's root"
    );
    case.finish(&server);
}
