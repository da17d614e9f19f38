//! `tokentap quota status` with the real binary, from status files written here the way the
//! agent writes them (no agent, no privileges needed): the table and JSON, the status file
//! found through `--config`, and clear errors (exit 1 naming the file, exit 2 for arguments).
use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use serde_json::{json, Value};
use tokentap_tests::{agent::agent_bin, env};

fn quota(args: &[&str]) -> Output {
    Command::new(agent_bin()).args(["quota", "status"]).args(args).stdin(Stdio::null()).output().expect("run tokentap")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn entitlement(name: &str, scope: &str, unit: &str, limit: f64, used: f64, reserved: f64, state: &str) -> Value {
    json!({
        "name": name, "scope": scope,
        "limit_kind": if unit == "usd" { "cost_usd" } else { "total_tokens" },
        "unit": unit, "limit": limit, "used": used, "reserved": reserved,
        "remaining": (limit - used - reserved).max(0.0),
        "window_start": "2026-11-28T00:00:00Z", "window_end": "2026-11-29T00:00:00Z",
        "state": state, "action": "deny", "actions_taken": 3, "warnings": 1, "overrun": (used - limit).max(0.0),
    })
}

/// A status as the agent writes it, `age_s` seconds old.
fn write_status(path: &Path, age_s: i64) -> Value {
    let written = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(age_s);
    let status = json!({
        "written_at": written.to_string(),
        "host": "node-a",
        "entitlements": [
            entitlement("blue-daily", "local", "tokens", 50000.0, 50210.0, 0.0, "exhausted"),
            entitlement("red-budget", "cluster", "usd", 20.0, 3.5, 0.25, "ok"),
            entitlement("green-hourly", "local", "tokens", 1000.0, 850.0, 100.0, "warning"),
        ],
    });
    std::fs::write(path, serde_json::to_vec_pretty(&status).unwrap()).unwrap();
    status
}

#[test]
fn table_shows_every_entitlement() {
    let dir = env::temp_subdir("quota-table");
    let path = dir.join("quota.json");
    write_status(&path, 0);
    let out = quota(&["--status-file", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("host node-a, status written at "), "{stdout}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header, ["ENTITLEMENT", "SCOPE", "USED", "RESERVED", "REMAINING", "LIMIT", "WINDOW", "END", "STATE"]);
    let row = |name: &str| -> Vec<String> {
        let line = lines.iter().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing: {stdout}"));
        line.split_whitespace().map(String::from).collect()
    };
    assert_eq!(
        row("blue-daily"),
        ["blue-daily", "local", "50210", "0", "0", "50000", "tokens", "2026-11-29T00:00:00Z", "exhausted"]
    );
    assert_eq!(
        row("red-budget"),
        ["red-budget", "cluster", "3.50", "0.25", "16.25", "20.00", "usd", "2026-11-29T00:00:00Z", "ok"]
    );
    assert_eq!(row("green-hourly")[8], "warning");
    assert_eq!(lines.len(), 5);
}

#[test]
fn json_is_the_status_itself() {
    let dir = env::temp_subdir("quota-json");
    let path = dir.join("quota.json");
    let written = write_status(&path, 1);
    let out = quota(&["--status-file", path.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(got, written);
}

#[test]
fn config_names_the_status_file() {
    let dir = env::temp_subdir("quota-config");
    let path = dir.join("run/quota.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_status(&path, 0);
    let config = dir.join("tokentap.toml");
    std::fs::write(&config, format!("[enforcement]\nstatus_file = {:?}\n", path.to_str().unwrap())).unwrap();
    let out = quota(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).lines().any(|l| l.starts_with("blue-daily")));
}

/// Exit 1 with a message naming the file and containing `want`; nothing on stdout.
fn fails(path: &Path, want: &str) {
    let p = path.to_str().unwrap();
    let out = quota(&["--status-file", p]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains(p) && err.contains(want), "lacks {p:?} / {want:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_invalid_and_stale_files_fail_naming_the_file() {
    let dir = env::temp_subdir("quota-errors");
    let path = dir.join("quota.json");
    fails(&path, "does not exist");
    std::fs::write(&path, b"{\"written_at\": \"2026-11-28T10:00:00Z\", \"host\": 7}").unwrap();
    fails(&path, "not a valid status");
    write_status(&path, 60);
    fails(&path, "seems stopped");
}

#[test]
fn bad_arguments_and_configuration_exit_2() {
    let dir = env::temp_subdir("quota-args");
    let path = dir.join("quota.json");
    write_status(&path, 0);
    let p = path.to_str().unwrap();
    let out = quota(&["--status-file", p, "--format", "yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--format"));
    let config = dir.join("bad.toml");
    std::fs::write(&config, "[enforcement]\nstatus_file = 5\n").unwrap();
    let c = config.to_str().unwrap();
    let out = quota(&["--config", c]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml") && err.contains("status_file"), "{err}");
    let out = quota(&["--config", c, "--status-file", p]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
