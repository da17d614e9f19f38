//! Message heads: the start line and header fields, parsed incrementally line by line.

use std::fmt;

use super::message::{HttpError, Role};

/// Heads larger than this are refused: real API traffic stays far below, and the bound keeps a
/// misframed or hostile stream from making us buffer without limit.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Longest method token accepted. The grammar has no bound, but a long run of letters is far
/// likelier to be text or base64 than a method, and the bound lets `NotHttp` be decided early.
const MAX_METHOD: u8 = 32;

/// The first line of a message.
#[derive(Clone, PartialEq, Eq)]
pub enum Start {
    Request { method: String, target: String },
    Response { status: u16 },
}

// Hand-written so the query string stays out of logs: some APIs carry the key there (`?key=`).
impl fmt::Debug for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::Request { method, target } => {
                let path = match target.find('?') {
                    Some(i) => format!("{}?<redacted>", &target[..i]),
                    None => target.clone(),
                };
                f.debug_struct("Request").field("method", method).field("target", &path).finish()
            }
            Start::Response { status } => f.debug_struct("Response").field("status", status).finish(),
        }
    }
}

/// A parsed message head. Header names are lower-cased; values are kept raw (OWS trimmed).
#[derive(Clone, PartialEq, Eq)]
pub struct Head {
    pub start: Start,
    pub version_minor: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

// Values may be API keys or cookies: Debug shows header names only.
impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Head")
            .field("start", &self.start)
            .field("version_minor", &self.version_minor)
            .field("header_names", &names)
            .finish()
    }
}

/// Media types a caller is likely to compare against, so that [`Head::content_type`] can hand
/// back a lower-cased `&str` without owning one.
const KNOWN_MEDIA_TYPES: &[&str] = &[
    "text/event-stream",
    "application/json",
    "application/x-ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/stream+json",
    "application/problem+json",
    "application/vnd.amazon.eventstream",
    "application/grpc",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
    "text/html",
];

impl Head {
    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// [`Head::header`] as trimmed text; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        let v = std::str::from_utf8(self.header(name)?).ok()?;
        Some(v.trim_matches([' ', '\t']))
    }

    /// The media type of `Content-Type`, without parameters, lower-cased.
    ///
    /// A `&str` cannot own a lower-cased copy, so a mixed-case value is mapped onto a table of
    /// common media types; an unknown mixed-case type is returned as sent.
    pub fn content_type(&self) -> Option<&str> {
        let v = self.header_str("content-type")?;
        let media = v.split(';').next().unwrap_or("").trim_matches([' ', '\t']);
        if media.is_empty() {
            return None;
        }
        if media.bytes().any(|b| b.is_ascii_uppercase()) {
            if let Some(known) = KNOWN_MEDIA_TYPES.iter().find(|k| k.eq_ignore_ascii_case(media)) {
                return Some(known);
            }
        }
        Some(media)
    }

    /// The raw `Content-Encoding` value (a coding list), trimmed.
    pub fn content_encoding(&self) -> Option<&str> {
        self.header_str("content-encoding").filter(|v| !v.is_empty())
    }
}

pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Byte-by-byte validator of a start line prefix. It lets a stream that cannot be HTTP/1.x be
/// refused after a few bytes instead of after buffering a whole "line", and it never needs to
/// look at a byte twice however the line is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniff {
    Method(u8),
    Target(bool),
    /// Index into `HTTP/1.` matched so far; 7 means the minor digit is next.
    Version(u8),
    /// Request: version complete, only CR may follow. Response: SP must follow.
    VersionEnd,
    Status(u8),
    Reason,
    Cr,
}

const VERSION_PREFIX: &[u8; 7] = b"HTTP/1.";

impl Sniff {
    fn new(role: Role) -> Self {
        match role {
            Role::Request => Sniff::Method(0),
            Role::Response => Sniff::Version(0),
        }
    }

    /// Advances over one byte (never the terminating LF); `None` when no valid line has this prefix.
    fn step(self, b: u8, role: Role) -> Option<Sniff> {
        let next = match (self, role) {
            (Sniff::Method(n), _) if is_tchar(b) && n < MAX_METHOD => Sniff::Method(n + 1),
            (Sniff::Method(n), _) if b == b' ' && n > 0 => Sniff::Target(false),
            (Sniff::Target(any), _) if b == b' ' && any => Sniff::Version(0),
            (Sniff::Target(_), _) if b > b' ' && b != 0x7f => Sniff::Target(true),
            (Sniff::Version(i), _) if i < 7 && b == VERSION_PREFIX[usize::from(i)] => Sniff::Version(i + 1),
            (Sniff::Version(7), _) if b.is_ascii_digit() => Sniff::VersionEnd,
            (Sniff::VersionEnd, Role::Request) if b == b'\r' => Sniff::Cr,
            (Sniff::VersionEnd, Role::Response) if b == b' ' => Sniff::Status(0),
            (Sniff::Status(n), _) if n < 3 && b.is_ascii_digit() => Sniff::Status(n + 1),
            (Sniff::Status(3), _) if b == b' ' => Sniff::Reason,
            (Sniff::Status(3), _) if b == b'\r' => Sniff::Cr,
            (Sniff::Reason, _) if b == b'\r' => Sniff::Cr,
            (Sniff::Reason, _) if b == b'\t' || (b >= b' ' && b != 0x7f) => Sniff::Reason,
            _ => return None,
        };
        Some(next)
    }

    /// Whether a line ending here (at LF) is complete.
    fn accepts_end(self, role: Role) -> bool {
        match role {
            Role::Request => matches!(self, Sniff::VersionEnd | Sniff::Cr),
            Role::Response => matches!(self, Sniff::Status(3) | Sniff::Reason | Sniff::Cr),
        }
    }
}

/// Accumulates one head. Only the current line is buffered; finished lines are parsed at
/// their LF, so no byte is scanned more than once whatever the feed sizes.
pub(crate) struct HeadParser {
    role: Role,
    line: Vec<u8>,
    /// Bytes of this head consumed so far (leading blank lines between messages excluded).
    len: usize,
    sniff: Sniff,
    start: Option<(Start, u8)>,
    headers: Vec<(String, Vec<u8>)>,
}

impl HeadParser {
    pub(crate) fn new(role: Role) -> Self {
        HeadParser { role, line: Vec::new(), len: 0, sniff: Sniff::new(role), start: None, headers: Vec::new() }
    }

    /// Whether any byte of a head has been seen.
    pub(crate) fn started(&self) -> bool {
        self.len > 0
    }

    /// Consumes bytes up to and including the blank line that ends the head. Returns how many
    /// bytes were used and, once the blank line is consumed, the head. `first` says whether this
    /// is the first head of the stream, where a bad start line means the stream is not HTTP.
    pub(crate) fn feed(&mut self, data: &[u8], first: bool) -> Result<(usize, Option<Head>), HttpError> {
        let bad_start = if first { HttpError::NotHttp } else { HttpError::BadStartLine };
        let mut pos = 0;
        if self.len == 0 {
            // Clients may send a stray CRLF after a body; RFC 9112 §2.2 says to skip it.
            while pos < data.len() && (data[pos] == b'\r' || data[pos] == b'\n') {
                pos += 1;
            }
        }
        while pos < data.len() {
            let rest = &data[pos..];
            let (seg, lf) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            if self.start.is_none() {
                for &b in seg {
                    self.sniff = self.sniff.step(b, self.role).ok_or(bad_start.clone())?;
                }
            }
            let used = seg.len() + usize::from(lf);
            if self.len + used > MAX_HEAD {
                return Err(HttpError::HeadTooLarge);
            }
            self.len += used;
            pos += used;
            if !lf {
                self.line.extend_from_slice(seg);
                break;
            }
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(seg);
            let done = self.line_done(strip_cr(&line), &bad_start);
            line.clear();
            self.line = line;
            if done? {
                let (start, version_minor) = self.start.take().ok_or(bad_start)?;
                let headers = std::mem::take(&mut self.headers);
                self.reset();
                return Ok((pos, Some(Head { start, version_minor, headers })));
            }
        }
        Ok((pos, None))
    }

    /// Handles one complete line; `Ok(true)` at the blank line ending the head.
    fn line_done(&mut self, line: &[u8], bad_start: &HttpError) -> Result<bool, HttpError> {
        if self.start.is_none() {
            if !self.sniff.accepts_end(self.role) {
                return Err(bad_start.clone());
            }
            self.start = Some(parse_start(line, self.role).ok_or(bad_start.clone())?);
            return Ok(false);
        }
        if line.is_empty() {
            return Ok(true);
        }
        self.headers.push(parse_header(line)?);
        Ok(false)
    }

    fn reset(&mut self) {
        self.line.clear();
        self.len = 0;
        self.sniff = Sniff::new(self.role);
        self.start = None;
        self.headers.clear();
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits a start line the sniffer already accepted, so the shape is known to be right.
fn parse_start(line: &[u8], role: Role) -> Option<(Start, u8)> {
    match role {
        Role::Request => {
            let sp1 = line.iter().position(|&b| b == b' ')?;
            let sp2 = sp1 + 1 + line[sp1 + 1..].iter().position(|&b| b == b' ')?;
            let version = &line[sp2 + 1..];
            let minor = version.get(VERSION_PREFIX.len())?.checked_sub(b'0')?;
            let method = String::from_utf8(line[..sp1].to_vec()).ok()?;
            // Targets should be ASCII; a raw UTF-8 or Latin-1 byte is kept visible, not fatal.
            let target = String::from_utf8_lossy(&line[sp1 + 1..sp2]).into_owned();
            Some((Start::Request { method, target }, minor))
        }
        Role::Response => {
            let minor = line.get(7)?.checked_sub(b'0')?;
            let digits = line.get(9..12)?;
            let status = digits.iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
            (status >= 100).then_some((Start::Response { status }, minor))
        }
    }
}

/// `name: value` with a token name and no whitespace before the colon (RFC 9112 §5.1 says to
/// reject that, as it is a smuggling vector). Obsolete line folding is refused too.
fn parse_header(line: &[u8]) -> Result<(String, Vec<u8>), HttpError> {
    let colon = line.iter().position(|&b| b == b':').ok_or(HttpError::BadHeader)?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadHeader);
    }
    let value = trim_ows(&line[colon + 1..]);
    if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(HttpError::BadHeader);
    }
    let name = name.iter().map(|b| char::from(b.to_ascii_lowercase())).collect();
    Ok((name, value.to_vec()))
}

pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}
