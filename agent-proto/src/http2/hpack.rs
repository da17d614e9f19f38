//! HPACK header decoding (RFC 7541) that tolerates a dynamic table it has not seen filled.
//!
//! A stock decoder fails the whole connection on an index it does not know. Here an unknown
//! index yields [`Field::Unknown`] for that one field, and a literal added under an unknown
//! name leaves an unknown placeholder in the table, so later indices stay aligned. This is what
//! lets a connection first seen mid-way still decode the fields that are sent literally or from
//! the static table. Huffman strings are decoded by `loona-hpack`.
//!
//! The dynamic table is kept at a fixed generous bound instead of the size the encoder
//! announces: entries are indexed newest first and only the oldest are ever evicted, so keeping
//! more than the encoder does never changes what an index the encoder uses refers to; an index
//! past what we kept is simply unknown.

use std::collections::VecDeque;

use loona_hpack::huffman::HuffmanDecoder;

use super::H2Error;

/// Octets (RFC 7541 §4.1 accounting) kept in the dynamic table: 16× the protocol default.
const MAX_TABLE: usize = 64 * 1024;

/// One decoded header field.
#[derive(Clone, PartialEq, Eq)]
pub enum Field {
    Known(Vec<u8>, Vec<u8>),
    /// Referenced a dynamic-table entry added before capture began (or beyond our bound).
    Unknown,
}

// Values may be API keys: Debug shows names only.
impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Known(n, _) => write!(f, "Known({})", String::from_utf8_lossy(n)),
            Field::Unknown => f.write_str("Unknown"),
        }
    }
}

/// A name and value, as raw bytes.
type Pair = (Vec<u8>, Vec<u8>);

/// A table entry; `None` where the name (or the whole entry) is unknown.
struct Entry {
    field: Option<Pair>,
    size: usize,
}

pub struct HpackDecoder {
    dynamic: VecDeque<Entry>,
    size: usize,
    huffman: HuffmanDecoder,
}

impl Default for HpackDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HpackDecoder {
    pub fn new() -> Self {
        HpackDecoder { dynamic: VecDeque::new(), size: 0, huffman: HuffmanDecoder::new() }
    }

    /// Decodes one complete header block. A malformed encoding is an error (the table can no
    /// longer be followed); unknown indices are not.
    pub fn decode(&mut self, mut block: &[u8]) -> Result<Vec<Field>, H2Error> {
        let mut out = Vec::new();
        while let Some(&b) = block.first() {
            if b & 0x80 != 0 {
                let index = integer(&mut block, 7)?;
                out.push(self.lookup(index)?.map_or(Field::Unknown, |(n, v)| Field::Known(n, v)));
            } else if b & 0x40 != 0 {
                let field = self.literal(&mut block, 6)?;
                self.insert(&field);
                out.push(field);
            } else if b & 0x20 != 0 {
                // Dynamic table size update: see the module comment for why it is not followed.
                integer(&mut block, 5)?;
            } else {
                out.push(self.literal(&mut block, 4)?);
            }
        }
        Ok(out)
    }

    /// Entry `index` (1-based over static then dynamic); `Ok(None)` when unknown.
    fn lookup(&self, index: usize) -> Result<Option<Pair>, H2Error> {
        match index {
            0 => Err(H2Error::BadHpack),
            i if i <= STATIC.len() => {
                let (n, v) = STATIC[i - 1];
                Ok(Some((n.as_bytes().to_vec(), v.as_bytes().to_vec())))
            }
            i => Ok(self.dynamic.get(i - STATIC.len() - 1).and_then(|e| e.field.clone())),
        }
    }

    fn literal(&mut self, block: &mut &[u8], prefix: u8) -> Result<Field, H2Error> {
        let index = integer(block, prefix)?;
        let name = if index == 0 { Some(self.string(block)?) } else { self.lookup(index)?.map(|(n, _)| n) };
        let value = self.string(block)?;
        Ok(match name {
            Some(name) => Field::Known(name, value),
            None => Field::Unknown,
        })
    }

    fn insert(&mut self, field: &Field) {
        let entry = match field {
            Field::Known(n, v) => Entry { field: Some((n.clone(), v.clone())), size: n.len() + v.len() + 32 },
            // The name's length is unknown; the entry is kept so later indices stay aligned.
            Field::Unknown => Entry { field: None, size: 32 },
        };
        self.size += entry.size;
        self.dynamic.push_front(entry);
        while self.size > MAX_TABLE {
            match self.dynamic.pop_back() {
                Some(e) => self.size -= e.size,
                None => break,
            }
        }
    }

    fn string(&mut self, block: &mut &[u8]) -> Result<Vec<u8>, H2Error> {
        let huffman = block.first().is_some_and(|b| b & 0x80 != 0);
        let len = integer(block, 7)?;
        if len > block.len() {
            return Err(H2Error::BadHpack);
        }
        let (raw, rest) = block.split_at(len);
        *block = rest;
        if huffman {
            self.huffman.decode(raw).map_err(|_| H2Error::BadHpack)
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// An integer with an N-bit prefix (RFC 7541 §5.1), bounded so that a hostile encoding cannot
/// overflow.
fn integer(block: &mut &[u8], prefix: u8) -> Result<usize, H2Error> {
    let (&first, mut rest) = block.split_first().ok_or(H2Error::BadHpack)?;
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(first) & mask;
    if value == mask {
        let mut shift = 0;
        loop {
            let (&b, tail) = rest.split_first().ok_or(H2Error::BadHpack)?;
            rest = tail;
            if shift > 21 {
                return Err(H2Error::BadHpack);
            }
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(value)
}

/// RFC 7541 Appendix A.
static STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn known(n: &str, v: &str) -> Field {
        Field::Known(n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        let mut d = HpackDecoder::new();
        let first = b"\x82\x86\x84\x41\x0fwww.example.com";
        assert_eq!(
            d.decode(first).unwrap(),
            vec![
                known(":method", "GET"),
                known(":scheme", "http"),
                known(":path", "/"),
                known(":authority", "www.example.com")
            ]
        );
        let second = b"\x82\x86\x84\xbe\x58\x08no-cache";
        let fields = d.decode(second).unwrap();
        assert_eq!(fields[3], known(":authority", "www.example.com"));
        assert_eq!(fields[4], known("cache-control", "no-cache"));
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        let mut d = HpackDecoder::new();
        let block =
            [0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
        assert_eq!(d.decode(&block).unwrap()[3], known(":authority", "www.example.com"));
    }

    #[test]
    fn unknown_dynamic_index_marks_only_that_field() {
        // A decoder that joined late: index 62 was added before it started.
        let mut d = HpackDecoder::new();
        let fields = d.decode(b"\x83\xbe\x04\x0c/v1/chat/x/y").unwrap();
        assert_eq!(fields, vec![known(":method", "POST"), Field::Unknown, known(":path", "/v1/chat/x/y")]);
        // A literal with an unknown name is inserted as a placeholder: the entry added after it
        // is still found at its right index.
        let fields = d.decode(b"\x7f\x05\x01v\x40\x01a\x01b\xbe\xbf").unwrap();
        assert_eq!(fields, vec![Field::Unknown, known("a", "b"), known("a", "b"), Field::Unknown]);
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"\x80",                     // index 0
            b"\x7f",                     // integer cut short
            b"\xff\xff\xff\xff\xff\xff", // integer too long
            b"\x40\x05ab",               // string longer than the block
            b"\x40\x81\xff\x01a",        // Huffman with EOS padding too long
        ];
        for c in cases {
            assert_eq!(HpackDecoder::new().decode(c), Err(H2Error::BadHpack), "{c:?}");
        }
    }

    #[test]
    fn table_is_bounded() {
        let mut d = HpackDecoder::new();
        let mut block = vec![0x40, 0x01, b'n', 0x7f, 0x81, 0x07];
        block.extend(std::iter::repeat_n(b'x', 1024));
        for _ in 0..200 {
            d.decode(&block).unwrap();
        }
        assert!(d.size <= MAX_TABLE && !d.dynamic.is_empty());
    }
}
