//! What the end-to-end tests need besides the agent: a Python environment with the real LLM
//! SDKs (the clients the tests drive), and the system tools the tests call.
use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{run, workspace_root};

/// Returns the Python interpreter the tests must use.
pub fn ensure() -> Result<PathBuf> {
    ensure_system_tools()?;
    ensure_node_clients()?;
    ensure_rust_client()?;
    let venv = workspace_root().join("target").join("test-venv");
    let python = venv.join("bin").join("python");
    let requirements = workspace_root().join("tests/fixtures/requirements.txt");
    let stamp = venv.join(".requirements");
    let wanted = std::fs::read_to_string(&requirements)?;
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    eprintln!("xtask test: creating the test Python environment in {}", venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// The rustls client of tests/tests/rustls_e2e.rs, built (release, symbols kept) into
/// target/rust-client (and, with v0 symbol mangling, target/rust-client-v0; and a debug
/// build) from its own workspace; the tests build it too, this only moves the first, long builds out of a test's
/// time budget. A no-op when they are up to date.
fn ensure_rust_client() -> Result<()> {
    let root = workspace_root();
    let builds = [
        ("rust-client", "", true),
        ("rust-client-v0", "-C symbol-mangling-version=v0", true),
        ("rust-client", "", false),
    ];
    for (dir, rustflags, release) in builds {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--locked", "--quiet", "--manifest-path"])
            .arg(root.join("tests/fixtures/rust_client/Cargo.toml"))
            .arg("--target-dir")
            .arg(root.join("target").join(dir))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR");
        if release {
            cmd.arg("--release");
        }
        if !rustflags.is_empty() {
            cmd.env("RUSTFLAGS", rustflags);
        }
        run(&mut cmd)?;
    }
    Ok(())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// rotel (the OTLP collector the export tests run) links the system's libpython3.11.
fn have_libpython() -> bool {
    Command::new("sh")
        .arg("-c")
        .arg("ldconfig -p | grep -q 'libpython3.11.so.1.0'")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn ensure_system_tools() -> Result<()> {
    let mut missing: Vec<&str> = [
        ("curl", "curl"),
        ("openssl", "openssl"),
        ("setpriv", "util-linux"),
        ("unshare", "util-linux"),
        ("node", "nodejs"),
        ("npm", "npm"),
        // `go` builds the Go test client (tests/fixtures/go_client, standard library only).
        ("go", "golang-go"),
        // The GnuTLS client of tests/tests/gnutls_e2e.rs (pulls in libgnutls30).
        ("gnutls-cli", "gnutls-bin"),
        // The Prometheus that tests/tests/prometheus_report_e2e.rs starts and reports from.
        ("prometheus", "prometheus"),
        // `tokentap top` is driven in a real terminal by tests/tests/top_e2e.rs.
        ("tmux", "tmux"),
        // The shared counters of cluster entitlements (tests/tests/cluster_*.rs start their own
        // server on a free port; no system service is used). Pulls in redis-tools (redis-cli).
        ("redis-server", "redis-server"),
        // Headless Chromium opens the HTML report and invoices (report_e2e.rs, invoice_e2e.rs).
        ("chromium", "chromium"),
    ]
    .into_iter()
    .filter(|(tool, _)| !have(tool))
    .map(|(_, pkg)| pkg)
    .collect();
    if !have_libpython() {
        missing.push("libpython3.11");
    }
    // Report periods in named time zones (`--tz Europe/Paris`) read the system tz database.
    if !std::path::Path::new("/usr/share/zoneinfo/Europe/Paris").exists() {
        missing.push("tzdata");
    }
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask test: installing {missing:?} with apt-get");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing))
}

/// The npm packages the JavaScript tests drive, pinned: the newest `openai` that still runs on
/// Node 20 (7.x needs Node 22), and Bun (its postinstall puts the stripped linux-x64 binary,
/// BoringSSL inside, at `bun/bin/bun.exe`). Installed once under `target/node-clients`, where
/// the tests find them (`NODE_PATH`).
const NODE_CLIENTS: &[&str] = &["openai@6.49.0", "bun@1.4.5"];

fn ensure_node_clients() -> Result<()> {
    let prefix = workspace_root().join("target").join("node-clients");
    let stamp = prefix.join(".packages");
    let wanted = NODE_CLIENTS.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    eprintln!("xtask test: installing {NODE_CLIENTS:?} into {}", prefix.display());
    std::fs::create_dir_all(&prefix)?;
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(&prefix)
        .args(NODE_CLIENTS))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}
