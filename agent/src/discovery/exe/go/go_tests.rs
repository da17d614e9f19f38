//! The planner against real Go binaries: the test client in tests/fixtures/go_client, built
//! here with the installed toolchain (`cargo xtask setup` installs Debian's `golang-go`) in
//! every layout the agent must handle. Builds are cached under target/go-client.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// (name, `go build` flags, cgo). With cgo (the default where a C compiler exists) Go links
/// through the system linker; without, its own linker lays out a PIE differently.
const VARIANTS: &[(&str, &[&str], bool)] = &[
    ("default", &[], true),
    ("stripped", &["-ldflags=-s -w"], true),
    ("pie", &["-buildmode=pie"], true),
    ("pie-stripped", &["-buildmode=pie", "-ldflags=-s -w"], true),
    ("nocgo-pie-stripped", &["-buildmode=pie", "-ldflags=-s -w"], false),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// Builds (or reuses) one variant of the Go test client.
fn build(variant: &str, flags: &[&str], cgo: bool) -> PathBuf {
    // Tests run in parallel; two builds of one output must not interleave.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace();
    let src = root.join("tests/fixtures/go_client");
    let out = root.join("target/go-client/unit").join(variant).join("go_client");
    let newest_src = ["main.go", "go.mod"]
        .iter()
        .filter_map(|f| std::fs::metadata(src.join(f)).and_then(|m| m.modified()).ok())
        .max()
        .expect("go_client sources");
    if std::fs::metadata(&out).and_then(|m| m.modified()).is_ok_and(|t| t >= newest_src) {
        return out;
    }
    let status = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", root.join("target/go-cache"))
        .env("GOPATH", root.join("target/go-path"))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", if cgo { "1" } else { "0" })
        .status()
        .expect("`go` not found: run `cargo xtask setup` (installs Debian golang-go)");
    assert!(status.success(), "go build {variant} failed");
    out
}

/// Go 1.17+ functions open with the stack-bound check against g in R14: `cmp rsp,
/// [r14+0x10]` (49 3b 66 10), or for large frames `lea r12, [rsp-N]; cmp r12, [r14+0x10]`
/// (4d 3b 66 10). Finding it proves both the file-offset mapping and the register ABI the
/// probes rely on.
fn assert_go_prologue(bytes: &[u8], entry: u64, what: &str) {
    let head = &bytes[entry as usize..entry as usize + 16];
    let found = head.windows(4).any(|w| matches!(w, [0x49 | 0x4d, 0x3b, 0x66, 0x10]));
    assert!(found, "{what}: no stack-bound check against R14 at the entry: {head:02x?}");
}

fn check_site(bytes: &[u8], site: &Site, what: &str) {
    assert_go_prologue(bytes, site.entry, what);
    assert!(!site.rets.is_empty(), "{what}: no RET");
    for &ret in &site.rets {
        assert!(ret > site.entry, "{what}: RET before entry");
        assert_eq!(bytes[ret as usize], 0xc3, "{what}: RET byte at {ret:#x}");
    }
}

#[test]
fn real_go_binaries_in_every_layout() {
    for &(variant, flags, cgo) in VARIANTS {
        let path = build(variant, flags, cgo);
        let bytes = std::fs::read(&path).expect("read go binary");
        let elf = object::File::parse(&*bytes).expect("ELF");
        assert!(is_go(&elf));
        let minor = match buildinfo::version(&elf) {
            Some((1, minor)) => minor,
            other => panic!("{variant}: Go version {other:?}"),
        };
        assert!(minor >= MIN_MINOR, "{variant}: toolchain too old for this test");
        let plan = plan(&elf).unwrap_or_else(|e| panic!("{variant}: {e}")).expect("crypto/tls found");
        let stripped = variant.contains("stripped");
        assert_eq!(plan.source, if stripped { "pclntab" } else { "symtab" }, "{variant}");
        check_site(&bytes, &plan.write, &format!("{variant} Write"));
        check_site(&bytes, &plan.read, &format!("{variant} Read"));
        assert_go_prologue(&bytes, plan.close.expect("Close found"), &format!("{variant} Close"));

        // The function table agrees with the symbol table where both exist; its text start
        // comes from its own header.
        let table = Pclntab::locate(&elf).unwrap_or_else(|e| panic!("{variant}: {e}"));
        let from_table = table.find(&[WRITE, READ, CLOSE]);
        if let Some(from_symbols) = from_symtab(&elf) {
            for (t, s) in from_table.iter().zip(&from_symbols) {
                assert_eq!(t.map(|f| f.entry), s.map(|f| f.entry), "{variant}: pclntab vs symtab");
            }
            let table_write = site(&elf, WRITE, from_table[0].expect("Write in pclntab")).expect("site");
            assert_eq!(table_write, plan.write, "{variant}: RETs by pclntab size vs symtab size");
        }
    }
}

#[test]
fn without_section_headers_the_table_is_found_in_the_segments() {
    // What sstrip-like tools leave: e_shoff, e_shnum and e_shstrndx zeroed, so no section
    // (no .symtab, no .gopclntab) is visible; only the program headers remain.
    let mut bytes = std::fs::read(build("stripped", &["-ldflags=-s -w"], true)).expect("read");
    bytes[0x28..0x30].fill(0);
    bytes[0x3c..0x40].fill(0);
    let elf = object::File::parse(&*bytes).expect("ELF");
    assert!(elf.sections().next().is_none(), "section headers still visible");
    assert!(is_go(&elf));
    let plan = plan(&elf).expect("plan").expect("crypto/tls found");
    assert_eq!(plan.source, "pclntab");
    check_site(&bytes, &plan.write, "headerless Write");
    check_site(&bytes, &plan.read, "headerless Read");
}

#[test]
fn non_go_executables_are_left_alone() {
    let bytes = std::fs::read("/proc/self/exe").expect("own executable");
    let elf = object::File::parse(&*bytes).expect("ELF");
    assert!(!is_go(&elf));
    assert_eq!(plan(&elf), Ok(None));
}
