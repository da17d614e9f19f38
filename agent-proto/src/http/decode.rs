//! Undoing `Content-Encoding` (RFC 9110 §8.4) on a captured body, with an output bound.

use std::io::Read;

use flate2::{Decompress, FlushDecompress, Status};

/// Why a body could not be decoded. Carries no payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content coding")]
    Unsupported,
    #[error("corrupt or truncated encoded body")]
    Corrupt,
    #[error("decoded body exceeds the limit")]
    TooLarge,
}

impl DecodeError {
    /// A stable snake_case name, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Unsupported => "unsupported",
            DecodeError::Corrupt => "corrupt",
            DecodeError::TooLarge => "too_large",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// Undoes `content_encoding` (a coding list, applied in order, so undone in reverse).
///
/// Every stage's output, identity included, is bounded by `limit`: a few KiB of compressed
/// input can expand to gigabytes, and callers size `limit` for what they are willing to hold.
/// A body cut short (say by the capture's body cap) is `Corrupt`, never silently short.
pub fn decode_body(content_encoding: Option<&str>, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let codings = parse_codings(content_encoding.unwrap_or(""))?;
    if body.is_empty() {
        // 204, 304 and HEAD responses often carry `Content-Encoding` with no body at all; that
        // is an empty body, not a corrupt stream.
        return Ok(Vec::new());
    }
    let mut current: Option<Vec<u8>> = None;
    for coding in codings.iter().rev() {
        let input = current.as_deref().unwrap_or(body);
        current = Some(match coding {
            Coding::Identity => continue,
            Coding::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), limit)?,
            Coding::Deflate => inflate_either(input, limit)?,
            Coding::Brotli => read_bounded(brotli::Decompressor::new(input, 4096), limit)?,
            Coding::Zstd => {
                let dec = zstd::stream::read::Decoder::with_buffer(input).map_err(|_| DecodeError::Corrupt)?;
                read_bounded(dec, limit)?
            }
        });
    }
    match current {
        Some(out) => Ok(out),
        None if body.len() > limit => Err(DecodeError::TooLarge),
        None => Ok(body.to_vec()),
    }
}

fn parse_codings(list: &str) -> Result<Vec<Coding>, DecodeError> {
    list.split(',')
        .map(|c| c.trim_matches([' ', '\t']))
        .filter(|c| !c.is_empty())
        .map(|c| {
            let c = c.to_ascii_lowercase();
            Ok(match c.as_str() {
                "identity" => Coding::Identity,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(DecodeError::Unsupported),
            })
        })
        .collect()
}

/// Reads a decoder to its end, stopping one byte past `limit` so a bomb never expands fully.
fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let bound = (limit as u64).saturating_add(1);
    reader.take(bound).read_to_end(&mut out).map_err(|_| DecodeError::Corrupt)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

/// `deflate` is meant to be zlib-wrapped (RFC 9110 §8.4.1.2), but some servers send raw
/// deflate, so a stream that does not decode as zlib is retried raw.
fn inflate_either(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    match inflate(input, true, limit) {
        Err(DecodeError::Corrupt) => inflate(input, false, limit),
        other => other,
    }
}

/// Inflates with the low-level API because flate2's readers report a stream cut short as a
/// clean end of file; here a missing end-of-stream marker is `Corrupt`.
fn inflate(input: &[u8], zlib: bool, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut dec = Decompress::new(zlib);
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::new();
    loop {
        let (in_before, out_before) = (dec.total_in(), dec.total_out());
        let rest = input.get(in_before as usize..).unwrap_or_default();
        let status = dec.decompress(rest, &mut buf, FlushDecompress::None).map_err(|_| DecodeError::Corrupt)?;
        let produced = (dec.total_out() - out_before) as usize;
        if out.len() + produced > limit {
            return Err(DecodeError::TooLarge);
        }
        out.extend_from_slice(&buf[..produced]);
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if produced == 0 && dec.total_in() == in_before {
            // With room to write and no progress, the decoder wants input we do not have:
            // the stream was cut before its end marker.
            return Err(DecodeError::Corrupt);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;

    use super::*;

    type Encoder = fn(&[u8]) -> Vec<u8>;

    const TEXT: &[u8] = b"{\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34}} repeated repeated repeated";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn br(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    #[test]
    fn each_coding_round_trips() {
        let cases: [(&str, Encoder); 6] =
            [("gzip", gzip), ("x-gzip", gzip), ("deflate", zlib), ("deflate", raw_deflate), ("br", br), ("zstd", zstd)];
        for (name, enc) in cases {
            let encoded = enc(TEXT);
            assert_eq!(decode_body(Some(name), &encoded, 1 << 20).unwrap(), TEXT, "{name}");
            let upper = name.to_ascii_uppercase();
            assert_eq!(decode_body(Some(&upper), &encoded, 1 << 20).unwrap(), TEXT, "{name}");
        }
    }

    #[test]
    fn identity_and_absent_copy() {
        assert_eq!(decode_body(None, TEXT, 1 << 20).unwrap(), TEXT);
        assert_eq!(decode_body(Some("identity"), TEXT, 1 << 20).unwrap(), TEXT);
        assert_eq!(decode_body(Some(" "), TEXT, 1 << 20).unwrap(), TEXT);
        assert_eq!(decode_body(None, TEXT, 4).unwrap_err(), DecodeError::TooLarge);
        assert_eq!(decode_body(None, b"", 0).unwrap(), b"");
        for name in ["gzip", "deflate", "br", "zstd", "gzip, br"] {
            assert_eq!(decode_body(Some(name), b"", 0).unwrap(), b"", "{name}");
        }
    }

    #[test]
    fn chained_codings_undone_in_reverse() {
        // "gzip, br": gzip was applied first, so br is undone first.
        let encoded = br(&gzip(TEXT));
        assert_eq!(decode_body(Some("gzip, br"), &encoded, 1 << 20).unwrap(), TEXT);
        assert_eq!(decode_body(Some("br, gzip"), &encoded, 1 << 20).unwrap_err(), DecodeError::Corrupt);
        let encoded = gzip(&zstd(TEXT));
        assert_eq!(decode_body(Some("zstd,identity , gzip"), &encoded, 1 << 20).unwrap(), TEXT);
    }

    #[test]
    fn corrupt_input() {
        let garbage = b"this is not compressed at all, not even a little";
        for name in ["gzip", "deflate", "br", "zstd"] {
            assert_eq!(decode_body(Some(name), garbage, 1 << 20).unwrap_err(), DecodeError::Corrupt, "{name}");
        }
        let mut flipped = gzip(TEXT);
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        assert_eq!(decode_body(Some("gzip"), &flipped, 1 << 20).unwrap_err(), DecodeError::Corrupt);
    }

    #[test]
    fn cut_off_input() {
        let big: Vec<u8> = (0..3_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let cases: [(&str, Encoder); 5] =
            [("gzip", gzip), ("deflate", zlib), ("deflate", raw_deflate), ("br", br), ("zstd", zstd)];
        for (name, enc) in cases {
            let encoded = enc(&big);
            for cut in 1..encoded.len() {
                let r = decode_body(Some(name), &encoded[..cut], 1 << 24);
                assert_eq!(r.unwrap_err(), DecodeError::Corrupt, "{name} cut at {cut}");
            }
        }
    }

    #[test]
    fn limit_bounds_every_coding() {
        let bomb = vec![b'a'; 1 << 20];
        let cases: [(&str, Encoder); 5] =
            [("gzip", gzip), ("deflate", zlib), ("deflate", raw_deflate), ("br", br), ("zstd", zstd)];
        for (name, enc) in cases {
            let encoded = enc(&bomb);
            assert_eq!(decode_body(Some(name), &encoded, 1000).unwrap_err(), DecodeError::TooLarge, "{name}");
            let exact = decode_body(Some(name), &encoded, bomb.len()).unwrap();
            assert_eq!(exact.len(), bomb.len(), "{name}");
        }
    }

    #[test]
    fn unknown_coding() {
        for name in ["compress", "gzip, lzma", "x-custom"] {
            assert_eq!(decode_body(Some(name), TEXT, 1 << 20).unwrap_err(), DecodeError::Unsupported);
        }
        assert_eq!(DecodeError::Unsupported.reason(), "unsupported");
        assert_eq!(DecodeError::Corrupt.reason(), "corrupt");
        assert_eq!(DecodeError::TooLarge.reason(), "too_large");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..300 {
            let len = (next() % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            for name in ["gzip", "deflate", "br", "zstd", "gzip, br"] {
                let _ = decode_body(Some(name), &bytes, 1 << 16);
            }
        }
    }
}
