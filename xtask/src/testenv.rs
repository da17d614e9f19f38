//! What the end-to-end tests need besides the agent: a Python environment with the real LLM
//! SDKs (the clients the tests drive), and the system tools the tests call.
use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{run, workspace_root};

/// Returns the Python interpreter the tests must use.
pub fn ensure() -> Result<PathBuf> {
    ensure_system_tools()?;
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
        // The GnuTLS client of tests/tests/gnutls_e2e.rs (pulls in libgnutls30).
        ("gnutls-cli", "gnutls-bin"),
    ]
    .into_iter()
    .filter(|(tool, _)| !have(tool))
    .map(|(_, pkg)| pkg)
    .collect();
    if !have_libpython() {
        missing.push("libpython3.11");
    }
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask test: installing {missing:?} with apt-get");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing))
}
