//! Executables that carry a TLS implementation of their own but got no probes (a stack without
//! a module yet, a stripped build whose signatures did not match, another architecture): the
//! agent cannot see their calls, so it says so — logged once per executable file and counted
//! — instead of missing them silently.
//!
//! Evidence, all from the file's bytes: a TLS implementation inside (the TLS 1.3 key-schedule
//! label `c hs traffic`, or both TLS 1.2 PRF labels `master secret` and `key expansion`: every
//! implementation embeds them; a program that links libssl.so does not), and HTTP over it (the
//! ALPN name `http/1.1`). The stack is named when a marker says which it is.
use memchr::memmem;
use object::{Object, ObjectSection};

use super::Executable;

/// What an executable's bytes say about its TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsEvidence {
    /// The stack a marker names, or "unknown".
    pub stack: &'static str,
    /// Whether the HTTP/2 ALPN name is there too.
    pub h2: bool,
}

/// Markers of the implementation, most specific first. Each is split in two pieces so the
/// agent's own executable does not carry them contiguously.
/// rustls before Go: a Rust program may quote Go's names (tokentap itself does), a Go program
/// has no reason to carry `rustls::`.
const STACKS: &[(&str, [&[u8]; 2])] = &[
    ("rustls", [b"rust", b"ls::"]),
    ("go", [b"crypto/tls", b".(*Conn)"]),
    ("boringssl", [b"ssl_lib", b".cc"]),
    ("gnutls", [b"GnuTLS ", b"error"]),
    ("openssl", [b"OpenSSL ", b"3."]),
    ("openssl", [b"OpenSSL ", b"1.1"]),
];

fn has(regions: &[&[u8]], pieces: &[&[u8]]) -> bool {
    let needle = pieces.concat();
    let finder = memmem::Finder::new(&needle);
    regions.iter().any(|r| finder.find(r).is_some())
}

/// The executable's constant data: allocated sections that hold neither code nor debug info
/// (which are most of a large binary), where string literals live.
pub fn data_regions(exe: &Executable) -> Vec<&[u8]> {
    let Some(elf) = exe.elf() else { return Vec::new() };
    let mut regions = Vec::new();
    for section in elf.sections() {
        let object::SectionFlags::Elf { sh_flags } = section.flags() else { continue };
        let alloc = sh_flags & u64::from(object::elf::SHF_ALLOC) != 0;
        let code = sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0;
        if !alloc || code {
            continue;
        }
        if let Some((start, size)) = section.file_range() {
            if let Some(bytes) = exe.bytes().get(start as usize..(start + size) as usize) {
                regions.push(bytes);
            }
        }
    }
    // No section headers (stripped to the bone, packed): the whole file.
    if regions.is_empty() {
        regions.push(exe.bytes());
    }
    regions
}

/// Whether `regions` (an executable's constant data) look like an HTTPS client or server with
/// its own TLS.
pub fn tls_evidence(bytes: &[&[u8]]) -> Option<TlsEvidence> {
    let tls13 = has(bytes, &[b"c hs ", b"traffic"]);
    let tls12 = || has(bytes, &[b"master ", b"secret"]) && has(bytes, &[b"key ", b"expansion"]);
    if !(tls13 || tls12()) {
        return None;
    }
    if !has(bytes, &[b"http/", b"1.1"]) {
        return None;
    }
    let stack = STACKS.iter().find(|(_, pieces)| has(bytes, pieces)).map_or("unknown", |(name, _)| name);
    Some(TlsEvidence { stack, h2: has(bytes, &[b"\x02h", b"2"]) || has(bytes, &[b"\"h", b"2\""]) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image: filler with `parts` spread through it.
    fn image(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0u8; 4096];
        for p in parts {
            out.extend_from_slice(p);
            out.extend_from_slice(&[0u8; 512]);
        }
        out
    }

    #[test]
    fn tls13_client_with_a_named_stack() {
        let go = image(&[b"c hs traffic", b"http/1.1", b"crypto/tls.(*Conn).Write", b"\x02h2\x08http/1.1"]);
        assert_eq!(tls_evidence(&[&go]), Some(TlsEvidence { stack: "go", h2: true }));
        let boring = image(&[b"http/1.1", b"../../ssl/ssl_lib.cc", b"c hs traffic"]);
        assert_eq!(tls_evidence(&[&boring]), Some(TlsEvidence { stack: "boringssl", h2: false }));
    }

    #[test]
    fn tls12_only_needs_both_prf_labels() {
        let both = image(&[b"master secret", b"key expansion", b"http/1.1"]);
        assert_eq!(tls_evidence(&[&both]), Some(TlsEvidence { stack: "unknown", h2: false }));
        assert_eq!(tls_evidence(&[&image(&[b"master secret", b"http/1.1"])]), None);
    }

    #[test]
    fn no_tls_inside_is_not_flagged() {
        // curl links libssl.so: the ALPN name is there, the key schedule is not.
        assert_eq!(tls_evidence(&[&image(&[b"http/1.1", b"\x02h2", b"OpenSSL 3.0.11"])]), None);
        assert_eq!(tls_evidence(&[&image(&[b"hello world"])]), None);
        assert_eq!(tls_evidence(&[&[]]), None);
    }

    #[test]
    fn tls_without_http_is_not_flagged() {
        // A TLS implementation used for something else (mail, databases) carries no LLM calls.
        assert_eq!(tls_evidence(&[&image(&[b"c hs traffic", b"smtp"])]), None);
    }

    #[test]
    fn data_regions_leave_out_code_and_debug_info() {
        let exe = Executable::open(&std::env::current_exe().unwrap()).unwrap();
        let regions = data_regions(&exe);
        let total: usize = regions.iter().map(|r| r.len()).sum();
        assert!(total > 0 && total < exe.bytes().len() / 2, "{total} of {} bytes", exe.bytes().len());
        // The byte-string literals of the tests above are constant data of this test binary.
        assert!(has(&regions, &[b"key expansion"]));
    }

    #[test]
    fn openssl_versions_are_named() {
        let img = image(&[b"c hs traffic", b"http/1.1", b"OpenSSL 1.1.1w  11 Sep 2023"]);
        assert_eq!(tls_evidence(&[&img]).map(|e| e.stack), Some("openssl"));
    }
}
