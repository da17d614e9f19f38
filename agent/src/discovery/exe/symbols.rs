//! Symbols of an executable's own tables (`.dynsym`, `.symtab`), translated to the file
//! offsets uprobes are attached at. One pass over the tables for all wanted names: `node`
//! has ~100 000 symbols, and resolving each probe's symbol separately (what attaching by name
//! does) re-parses the whole image every time, which takes longer than a short-lived
//! process lives.
use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::Executable;

/// File offset of each name in `names` that the executable defines as a function.
pub fn file_offsets<'n>(exe: &Executable, names: &[&'n str]) -> HashMap<&'n str, u64> {
    let mut found = HashMap::new();
    let Some(elf) = exe.elf() else { return found };
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        // Bytes, not `name()`: UTF-8 validation of every name costs more than the whole scan.
        let Ok(name) = sym.name_bytes() else { continue };
        let Some(&wanted) = names.iter().find(|n| n.as_bytes() == name) else { continue };
        if found.contains_key(wanted) || !sym.is_definition() || sym.kind() != SymbolKind::Text {
            continue;
        }
        if let Some(offset) = file_offset(&elf, sym.address(), sym.section_index()) {
            found.insert(wanted, offset);
        }
        if found.len() == names.len() {
            break;
        }
    }
    found
}

/// `address` (a virtual address in section `index`) as an offset in the file.
pub fn file_offset(elf: &object::File<'_>, address: u64, index: Option<object::SectionIndex>) -> Option<u64> {
    let section = elf.section_by_index(index?).ok()?;
    let (start, size) = section.file_range()?;
    let rel = address.checked_sub(section.address())?;
    (rel < size).then_some(start + rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary itself is an ELF executable with a symbol table: `main` is in it.
    #[test]
    fn finds_offsets_of_own_functions() {
        let exe = Executable::open(&std::env::current_exe().unwrap()).unwrap();
        let found = file_offsets(&exe, &["main", "no_such_symbol_here"]);
        let main = found.get("main").copied().expect("main resolved");
        assert!(main > 0 && (main as usize) < exe.bytes().len());
        assert!(!found.contains_key("no_such_symbol_here"));
    }
}
