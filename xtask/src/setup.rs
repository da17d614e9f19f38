//! Idempotent bootstrap of the eBPF toolchain, following the verified recipe for these
//! machines: the nightly toolchain's `rust-src`, and a `bpf-linker` linked against the LLVM
//! that nightly itself ships (the crates.io default, LLVM 23, does not build here).
use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{bail, Context, Result};

use crate::{output, run};

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn ensure() -> Result<()> {
    let started = Instant::now();
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    eprintln!("xtask setup: toolchain ready ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(())
}

fn ensure_nightly() -> Result<()> {
    let list = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required to build the eBPF object")?;
    if !list.lines().any(|l| l.starts_with("nightly")) {
        // Not installable on machines without internet beyond the registries; say so plainly.
        bail!("no nightly toolchain: run `rustup toolchain install nightly` (the eBPF object needs -Z build-std)");
    }
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let components =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))?;
    if components.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask setup: installing rust-src for nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker_works(bin: &str) -> bool {
    Command::new(bin).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

fn ensure_bpf_linker() -> Result<()> {
    if bpf_linker_works("bpf-linker") {
        return Ok(());
    }
    let cargo_home = std::env::var("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|_| home().join(".cargo"));
    let installed = cargo_home.join("bin").join("bpf-linker");
    if bpf_linker_works(&installed.to_string_lossy()) {
        bail!(
            "bpf-linker is installed at {} but not on PATH: add {} to PATH",
            installed.display(),
            cargo_home.join("bin").display()
        );
    }
    eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM (about a minute)");
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let sysroot = PathBuf::from(sysroot.trim());
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so"))
        .context("nightly's sysroot has no libLLVM.so.*")?;
    // The binary's RUNPATH points here, so the directory must outlive the build.
    let prefix = home().join(".local/share/tokentap/llvm");
    let libdir = prefix.join("lib");
    std::fs::create_dir_all(&libdir)?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = libdir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(sysroot.join("lib").join(&lib), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_works(&installed.to_string_lossy()) {
        bail!("bpf-linker was built but `{} --version` fails", installed.display());
    }
    Ok(())
}

fn home() -> PathBuf {
    std::env::var("HOME").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/root"))
}
