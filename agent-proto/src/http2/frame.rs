//! HTTP/2 framing (RFC 9113 §4, §6): the fixed 9-byte frame header and an incremental reader
//! that turns one direction's byte stream, cut anywhere, into frames.
//!
//! DATA payloads are streamed (handed on piece by piece, padding stripped) rather than
//! buffered, so a large response costs no copy here and a capture gap inside DATA can be
//! skipped without losing the framing. Every other frame is buffered whole (they are small).

use super::H2Error;

/// The client connection preface (RFC 9113 §3.4), sent before the client's first frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const HEADER_LEN: usize = 9;

pub mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Largest non-DATA payload buffered. SETTINGS_MAX_FRAME_SIZE may go to 16 MiB, but control
/// frames and header blocks of real API traffic are a few KiB; the bound keeps a misframed
/// stream from making us buffer without limit.
const MAX_BUFFERED_PAYLOAD: usize = 1 << 20;

/// Largest frame a sniffed (mid-connection) stream may start with: the protocol default
/// SETTINGS_MAX_FRAME_SIZE. A tighter bound than the protocol's makes false positives rarer.
const SNIFF_MAX_LEN: u32 = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            // The reserved top bit is ignored on receipt (§4.1).
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Whether `b` starts with a frame header a peer could plausibly send first on a connection
/// seen mid-way: a known type, the stream id rule of that type, only defined flags, a default-
/// size payload and the reserved bit clear. Used only to decide that a stream *is* HTTP/2.
pub fn looks_like_frame(b: &[u8]) -> bool {
    let Some(raw) = b.first_chunk::<HEADER_LEN>() else { return false };
    if raw[5] & 0x80 != 0 {
        return false;
    }
    let h = FrameHeader::parse(raw);
    let (allowed_flags, on_stream) = match h.kind {
        kind::DATA => (flag::END_STREAM | flag::PADDED, true),
        kind::HEADERS => (flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY, true),
        kind::PRIORITY => (0, true),
        kind::RST_STREAM => (0, true),
        kind::SETTINGS => (flag::ACK, false),
        kind::PING => (flag::ACK, false),
        kind::GOAWAY => (0, false),
        kind::WINDOW_UPDATE => (0, h.stream != 0),
        // CONTINUATION and PUSH_PROMISE cannot start what we can follow.
        _ => return false,
    };
    let fixed_len = match h.kind {
        kind::PRIORITY => Some(5),
        kind::RST_STREAM | kind::WINDOW_UPDATE => Some(4),
        kind::PING => Some(8),
        _ => None,
    };
    if h.kind == kind::SETTINGS && !h.len.is_multiple_of(6) {
        return false;
    }
    h.flags & !allowed_flags == 0
        && (h.stream != 0) == on_stream
        && h.len <= SNIFF_MAX_LEN
        && fixed_len.is_none_or(|n| h.len == n)
}

/// What the reader hands on, in stream order. No Debug: the bytes are plaintext payload.
pub enum Piece<'a> {
    /// A whole non-DATA frame.
    Frame(FrameHeader, &'a [u8]),
    /// Part of a DATA frame's data (padding removed). `end` marks the frame's last piece.
    Data { header: FrameHeader, bytes: &'a [u8], end: bool },
    /// `len` bytes of a DATA frame's data were lost in capture.
    DataGap { header: FrameHeader, len: u64, end: bool },
}

#[derive(Debug)]
enum State {
    /// Expecting `PREFACE`; the count of its bytes matched so far.
    Preface(usize),
    Header,
    /// Buffering a non-DATA payload.
    Payload(FrameHeader),
    /// DATA: the pad-length byte is next.
    PadLength(FrameHeader),
    /// DATA: `data` data bytes then `pad` padding bytes remain.
    Data {
        header: FrameHeader,
        data: u64,
        pad: u64,
    },
}

/// One direction's frame reader.
pub struct FrameReader {
    state: State,
    buf: Vec<u8>,
}

// The buffer holds header blocks (API keys) and control frames: Debug shows only its length.
impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader").field("state", &self.state).field("buffered", &self.buf.len()).finish()
    }
}

impl FrameReader {
    /// `preface`: this direction starts with the client connection preface.
    pub fn new(preface: bool) -> Self {
        FrameReader { state: if preface { State::Preface(0) } else { State::Header }, buf: Vec::new() }
    }

    /// Consumes all of `data`, handing each piece to `sink` as soon as it is complete.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        sink: &mut dyn FnMut(Piece<'_>) -> Result<(), H2Error>,
    ) -> Result<(), H2Error> {
        while !data.is_empty() {
            let used = self.step(data, sink)?;
            data = &data[used..];
        }
        Ok(())
    }

    fn step(&mut self, data: &[u8], sink: &mut dyn FnMut(Piece<'_>) -> Result<(), H2Error>) -> Result<usize, H2Error> {
        match self.state {
            State::Preface(done) => {
                let n = (PREFACE.len() - done).min(data.len());
                if data[..n] != PREFACE[done..done + n] {
                    return Err(H2Error::BadPreface);
                }
                self.state = if done + n == PREFACE.len() { State::Header } else { State::Preface(done + n) };
                Ok(n)
            }
            State::Header => {
                let n = (HEADER_LEN - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..n]);
                if let Some(raw) = self.buf.first_chunk::<HEADER_LEN>() {
                    let header = FrameHeader::parse(raw);
                    self.buf.clear();
                    self.start_frame(header, sink)?;
                }
                Ok(n)
            }
            State::Payload(header) => {
                let n = (header.len as usize - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..n]);
                if self.buf.len() == header.len as usize {
                    self.state = State::Header;
                    let r = sink(Piece::Frame(header, &self.buf));
                    self.buf.clear();
                    r?;
                }
                Ok(n)
            }
            State::PadLength(header) => {
                let pad = u64::from(data[0]);
                let data_len = u64::from(header.len) - 1;
                if pad > data_len {
                    return Err(H2Error::BadPadding);
                }
                self.state = State::Data { header, data: data_len - pad, pad };
                self.after_data(sink)?;
                Ok(1)
            }
            State::Data { header, data: left, pad } => {
                if left > 0 {
                    let n = left.min(data.len() as u64) as usize;
                    self.state = State::Data { header, data: left - n as u64, pad };
                    let end = left == n as u64 && pad == 0;
                    sink(Piece::Data { header, bytes: &data[..n], end })?;
                    if end {
                        self.state = State::Header;
                    }
                    Ok(n)
                } else {
                    let n = pad.min(data.len() as u64) as usize;
                    self.state = State::Data { header, data: 0, pad: pad - n as u64 };
                    self.after_data(sink)?;
                    Ok(n)
                }
            }
        }
    }

    fn start_frame(
        &mut self,
        header: FrameHeader,
        sink: &mut dyn FnMut(Piece<'_>) -> Result<(), H2Error>,
    ) -> Result<(), H2Error> {
        if header.kind == kind::DATA {
            if header.has(flag::PADDED) {
                if header.len == 0 {
                    return Err(H2Error::BadPadding);
                }
                self.state = State::PadLength(header);
                return Ok(());
            }
            self.state = State::Data { header, data: u64::from(header.len), pad: 0 };
            return self.after_data(sink);
        }
        if header.len as usize > MAX_BUFFERED_PAYLOAD {
            return Err(H2Error::FrameTooLarge);
        }
        if header.len == 0 {
            return sink(Piece::Frame(header, &[]));
        }
        self.state = State::Payload(header);
        Ok(())
    }

    /// Ends a DATA frame whose data is all delivered and padding all consumed; an empty DATA
    /// frame (often the bare END_STREAM) is reported as an empty last piece.
    fn after_data(&mut self, sink: &mut dyn FnMut(Piece<'_>) -> Result<(), H2Error>) -> Result<(), H2Error> {
        if let State::Data { header, data: 0, pad: 0 } = self.state {
            self.state = State::Header;
            sink(Piece::Data { header, bytes: &[], end: true })?;
        }
        Ok(())
    }

    /// `len` bytes of this direction were lost. Only data bytes of a DATA frame can be skipped
    /// (the frame header says how many there are); anywhere else the framing is lost.
    pub fn gap(&mut self, len: u64, sink: &mut dyn FnMut(Piece<'_>) -> Result<(), H2Error>) -> Result<(), H2Error> {
        if len == 0 {
            return Ok(());
        }
        match self.state {
            State::Data { header, data: left, pad } if len <= left => {
                let end = len == left && pad == 0;
                self.state = State::Data { header, data: left - len, pad };
                sink(Piece::DataGap { header, len, end })?;
                if end {
                    self.state = State::Header;
                }
                Ok(())
            }
            _ => Err(H2Error::Gap),
        }
    }

    /// Whether the reader stands between frames (a close here cuts no frame).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header | State::Preface(0)) && self.buf.is_empty()
    }
}
