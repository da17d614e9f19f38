//! The Go version a binary was built with, from its build information blob
//! (`.go.buildinfo`, written by every Go toolchain since 1.13, kept by `-s -w`).
//!
//! Layout: 14-byte magic `"\xff Go buildinf:"`, pointer size, flags. With flag bit 2 (Go 1.18+)
//! the version follows at offset 32 as a varint-length-prefixed string; before, offset 16
//! holds the address of a Go string header {data pointer, length}.
use object::{Object, ObjectSection, ObjectSegment};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_INLINE_STRINGS: u8 = 2;

/// `go1.19.8` → `Some((1, 19))`; development builds (`devel …`) count as new.
pub fn version(elf: &object::File<'_>) -> Option<(u32, u32)> {
    let data = elf.section_by_name(".go.buildinfo")?.data().ok()?;
    parse_version(&version_string(elf, data)?)
}

fn version_string(elf: &object::File<'_>, data: &[u8]) -> Option<String> {
    if !data.starts_with(MAGIC) {
        return None;
    }
    let (ptr_size, flags) = (*data.get(14)? as usize, *data.get(15)?);
    if flags & FLAG_INLINE_STRINGS != 0 {
        let rest = data.get(32..)?;
        let (len, used) = uvarint(rest)?;
        let bytes = rest.get(used..used.checked_add(usize::try_from(len).ok()?)?)?;
        return String::from_utf8(bytes.to_vec()).ok();
    }
    if ptr_size != 8 || flags & FLAG_BIG_ENDIAN != 0 {
        return None;
    }
    let header = read_at(elf, u64::from_le_bytes(data.get(16..24)?.try_into().ok()?), 16)?;
    let ptr = u64::from_le_bytes(header[..8].try_into().ok()?);
    let len = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len > 64 {
        return None;
    }
    String::from_utf8(read_at(elf, ptr, len)?.to_vec()).ok()
}

/// `len` bytes at virtual address `addr`, from the loadable segment that holds them.
fn read_at<'d>(elf: &object::File<'d>, addr: u64, len: u64) -> Option<&'d [u8]> {
    elf.segments().find_map(|seg| {
        let data = seg.data().ok()?;
        let start = addr.checked_sub(seg.address())?;
        data.get(usize::try_from(start).ok()?..usize::try_from(start.checked_add(len)?).ok()?)
    })
}

fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    if v.starts_with("devel") {
        return Some((u32::MAX, 0));
    }
    let mut parts = v.strip_prefix("go")?.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("go1.19.8"), Some((1, 19)));
        assert_eq!(parse_version("go1.21rc2"), Some((1, 21)));
        assert_eq!(parse_version("go1.17"), Some((1, 17)));
        assert_eq!(parse_version("devel go1.23-abc"), Some((u32::MAX, 0)));
        assert_eq!(parse_version("gopher"), None);
        assert_eq!(uvarint(&[0x88, 0x01]), Some((136, 2)));
        assert_eq!(uvarint(&[0x80; 12]), None);
    }
}
