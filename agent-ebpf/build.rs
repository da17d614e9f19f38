use which::which;

/// Rebuild when the linker changes: aya-build cannot see it through cargo's dependency graph.
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
