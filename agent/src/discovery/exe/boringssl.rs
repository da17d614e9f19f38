//! BoringSSL linked into a stripped executable (Bun; Envoy and Chrome-based tools are built the
//! same way): no symbol names `SSL_read`/`SSL_write`, so both are found by the machine code of
//! their first instructions (x86-64, clang, frame pointers), and the OpenSSL programs are
//! attached at those file offsets, tagged BoringSSL through the attach cookie.
//!
//! Both functions begin the same way in BoringSSL's `ssl_lib.cc`: save registers, then
//! `if (ssl->quic_method != nullptr) { OPENSSL_PUT_ERROR(SSL, ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED);
//! return -1; }`, i.e. `ERR_put_error(16, 0, 0x42, "ssl_lib.cc", line)`. `SSL_read`'s prologue
//! must match exactly once. `SSL_write` must carry the same error call with the same file
//! string as that `SSL_read`: with link-time optimisation the two are not neighbours (in Bun
//! 1.4.5 they lie 530 KB apart, so "close after `SSL_read`" does not hold), but they always
//! come from the same source file. Anything else — no match, several, another layout — is a
//! miss, reported with its reason: never a probe at a guessed address.
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint};
use memchr::memmem;
use object::{Object, ObjectSection};
use tokentap_common::{library, names};

use super::{symbols, ExeProbes, Executable};
use crate::capture::{Capture, CaptureError, TlsLibrary};

/// `push rbp; mov rbp,rsp; push r15; push r14; push rbx; push rax;
/// cmp qword [rdi+0x98],0 (ssl->quic_method); je` — then the error call.
const READ_PROLOGUE: &[u8] =
    &[0x55, 0x48, 0x89, 0xe5, 0x41, 0x57, 0x41, 0x56, 0x53, 0x50, 0x48, 0x83, 0xbf, 0x98, 0x00, 0x00, 0x00, 0x00, 0x74];
/// `push rbp; mov rbp,rsp; push r15..r12; push rbx; sub rsp,0x18; mov r15d,edx (num);
/// mov r14,rsi (buf); mov rbx,rdi (ssl)`.
const WRITE_PROLOGUE: &[u8] = &[
    0x55, 0x48, 0x89, 0xe5, 0x41, 0x57, 0x41, 0x56, 0x41, 0x55, 0x41, 0x54, 0x53, 0x48, 0x83, 0xec, 0x18, 0x41, 0x89,
    0xd7, 0x49, 0x89, 0xf6, 0x48, 0x89, 0xfb,
];
/// `cmp qword [rbx+0x98],0` in `SSL_write` (the `ssl` argument moved to rbx).
const WRITE_QUIC_CHECK: &[u8] = &[0x48, 0x83, 0xbb, 0x98, 0x00, 0x00, 0x00, 0x00];
/// After the file argument: `mov edi,16 (ERR_LIB_SSL); xor esi,esi; mov edx,0x42`.
const ERR_SHOULD_NOT_HAVE_BEEN_CALLED: &[u8] =
    &[0xbf, 0x10, 0x00, 0x00, 0x00, 0x31, 0xf6, 0xba, 0x42, 0x00, 0x00, 0x00];
/// How far into `SSL_write` its quic check may sit (error-state reset calls come first).
const WRITE_CHECK_WINDOW: usize = 0x60;
/// BoringSSL's source file name, present in every build that keeps error reporting. Kept in
/// two pieces so that the agent's own executable does not carry the marker it looks for.
const MARKER: [&[u8]; 2] = [b"ssl_lib", b".cc"];

/// Where the two functions start, as offsets into the scanned `.text` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub ssl_read: usize,
    pub ssl_write: usize,
}

/// Why the signatures did not identify the functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    NoRead,
    /// The `SSL_read` signature matched more than once: ambiguous, nothing attached.
    ManyReads(usize),
    NoWrite,
    ManyWrites(usize),
}

impl Miss {
    pub fn as_str(&self) -> &'static str {
        match self {
            Miss::NoRead => "SSL_read signature not found",
            Miss::ManyReads(_) => "SSL_read signature matched more than once",
            Miss::NoWrite => "no SSL_write signature sharing SSL_read's source file",
            Miss::ManyWrites(_) => "SSL_write signature matched more than once",
        }
    }
}

/// The file-name address an `ERR_put_error(16, 0, 0x42, file, line)` call at `at` passes:
/// `mov ecx,imm32` (non-PIE) or `lea rcx,[rip+rel32]` (PIE), then the fixed arguments.
/// `vaddr` is the virtual address of `text[0]`.
fn error_call_file(text: &[u8], at: usize, vaddr: u64) -> Option<u64> {
    let rest = text.get(at..)?;
    let (file, len) = match rest {
        [0xb9, a, b, c, d, ..] => (u32::from_le_bytes([*a, *b, *c, *d]) as u64, 5),
        [0x48, 0x8d, 0x0d, a, b, c, d, ..] => {
            let rel = i32::from_le_bytes([*a, *b, *c, *d]) as i64;
            ((vaddr as i64 + at as i64 + 7 + rel) as u64, 7)
        }
        _ => return None,
    };
    rest.get(len..)?.starts_with(ERR_SHOULD_NOT_HAVE_BEEN_CALLED).then_some(file)
}

/// Finds `SSL_read` and `SSL_write` in `.text` bytes whose first byte is at `vaddr`.
pub fn locate(text: &[u8], vaddr: u64) -> Result<Found, Miss> {
    // SSL_read: prologue, a one-byte `je` displacement, then the error call.
    let reads: Vec<(usize, u64)> = memmem::find_iter(text, READ_PROLOGUE)
        .filter_map(|at| error_call_file(text, at + READ_PROLOGUE.len() + 1, vaddr).map(|file| (at, file)))
        .collect();
    let (ssl_read, file) = match reads.as_slice() {
        [] => return Err(Miss::NoRead),
        [one] => *one,
        many => return Err(Miss::ManyReads(many.len())),
    };
    let writes: Vec<usize> = memmem::find_iter(text, WRITE_PROLOGUE)
        .filter(|&at| {
            let body = &text[at..text.len().min(at + WRITE_PROLOGUE.len() + WRITE_CHECK_WINDOW)];
            memmem::find(body, WRITE_QUIC_CHECK).is_some_and(|check| {
                // `je rel8` after the check, then the error call.
                let call = at + check + WRITE_QUIC_CHECK.len() + 2;
                error_call_file(text, call, vaddr) == Some(file)
            })
        })
        .collect();
    match writes.as_slice() {
        [] => Err(Miss::NoWrite),
        [ssl_write] => Ok(Found { ssl_read, ssl_write: *ssl_write }),
        many => Err(Miss::ManyWrites(many.len())),
    }
}

/// Whether the executable carries BoringSSL at all (cheap test before the `.text` scan): the
/// marker is a string, so only constant data is searched.
pub fn has_marker(exe: &Executable) -> bool {
    let finder = memmem::Finder::new(&MARKER.concat()).into_owned();
    super::unprobed::data_regions(exe).iter().any(|r| finder.find(r).is_some())
}

pub fn attach(capture: &mut Capture, exe: &Executable) -> Result<Option<ExeProbes>, CaptureError> {
    if !has_marker(exe) {
        return Ok(None);
    }
    // With its symbols, static_openssl probes it by name: attaching twice would ship twice.
    if !symbols::file_offsets(exe, &["SSL_read", "SSL_write"]).is_empty() {
        return Ok(None);
    }
    let Some(elf) = exe.elf() else { return Ok(None) };
    if elf.architecture() != object::Architecture::X86_64 {
        tracing::info!(exe = %exe.path.display(), "BoringSSL without symbols on a non-x86-64 executable: not probed");
        return Ok(None);
    }
    let Some(text) = elf.section_by_name(".text") else { return Ok(None) };
    let Some((text_offset, text_size)) = text.file_range() else { return Ok(None) };
    let Some(bytes) = exe.bytes().get(text_offset as usize..(text_offset + text_size) as usize) else {
        return Ok(None);
    };
    let found = match locate(bytes, text.address()) {
        Ok(found) => found,
        Err(miss) => {
            tracing::warn!(exe = %exe.path.display(), reason = miss.as_str(), "BoringSSL without symbols: functions not identified, not probed");
            return Ok(None);
        }
    };
    let read = text_offset + found.ssl_read as u64;
    let write = text_offset + found.ssl_write as u64;
    let path = exe.probe_path();
    // Entry programs read the cookie as the library id; the return programs take it from the
    // entry's saved arguments.
    let table = [
        (names::PROG_SSL_WRITE_ENTER, write),
        (names::PROG_SSL_RET, write),
        (names::PROG_SSL_READ_ENTER, read),
        (names::PROG_SSL_RET, read),
    ];
    for (program, offset) in table {
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie: Some(library::BORINGSSL as u64),
        };
        capture.attach_at(program, point, &path)?;
    }
    tracing::info!(exe = %exe.path.display(), ssl_read = format_args!("{read:#x}"), ssl_write = format_args!("{write:#x}"), "BoringSSL located by signature");
    Ok(Some(ExeProbes {
        library: TlsLibrary::BoringSsl,
        probes: table.len(),
        missing_optional: vec!["SSL_shutdown", "SSL_free"],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of `SSL_read` and `SSL_write` in Bun 1.4.5 (linux-x64, non-PIE; the
    /// error-file string at 0x29e59d).
    const BUN_READ: &str =
        "554889e54157415653504883bf9800000000742eb99de52900bf1000000031f6ba4200000041b8a3030000e8305ecfff";
    const BUN_WRITE: &str = "554889e54157415641554154534883ec184189d74989f64889fb488b4730c780c400000000000000e8c34ac7ffe88e092404c700000000004883bb98000000007430b99de52900bf1000000031f6ba4200000041b8b9030000e8d246c7ffb8ff";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// `.text` made of filler (int3) with the given functions at the given offsets.
    fn text(parts: &[(usize, Vec<u8>)]) -> Vec<u8> {
        let mut t = vec![0xcc; 0x4000];
        for (at, code) in parts {
            t[*at..*at + code.len()].copy_from_slice(code);
        }
        t
    }

    #[test]
    fn finds_read_and_write_far_apart() {
        let t = text(&[(0x100, hex(BUN_READ)), (0x3000, hex(BUN_WRITE))]);
        assert_eq!(locate(&t, 0x1000), Ok(Found { ssl_read: 0x100, ssl_write: 0x3000 }));
    }

    #[test]
    fn read_must_match_exactly_once() {
        let t = text(&[(0x100, hex(BUN_READ)), (0x800, hex(BUN_READ)), (0x3000, hex(BUN_WRITE))]);
        assert_eq!(locate(&t, 0x1000), Err(Miss::ManyReads(2)));
        assert_eq!(locate(&text(&[(0x3000, hex(BUN_WRITE))]), 0), Err(Miss::NoRead));
    }

    #[test]
    fn write_must_share_reads_source_file() {
        let mut other = hex(BUN_WRITE);
        // Same prologue, but its error names another file (0x29e5a0).
        let at = memmem::find(&other, &[0xb9, 0x9d, 0xe5, 0x29, 0x00]).unwrap();
        other[at + 1] = 0xa0;
        let t = text(&[(0x100, hex(BUN_READ)), (0x2000, other.clone())]);
        assert_eq!(locate(&t, 0x1000), Err(Miss::NoWrite));
        let t = text(&[(0x100, hex(BUN_READ)), (0x2000, other), (0x3000, hex(BUN_WRITE))]);
        assert_eq!(locate(&t, 0x1000), Ok(Found { ssl_read: 0x100, ssl_write: 0x3000 }));
        let t = text(&[(0x100, hex(BUN_READ)), (0x2000, hex(BUN_WRITE)), (0x3000, hex(BUN_WRITE))]);
        assert_eq!(locate(&t, 0x1000), Err(Miss::ManyWrites(2)));
    }

    #[test]
    fn a_prologue_without_the_error_call_is_not_ssl_read() {
        let mut read = hex(BUN_READ);
        read[READ_PROLOGUE.len() + 1 + 5] = 0xbe; // mov esi instead of mov edi,16
        let t = text(&[(0x100, read), (0x3000, hex(BUN_WRITE))]);
        assert_eq!(locate(&t, 0x1000), Err(Miss::NoRead));
    }

    #[test]
    fn position_independent_error_call() {
        // `lea rcx,[rip+rel32]` instead of `mov ecx,imm32`: both calls must resolve to the same
        // address, although their rel32 differ.
        let pie = |code: &str, at: usize, vaddr: u64, file: u64| {
            let mut c = hex(code);
            let i = memmem::find(&c, &[0xb9, 0x9d, 0xe5, 0x29, 0x00]).unwrap();
            let rel = (file as i64 - (vaddr as i64 + (at + i) as i64 + 7)) as i32;
            let mut lea = vec![0x48, 0x8d, 0x0d];
            lea.extend_from_slice(&rel.to_le_bytes());
            c.splice(i..i + 5, lea);
            c
        };
        let vaddr = 0x10_0000;
        let t = text(&[(0x100, pie(BUN_READ, 0x100, vaddr, 0x5000)), (0x3000, pie(BUN_WRITE, 0x3000, vaddr, 0x5000))]);
        assert_eq!(locate(&t, vaddr), Ok(Found { ssl_read: 0x100, ssl_write: 0x3000 }));
    }

    #[test]
    fn truncated_text_is_a_miss_not_a_panic() {
        let read = hex(BUN_READ);
        for cut in 0..read.len() {
            let _ = locate(&read[..cut], 0);
        }
        let t = hex(BUN_WRITE);
        assert_eq!(locate(&t[..40], 0), Err(Miss::NoRead));
    }
}
