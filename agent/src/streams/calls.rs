//! Calls seen before they complete, for enforcement: a request to an AI endpoint as soon as it
//! is whole (what it may cost), the output of a streaming response while it streams, and calls
//! that ended without an exchange. Only counts and model names leave this module.
use std::borrow::Cow;

use tokentap_proto::{
    http::{decode_body, Head, Start},
    llm::{self, OutputProgress, RequestPlan},
};

use super::{endpoint::Endpoint, tracker::Origin};
use crate::capture::event::ConnId;

/// One call on one connection: the HTTP/1.1 request's position on its connection (1, 2, ...),
/// or the HTTP/2 stream id. The completed exchange carries the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    pub conn: ConnId,
    pub seq: u64,
}

/// What a request may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Counted with the tokenizer the usage estimate uses, from the messages / input.
    pub input_tokens: u64,
    /// The request's own cap (`max_tokens`, `max_completion_tokens`, `max_output_tokens`).
    pub max_output_tokens: Option<u64>,
}

/// A request to an AI endpoint, sent whole, whose response has not completed.
#[derive(Debug, Clone)]
pub struct RequestStart {
    pub origin: Origin,
    /// TLS server name and socket peer, when the capture saw them.
    pub endpoint: Endpoint,
    pub call: CallKey,
    pub api: llm::Endpoint,
    pub provider: &'static str,
    pub request_model: Option<String>,
    pub streaming: bool,
    pub estimate: Estimate,
}

/// The output of a streaming response so far (estimated from its text, or reported by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamProgress {
    pub call: CallKey,
    pub output_tokens_so_far: u64,
}

/// A connection-level request start (the tracker adds who and where).
pub struct CallStart {
    pub seq: u64,
    pub api: llm::Endpoint,
    pub plan: RequestPlan,
}

/// Plans a whole request: its body content-decoded when it can be (else counted by its size).
pub fn plan(api: llm::Endpoint, head: &Head, body: &[u8], body_len: u64, truncated: bool, cap: usize) -> RequestPlan {
    let decoded: Cow<'_, [u8]> = match head.content_encoding() {
        None => Cow::Borrowed(body),
        Some(_) if truncated => Cow::Borrowed(&[]),
        Some(coding) => decode_body(Some(coding), body, cap).map_or(Cow::Borrowed(&[][..]), Cow::Owned),
    };
    let body_len = if decoded.len() > body.len() { decoded.len() as u64 } else { body_len };
    llm::plan_request(api, &decoded, body_len)
}

/// A progress report is due after this many frames with new output...
const EVERY_DELTAS: u64 = 8;
/// ...or once the count grew by this many tokens, whichever comes first.
const EVERY_TOKENS: u64 = 32;

/// Follows one streaming response's body as it grows.
pub struct Follow {
    progress: OutputProgress,
    /// Body bytes already fed.
    offset: usize,
    reported_tokens: u64,
    reported_deltas: u64,
}

impl Follow {
    /// Only successful event streams without a content coding are followed (a compressed
    /// stream cannot be read piecewise here; its record still comes at the end).
    pub fn for_response(api: llm::Endpoint, model: Option<&str>, request_stream: bool, head: &Head) -> Option<Self> {
        let ok = matches!(head.start, Start::Response { status } if (200..300).contains(&status));
        let encoded = head.content_encoding().is_some_and(|c| !c.eq_ignore_ascii_case("identity"));
        let sse = match head.content_type() {
            Some(ct) => ct.eq_ignore_ascii_case("text/event-stream"),
            None => request_stream,
        };
        (ok && !encoded && sse && api.operation != llm::Operation::Embeddings).then(|| Follow {
            progress: OutputProgress::new(api, model),
            offset: 0,
            reported_tokens: 0,
            reported_deltas: 0,
        })
    }

    /// `body`: the body kept so far; `body_len`: its whole length. Feeds what is new; returns
    /// the count when a report is due. Bytes past the body cap (or lost in gaps) are not read:
    /// they count at the rate of tokens per byte read so far, so a stream longer than the cap
    /// still grows (and can still be cut).
    pub fn advance(&mut self, body: &[u8], body_len: u64) -> Option<u64> {
        if body.len() > self.offset {
            self.progress.feed(&body[self.offset..]);
            self.offset = body.len();
        }
        let read = self.progress.tokens();
        let unread = body_len.saturating_sub(body.len() as u64);
        let extra = match body.len() as u64 {
            0 => 0,
            kept => u64::try_from(u128::from(unread) * u128::from(read) / u128::from(kept)).unwrap_or(u64::MAX),
        };
        let (tokens, deltas) = (read.saturating_add(extra), self.progress.deltas());
        let due = tokens > self.reported_tokens
            && (deltas >= self.reported_deltas + EVERY_DELTAS || tokens >= self.reported_tokens + EVERY_TOKENS);
        if !due {
            return None;
        }
        self.reported_tokens = tokens;
        self.reported_deltas = deltas;
        Some(tokens)
    }
}
