//! JavaScript clients: `fixtures/openai_client.cjs` with the real `openai` npm package, run by
//! the system's `node` (OpenSSL linked statically into the executable) or by Bun from its npm
//! package (BoringSSL linked in, symbols stripped).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use crate::clients::{self, ClientRun};
use crate::server::LlmServer;
use crate::{certs, env};

/// Where `cargo xtask test` installs the npm packages (`TOKENTAP_NODE_MODULES` overrides).
pub fn node_modules() -> PathBuf {
    std::env::var_os("TOKENTAP_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| env::workspace_dir().join("target/node-clients/node_modules"))
}

/// The `node` executable, canonical (what the record's `exe` must name).
pub fn node_path() -> PathBuf {
    env::which("node").unwrap_or_else(|| PathBuf::from("/usr/bin/node"))
}

/// The Bun executable the `bun` npm package installs (its postinstall puts the platform
/// binary in place of the `bun.exe` placeholder), canonical.
pub fn bun_path() -> PathBuf {
    let exe = node_modules().join("bun/bin/bun.exe");
    assert!(exe.is_file(), "bun is not installed at {} (cargo xtask test installs it)", exe.display());
    exe.canonicalize().expect("canonical bun path")
}

/// `openai_client.cjs --scenario NAME` under node against `server`, trusting the test CA.
pub fn run_openai_node(server: &LlmServer, key: &str, scenario: &str, prompt: &std::path::Path) -> ClientRun {
    run_openai_js(&node_path(), server, key, scenario, prompt)
}

/// `openai_client.cjs --scenario NAME` run by `runtime` (node or bun; both read `NODE_PATH`
/// and `NODE_EXTRA_CA_CERTS`).
pub fn run_openai_js(
    runtime: &std::path::Path,
    server: &LlmServer,
    key: &str,
    scenario: &str,
    prompt: &std::path::Path,
) -> ClientRun {
    let sdk = node_modules();
    assert!(
        sdk.join("openai/package.json").is_file(),
        "the openai npm package is not installed at {} (cargo xtask test installs it)",
        sdk.display()
    );
    let mut cmd = Command::new(runtime);
    let args: Vec<OsString> = vec![
        env::fixtures_dir().join("openai_client.cjs").into(),
        "--base-url".into(),
        server.openai_base_url().into(),
        "--api-key".into(),
        key.into(),
        "--scenario".into(),
        scenario.into(),
        "--prompt-file".into(),
        prompt.into(),
    ];
    cmd.args(args)
        .env("NODE_PATH", &sdk)
        .env("NODE_EXTRA_CA_CERTS", &certs::certs().ca)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("NODE_OPTIONS");
    let mut run = clients::run(cmd, "openai_client.cjs", &server.dir);
    clients::adopt_identity(&mut run);
    run
}
