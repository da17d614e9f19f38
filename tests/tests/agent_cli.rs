//! The agent's command line: refusing to start without privileges or with a bad config file,
//! with a message that says why. These run the binary directly, without the shared agent.
use std::process::{Command, Output};

use tokentap_tests::{agent::agent_bin, env, require_bpf};

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_without_privileges_exits_non_zero_naming_the_capabilities() {
    // Dropping privileges needs them in the first place.
    if !require_bpf() {
        return;
    }
    let setpriv = env::which("setpriv").expect("setpriv (util-linux) is installed");
    let out = run(Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
        .arg(agent_bin())
        .args(["run", "--usage-log", "-"]));
    assert!(!out.status.success(), "an unprivileged agent must not start");
    let err = stderr(&out);
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"] {
        assert!(err.contains(cap), "stderr does not name {cap}: {err}");
    }
}

#[test]
fn invalid_config_names_file_line_and_key_and_exits_2() {
    let dir = env::temp_subdir("cli");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[capture]\nring_buffer_bytes = 67108864\ncall_cap_bytes = \"big\"\n").unwrap();
    for args in [
        vec!["check-config".into(), file.display().to_string()],
        vec!["run".into(), "--config".into(), file.display().to_string()],
    ] {
        let out = run(Command::new(agent_bin()).args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let expected = format!("{}:3: capture.call_cap_bytes:", file.display());
        assert!(stderr(&out).contains(&expected), "{args:?}: stderr lacks {expected:?}: {}", stderr(&out));
    }
    let out = run(Command::new(agent_bin()).args(["run", "--config", "/nonexistent/tokentap.toml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/tokentap.toml"), "{}", stderr(&out));
}

#[test]
fn shipped_example_config_is_valid() {
    let example = env::workspace_dir().join("deploy/examples/tokentap.toml");
    let out = run(Command::new(agent_bin()).arg("check-config").arg(&example));
    assert!(out.status.success(), "{}", stderr(&out));
}
