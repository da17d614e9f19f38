//! Test PKI generated once per test binary with the `openssl` CLI:
//! a CA (CA:TRUE) and a leaf for 127.0.0.1 / localhost (IP SAN, CA:FALSE).

use std::path::{Path, PathBuf};
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

const CA_CNF: &str = "\
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = tokentap e2e test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
";

const LEAF_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = 127.0.0.1
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
";

/// The binary's certificates, generated on first call.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(generate)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI: {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}",
        args.first().unwrap_or(&""),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn generate() -> Certs {
    let dir = env::temp_subdir("pki");
    std::fs::write(dir.join("ca.cnf"), CA_CNF).expect("write ca.cnf");
    std::fs::write(dir.join("leaf.cnf"), LEAF_CNF).expect("write leaf.cnf");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut args = vec!["req", "-x509", "-new", "-config", "ca.cnf"];
    args.extend(ec);
    args.extend(["-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "7"]);
    openssl(&dir, &args);
    let mut args = vec!["req", "-new", "-config", "leaf.cnf"];
    args.extend(ec);
    args.extend(["-nodes", "-keyout", "leaf.key", "-out", "leaf.csr"]);
    openssl(&dir, &args);
    let serial = format!("0x{}", env::random_hex(8));
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial,
            "-days",
            "7",
            "-extfile",
            "leaf.cnf",
            "-extensions",
            "leaf",
            "-out",
            "leaf.pem",
        ],
    );
    openssl(&dir, &["verify", "-CAfile", "ca.pem", "leaf.pem"]);
    Certs { ca: dir.join("ca.pem"), cert: dir.join("leaf.pem"), key: dir.join("leaf.key"), dir }
}
