//! Byte fixtures for the three table layouts, built the way Go's linker lays them out, plus
//! malformed variants. The real-binary tests are in `go_tests.rs`.
use super::*;

/// Builds a table: header, name table, functab (entries relative to `text` for 1.18+),
/// `_func` records. `funcs` are (name, entry offset from `text`); `end` closes the last one.
fn build(magic: u32, text: u64, funcs: &[(&str, u64)], end: u64) -> Vec<u8> {
    let go118 = magic != MAGIC_GO116;
    let words = if go118 { 8 } else { 7 };
    let header_len = 8 + 8 * words;
    let mut names = Vec::new();
    let mut name_offs = Vec::new();
    for (name, _) in funcs {
        name_offs.push(names.len() as u32);
        names.extend_from_slice(name.as_bytes());
        names.push(0);
    }
    let funcnames = header_len;
    let functab = funcnames + names.len();
    let pair = if go118 { 8 } else { 16 };
    let func_len = if go118 { 8 } else { 16 };
    let first_func = (funcs.len() + 1) * pair;
    let mut tab = Vec::new();
    let mut records = Vec::new();
    for (i, (_, off)) in funcs.iter().enumerate() {
        let funcoff = (first_func + i * func_len) as u64;
        if go118 {
            tab.extend_from_slice(&(*off as u32).to_le_bytes());
            tab.extend_from_slice(&(funcoff as u32).to_le_bytes());
            records.extend_from_slice(&(*off as u32).to_le_bytes());
            records.extend_from_slice(&name_offs[i].to_le_bytes());
        } else {
            tab.extend_from_slice(&(text + off).to_le_bytes());
            tab.extend_from_slice(&funcoff.to_le_bytes());
            records.extend_from_slice(&(text + off).to_le_bytes());
            records.extend_from_slice(&name_offs[i].to_le_bytes());
            records.extend_from_slice(&[0; 4]);
        }
    }
    if go118 {
        tab.extend_from_slice(&(end as u32).to_le_bytes());
        tab.extend_from_slice(&0u32.to_le_bytes());
    } else {
        tab.extend_from_slice(&(text + end).to_le_bytes());
        tab.extend_from_slice(&0u64.to_le_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&[0, 0, 1, 8]);
    let mut header = vec![funcs.len() as u64, 1];
    if go118 {
        header.push(text);
    }
    // funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset.
    header.extend_from_slice(&[funcnames as u64, 0, 0, 0, functab as u64]);
    for w in header {
        out.extend_from_slice(&w.to_le_bytes());
    }
    assert_eq!(out.len(), header_len);
    out.extend_from_slice(&names);
    out.extend_from_slice(&tab);
    out.extend_from_slice(&records);
    out
}

const FUNCS: &[(&str, u64)] =
    &[("runtime.text", 0), ("crypto/tls.(*Conn).Write", 0x40), ("crypto/tls.(*Conn).Read", 0x100)];

#[test]
fn every_layout_yields_entries_and_sizes() {
    for magic in [MAGIC_GO116, MAGIC_GO118, MAGIC_GO120] {
        let bytes = build(magic, 0x40_1000, FUNCS, 0x180);
        let table = Pclntab::parse(&bytes).unwrap_or_else(|e| panic!("{magic:#x}: {e}"));
        assert_eq!(table.len(), 3);
        let found = table.find(&["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "absent"]);
        assert_eq!(found[0], Some(Func { entry: 0x40_1100, size: 0x80 }), "{magic:#x}");
        assert_eq!(found[1], Some(Func { entry: 0x40_1040, size: 0xc0 }), "{magic:#x}");
        assert_eq!(found[2], None);
    }
}

#[test]
fn scan_finds_a_table_inside_other_data() {
    let mut data = vec![0xffu8; 64];
    // Magic-looking bytes that are not a table must be passed over.
    data.extend_from_slice(&MAGIC_GO118.to_le_bytes());
    data.extend_from_slice(&[0, 0, 1, 8, 0, 0, 0, 0]);
    data.resize(128, 0);
    data.extend(build(MAGIC_GO120, 0x1000, FUNCS, 0x180));
    let table = scan(&data).expect("table found by magic");
    assert_eq!(table.find(&["crypto/tls.(*Conn).Write"])[0], Some(Func { entry: 0x1040, size: 0xc0 }));
}

#[test]
fn malformed_tables_are_errors_not_panics() {
    let good = build(MAGIC_GO118, 0x1000, FUNCS, 0x180);
    assert_eq!(Pclntab::parse(&[]).err(), Some(PclntabError::BadMagic));
    assert_eq!(Pclntab::parse(&good[..20]).err(), Some(PclntabError::Bounds));
    let mut arm32 = good.clone();
    arm32[7] = 4;
    assert_eq!(Pclntab::parse(&arm32).err(), Some(PclntabError::Arch { min_lc: 1, ptr_size: 4 }));
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(Pclntab::parse(&huge).err(), Some(PclntabError::Bounds));
    // Every truncation either fails to parse or finds nothing beyond the data: never a panic.
    for cut in 0..good.len() {
        if let Ok(table) = Pclntab::parse(&good[..cut]) {
            let _ = table.find(&["crypto/tls.(*Conn).Write"]);
        }
    }
    // Name offsets pointing far away are skipped.
    let mut bad_name = good.clone();
    let last = bad_name.len() - 4;
    bad_name[last..].copy_from_slice(&i32::MAX.to_le_bytes());
    let table = Pclntab::parse(&bad_name).expect("header still fine");
    assert_eq!(table.find(&["crypto/tls.(*Conn).Read"])[0], None);
}
