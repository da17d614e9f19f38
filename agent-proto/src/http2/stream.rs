//! One HTTP/2 stream's two halves, and decoded header fields turned into HTTP/1-shaped heads.

use super::hpack::Field;
use crate::http::{Head, Message, Start};

/// What a header block says, once its pseudo-headers are read.
pub(crate) enum Block {
    Request(Head),
    Response(Head),
    /// Only regular fields (trailers), or pseudo-headers we do not use.
    Other,
    /// A field referenced an HPACK entry we do not know.
    Unknown,
}

/// Maps decoded fields onto a [`Head`]: `:method`/`:path` become the request line, `:status`
/// the status line, and `:authority` the `host` header (unless one was sent), which is where
/// the HTTP/1.1 code looks for the server name.
pub(crate) fn classify(fields: Vec<Field>) -> Block {
    let mut method = None;
    let mut path = None;
    let mut authority = None;
    let mut status = None;
    let mut headers = Vec::with_capacity(fields.len());
    for field in fields {
        let Field::Known(name, value) = field else { return Block::Unknown };
        match name.as_slice() {
            b":method" => method = Some(value),
            b":path" => path = Some(value),
            b":authority" => authority = Some(value),
            b":status" => status = Some(value),
            n if n.starts_with(b":") => {}
            _ => headers.push((String::from_utf8_lossy(&name).to_ascii_lowercase(), value)),
        }
    }
    let text = |v: Vec<u8>| String::from_utf8_lossy(&v).into_owned();
    if let Some(status) = status {
        let code = std::str::from_utf8(&status).ok().and_then(|s| s.parse::<u16>().ok());
        return match code {
            Some(status @ 100..=999) => Block::Response(head(Start::Response { status }, headers)),
            _ => Block::Other,
        };
    }
    match (method, path) {
        (Some(method), Some(path)) => {
            if let Some(a) = authority.filter(|_| !headers.iter().any(|(n, _)| n == "host")) {
                headers.insert(0, ("host".to_string(), a));
            }
            Block::Request(head(Start::Request { method: text(method), target: text(path) }, headers))
        }
        _ => Block::Other,
    }
}

/// HTTP/2 has no minor version in the HTTP/1 sense; 0 marks "not HTTP/1.1".
fn head(start: Start, headers: Vec<(String, Vec<u8>)>) -> Head {
    Head { start, version_minor: 0, headers }
}

/// One direction of a stream: its head and the DATA received so far.
pub(crate) struct Half {
    pub head: Head,
    /// `content-length`, when sent: the body is complete once this much DATA arrived.
    expected_len: Option<u64>,
    body: Vec<u8>,
    body_len: u64,
    truncated: bool,
    pub ended: bool,
}

impl Half {
    pub fn new(head: Head) -> Self {
        let expected_len = head.header_str("content-length").and_then(|v| v.parse().ok());
        Half { head, expected_len, body: Vec::new(), body_len: 0, truncated: false, ended: false }
    }

    /// Some body (or a gap in it) has arrived.
    pub fn started(&self) -> bool {
        self.body_len > 0
    }

    /// All the DATA `content-length` announced has arrived. A client may stop reading there
    /// (curl does), so the END_STREAM that follows in a separate frame may never be captured.
    pub fn full(&self) -> bool {
        self.expected_len.is_some_and(|n| self.body_len >= n)
    }

    /// Appends data; returns whether these were the first body bytes.
    pub fn push(&mut self, bytes: &[u8], cap: usize) -> bool {
        let first = self.body_len == 0 && !bytes.is_empty();
        self.body_len += bytes.len() as u64;
        let room = cap.saturating_sub(self.body.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
        first
    }

    /// Bytes lost in capture; returns whether these were the first body bytes.
    pub fn gap(&mut self, len: u64) -> bool {
        let first = self.body_len == 0 && len > 0;
        self.body_len += len;
        self.truncated = true;
        first
    }

    /// The body kept so far (at most the cap).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Whole body length seen so far, including bytes past the cap or lost in gaps.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// The message as the HTTP/1.1 parser would report it; a request the client had not
    /// finished sending is marked truncated.
    pub fn into_message(self) -> Message {
        let truncated = self.truncated || !self.ended;
        Message { head: self.head, body: self.body, body_len: self.body_len, truncated }
    }
}

/// A stream the client opened while we watched.
pub(crate) struct Stream {
    pub request: Half,
    pub response: Option<Half>,
}
