//! Go programs: `crypto/tls.(*Conn).Write`/`Read` get an entry probe and a probe on every
//! `RET` (see agent-ebpf/src/tls_go.rs for why never a uretprobe), `(*Conn).Close` ends the
//! session. Functions come from `.symtab`, or from Go's own function table when the binary was
//! stripped; probes are placed by file offset, which works the same for PIE and non-PIE.
mod buildinfo;
mod pclntab;
mod rets;

use aya::programs::uprobe::UProbeAttachLocation;
use object::{Object, ObjectSegment, ObjectSymbol};
use thiserror::Error;

use super::{ExeProbes, Executable};
use crate::capture::{Capture, CaptureError, TlsLibrary};
use pclntab::{Func, Pclntab};

/// eBPF program names (functions in agent-ebpf/src/tls_go.rs).
pub const PROG_WRITE_ENTER: &str = "go_tls_write_enter";
pub const PROG_READ_ENTER: &str = "go_tls_read_enter";
pub const PROG_RET: &str = "go_tls_ret";
pub const PROG_CLOSE: &str = "go_tls_close";

const WRITE: &str = "crypto/tls.(*Conn).Write";
const READ: &str = "crypto/tls.(*Conn).Read";
const CLOSE: &str = "crypto/tls.(*Conn).Close";
/// The register ABI the probes read arguments from arrived on x86-64 in Go 1.17.
const MIN_MINOR: u32 = 17;

/// Why a Go program that uses `crypto/tls` cannot be probed (logged, counted as a failure).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GoError {
    #[error("built with Go 1.{0}, before the register ABI (1.17)")]
    TooOld(u32),
    #[error("not an x86-64 executable")]
    Arch,
    #[error("Go function table: {0}")]
    Pclntab(#[from] pclntab::PclntabError),
    #[error("{0} is outside the file's loadable segments")]
    NotInFile(&'static str),
    #[error("{0} has no RET instruction")]
    NoReturn(&'static str),
}

/// Where one function's probes go, as file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub entry: u64,
    pub rets: Vec<u64>,
}

/// Everything to attach in one Go executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoProbes {
    pub write: Site,
    pub read: Site,
    pub close: Option<u64>,
    /// Where the functions were found: `symtab` or `pclntab`.
    pub source: &'static str,
}

/// True for Go executables (they all carry build information and a function table). Without
/// section headers, by the build information's magic in the loaded data.
pub fn is_go(elf: &object::File<'_>) -> bool {
    if elf.sections().next().is_none() {
        let finder = memchr::memmem::Finder::new(b"\xff Go buildinf:");
        return elf.segments().filter_map(|seg| seg.data().ok()).any(|data| finder.find(data).is_some());
    }
    [".go.buildinfo", ".gopclntab", ".data.rel.ro.gopclntab", ".note.go.buildid"]
        .iter()
        .any(|name| elf.section_by_name(name).is_some())
}

/// Plans the probes of a Go executable: `Ok(None)` for non-Go files and Go programs without
/// `crypto/tls`.
pub fn plan(elf: &object::File<'_>) -> Result<Option<GoProbes>, GoError> {
    if !is_go(elf) {
        return Ok(None);
    }
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(GoError::Arch);
    }
    if let Some((1, minor)) = buildinfo::version(elf) {
        if minor < MIN_MINOR {
            return Err(GoError::TooOld(minor));
        }
    }
    let (found, source) = match from_symtab(elf) {
        Some(found) => (found, "symtab"),
        None => (Pclntab::locate(elf)?.find(&[WRITE, READ, CLOSE]), "pclntab"),
    };
    let (Some(write), Some(read)) = (found[0], found[1]) else {
        return Ok(None);
    };
    Ok(Some(GoProbes {
        write: site(elf, WRITE, write)?,
        read: site(elf, READ, read)?,
        close: found[2].and_then(|f| file_offset(elf, f.entry)),
        source,
    }))
}

/// The three functions from `.symtab`, if it has at least `Write` and `Read`.
fn from_symtab(elf: &object::File<'_>) -> Option<Vec<Option<Func>>> {
    let mut found = vec![None; 3];
    for symbol in elf.symbols() {
        let Ok(name) = symbol.name() else { continue };
        if let Some(k) = [WRITE, READ, CLOSE].iter().position(|n| *n == name) {
            found[k].get_or_insert(Func { entry: symbol.address(), size: symbol.size() });
        }
    }
    (found[0].is_some_and(|f| f.size > 0) && found[1].is_some_and(|f| f.size > 0)).then_some(found)
}

fn site(elf: &object::File<'_>, name: &'static str, func: Func) -> Result<Site, GoError> {
    let entry = file_offset(elf, func.entry).ok_or(GoError::NotInFile(name))?;
    let code = code_at(elf, func).ok_or(GoError::NotInFile(name))?;
    let rets: Vec<u64> = rets::ret_offsets(code, func.entry).into_iter().map(|r| entry + r).collect();
    if rets.is_empty() {
        return Err(GoError::NoReturn(name));
    }
    Ok(Site { entry, rets })
}

/// The file offset of virtual address `addr`, through the loadable segment holding it.
fn file_offset(elf: &object::File<'_>, addr: u64) -> Option<u64> {
    elf.segments().find_map(|seg| {
        let (offset, size) = seg.file_range();
        let rel = addr.checked_sub(seg.address())?;
        (rel < size).then_some(offset + rel)
    })
}

/// The machine code of `func`.
fn code_at<'d>(elf: &object::File<'d>, func: Func) -> Option<&'d [u8]> {
    elf.segments().find_map(|seg| {
        let data = seg.data().ok()?;
        let start = usize::try_from(func.entry.checked_sub(seg.address())?).ok()?;
        data.get(start..start.checked_add(usize::try_from(func.size).ok()?)?)
    })
}

pub fn attach(capture: &mut Capture, exe: &Executable) -> Result<Option<ExeProbes>, CaptureError> {
    let started = std::time::Instant::now();
    let Some(elf) = exe.elf() else { return Ok(None) };
    let probes = match plan(&elf) {
        Ok(Some(probes)) => probes,
        Ok(None) => return Ok(None),
        Err(e) => {
            // A Go TLS client we cannot meter: say so (the coverage matrix lists these).
            tracing::warn!(exe = %exe.path.display(), reason = %e, "Go executable not probed");
            return Ok(None);
        }
    };
    let planned_us = started.elapsed().as_micros() as u64;
    let mut attached = 0;
    let path = exe.probe_path();
    let mut at = |capture: &mut Capture, program: &'static str, offset: u64| {
        attached += 1;
        capture.attach_at(program, UProbeAttachLocation::AbsoluteOffset(offset), &path)
    };
    for (site, enter) in [(&probes.write, PROG_WRITE_ENTER), (&probes.read, PROG_READ_ENTER)] {
        at(capture, enter, site.entry)?;
        for &ret in &site.rets {
            at(capture, PROG_RET, ret)?;
        }
    }
    let mut missing_optional = Vec::new();
    match probes.close {
        Some(offset) => at(capture, PROG_CLOSE, offset)?,
        None => missing_optional.push(CLOSE),
    }
    // Timings tell how long a new Go program runs unprobed after its exec.
    tracing::debug!(
        exe = %exe.path.display(),
        source = probes.source,
        planned_us,
        attached_us = started.elapsed().as_micros() as u64 - planned_us,
        "Go crypto/tls probed"
    );
    Ok(Some(ExeProbes { library: TlsLibrary::Go, probes: attached, missing_optional }))
}

#[cfg(test)]
#[path = "go/go_tests.rs"]
mod tests;
