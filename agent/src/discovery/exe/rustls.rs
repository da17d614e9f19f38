//! rustls linked into an executable that keeps its symbol table (`.symtab`): Rust programs
//! built in release mode with the default `strip = "debuginfo"`.
//!
//! The plaintext passes through `<rustls::conn::connection::Writer as std::io::Write>::write`
//! and `<rustls::conn::connection::Reader as std::io::Read>::read` (0.22+; `rustls::conn::Writer`
//! / `Reader` before), whatever drives the connection (`StreamOwned`, tokio-rustls, ureq,
//! hyper-rustls). Symbols are found by demangled name, so legacy and v0 mangling and the
//! per-build hash do not matter. Both directions are keyed by the `ConnectionCommon` address
//! (see `tls_rustls.rs` in the eBPF crate): the Reader's offset into it comes from the code
//! (`rustls_offset`) and rides on the read probe as its attach cookie. A stripped executable
//! has no such names and is not probed (a limit listed in docs/coverage.md).
use std::collections::HashSet;

use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint};
use iced_x86::Register;
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, SectionKind, SymbolKind};
use tokentap_common::names;

use super::{
    rustls_offset::{consensus, offset_in_reader_fn, reader_offsets, CallTarget},
    ExeProbes, Executable,
};
use crate::capture::{Capture, CaptureError, TlsLibrary};

/// What in a rustls symbol name identifies each function (demangled, without hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RustlsFn {
    Write,
    Read,
    /// `Reader::into_first_chunk` (behind `BufRead::fill_buf`; tokio-rustls calls it).
    IntoFirstChunk,
    /// `<Reader as BufRead>::consume`.
    Consume,
    /// `ConnectionCommon<_>::reader`, a function of its own in debug builds only.
    ReaderFn,
    /// `core::ptr::drop_in_place::<rustls::conn::ConnectionCommon<_>>`.
    Drop,
    /// Any other function of the `rustls::conn` module: rustls is linked in.
    Other,
}

/// Classifies a demangled symbol name (`{:#}` form: no hash).
pub fn classify(demangled: &str) -> Option<RustlsFn> {
    // v0 mangling prints generic paths as `f::<T>`, legacy as `f<T>`.
    let name = demangled.replace("::<", "<");
    let within_conn = name.starts_with("<rustls::conn::");
    if within_conn && name.ends_with("Writer as std::io::Write>::write") {
        Some(RustlsFn::Write)
    } else if within_conn && name.ends_with("Reader as std::io::Read>::read") {
        Some(RustlsFn::Read)
    } else if within_conn && name.ends_with("Reader as std::io::BufRead>::consume") {
        Some(RustlsFn::Consume)
    } else if name.starts_with("rustls::conn::") && name.ends_with("Reader::into_first_chunk") {
        Some(RustlsFn::IntoFirstChunk)
    } else if name.starts_with("rustls::conn::ConnectionCommon<") && name.ends_with(">::reader") {
        Some(RustlsFn::ReaderFn)
    } else if name.starts_with("core::ptr::drop_in_place<rustls::conn::ConnectionCommon<") {
        Some(RustlsFn::Drop)
    } else if name.contains("rustls::conn::") {
        Some(RustlsFn::Other)
    } else {
        None
    }
}

/// One function found in the executable.
#[derive(Debug, Clone, Copy)]
struct Found {
    kind: RustlsFn,
    address: u64,
    size: u64,
    file_offset: u64,
}

pub fn attach(capture: &mut Capture, exe: &Executable) -> Result<Option<ExeProbes>, CaptureError> {
    let Some(elf) = exe.elf() else { return Ok(None) };
    if elf.architecture() != object::Architecture::X86_64 {
        return Ok(None);
    }
    let found = find_functions(&elf);
    let first = |kind: RustlsFn| found.iter().find(|f| f.kind == kind).copied();
    let Some(write) = first(RustlsFn::Write) else {
        if !found.is_empty() {
            // E.g. inlined by link-time optimisation: say so rather than miss it silently.
            tracing::warn!(exe = %exe.path.display(), "rustls found without Writer::write: not probed");
        }
        return Ok(None);
    };
    // Plaintext comes out through `Read::read` (blocking streams) or through a chunk and its
    // consumption (`BufRead`, tokio-rustls); a program may use both.
    let read = first(RustlsFn::Read);
    let buf_read = first(RustlsFn::IntoFirstChunk).zip(first(RustlsFn::Consume));
    if read.is_none() && buf_read.is_none() {
        tracing::warn!(exe = %exe.path.display(), "rustls found without a known plaintext read function: not probed");
        return Ok(None);
    }
    let mut targets: Vec<(u64, Register)> = Vec::new();
    targets.extend(read.map(|r| (r.address, Register::RDI)));
    if let Some((chunk, consume)) = buf_read {
        targets.push((chunk.address, Register::RSI));
        targets.push((consume.address, Register::RDI));
    }
    let reader_fns: Vec<(u64, u64)> =
        found.iter().filter(|f| f.kind == RustlsFn::ReaderFn).map(|f| (f.address, f.size)).collect();
    let Some(offset) = reader_offset(&elf, exe.bytes(), &targets, &reader_fns) else {
        // Without the offset the two directions cannot be paired: shipping them apart would
        // only produce unparseable halves.
        tracing::warn!(exe = %exe.path.display(), "rustls found, but not how its Reader points into the connection: not probed");
        return Ok(None);
    };
    tracing::debug!(exe = %exe.path.display(), offset, "rustls reader offset");
    let at = |o: u64| UProbeAttachLocation::AbsoluteOffset(o);
    let with_offset = |o: u64| UProbeAttachPoint { location: at(o), cookie: Some(offset) };
    // The agent's own descriptor of the file: `/proc/PID/exe` of a short-lived client can
    // vanish while the probes are attached.
    let path = exe.probe_path();
    capture.attach_at(names::PROG_RUSTLS_WRITE_ENTER, at(write.file_offset), &path)?;
    capture.attach_at(names::PROG_RUSTLS_RET, at(write.file_offset), &path)?;
    let mut probes = 2;
    if let Some(read) = read {
        capture.attach_at(names::PROG_RUSTLS_READ_ENTER, with_offset(read.file_offset), &path)?;
        capture.attach_at(names::PROG_RUSTLS_RET, at(read.file_offset), &path)?;
        probes += 2;
    }
    if let Some((chunk, consume)) = buf_read {
        capture.attach_at(names::PROG_RUSTLS_CHUNK_ENTER, with_offset(chunk.file_offset), &path)?;
        capture.attach_at(names::PROG_RUSTLS_CHUNK_RET, at(chunk.file_offset), &path)?;
        capture.attach_at(names::PROG_RUSTLS_CONSUME_ENTER, with_offset(consume.file_offset), &path)?;
        probes += 3;
    }
    let mut missing_optional = Vec::new();
    let drops: Vec<&Found> = found.iter().filter(|f| f.kind == RustlsFn::Drop).collect();
    if drops.is_empty() {
        missing_optional.push("drop_in_place<rustls::conn::ConnectionCommon<_>>");
    }
    for d in drops {
        // Optional: without it a connection ends at idle timeout or process exit.
        match capture.attach_at(names::PROG_RUSTLS_CLOSE, at(d.file_offset), &path) {
            Ok(()) => probes += 1,
            Err(e) => tracing::debug!(error = %e, "rustls drop probe not attached"),
        }
    }
    Ok(Some(ExeProbes { library: TlsLibrary::Rustls, probes, missing_optional }))
}

/// rustls functions among the symbols, with their file offsets.
fn find_functions(elf: &object::File<'_>) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    for sym in elf.symbols().chain(elf.dynamic_symbols()) {
        if sym.kind() != SymbolKind::Text || !sym.is_definition() {
            continue;
        }
        let Ok(raw) = sym.name() else { continue };
        // Cheap filter first: the crate name is spelled out in both manglings.
        if !raw.contains("rustls") {
            continue;
        }
        let Ok(demangled) = rustc_demangle::try_demangle(raw) else { continue };
        let Some(kind) = classify(&format!("{demangled:#}")) else { continue };
        let Some(file_offset) = file_offset(elf, &sym) else { continue };
        if !out.iter().any(|f| f.address == sym.address()) {
            out.push(Found { kind, address: sym.address(), size: sym.size(), file_offset });
        }
    }
    out
}

fn file_offset(elf: &object::File<'_>, sym: &object::Symbol<'_, '_>) -> Option<u64> {
    let section = elf.section_by_index(sym.section_index()?).ok()?;
    let (start, _) = section.file_range()?;
    Some(sym.address().checked_sub(section.address())? + start)
}

/// The offset of `received_plaintext` in `ConnectionCommon`, from every call of the functions
/// that take a `&Reader` (`targets`: address and the register carrying the `&Reader`), and
/// from the `reader()` functions themselves where they were not inlined (address, size).
fn reader_offset(
    elf: &object::File<'_>,
    bytes: &[u8],
    targets: &[(u64, Register)],
    reader_fns: &[(u64, u64)],
) -> Option<u64> {
    let targets: Vec<CallTarget> = targets
        .iter()
        .map(|&(function, reader_reg)| CallTarget { function, slots: got_slots(elf, function), reader_reg })
        .collect();
    let mut functions: Vec<(u64, u64)> = elf
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .map(|s| (s.address(), s.size()))
        .collect();
    functions.sort_unstable();
    functions.dedup();
    let mut callers: HashSet<(u64, u64)> = HashSet::new();
    for section in elf.sections().filter(|s| s.kind() == SectionKind::Text) {
        let Ok(code) = section.data() else { continue };
        for site in targets.iter().flat_map(|t| call_sites(code, section.address(), t)) {
            // The function holding the call: the last one starting at or before it.
            let i = functions.partition_point(|(a, _)| *a <= site);
            if let Some(&(start, size)) = i.checked_sub(1).and_then(|i| functions.get(i)) {
                if site < start + size {
                    callers.insert((start, size));
                }
            }
        }
    }
    let mut offsets: Vec<Option<u64>> = reader_fns
        .iter()
        .map(|&(start, size)| code_at(elf, bytes, start, size).and_then(|code| offset_in_reader_fn(code, start)))
        .collect();
    for (start, size) in callers {
        let Some(code) = code_at(elf, bytes, start, size) else { continue };
        for target in &targets {
            offsets.extend(reader_offsets(code, start, target));
        }
    }
    consensus(&offsets)
}

/// Addresses of `call rel32` / `call [rip+disp32]` instructions that may reach `target`,
/// found by their encodings (confirmed later by decoding the whole function).
fn call_sites(code: &[u8], address: u64, target: &CallTarget) -> Vec<u64> {
    let mut out = Vec::new();
    let end = code.len().saturating_sub(5);
    // memchr jumps between candidate opcodes: a byte loop is slow in a debug-built agent.
    for i in memchr::memchr2_iter(0xe8, 0xff, &code[..end]) {
        let ip = address + i as u64;
        let rel = |at: usize| i32::from_le_bytes([code[at], code[at + 1], code[at + 2], code[at + 3]]) as i64;
        let direct = code[i] == 0xe8 && (ip as i64 + 5 + rel(i + 1)) as u64 == target.function;
        // `i` stays 6 bytes clear of the end, so the 4-byte displacement is in bounds.
        let through_got =
            code[i] == 0xff && code[i + 1] == 0x15 && target.slots.contains(&((ip as i64 + 6 + rel(i + 2)) as u64));
        if direct || through_got {
            out.push(ip);
        }
    }
    out
}

/// GOT slots that hold `function` at run time: relative relocations (PIE) or the link-time
/// value itself (non-PIE).
fn got_slots(elf: &object::File<'_>, function: u64) -> Vec<u64> {
    const R_X86_64_64: u32 = 1;
    const R_X86_64_GLOB_DAT: u32 = 6;
    const R_X86_64_RELATIVE: u32 = 8;
    let mut slots = Vec::new();
    for (slot, reloc) in elf.dynamic_relocations().into_iter().flatten() {
        if let RelocationFlags::Elf { r_type } = reloc.flags() {
            let holds = match r_type {
                R_X86_64_RELATIVE => reloc.addend() as u64 == function,
                R_X86_64_64 | R_X86_64_GLOB_DAT => match reloc.target() {
                    object::RelocationTarget::Symbol(i) => {
                        elf.symbol_by_index(i).is_ok_and(|s| s.address() == function)
                    }
                    _ => false,
                },
                _ => false,
            };
            if holds {
                slots.push(slot);
            }
        }
    }
    for section in elf.sections().filter(|s| s.name().is_ok_and(|n| n.starts_with(".got"))) {
        let Ok(data) = section.data() else { continue };
        for (i, word) in data.chunks_exact(8).enumerate() {
            if u64::from_le_bytes(word.try_into().unwrap_or_default()) == function {
                slots.push(section.address() + 8 * i as u64);
            }
        }
    }
    slots
}

/// The bytes of the function at `address`.
fn code_at<'a>(elf: &object::File<'_>, bytes: &'a [u8], address: u64, size: u64) -> Option<&'a [u8]> {
    let section = elf
        .sections()
        .find(|s| s.kind() == SectionKind::Text && s.address() <= address && address < s.address() + s.size())?;
    let (start, _) = section.file_range()?;
    let from = usize::try_from(address - section.address() + start).ok()?;
    let to = from.checked_add(usize::try_from(size).ok()?)?;
    bytes.get(from..to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_legacy_and_v0_names() {
        let legacy =
            "_ZN67_$LT$rustls..conn..connection..Writer$u20$as$u20$std..io..Write$GT$5write17hb33bfcb20d4ac3ebE";
        let d = format!("{:#}", rustc_demangle::demangle(legacy));
        assert_eq!(classify(&d), Some(RustlsFn::Write));
        let legacy = "_ZN66_$LT$rustls..conn..connection..Reader$u20$as$u20$std..io..Read$GT$4read17h0f4f2030d369ce69E";
        let d = format!("{:#}", rustc_demangle::demangle(legacy));
        assert_eq!(classify(&d), Some(RustlsFn::Read));
        // v0 mangling (`-C symbol-mangling-version=v0`), same build.
        let v0 = "_RNvXs5_NtNtCs4hSuorZousk_6rustls4conn10connectionNtB5_6WriterNtNtCsjrHSEGnQ3l9_3std2io5Write5write";
        assert_eq!(classify(&format!("{:#}", rustc_demangle::demangle(v0))), Some(RustlsFn::Write));
        let v0 = "_RNvXs2_NtNtCs4hSuorZousk_6rustls4conn10connectionNtB5_6ReaderNtNtCsjrHSEGnQ3l9_3std2io4Read4read";
        assert_eq!(classify(&format!("{:#}", rustc_demangle::demangle(v0))), Some(RustlsFn::Read));
        let v0 = "_RNvXs5_NtNtCs4hSuorZousk_6rustls4conn10connectionNtB5_6WriterNtNtCsjrHSEGnQ3l9_3std2io5Write5flush";
        assert_eq!(classify(&format!("{:#}", rustc_demangle::demangle(v0))), Some(RustlsFn::Other));
        assert_eq!(classify("<rustls::conn::Writer as std::io::Write>::write"), Some(RustlsFn::Write));
        assert_eq!(classify("<rustls::conn::Reader as std::io::Read>::read"), Some(RustlsFn::Read));
        assert_eq!(
            classify("<rustls::conn::connection::Writer as std::io::Write>::write_vectored"),
            Some(RustlsFn::Other)
        );
        assert_eq!(classify("rustls::conn::connection::Reader::into_first_chunk"), Some(RustlsFn::IntoFirstChunk));
        assert_eq!(
            classify("<rustls::conn::connection::Reader as std::io::BufRead>::consume"),
            Some(RustlsFn::Consume)
        );
        assert_eq!(classify("<rustls::conn::connection::Reader as std::io::BufRead>::fill_buf"), Some(RustlsFn::Other));
        assert_eq!(classify("rustls::conn::ConnectionCommon<Data>::reader"), Some(RustlsFn::ReaderFn));
        assert_eq!(classify("<rustls::conn::connection::Writer as std::io::Write>::flush"), Some(RustlsFn::Other));
        assert_eq!(classify("<rustls::stream::Stream<C,T> as std::io::Read>::read"), None);
        assert_eq!(classify("rustls::conn::ConnectionCommon<Data>::read_tls"), Some(RustlsFn::Other));
        assert_eq!(
            classify("core::ptr::drop_in_place::<rustls::conn::ConnectionCommon<rustls::client::client_conn::ClientConnectionData>>"),
            Some(RustlsFn::Drop)
        );
        assert_eq!(
            classify("core::ptr::drop_in_place<rustls::conn::ConnectionCommon<rustls::client::client_conn::ClientConnectionData>>"),
            Some(RustlsFn::Drop)
        );
        assert_eq!(classify("core::ptr::drop_in_place<rustls::client::ech::EchMode>"), None);
    }

    #[test]
    fn call_sites_by_encoding() {
        // call rel32 to 0x2000 at 0x1000; call [rip+0x10] (slot 0x1016) at 0x1005; noise.
        let mut code = vec![0xe8];
        code.extend_from_slice(&(0x2000i32 - 0x1005).to_le_bytes());
        code.extend_from_slice(&[0xff, 0x15, 0x10, 0, 0, 0, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90]);
        let target = CallTarget { function: 0x2000, slots: vec![0x1005 + 6 + 0x10], reader_reg: Register::RDI };
        assert_eq!(call_sites(&code, 0x1000, &target), vec![0x1000, 0x1005]);
        assert!(call_sites(&[0xe8, 1], 0x1000, &target).is_empty());
    }
}
