//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally.

use super::head::MAX_HEAD;
use super::message::HttpError;

/// A chunk-size line (size plus extensions) longer than this is treated as misframing: real
/// extensions are rare and short, and the bound turns a desynchronised stream into an error.
const MAX_SIZE_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    /// Extensions (or whitespace) after the size, up to the LF; ignored.
    Ext,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the blank line that ends the message.
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    line_len: usize,
    trailer_len: usize,
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        ChunkedDecoder { state: State::Size, size: 0, digits: 0, line_len: 0, trailer_len: 0 }
    }

    /// Decodes as much of `data` as possible, handing chunk payload to `sink`. Returns the bytes
    /// consumed and whether the message ended (last chunk and trailers seen); on `true`, bytes
    /// after the returned count belong to the next message.
    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(usize, bool), HttpError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Data(rem) => {
                    let n = rem.min((data.len() - i) as u64) as usize;
                    sink(&data[i..i + n]);
                    i += n;
                    self.state = if rem == n as u64 { State::DataCr } else { State::Data(rem - n as u64) };
                    continue;
                }
                State::Ext => {
                    let rest = &data[i..];
                    let (n, lf) = match memchr::memchr(b'\n', rest) {
                        Some(p) => (p + 1, true),
                        None => (rest.len(), false),
                    };
                    self.line_len += n;
                    if self.line_len > MAX_SIZE_LINE {
                        return Err(HttpError::BadChunk);
                    }
                    i += n;
                    if lf {
                        self.end_size_line();
                    }
                    continue;
                }
                State::TrailerLine => {
                    let rest = &data[i..];
                    let (n, lf) = match memchr::memchr(b'\n', rest) {
                        Some(p) => (p + 1, true),
                        None => (rest.len(), false),
                    };
                    self.add_trailer(n)?;
                    i += n;
                    if lf {
                        self.state = State::TrailerStart;
                    }
                    continue;
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            self.step(b)?;
            if self.state == State::Done {
                return Ok((i, true));
            }
        }
        Ok((i, self.state == State::Done))
    }

    /// One framing byte (size line, CRLF after data, trailer boundaries).
    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        match self.state {
            State::Size => {
                self.line_len += 1;
                if let Some(d) = hex_value(b) {
                    // 16 hex digits fill a u64; more means garbage, not a real size.
                    if self.digits == 16 {
                        return Err(HttpError::BadChunk);
                    }
                    self.size = self.size << 4 | u64::from(d);
                    self.digits += 1;
                    return Ok(());
                }
                if self.digits == 0 {
                    return Err(HttpError::BadChunk);
                }
                match b {
                    b';' | b' ' | b'\t' => self.state = State::Ext,
                    b'\r' => self.state = State::SizeLf,
                    // A bare LF is tolerated as a line end, as for heads.
                    b'\n' => self.end_size_line(),
                    _ => return Err(HttpError::BadChunk),
                }
            }
            State::SizeLf if b == b'\n' => self.end_size_line(),
            State::DataCr if b == b'\r' => self.state = State::DataLf,
            State::DataCr | State::DataLf if b == b'\n' => self.state = State::Size,
            State::TrailerStart => match b {
                b'\r' => self.state = State::EndLf,
                b'\n' => self.state = State::Done,
                _ => {
                    self.add_trailer(1)?;
                    self.state = State::TrailerLine;
                }
            },
            State::EndLf if b == b'\n' => self.state = State::Done,
            _ => return Err(HttpError::BadChunk),
        }
        Ok(())
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 { State::TrailerStart } else { State::Data(self.size) };
        self.size = 0;
        self.digits = 0;
        self.line_len = 0;
    }

    /// Trailers are ignored, but bounded like a head so a desynchronised stream errors out.
    fn add_trailer(&mut self, n: usize) -> Result<(), HttpError> {
        self.trailer_len += n;
        if self.trailer_len > MAX_HEAD {
            return Err(HttpError::BadChunk);
        }
        Ok(())
    }

    /// Skips `len` lost bytes, which must fall inside the current chunk's data.
    pub(crate) fn gap(&mut self, len: u64) -> Result<(), HttpError> {
        match self.state {
            State::Data(rem) if len <= rem => {
                self.state = if len == rem { State::DataCr } else { State::Data(rem - len) };
                Ok(())
            }
            _ => Err(HttpError::Gap),
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let (n, done) = dec.feed(input, &mut |b: &[u8]| body.extend_from_slice(b))?;
        Ok((body, n, done))
    }

    #[test]
    fn simple_chunks_stop_at_message_end() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT";
        let (body, n, done) = decode(input).unwrap();
        assert_eq!(body, b"hello world");
        assert!(done);
        assert_eq!(n, input.len() - 4);
    }

    #[test]
    fn extensions_trailers_and_upper_hex() {
        let input = b"A;name=\"v\";x\r\n0123456789\r\n0;last\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";
        let (body, n, done) = decode(input).unwrap();
        assert_eq!(body, b"0123456789");
        assert!(done);
        assert_eq!(n, input.len());
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        let input = b"3;e=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut done = false;
        for (k, b) in input.iter().enumerate() {
            let (n, d) = dec.feed(std::slice::from_ref(b), &mut |x: &[u8]| body.extend_from_slice(x)).unwrap();
            assert_eq!(n, 1);
            done = d;
            assert_eq!(done, k == input.len() - 1);
        }
        assert!(done);
        assert_eq!(body, b"abc0123456789abcdef");
    }

    #[test]
    fn malformed_sizes() {
        for bad in [&b"\r\n"[..], b"g\r\n", b"-1\r\n", b";ext\r\n", b"12345678901234567\r\n", b"1\rX"] {
            assert_eq!(decode(bad).unwrap_err(), HttpError::BadChunk);
        }
        // Missing CRLF after data.
        assert_eq!(decode(b"3\r\nabcX").unwrap_err(), HttpError::BadChunk);
        // An endless extension is cut off.
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE + 1));
        assert_eq!(decode(&long).unwrap_err(), HttpError::BadChunk);
    }

    #[test]
    fn gap_only_inside_data() {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut sink = |x: &[u8]| body.extend_from_slice(x);
        assert_eq!(dec.gap(1).unwrap_err(), HttpError::Gap);
        dec.feed(b"a\r\nab", &mut sink).unwrap();
        assert_eq!(dec.gap(9).unwrap_err(), HttpError::Gap);
        dec.gap(8).unwrap();
        let (_, done) = dec.feed(b"\r\n0\r\n\r\n", &mut sink).unwrap();
        assert!(done);
        assert_eq!(body, b"ab");
    }
}
