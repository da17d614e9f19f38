//! The policy file on the command line: `tokentap run --policy FILE` and `check-config` refuse an
//! invalid policy with its file:line:key and exit 2, before anything is loaded.
use std::process::Command;

use tokentap_tests::{agent::agent_bin, env};

#[test]
fn an_invalid_policy_refuses_the_start_naming_file_line_and_key() {
    let dir = env::temp_subdir("enforce-cli");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[entitlement]]\nname = \"a\"\nmatch = { team = \"t\" }\nlimit = { total_tokens = 10 }\n\
         window = \"1d\"\naction = \"deny\"\nwarn_at = 2\n",
    )
    .unwrap();
    let config = dir.join("tokentap.toml");
    std::fs::write(&config, format!("[enforcement]\npolicy_file = \"{}\"\n", policy.display())).unwrap();
    let want = format!("{}:7: entitlement[1].warn_at:", policy.display());
    for args in [
        vec!["run".to_string(), "--policy".into(), policy.display().to_string(), "--usage-log".into(), "-".into()],
        vec!["check-config".into(), config.display().to_string()],
    ] {
        let out = Command::new(agent_bin()).args(&args).output().expect("run the agent binary");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} exits 2: {err}");
        assert!(err.contains(&want), "{args:?}: stderr names {want:?}: {err}");
    }
    // A valid one passes the check.
    std::fs::write(&policy, "[[entitlement]]\nname = \"a\"\nmatch = { team = \"t\" }\nlimit = { requests = 10 }\nwindow = \"1h\"\naction = \"observe\"\n").unwrap();
    let out = Command::new(agent_bin()).arg("check-config").arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
