//! HTTP/1.1 message framing, content decoding and Server-Sent Events.
