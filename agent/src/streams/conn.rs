//! One client TLS connection at the HTTP/1.1 level: requests paired with responses in order,
//! with the timestamps that give duration and time to first chunk.
use std::collections::VecDeque;

use tokentap_proto::{
    http::{Event, Head, HttpError, Message, MessageParser, Role, Start},
    llm::{self, Endpoint},
};

use super::calls::{self, CallStart, Follow};
use crate::capture::event::Direction;

/// A request that has been sent and awaits its response.
struct Pending {
    head: Head,
    endpoint: Option<Endpoint>,
    start_ns: u64,
    message: Option<Message>,
    /// Its position on the connection (the call's key).
    seq: u64,
    /// From the request's plan, to follow a streamed response: model and `stream`.
    model: Option<String>,
    stream: bool,
    follow: Option<Follow>,
}

/// A request and its response, both complete. Holds plaintext: lives only while parsed.
pub struct Exchange {
    pub endpoint: Endpoint,
    /// The call's key on its connection (see `calls::CallKey`).
    pub seq: u64,
    pub request_head: Head,
    /// `None` if the response completed before the request did (an early error answer).
    pub request: Option<Message>,
    pub response: Message,
    pub request_start_ns: u64,
    pub response_first_body_ns: Option<u64>,
    pub response_end_ns: u64,
}

/// One direction's next piece of a connection: bytes, or (`data == None`) a gap of `gap` lost
/// bytes. Every HTTP version's `feed` takes one. No `Debug`: it holds plaintext.
#[derive(Clone, Copy)]
pub struct Piece<'a> {
    pub direction: Direction,
    pub ts_ns: u64,
    pub data: Option<&'a [u8]>,
    pub gap: u64,
}

impl<'a> Piece<'a> {
    pub fn bytes(direction: Direction, ts_ns: u64, data: &'a [u8]) -> Self {
        Piece { direction, ts_ns, data: Some(data), gap: 0 }
    }

    pub fn gap(direction: Direction, ts_ns: u64, gap: u64) -> Self {
        Piece { direction, ts_ns, data: None, gap }
    }
}

/// What the connection learned from one feed.
#[derive(Default)]
pub struct Outcome {
    pub exchanges: Vec<Exchange>,
    /// The first request showed what this connection is: `Some(true)` an AI API, `Some(false)`
    /// something else.
    pub classified: Option<bool>,
    /// Responses completed by the connection's close before their framing said they ended.
    pub cut_responses: u64,
    /// Exchanges lost to parse failures that leave the connection usable (HTTP/2 streams).
    pub failures: Vec<&'static str>,
    /// Requests to AI endpoints sent whole (only with call hooks on).
    pub requests: Vec<CallStart>,
    /// `(seq, output tokens so far)` of streaming responses.
    pub progress: Vec<(u64, u64)>,
    /// Calls that will never complete (a failed HTTP/2 stream).
    pub ended: Vec<u64>,
}

/// How every HTTP version's connection is set up.
#[derive(Clone)]
pub struct Settings {
    /// Largest body kept for parsing.
    pub body_cap: usize,
    pub extra_ai_hosts: std::sync::Arc<Vec<String>>,
    /// Report request starts and stream progress (enforcement needs them; they cost a token
    /// count per request).
    pub call_hooks: bool,
}

pub struct HttpConnection {
    requests: MessageParser,
    responses: MessageParser,
    pending: VecDeque<Pending>,
    request_start_ns: Option<u64>,
    first_body_ns: Option<u64>,
    last_ingress_ns: Option<u64>,
    classified: bool,
    events: Vec<Event>,
    settings: Settings,
    next_seq: u64,
}

/// Path prefixes that AI-serving endpoints use even when the host is unknown: a connection whose
/// first request matches one stays tracked (the next request may be the LLM call).
const AI_PATH_PREFIXES: &[&str] = &["/v1/", "/openai/", "/v1beta/", "/api/"];

pub fn host_and_port(head: &Head) -> (String, Option<u16>) {
    let raw = head.header_str("host").unwrap_or_default().to_ascii_lowercase();
    // IPv6 literals keep their brackets' content; a port follows the last colon otherwise.
    if let Some(rest) = raw.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h.to_string(), port);
        }
    }
    match raw.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().ok()),
        _ => (raw, None),
    }
}

/// Whether a connection's first request shows an AI API: a recognised endpoint, a known or
/// configured AI host, or a path prefix AI servers use. Configured entries that start with
/// `/` are path prefixes (a host name never does), the others host names.
pub fn is_ai_connection(endpoint_known: bool, host: &str, target: &str, extra_ai_hosts: &[String]) -> bool {
    endpoint_known
        || llm::is_known_ai_host(host)
        || AI_PATH_PREFIXES.iter().any(|p| target.starts_with(p))
        || extra_ai_hosts.iter().any(|e| if e.starts_with('/') { target.starts_with(e.as_str()) } else { e == host })
}

fn request_target(head: &Head) -> (&str, &str) {
    match &head.start {
        Start::Request { method, target } => (method.as_str(), target.as_str()),
        Start::Response { .. } => ("", ""),
    }
}

/// A request head's method and LLM endpoint (`None`: not an LLM API call), for HTTP/1 and
/// HTTP/2 alike. The connection's first request decides whether it is an AI connection: then
/// `*classified` is set and the verdict reported in `out.classified` and returned.
pub fn recognise_request<'h>(
    head: &'h Head,
    classified: &mut bool,
    extra_ai_hosts: &[String],
    out: &mut Outcome,
) -> (&'h str, Option<Endpoint>, Option<bool>) {
    let (method, target) = request_target(head);
    let (host, _) = host_and_port(head);
    let endpoint = llm::recognise(method, &host, target);
    let mut verdict = None;
    if !*classified {
        *classified = true;
        let ai = is_ai_connection(endpoint.is_some(), &host, target, extra_ai_hosts);
        out.classified = Some(ai);
        verdict = Some(ai);
    }
    (method, endpoint, verdict)
}

impl HttpConnection {
    pub fn new(settings: Settings) -> Self {
        HttpConnection {
            requests: MessageParser::new(Role::Request, settings.body_cap),
            responses: MessageParser::new(Role::Response, settings.body_cap),
            pending: VecDeque::new(),
            request_start_ns: None,
            first_body_ns: None,
            last_ingress_ns: None,
            classified: false,
            events: Vec::new(),
            settings,
            next_seq: 0,
        }
    }

    /// Feeds bytes (or, with `data == None`, a gap of `gap` lost bytes) of one direction.
    pub fn feed(&mut self, piece: Piece<'_>, out: &mut Outcome) -> Result<(), HttpError> {
        let Piece { direction, ts_ns, data, gap } = piece;
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let parser = match direction {
            Direction::Egress => &mut self.requests,
            Direction::Ingress => &mut self.responses,
        };
        match direction {
            Direction::Egress if !parser.in_message() => self.request_start_ns = Some(ts_ns),
            Direction::Egress => {}
            Direction::Ingress => self.last_ingress_ns = Some(ts_ns),
        }
        let result = match data {
            Some(bytes) => parser.feed(bytes, &mut events),
            None => parser.feed_gap(gap, &mut events),
        };
        for event in events.drain(..) {
            self.on_event(direction, ts_ns, event, out);
        }
        self.events = events;
        if direction == Direction::Ingress {
            self.follow(out);
        }
        result
    }

    /// Counts the new output of the response being read, if it is a followed stream.
    fn follow(&mut self, out: &mut Outcome) {
        let (Some(p), Some((body, body_len))) = (self.pending.front_mut(), self.responses.body_so_far()) else {
            return;
        };
        if let Some(tokens) = p.follow.as_mut().and_then(|f| f.advance(body, body_len)) {
            out.progress.push((p.seq, tokens));
        }
    }

    /// The connection ended: completes a response delimited by the close, and accepts a
    /// response whose body the client stopped reading (a streaming client that closes after
    /// the last event without reading the chunked terminator). Such a response ends at the
    /// last bytes read, and `Outcome::cut_responses` counts it.
    pub fn finish(&mut self, ts_ns: u64, out: &mut Outcome) -> Result<(), HttpError> {
        let mut events = Vec::new();
        let mut result = self.responses.finish(&mut events);
        if result == Err(HttpError::Incomplete) {
            if let Some(partial) = self.responses.take_partial() {
                events.push(Event::Complete(partial));
                out.cut_responses += 1;
                result = Ok(());
            }
        }
        let end_ns = self.last_ingress_ns.unwrap_or(ts_ns);
        for event in events {
            self.on_event(Direction::Ingress, end_ns, event, out);
        }
        result
    }

    fn on_event(&mut self, direction: Direction, ts_ns: u64, event: Event, out: &mut Outcome) {
        match (direction, event) {
            (Direction::Egress, Event::HeadComplete(head)) => {
                let (method, endpoint, _) =
                    recognise_request(&head, &mut self.classified, &self.settings.extra_ai_hosts, out);
                self.responses.push_request_method(method);
                let start_ns = self.request_start_ns.unwrap_or(ts_ns);
                self.next_seq += 1;
                let seq = self.next_seq;
                let p =
                    Pending { head, endpoint, start_ns, message: None, seq, model: None, stream: false, follow: None };
                self.pending.push_back(p);
            }
            (Direction::Egress, Event::Complete(message)) => {
                let (hooks, cap) = (self.settings.call_hooks, self.settings.body_cap);
                if let Some(p) = self.pending.iter_mut().rev().find(|p| p.message.is_none()) {
                    if let (true, Some(api)) = (hooks, p.endpoint) {
                        let plan = calls::plan(api, &p.head, &message.body, message.body_len, message.truncated, cap);
                        (p.model, p.stream) = (plan.model.clone(), plan.stream);
                        out.requests.push(CallStart { seq: p.seq, api, plan });
                    }
                    p.message = Some(message);
                }
            }
            (Direction::Egress, Event::FirstBodyByte) => {}
            (Direction::Ingress, Event::HeadComplete(head)) => {
                self.first_body_ns = None;
                if let Some(p) = self.pending.front_mut().filter(|p| p.message.is_some()) {
                    if let (true, Some(api)) = (self.settings.call_hooks, p.endpoint) {
                        p.follow = Follow::for_response(api, p.model.as_deref(), p.stream, &head);
                    }
                }
            }
            (Direction::Ingress, Event::FirstBodyByte) => self.first_body_ns = Some(ts_ns),
            (Direction::Ingress, Event::Complete(response)) => {
                let first_body = self.first_body_ns.take();
                let Some(p) = self.pending.pop_front() else { return };
                if let Some(endpoint) = p.endpoint {
                    out.exchanges.push(Exchange {
                        endpoint,
                        seq: p.seq,
                        request_head: p.head,
                        request: p.message,
                        response,
                        request_start_ns: p.start_ns,
                        response_first_body_ns: first_body,
                        response_end_ns: ts_ns,
                    });
                }
            }
        }
    }

    /// Requests sent and not answered (counted when a connection dies with them).
    pub fn unanswered(&self) -> usize {
        self.pending.len()
    }
}
