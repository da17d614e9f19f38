//! Incremental HTTP/1.x message framing for one direction of one connection (RFC 9112 §6).

use std::collections::VecDeque;
use std::fmt;

use super::chunked::ChunkedDecoder;
use super::head::{trim_ows, HeadParser};
pub use super::head::{Head, Start};

/// Which side of the exchange a byte stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Request,
    Response,
}

/// What the parser reports, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message head was parsed. Interim 1xx responses are skipped and not reported.
    HeadComplete(Head),
    /// The first (de-chunked) body byte of the current message arrived; once per message.
    FirstBodyByte,
    Complete(Message),
}

/// A complete message. The body is de-chunked but still content-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub head: Head,
    /// At most `body_cap` bytes of the body.
    pub body: Vec<u8>,
    /// Total body length seen, including bytes beyond the cap and bytes lost in gaps.
    pub body_len: u64,
    /// The body exceeded `body_cap` or a gap was skipped: `body` is not the whole body.
    pub truncated: bool,
}

// The body is a prompt or a completion: Debug shows only its size.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("head", &self.head)
            .field("body_kept", &self.body.len())
            .field("body_len", &self.body_len)
            .field("truncated", &self.truncated)
            .finish()
    }
}

/// Why a stream stopped being parseable. Carries no payload bytes by construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("stream is not HTTP/1.x for this role")]
    NotHttp,
    #[error("malformed start line")]
    BadStartLine,
    #[error("malformed header field")]
    BadHeader,
    #[error("message head exceeds 64 KiB")]
    HeadTooLarge,
    #[error("invalid or conflicting Content-Length")]
    BadContentLength,
    #[error("malformed chunked encoding")]
    BadChunk,
    #[error("captured bytes lost outside a message body")]
    Gap,
    #[error("connection closed in the middle of a message")]
    Incomplete,
    #[error("connection left HTTP/1 (upgrade or tunnel)")]
    Upgraded,
}

impl HttpError {
    /// A stable snake_case name, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::NotHttp => "not_http",
            HttpError::BadStartLine => "bad_start_line",
            HttpError::BadHeader => "bad_header",
            HttpError::HeadTooLarge => "head_too_large",
            HttpError::BadContentLength => "bad_content_length",
            HttpError::BadChunk => "bad_chunk",
            HttpError::Gap => "gap",
            HttpError::Incomplete => "incomplete",
            HttpError::Upgraded => "upgraded",
        }
    }
}

/// The request properties that change how its response is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Head,
    Connect,
    Other,
}

/// Pending methods kept at most; a peer pipelining more than this without reading responses
/// is pathological, and the bound keeps the queue from growing without limit.
const MAX_PENDING: usize = 1024;

#[derive(Debug)]
enum Framing {
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Upgraded,
}

/// The message whose body is being read.
struct Current {
    head: Head,
    body: Vec<u8>,
    body_len: u64,
    truncated: bool,
    first_byte_sent: bool,
}

impl Current {
    fn new(head: Head) -> Self {
        Current { head, body: Vec::new(), body_len: 0, truncated: false, first_byte_sent: false }
    }

    fn first_byte(&mut self, out: &mut Vec<Event>) {
        if !self.first_byte_sent {
            self.first_byte_sent = true;
            out.push(Event::FirstBodyByte);
        }
    }

    fn push(&mut self, bytes: &[u8], cap: usize, out: &mut Vec<Event>) {
        if bytes.is_empty() {
            return;
        }
        self.first_byte(out);
        self.body_len += bytes.len() as u64;
        let room = cap.saturating_sub(self.body.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn gap(&mut self, len: u64, out: &mut Vec<Event>) {
        self.first_byte(out);
        self.body_len += len;
        self.truncated = true;
    }

    fn into_message(self) -> Message {
        Message { head: self.head, body: self.body, body_len: self.body_len, truncated: self.truncated }
    }
}

/// One parser per direction of one connection.
///
/// Incremental: bytes may arrive in pieces of any size, each byte is examined a bounded number
/// of times, and several keep-alive or pipelined messages may follow each other. Events pushed
/// to `out` before an error stay valid (a message completed before garbage is still reported).
/// After an error the parser stays failed and every call returns that error again.
pub struct MessageParser {
    role: Role,
    body_cap: usize,
    pending: VecDeque<Pending>,
    head: HeadParser,
    framing: Framing,
    current: Option<Current>,
    /// A head (final or interim) has been parsed: from then on a bad start line is misframing
    /// within HTTP, not evidence that the stream was never HTTP.
    seen_head: bool,
    /// An interim 1xx arrived and its final response has not.
    interim: bool,
    failed: Option<HttpError>,
}

impl fmt::Debug for MessageParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageParser")
            .field("role", &self.role)
            .field("framing", &self.framing)
            .field("in_message", &self.in_message())
            .field("failed", &self.failed)
            .finish()
    }
}

impl MessageParser {
    pub fn new(role: Role, body_cap: usize) -> Self {
        MessageParser {
            role,
            body_cap,
            pending: VecDeque::new(),
            head: HeadParser::new(role),
            framing: Framing::Head,
            current: None,
            seen_head: false,
            interim: false,
            failed: None,
        }
    }

    /// Response parsers only (ignored otherwise): the method of the next request this
    /// connection will answer, in FIFO order. HEAD means the response has no body; CONNECT
    /// means a 2xx response turns the connection into a tunnel.
    pub fn push_request_method(&mut self, method: &str) {
        if self.role != Role::Response {
            return;
        }
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(match method {
            "HEAD" => Pending::Head,
            "CONNECT" => Pending::Connect,
            _ => Pending::Other,
        });
    }

    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Event>) -> Result<(), HttpError> {
        self.guard(|p| p.feed_inner(data, out))
    }

    /// `len` bytes of this direction were lost in capture. Inside body data (Content-Length,
    /// chunk data, or a read-until-close body) they are skipped and the message is marked
    /// truncated; anywhere else the framing is lost and the result is [`HttpError::Gap`].
    pub fn feed_gap(&mut self, len: u64, out: &mut Vec<Event>) -> Result<(), HttpError> {
        self.guard(|p| p.gap_inner(len, out))
    }

    /// The connection closed. Completes a read-until-close body; a message cut off mid-head or
    /// mid-body is [`HttpError::Incomplete`]. Afterwards the parser is ready for a new stream.
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), HttpError> {
        self.guard(|p| match p.framing {
            Framing::Head if p.head.started() || p.interim => Err(HttpError::Incomplete),
            Framing::Head | Framing::Upgraded => Ok(()),
            Framing::UntilClose => {
                p.complete(out);
                Ok(())
            }
            Framing::Length(_) | Framing::Chunked(_) => Err(HttpError::Incomplete),
        })
    }

    /// After [`finish`](Self::finish) reported [`HttpError::Incomplete`]: the message whose body
    /// was cut by the close, with the body received so far. Clients routinely close a
    /// Server-Sent Events stream after its last event without reading the chunked encoding's
    /// terminator; the events they read are all there. The parser stays failed.
    pub fn take_partial(&mut self) -> Option<Message> {
        if self.failed != Some(HttpError::Incomplete) {
            return None;
        }
        let message = self.current.take().map(Current::into_message);
        self.framing = Framing::Head;
        message
    }

    /// The (de-chunked, at most `body_cap`) body of the message being read so far, and the
    /// whole length seen (bytes past the cap and lost in gaps included): lets a caller follow a
    /// streaming response as it arrives. `None` between messages.
    pub fn body_so_far(&self) -> Option<(&[u8], u64)> {
        self.current.as_ref().map(|c| (c.body.as_slice(), c.body_len))
    }

    /// True while a message has started (any byte of it, or an interim response, seen) but not
    /// completed. False once the parser has failed.
    pub fn in_message(&self) -> bool {
        if self.failed.is_some() {
            return false;
        }
        match self.framing {
            Framing::Head => self.head.started() || self.interim,
            Framing::Upgraded => false,
            _ => true,
        }
    }

    /// Makes errors sticky: the caller drops the connection, but a stray call must not panic
    /// or resume parsing from an undefined position.
    fn guard(&mut self, f: impl FnOnce(&mut Self) -> Result<(), HttpError>) -> Result<(), HttpError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = f(self);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn feed_inner(&mut self, mut data: &[u8], out: &mut Vec<Event>) -> Result<(), HttpError> {
        while !data.is_empty() {
            let used = match &mut self.framing {
                Framing::Head => {
                    let (used, head) = self.head.feed(data, !self.seen_head)?;
                    if let Some(head) = head {
                        self.on_head(head, out)?;
                    }
                    used
                }
                Framing::Length(rem) => {
                    let n = (*rem).min(data.len() as u64) as usize;
                    *rem -= n as u64;
                    let done = *rem == 0;
                    self.push_body(&data[..n], out);
                    if done {
                        self.complete(out);
                    }
                    n
                }
                Framing::Chunked(dec) => {
                    let cur = self.current.as_mut().expect("body state has a message");
                    let cap = self.body_cap;
                    let (used, done) = dec.feed(data, &mut |b| cur.push(b, cap, out))?;
                    if done {
                        self.complete(out);
                    }
                    used
                }
                Framing::UntilClose => {
                    self.push_body(data, out);
                    data.len()
                }
                Framing::Upgraded => return Err(HttpError::Upgraded),
            };
            data = &data[used..];
        }
        Ok(())
    }

    fn gap_inner(&mut self, len: u64, out: &mut Vec<Event>) -> Result<(), HttpError> {
        if len == 0 {
            return Ok(());
        }
        match &mut self.framing {
            Framing::Head => return Err(HttpError::Gap),
            Framing::Upgraded => return Err(HttpError::Upgraded),
            Framing::Length(rem) if len > *rem => return Err(HttpError::Gap),
            Framing::Length(rem) => *rem -= len,
            Framing::Chunked(dec) => dec.gap(len)?,
            Framing::UntilClose => {}
        }
        if let Some(cur) = self.current.as_mut() {
            cur.gap(len, out);
        }
        if matches!(self.framing, Framing::Length(0)) {
            self.complete(out);
        }
        Ok(())
    }

    fn push_body(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        if let Some(cur) = self.current.as_mut() {
            cur.push(bytes, self.body_cap, out);
        }
    }

    fn complete(&mut self, out: &mut Vec<Event>) {
        if let Some(cur) = self.current.take() {
            out.push(Event::Complete(cur.into_message()));
        }
        self.framing = Framing::Head;
        self.interim = false;
    }

    fn on_head(&mut self, head: Head, out: &mut Vec<Event>) -> Result<(), HttpError> {
        self.seen_head = true;
        let framing = match (&head.start, self.role) {
            (Start::Response { status }, _) => {
                let status = *status;
                if (100..200).contains(&status) && status != 101 {
                    // Interim: the final response for the same request follows.
                    self.interim = true;
                    return Ok(());
                }
                let request = self.pending.pop_front().unwrap_or(Pending::Other);
                if status == 101 || (request == Pending::Connect && (200..300).contains(&status)) {
                    Framing::Upgraded
                } else if request == Pending::Head || status == 204 || status == 304 {
                    Framing::Length(0)
                } else {
                    body_framing(&head, Role::Response)?
                }
            }
            (Start::Request { .. }, _) => body_framing(&head, Role::Request)?,
        };
        out.push(Event::HeadComplete(head.clone()));
        self.current = Some(Current::new(head));
        self.framing = framing;
        match self.framing {
            Framing::Length(0) => self.complete(out),
            Framing::Upgraded => {
                // The exchange is over as far as HTTP/1 goes; report it, then refuse more bytes.
                if let Some(cur) = self.current.take() {
                    out.push(Event::Complete(cur.into_message()));
                }
                self.interim = false;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Body framing from the headers (RFC 9112 §6.3), once the no-body cases are excluded.
fn body_framing(head: &Head, role: Role) -> Result<Framing, HttpError> {
    let mut last_coding: Option<&[u8]> = None;
    for (_, v) in head.headers.iter().filter(|(n, _)| n == "transfer-encoding") {
        for coding in v.split(|&b| b == b',').map(trim_ows).filter(|c| !c.is_empty()) {
            last_coding = Some(coding);
        }
    }
    if let Some(coding) = last_coding {
        // Transfer-Encoding overrides Content-Length (§6.3 rule 3).
        return if coding.eq_ignore_ascii_case(b"chunked") {
            Ok(Framing::Chunked(ChunkedDecoder::new()))
        } else if role == Role::Response {
            Ok(Framing::UntilClose)
        } else {
            // A request body with no determinable length: §6.3 says reject.
            Err(HttpError::BadHeader)
        };
    }
    match content_length(head)? {
        Some(n) => Ok(Framing::Length(n)),
        None if role == Role::Response => Ok(Framing::UntilClose),
        None => Ok(Framing::Length(0)),
    }
}

/// All Content-Length values (repeated headers or comma lists) must agree (§6.3 rule 5).
fn content_length(head: &Head) -> Result<Option<u64>, HttpError> {
    let mut found = None;
    for (_, v) in head.headers.iter().filter(|(n, _)| n == "content-length") {
        for item in v.split(|&b| b == b',').map(trim_ows) {
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Err(HttpError::BadContentLength);
            }
            let n = item.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')));
            let n = n.ok_or(HttpError::BadContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(HttpError::BadContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "message_error_tests.rs"]
mod error_tests;
