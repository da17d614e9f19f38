//! The test's own rustls client (`fixtures/rust_client`: `ureq` 2 over rustls 0.23 with ring),
//! built once per machine into `target/rust-client` (its own workspace and lock file, never a
//! member of tokentap's) and reused; cargo only rebuilds it when its sources change.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::clients::ClientRun;
use crate::raw_tls::run_with_stdin;
use crate::server::LlmServer;
use crate::{agent, certs, env};

/// File name of the blocking (ureq) client executable (its `comm` is the first 15 bytes).
pub const BIN_NAME: &str = "tokentap-rust-client";
/// File name of the async (tokio-rustls) client executable.
pub const ASYNC_BIN_NAME: &str = "tokentap-rust-async";

/// How the client is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Release, rustc's default symbol mangling (`_ZN…17h<hash>E`).
    Release,
    /// Release with `-C symbol-mangling-version=v0` (`_R…`).
    ReleaseV0,
    /// The dev profile: nothing inlined, `ConnectionCommon::reader` is a function of its own.
    Debug,
}

/// Builds the clients (release, symbols kept) and returns the blocking one's canonical path.
pub fn rust_client_bin(kind: Build) -> &'static PathBuf {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    static V0: OnceLock<PathBuf> = OnceLock::new();
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    match kind {
        Build::Release => RELEASE.get_or_init(|| build(kind)),
        Build::ReleaseV0 => V0.get_or_init(|| build(kind)),
        Build::Debug => DEBUG.get_or_init(|| build(kind)),
    }
}

fn build(kind: Build) -> PathBuf {
    let root = env::workspace_dir();
    let (dir, rustflags, profile) = match kind {
        Build::Release => ("rust-client", None, "release"),
        Build::ReleaseV0 => ("rust-client-v0", Some("-C symbol-mangling-version=v0"), "release"),
        Build::Debug => ("rust-client", None, "debug"),
    };
    let target = root.join("target").join(dir);
    let bin = target.join(profile).join(BIN_NAME);
    // Built by `cargo xtask test` already: a second cargo run from here (another environment)
    // would only relink it.
    if newer_than_sources(&bin) {
        return bin.canonicalize().expect("rust client binary");
    }
    let log = env::temp_subdir("rust-client-build").join("cargo.log");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::fs::File::create(&log).expect("create build log");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--locked", "--manifest-path"])
        .arg(env::fixtures_dir().join("rust_client/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out);
    if profile == "release" {
        cmd.arg("--release");
    }
    if let Some(flags) = rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    let status = cmd.status().expect("run cargo build for fixtures/rust_client");
    assert!(status.success(), "building fixtures/rust_client failed:\n{}", env::tail_lines(&log, 30));
    bin.canonicalize().expect("rust client binary")
}

/// True if `bin` exists and is newer than every file of `fixtures/rust_client` (sources,
/// manifest, lock file).
fn newer_than_sources(bin: &Path) -> bool {
    fn newest(dir: &Path) -> Option<std::time::SystemTime> {
        let mut latest = std::fs::metadata(dir).ok()?.modified().ok()?;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let t = if path.is_dir() { newest(&path)? } else { entry.metadata().ok()?.modified().ok()? };
            latest = latest.max(t);
        }
        Some(latest)
    }
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
    let sources = newest(&env::fixtures_dir().join("rust_client"));
    matches!((built, sources), (Some(b), Some(s)) if b > s)
}

/// The async client, built with the blocking one.
pub fn rust_async_bin() -> PathBuf {
    let blocking = rust_client_bin(Build::Release);
    blocking.with_file_name(ASYNC_BIN_NAME)
}

/// True once the shared agent logged probing the executable `bin` with rustls probes.
pub fn agent_probed(bin: &Path) -> bool {
    let stderr = std::fs::read_to_string(&agent::agent().stderr).unwrap_or_default();
    let bin = bin.display().to_string();
    stderr.lines().any(|l| {
        l.contains("attached probes to executable") && l.contains(&format!("{bin} ")) && l.contains("\"rustls\"")
    })
}

/// Runs the client: `requests` POSTs of `body_file` to `path` on one keep-alive connection,
/// bearer key from `key_file`. It sends only once the agent has probed its executable.
pub fn run_rust_client(
    kind: Build,
    server: &LlmServer,
    path: &str,
    body_file: &Path,
    key_file: &Path,
    requests: usize,
) -> ClientRun {
    let bin = rust_client_bin(kind);
    let mut cmd = Command::new(bin);
    cmd.arg(format!("{}{path}", server.origin()))
        .arg(&certs::certs().ca)
        .arg(body_file)
        .arg(key_file)
        .arg("--requests")
        .arg(requests.to_string());
    let mut run = run_with_stdin(cmd, BIN_NAME, &server.dir, b"go\n", &|| agent_probed(bin));
    run.comm = Some(BIN_NAME[..15].to_string());
    run.exe = Some(bin.display().to_string());
    run
}

/// Runs the async client: sends the raw HTTP request in `request_file` to the server and reads
/// until the server closes. It sends only once the agent has probed its executable.
pub fn run_rust_async(server: &LlmServer, request_file: &Path) -> ClientRun {
    let bin = rust_async_bin();
    let mut cmd = Command::new(&bin);
    cmd.arg(server.port.to_string()).arg(&certs::certs().ca).arg(request_file);
    let mut run = run_with_stdin(cmd, ASYNC_BIN_NAME, &server.dir, b"go\n", &|| agent_probed(&bin));
    run.comm = Some(ASYNC_BIN_NAME[..15].to_string());
    run.exe = Some(bin.display().to_string());
    run
}
