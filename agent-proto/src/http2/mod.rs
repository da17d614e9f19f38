//! HTTP/2 client connections (RFC 9113): frames, HPACK, multiplexed streams.
//!
//! [`H2Parser`] takes both directions of one connection as the capture delivers them and
//! reassembles each stream into the same [`Head`](crate::http::Head) and
//! [`Message`](crate::http::Message) values the HTTP/1.1 parser produces, so content decoding,
//! Server-Sent Events and the LLM parsers apply unchanged. Flow control, priorities and server
//! push are not needed to read a conversation and are ignored.
//!
//! A connection may be first seen mid-way (the agent started after it opened). Then the HPACK
//! dynamic table is unknown; [`hpack`] marks fields that reference it as unknown, and a stream
//! whose headers are not all known is reported as failed rather than guessed at.

pub mod frame;
pub mod hpack;
mod parser;
mod stream;

pub use frame::{looks_like_frame, PREFACE};
pub use parser::{H2Event, H2Parser};

/// Why a connection stopped being parseable as HTTP/2. Carries no payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H2Error {
    #[error("client preface expected")]
    BadPreface,
    #[error("frame payload too large to buffer")]
    FrameTooLarge,
    #[error("padding longer than the frame")]
    BadPadding,
    #[error("malformed frame")]
    BadFrame,
    #[error("malformed HPACK header block")]
    BadHpack,
    #[error("captured bytes lost outside DATA")]
    Gap,
    #[error("too many concurrent streams")]
    TooManyStreams,
    /// Requests arrive and responses leave: this is the server's end of the connection.
    #[error("server side of an HTTP/2 connection")]
    ServerSide,
}

impl H2Error {
    /// A stable snake_case name, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            H2Error::BadPreface => "h2_bad_preface",
            H2Error::FrameTooLarge => "h2_frame_too_large",
            H2Error::BadPadding => "h2_bad_padding",
            H2Error::BadFrame => "h2_bad_frame",
            H2Error::BadHpack => "h2_bad_hpack",
            H2Error::Gap => "h2_gap",
            H2Error::TooManyStreams => "h2_too_many_streams",
            H2Error::ServerSide => "h2_server_side",
        }
    }
}

/// Whether the first egress bytes of a connection are (the start of) the client preface. A
/// write cut shorter than `PRI ` is not taken as one: a lone `P` may as well begin `POST`.
pub fn starts_with_preface(data: &[u8]) -> bool {
    data.len() >= 4 && (data.starts_with(PREFACE) || PREFACE.starts_with(data))
}

#[cfg(test)]
mod tests;
