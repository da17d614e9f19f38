//! Both directions of one HTTP/2 connection, seen from the client: frames → streams → events.

use std::collections::HashMap;
use std::fmt;

use super::frame::{flag, kind, FrameHeader, FrameReader, Piece};
use super::hpack::HpackDecoder;
use super::stream::{classify, Block, Half, Stream};
use super::H2Error;
use crate::http::{Head, Message, Role};

/// Streams tracked at once (live or being skipped). Far above what clients open concurrently
/// (servers commonly allow 100–250); the bound keeps a hostile stream from growing the map.
const MAX_STREAMS: usize = 4096;

/// Largest header block (HEADERS + CONTINUATION) reassembled.
const MAX_BLOCK: usize = 256 * 1024;

/// What the parser reports, per stream, in connection order.
#[derive(Debug)]
pub enum H2Event {
    /// The client sent a request's header block.
    Request { id: u32, head: Head },
    /// The client finished sending the request (END_STREAM): its body is complete, see
    /// [`H2Parser::request_so_far`].
    RequestEnd { id: u32 },
    /// The first DATA byte of a final response arrived.
    ResponseBody { id: u32 },
    /// The server ended the stream: the request and final response. `cut`: the client
    /// stopped it (RST_STREAM, or closed the connection) after the response body began; the
    /// response is what arrived until then, as HTTP/1.1 takes a body cut by a close.
    Complete { id: u32, request: Message, response: Message, cut: bool },
    /// The stream yields no exchange; `reason` is a metric label.
    Failed { id: u32, reason: &'static str },
}

enum Slot {
    Live(Box<Stream>),
    /// Frames on this stream are read (HPACK must be followed) and dropped.
    Skip,
    /// The server spoke first on this stream: its request was sent before capture began.
    Unseen,
}

/// A header block being reassembled from HEADERS/PUSH_PROMISE and CONTINUATION frames.
struct Pending {
    stream: u32,
    end_stream: bool,
    /// PUSH_PROMISE blocks are decoded only to keep the HPACK table in step.
    push: bool,
    buf: Vec<u8>,
}

struct Side {
    reader: FrameReader,
    hpack: HpackDecoder,
    block: Option<Pending>,
}

pub struct H2Parser {
    body_cap: usize,
    egress: Side,
    ingress: Side,
    streams: HashMap<u32, Slot>,
    /// The first stream whose request HEADERS we saw: a lower id was opened before capture
    /// began, a higher one absent from `streams` has already been dealt with.
    first_request: Option<u32>,
    /// The highest stream id the server spoke on before we saw its request.
    max_unseen: Option<u32>,
    /// A request with fully known headers has been decoded (proof this is an HTTP/2 client).
    verified: bool,
    failed: Option<H2Error>,
}

impl fmt::Debug for H2Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Parser")
            .field("streams", &self.streams.len())
            .field("verified", &self.verified)
            .field("failed", &self.failed)
            .finish()
    }
}

impl H2Parser {
    /// `preface`: the client's first bytes are the connection preface (seen from the start);
    /// otherwise the connection is joined mid-way, at a frame boundary.
    pub fn new(body_cap: usize, preface: bool) -> Self {
        let side = |p| Side { reader: FrameReader::new(p), hpack: HpackDecoder::new(), block: None };
        H2Parser {
            body_cap,
            egress: side(preface),
            ingress: side(false),
            streams: HashMap::new(),
            first_request: None,
            max_unseen: None,
            verified: preface,
            failed: None,
        }
    }

    /// Whether the bytes are known to be an HTTP/2 client: the preface was seen, or a request
    /// decoded. Before that, an error means "not HTTP/2", not a parse failure.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// Streams whose request was seen and whose response has not ended.
    pub fn unanswered(&self) -> usize {
        self.streams.values().filter(|s| matches!(s, Slot::Live(_))).count()
    }

    /// A live stream's request head, body kept so far and whole body length.
    pub fn request_so_far(&self, id: u32) -> Option<(&Head, &[u8], u64)> {
        match self.streams.get(&id) {
            Some(Slot::Live(s)) => Some((&s.request.head, s.request.body(), s.request.body_len())),
            _ => None,
        }
    }

    /// A live stream's final response head, body kept so far and whole body length, once the
    /// head arrived.
    pub fn response_so_far(&self, id: u32) -> Option<(&Head, &[u8], u64)> {
        match self.streams.get(&id) {
            Some(Slot::Live(s)) => s.response.as_ref().map(|r| (&r.head, r.body(), r.body_len())),
            _ => None,
        }
    }

    /// Bytes of one direction: `Role::Request` is what the client sent.
    pub fn feed(&mut self, role: Role, data: &[u8], out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        self.guard(|p| {
            let mut reader = std::mem::replace(&mut p.side(role).reader, FrameReader::new(false));
            let r = reader.feed(data, &mut |piece| p.on_piece(role, piece, out));
            p.side(role).reader = reader;
            r
        })
    }

    /// `len` bytes of one direction were lost in capture.
    pub fn feed_gap(&mut self, role: Role, len: u64, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        self.guard(|p| {
            let mut reader = std::mem::replace(&mut p.side(role).reader, FrameReader::new(false));
            let r = reader.gap(len, &mut |piece| p.on_piece(role, piece, out));
            p.side(role).reader = reader;
            r
        })
    }

    fn guard(&mut self, f: impl FnOnce(&mut Self) -> Result<(), H2Error>) -> Result<(), H2Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = f(self);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn side(&mut self, role: Role) -> &mut Side {
        match role {
            Role::Request => &mut self.egress,
            Role::Response => &mut self.ingress,
        }
    }

    fn on_piece(&mut self, role: Role, piece: Piece<'_>, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        match piece {
            Piece::Frame(h, payload) => self.on_frame(role, h, payload, out),
            Piece::Data { header, bytes, end } => {
                self.on_data(role, header, Some(bytes), end, out);
                Ok(())
            }
            Piece::DataGap { header, len, end } => {
                if let Some(Slot::Live(s)) = self.streams.get_mut(&header.stream) {
                    let half = match role {
                        Role::Request => Some(&mut s.request),
                        Role::Response => s.response.as_mut(),
                    };
                    if let Some(half) = half {
                        if half.gap(len) && role == Role::Response {
                            out.push(H2Event::ResponseBody { id: header.stream });
                        }
                    }
                }
                self.on_data(role, header, None, end, out);
                Ok(())
            }
        }
    }

    fn on_frame(&mut self, role: Role, h: FrameHeader, payload: &[u8], out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        let side = self.side(role);
        if side.block.is_some() != (h.kind == kind::CONTINUATION) {
            // A header block must be continued by CONTINUATION frames and nothing else (§6.10).
            return Err(H2Error::BadFrame);
        }
        match h.kind {
            kind::HEADERS | kind::PUSH_PROMISE => {
                if h.stream == 0 {
                    return Err(H2Error::BadFrame);
                }
                let fragment = header_fragment(&h, payload)?;
                let push = h.kind == kind::PUSH_PROMISE;
                let end_stream = !push && h.has(flag::END_STREAM);
                side.block = Some(Pending { stream: h.stream, end_stream, push, buf: fragment.to_vec() });
            }
            kind::CONTINUATION => {
                let block = side.block.as_mut().ok_or(H2Error::BadFrame)?;
                if block.stream != h.stream || block.buf.len() + payload.len() > MAX_BLOCK {
                    return Err(H2Error::BadFrame);
                }
                block.buf.extend_from_slice(payload);
            }
            kind::RST_STREAM => {
                // Streaming clients commonly cancel a stream once they read the final event
                // (the OpenAI SDK does after `[DONE]`), before the server's END_STREAM.
                if role == Role::Request && self.cut(h.stream, out) {
                    return Ok(());
                }
                if let Some(Slot::Live(_)) = self.streams.remove(&h.stream) {
                    out.push(H2Event::Failed { id: h.stream, reason: "h2_reset" });
                }
                return Ok(());
            }
            // SETTINGS, PING, GOAWAY, WINDOW_UPDATE, PRIORITY and unknown types (§5.5) carry
            // nothing about the conversation. After GOAWAY, streams the server never answers
            // stay unanswered and are counted at close.
            _ => return Ok(()),
        }
        if h.has(flag::END_HEADERS) {
            let block = self.side(role).block.take().ok_or(H2Error::BadFrame)?;
            self.on_block(role, block, out)?;
        }
        Ok(())
    }

    fn on_block(&mut self, role: Role, block: Pending, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        // Decoded even when the stream is of no interest: every block updates the table.
        let fields = self.side(role).hpack.decode(&block.buf)?;
        if block.push {
            return Ok(());
        }
        let id = block.stream;
        let decoded = classify(fields);
        match role {
            Role::Request => self.on_request_block(id, decoded, block.end_stream, out),
            Role::Response => self.on_response_block(id, decoded, block.end_stream, out),
        }
    }

    fn on_request_block(&mut self, id: u32, block: Block, end: bool, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        if self.max_unseen.is_some_and(|max| id <= max)
            && !matches!(self.streams.get(&id), Some(Slot::Live(_) | Slot::Skip))
        {
            // Headers sent on a stream the peer opened: the bytes we call egress are responses.
            // A client's new streams get ids above every stream it opened before, including
            // those opened before capture began.
            return Err(H2Error::ServerSide);
        }
        if let Some(slot) = self.streams.get_mut(&id) {
            // Trailers of a request (or more frames of a skipped stream).
            if let (Slot::Live(s), true) = (slot, end) {
                if !s.request.ended {
                    out.push(H2Event::RequestEnd { id });
                }
                s.request.ended = true;
            }
            return Ok(());
        }
        if self.streams.len() >= MAX_STREAMS {
            return Err(H2Error::TooManyStreams);
        }
        self.first_request.get_or_insert(id);
        match block {
            Block::Request(head) => {
                self.verified = true;
                out.push(H2Event::Request { id, head: head.clone() });
                if end {
                    out.push(H2Event::RequestEnd { id });
                }
                let mut request = Half::new(head);
                request.ended = end;
                self.streams.insert(id, Slot::Live(Box::new(Stream { request, response: None })));
            }
            Block::Response(_) => return Err(H2Error::ServerSide),
            Block::Unknown => {
                out.push(H2Event::Failed { id, reason: "h2_unknown_headers" });
                self.streams.insert(id, Slot::Skip);
            }
            Block::Other => {
                out.push(H2Event::Failed { id, reason: "h2_bad_headers" });
                self.streams.insert(id, Slot::Skip);
            }
        }
        Ok(())
    }

    fn on_response_block(&mut self, id: u32, block: Block, end: bool, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        if matches!(block, Block::Request(_)) {
            return Err(H2Error::ServerSide);
        }
        match self.streams.get_mut(&id) {
            Some(Slot::Live(s)) if s.response.is_none() => match block {
                Block::Response(head) => {
                    let interim =
                        matches!(head.start, crate::http::Start::Response { status } if (100..200).contains(&status));
                    if !interim {
                        s.response = Some(Half::new(head));
                    }
                }
                Block::Unknown => {
                    self.streams.insert(id, Slot::Skip);
                    out.push(H2Event::Failed { id, reason: "h2_unknown_headers" });
                }
                Block::Request(_) | Block::Other => {
                    self.streams.insert(id, Slot::Skip);
                    out.push(H2Event::Failed { id, reason: "h2_bad_headers" });
                }
            },
            // Trailers, or a stream being skipped.
            Some(_) => {}
            None => self.unseen_stream(id, end, out)?,
        }
        if end {
            self.end_response(id, out);
        }
        Ok(())
    }

    /// The server speaks on a stream we do not track: one opened before capture began is
    /// reported; a server push (even id) or a stream already completed is of no interest.
    fn unseen_stream(&mut self, id: u32, end: bool, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        if id.is_multiple_of(2) || self.first_request.is_some_and(|first| id >= first) {
            return Ok(());
        }
        out.push(H2Event::Failed { id, reason: "h2_unseen_request" });
        self.max_unseen = self.max_unseen.max(Some(id));
        if !end {
            if self.streams.len() >= MAX_STREAMS {
                return Err(H2Error::TooManyStreams);
            }
            self.streams.insert(id, Slot::Unseen);
        }
        Ok(())
    }

    fn on_data(&mut self, role: Role, h: FrameHeader, bytes: Option<&[u8]>, end: bool, out: &mut Vec<H2Event>) {
        let cap = self.body_cap;
        match self.streams.get_mut(&h.stream) {
            Some(Slot::Live(s)) => match role {
                Role::Request => {
                    if let Some(b) = bytes {
                        s.request.push(b, cap);
                    }
                    if end && h.has(flag::END_STREAM) && !s.request.ended {
                        s.request.ended = true;
                        out.push(H2Event::RequestEnd { id: h.stream });
                    }
                }
                Role::Response => {
                    let Some(resp) = s.response.as_mut() else {
                        // DATA before a final response head is a protocol error; the stream is lost.
                        self.streams.insert(h.stream, Slot::Skip);
                        out.push(H2Event::Failed { id: h.stream, reason: "h2_bad_frame" });
                        return;
                    };
                    if let Some(b) = bytes {
                        if resp.push(b, cap) {
                            out.push(H2Event::ResponseBody { id: h.stream });
                        }
                    }
                    if (end && h.has(flag::END_STREAM)) || resp.full() {
                        self.end_response(h.stream, out);
                    }
                }
            },
            Some(Slot::Skip | Slot::Unseen) if role == Role::Response && end && h.has(flag::END_STREAM) => {
                self.streams.remove(&h.stream);
            }
            Some(Slot::Skip | Slot::Unseen) => {}
            None if role == Role::Response && h.stream % 2 == 1 => {
                // Only the first piece of a stream's first DATA frame reports it.
                let _ = self.unseen_stream(h.stream, end && h.has(flag::END_STREAM), out);
            }
            None => {}
        }
    }

    /// The connection ended: streams whose response body had begun complete as cut (see
    /// [`H2Event::Complete`]); the others stay counted by [`unanswered`](Self::unanswered).
    pub fn finish(&mut self, out: &mut Vec<H2Event>) {
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.cut(id, out);
        }
    }

    /// Completes stream `id` as cut if its response body has begun; returns whether it did.
    fn cut(&mut self, id: u32, out: &mut Vec<H2Event>) -> bool {
        let started =
            matches!(self.streams.get(&id), Some(Slot::Live(s)) if s.response.as_ref().is_some_and(|r| r.started()));
        if started {
            self.complete(id, true, out);
        }
        started
    }

    fn end_response(&mut self, id: u32, out: &mut Vec<H2Event>) {
        self.complete(id, false, out);
    }

    fn complete(&mut self, id: u32, cut: bool, out: &mut Vec<H2Event>) {
        match self.streams.remove(&id) {
            Some(Slot::Live(s)) if s.response.is_some() => {
                let Stream { request, response } = *s;
                let mut response = response.expect("checked above");
                response.ended = true;
                let (request, response) = (request.into_message(), response.into_message());
                out.push(H2Event::Complete { id, request, response, cut });
            }
            Some(Slot::Live(_)) => out.push(H2Event::Failed { id, reason: "h2_no_final_response" }),
            Some(Slot::Skip | Slot::Unseen) | None => {}
        }
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload: padding, priority fields
/// and the promised stream id removed (§6.2, §6.6).
fn header_fragment<'a>(h: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], H2Error> {
    let mut p = payload;
    let mut pad = 0usize;
    if h.has(flag::PADDED) {
        let (&n, rest) = p.split_first().ok_or(H2Error::BadPadding)?;
        pad = usize::from(n);
        p = rest;
    }
    let skip = match h.kind {
        kind::HEADERS if h.has(flag::PRIORITY) => 5,
        kind::PUSH_PROMISE => 4,
        _ => 0,
    };
    if p.len() < skip + pad {
        return Err(if p.len() < skip { H2Error::BadFrame } else { H2Error::BadPadding });
    }
    Ok(&p[skip..p.len() - pad])
}
