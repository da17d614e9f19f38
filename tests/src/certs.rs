//! Test PKI generated once per test binary by `fixtures/make_certs.sh` (the `openssl` CLI):
//! a CA (CA:TRUE) and a leaf for 127.0.0.1 / localhost (IP SAN, CA:FALSE).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::env;

pub struct Certs {
    pub dir: PathBuf,
    /// CA certificate (PEM) clients trust.
    pub ca: PathBuf,
    /// Server leaf certificate (PEM).
    pub cert: PathBuf,
    /// Server leaf key (PEM).
    pub key: PathBuf,
}

/// The binary's certificates, generated on first call.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(generate)
}

/// Runs the fixture script the benchmark uses too.
fn generate() -> Certs {
    let dir = env::temp_subdir("pki");
    let out = Command::new("sh")
        .arg(env::fixtures_dir().join("make_certs.sh"))
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run make_certs.sh: {e}"));
    assert!(out.status.success(), "make_certs.sh failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    Certs { ca: dir.join("ca.pem"), cert: dir.join("leaf.pem"), key: dir.join("leaf.key"), dir }
}
