//! Builds the eBPF object with aya-build and leaves it in OUT_DIR for `include_bytes_aligned!`.
//! With `AYA_BUILD_SKIP=1` an empty stub is written instead, so `cargo check`, clippy and the
//! unit tests never need nightly or bpf-linker; such a binary refuses to run the capture.
use std::path::PathBuf;

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let skip = std::env::var("AYA_BUILD_SKIP").map(|v| v == "1" || v.eq_ignore_ascii_case("true")).unwrap_or(false);
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        std::fs::write(out_dir.join("tokentap-ebpf"), []).context("writing the stub eBPF object")?;
        return Ok(());
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../agent-ebpf");
    let root = root.canonicalize().context("agent-ebpf directory")?;
    println!("cargo:rerun-if-changed={}", root.join("../agent-common/src").display());
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tokentap-ebpf",
            root_dir: root.to_str().context("non-UTF-8 path")?,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
