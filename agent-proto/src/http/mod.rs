//! HTTP/1.1 message framing, content decoding and Server-Sent Events.
//!
//! The capture path hands us each direction of a TLS connection as a plaintext byte stream,
//! cut into arbitrary pieces. [`MessageParser`] turns one direction into a sequence of
//! messages (RFC 9112 framing), [`decode_body`] undoes `Content-Encoding`, and [`sse`] splits
//! event-stream bodies. Everything here is pure: bytes in, values out, no I/O, no logging.

mod chunked;
pub mod decode;
mod head;
pub mod message;
pub mod sse;

pub use decode::{decode_body, DecodeError};
pub use message::{Event, Head, HttpError, Message, MessageParser, Role, Start};
