//! Which HTTP version a connection speaks, decided from its first captured bytes.
use tokentap_proto::{
    http::HttpError,
    http2::{looks_like_frame, starts_with_preface, H2Error},
};

use super::{
    conn::{HttpConnection, Outcome, Piece, Settings},
    h2::H2Connection,
};
use crate::capture::event::Direction;

/// Why a connection stopped being parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    Http(HttpError),
    H2(H2Error),
}

impl ConnError {
    /// The bytes are not an HTTP client's (the server side, another protocol): a verdict to
    /// stop capturing, not a parse failure to count.
    pub fn is_verdict(&self) -> bool {
        matches!(self, ConnError::Http(HttpError::NotHttp) | ConnError::H2(H2Error::ServerSide))
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ConnError::Http(e) => e.reason(),
            ConnError::H2(e) => e.reason(),
        }
    }
}

pub enum Connection {
    /// No byte seen yet.
    Undecided(Settings),
    // Boxed: a connection is allocated once and lives long; the variants differ in size.
    Http1(Box<HttpConnection>),
    Http2(Box<H2Connection>),
}

impl Connection {
    pub fn new(settings: Settings) -> Self {
        Connection::Undecided(settings)
    }

    /// Picks the protocol on the first bytes. The client preface means HTTP/2 from the start;
    /// the preface arriving means we are the server. Frames without a preface mean a connection
    /// that opened before the agent started. Anything else goes to the HTTP/1.x parser, which
    /// tells HTTP/1.x from the rest.
    fn decide(&mut self, direction: Direction, data: Option<&[u8]>) -> Result<(), ConnError> {
        let Connection::Undecided(settings) = self else { return Ok(()) };
        let settings = settings.clone();
        *self = match (direction, data) {
            (Direction::Egress, Some(d)) if starts_with_preface(d) => {
                Connection::Http2(Box::new(H2Connection::new(settings, true)))
            }
            (Direction::Ingress, Some(d)) if starts_with_preface(d) => return Err(ConnError::H2(H2Error::ServerSide)),
            (_, Some(d)) if looks_like_frame(d) => Connection::Http2(Box::new(H2Connection::new(settings, false))),
            _ => Connection::Http1(Box::new(HttpConnection::new(settings))),
        };
        Ok(())
    }

    /// Feeds bytes (or, with `data == None`, a gap of `gap` lost bytes) of one direction.
    pub fn feed(&mut self, piece: Piece<'_>, out: &mut Outcome) -> Result<(), ConnError> {
        let Piece { direction, data, .. } = piece;
        self.decide(direction, data)?;
        match self {
            Connection::Undecided(_) => Ok(()),
            Connection::Http1(c) => c.feed(piece, out).map_err(ConnError::Http),
            Connection::Http2(c) => c.feed(piece, out).map_err(|e| {
                // A joined-late stream that only looked like HTTP/2 is not a failure.
                if c.verified() {
                    ConnError::H2(e)
                } else {
                    ConnError::Http(HttpError::NotHttp)
                }
            }),
        }
    }

    pub fn finish(&mut self, ts_ns: u64, out: &mut Outcome) -> Result<(), ConnError> {
        match self {
            Connection::Undecided(_) => Ok(()),
            Connection::Http1(c) => c.finish(ts_ns, out).map_err(ConnError::Http),
            Connection::Http2(c) => {
                c.finish(ts_ns, out);
                Ok(())
            }
        }
    }

    pub fn unanswered(&self) -> usize {
        match self {
            Connection::Undecided(_) => 0,
            Connection::Http1(c) => c.unanswered(),
            Connection::Http2(c) => c.unanswered(),
        }
    }
}
