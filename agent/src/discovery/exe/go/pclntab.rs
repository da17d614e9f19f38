//! Go's function table (`pclntab`), which every Go binary keeps for the runtime (stack traces,
//! garbage collection) even when `-ldflags="-s -w"` strips the ELF symbol table: function
//! names and entry addresses come from here when `.symtab` is gone.
//!
//! Layouts (all little-endian, pointer size 8 on x86-64), from the Go runtime's `pcHeader`:
//! - Go 1.18/1.19 (magic `0xfffffff0`) and 1.20+ (`0xfffffff1`): magic u32, two zero bytes,
//!   minLC u8, ptrSize u8, then words nfunc, nfiles, textStart, funcnameOffset, cuOffset,
//!   filetabOffset, pctabOffset, pclnOffset. At pclnOffset, nfunc+1 pairs {entryOff u32,
//!   funcOff u32}; entry = textStart + entryOff. The `_func` at pclnOffset+funcOff starts with
//!   {entryOff u32, nameOff i32}; the name is NUL-terminated at funcnameOffset+nameOff.
//! - Go 1.16/1.17 (`0xfffffffa`): no textStart word; the pairs are {entry uintptr, funcOff
//!   uintptr} with absolute entries, and `_func` starts with {entry uintptr, nameOff i32}.
//!
//! Every read is bounds-checked: a corrupt or hostile table yields an error or no match.
use object::{Object, ObjectSection, ObjectSegment};
use thiserror::Error;

pub const MAGIC_GO116: u32 = 0xffff_fffa;
pub const MAGIC_GO118: u32 = 0xffff_fff0;
pub const MAGIC_GO120: u32 = 0xffff_fff1;

/// Sections that hold the table: its own section (non-PIE), the PIE linker's name for it, and
/// the section it is merged into when a PIE is linked or stripped by other tools.
const DEDICATED_SECTIONS: &[&str] = &[".gopclntab", ".data.rel.ro.gopclntab"];
const MERGED_SECTIONS: &[&str] = &[".data.rel.ro"];
/// More functions than this is not a table (the Kubernetes binaries have ~100k).
const MAX_FUNCS: u64 = 10_000_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PclntabError {
    #[error("no Go function table magic")]
    BadMagic,
    #[error("Go function table header is not for x86-64 (minLC {min_lc}, pointer size {ptr_size})")]
    Arch { min_lc: u8, ptr_size: u8 },
    #[error("Go function table is truncated or its offsets point outside it")]
    Bounds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Go116,
    Go118,
}

/// A function's entry virtual address and size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Func {
    pub entry: u64,
    pub size: u64,
}

pub struct Pclntab<'a> {
    data: &'a [u8],
    layout: Layout,
    nfunc: usize,
    text_start: u64,
    funcnames: usize,
    functab: usize,
}

impl<'a> Pclntab<'a> {
    /// Parses a table starting at `data[0]`; `data` may run past its end.
    pub fn parse(data: &'a [u8]) -> Result<Pclntab<'a>, PclntabError> {
        let magic = u32_at(data, 0).ok_or(PclntabError::BadMagic)?;
        let layout = match magic {
            MAGIC_GO116 => Layout::Go116,
            MAGIC_GO118 | MAGIC_GO120 => Layout::Go118,
            _ => return Err(PclntabError::BadMagic),
        };
        let head = data.get(4..8).ok_or(PclntabError::Bounds)?;
        if head[0] != 0 || head[1] != 0 {
            return Err(PclntabError::BadMagic);
        }
        let (min_lc, ptr_size) = (head[2], head[3]);
        if min_lc != 1 || ptr_size != 8 {
            return Err(PclntabError::Arch { min_lc, ptr_size });
        }
        let word = |i: usize| u64_at(data, 8 + 8 * i).ok_or(PclntabError::Bounds);
        let nfunc = word(0)?;
        let (text_start, funcnames, functab) = match layout {
            Layout::Go118 => (word(2)?, word(3)?, word(7)?),
            Layout::Go116 => (0, word(2)?, word(6)?),
        };
        if nfunc == 0 || nfunc > MAX_FUNCS {
            return Err(PclntabError::Bounds);
        }
        let table = Pclntab {
            data,
            layout,
            nfunc: nfunc as usize,
            text_start,
            funcnames: usize::try_from(funcnames).map_err(|_| PclntabError::Bounds)?,
            functab: usize::try_from(functab).map_err(|_| PclntabError::Bounds)?,
        };
        // The whole functab (nfunc+1 pairs) must be inside the data.
        let end = table.functab.checked_add((table.nfunc + 1) * table.pair_len()).ok_or(PclntabError::Bounds)?;
        if table.funcnames >= data.len() || end > data.len() {
            return Err(PclntabError::Bounds);
        }
        Ok(table)
    }

    /// Finds the table in an ELF image: in its own section, else by magic inside the section
    /// a PIE link merged it into. A match found by scanning must also name its first function
    /// sensibly, so stray magic-like bytes in data are not taken for a table.
    pub fn locate(elf: &object::File<'a>) -> Result<Pclntab<'a>, PclntabError> {
        for name in DEDICATED_SECTIONS {
            if let Some(data) = elf.section_by_name(name).and_then(|s| s.data().ok()) {
                return Pclntab::parse(data);
            }
        }
        for name in MERGED_SECTIONS {
            let Some(data) = elf.section_by_name(name).and_then(|s| s.data().ok()) else { continue };
            if let Some(table) = scan(data) {
                return Ok(table);
            }
        }
        // No section headers at all (removed by sstrip-like tools): the loaded segments.
        if elf.sections().next().is_none() {
            if let Some(table) = elf.segments().filter_map(|seg| seg.data().ok()).find_map(scan) {
                return Ok(table);
            }
        }
        Err(PclntabError::BadMagic)
    }

    /// Number of functions (never zero: `parse` refuses empty tables).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nfunc
    }

    fn pair_len(&self) -> usize {
        match self.layout {
            Layout::Go118 => 8,
            Layout::Go116 => 16,
        }
    }

    /// Entry address of functab slot `i` (slot `nfunc` is the end of the last function) and
    /// the offset of its `_func`.
    fn slot(&self, i: usize) -> Option<(u64, usize)> {
        let at = self.functab + i * self.pair_len();
        match self.layout {
            Layout::Go118 => {
                let entry = self.text_start.checked_add(u32_at(self.data, at)? as u64)?;
                Some((entry, u32_at(self.data, at + 4)? as usize))
            }
            Layout::Go116 => Some((u64_at(self.data, at)?, usize::try_from(u64_at(self.data, at + 8)?).ok()?)),
        }
    }

    /// The NUL-terminated name of the function whose `_func` is at `funcoff`.
    fn name(&self, funcoff: usize) -> Option<&'a [u8]> {
        let name_field = match self.layout {
            Layout::Go118 => 4,
            Layout::Go116 => 8,
        };
        let at = self.functab.checked_add(funcoff)?.checked_add(name_field)?;
        let name_off = usize::try_from(i32_at(self.data, at)?).ok()?;
        let start = self.funcnames.checked_add(name_off)?;
        let rest = self.data.get(start..)?;
        let len = memchr::memchr(0, rest)?;
        Some(&rest[..len])
    }

    /// Function `i`'s name and extent.
    pub fn func(&self, i: usize) -> Option<(&'a [u8], Func)> {
        if i >= self.nfunc {
            return None;
        }
        let (entry, funcoff) = self.slot(i)?;
        let (next, _) = self.slot(i + 1)?;
        let size = next.checked_sub(entry)?;
        Some((self.name(funcoff)?, Func { entry, size }))
    }

    /// Looks up several functions in one pass; `None` where a name is absent.
    pub fn find(&self, names: &[&str]) -> Vec<Option<Func>> {
        let mut found = vec![None; names.len()];
        for i in 0..self.nfunc {
            let Some((name, func)) = self.func(i) else { continue };
            if let Some(k) = names.iter().position(|n| n.as_bytes() == name) {
                found[k].get_or_insert(func);
            }
        }
        found
    }
}

/// Tries every 8-byte-aligned position of `data` holding a table magic (the linker aligns the
/// table to at least 8); takes the first whose first function has a printable name.
fn scan(data: &[u8]) -> Option<Pclntab<'_>> {
    (0..data.len().saturating_sub(8)).step_by(8).find_map(|at| {
        let magic = u32_at(data, at)?;
        if !matches!(magic, MAGIC_GO116 | MAGIC_GO118 | MAGIC_GO120) {
            return None;
        }
        let table = Pclntab::parse(&data[at..]).ok()?;
        let (name, func) = table.func(0)?;
        let plausible = !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic()) && func.size > 0;
        plausible.then_some(table)
    })
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn i32_at(data: &[u8], at: usize) -> Option<i32> {
    u32_at(data, at).map(|v| v as i32)
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

#[cfg(test)]
#[path = "pclntab_tests.rs"]
mod tests;
