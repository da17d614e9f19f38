//! One client TLS connection speaking HTTP/2: each completed stream becomes an [`Exchange`],
//! exactly as a request/response pair does on HTTP/1.1 (see conn.rs).
use std::collections::HashMap;

use tokentap_proto::{
    http::Role,
    http2::{starts_with_preface, H2Error, H2Event, H2Parser},
    llm::Endpoint,
};

use super::{
    calls::{self, CallStart, Follow},
    conn::{recognise_request, Exchange, Outcome, Piece, Settings},
};
use crate::capture::event::Direction;

/// Failures kept while a connection is unclassified; a joined-late connection that never shows a
/// decodable request could otherwise grow this without limit.
const MAX_DEFERRED: usize = 1024;

/// A request whose response has not ended.
struct Open {
    endpoint: Option<Endpoint>,
    start_ns: u64,
    first_body_ns: Option<u64>,
    /// The request's plan was reported (its model and `stream` kept to follow the response).
    planned: Option<(Option<String>, bool)>,
    /// `None` until the response head arrived; then `Some(None)` if the response is not followed.
    follow: Option<Option<Follow>>,
}

pub struct H2Connection {
    parser: H2Parser,
    open: HashMap<u32, Open>,
    classified: bool,
    /// Stream failures seen before the connection was classified: counted once it is known to
    /// be an AI connection (or at close, if it never is), dropped if it is not.
    deferred: Vec<&'static str>,
    ingress_seen: bool,
    /// When the server's last bytes arrived: the end of a response the client cut short.
    last_ingress_ns: Option<u64>,
    events: Vec<H2Event>,
    settings: Settings,
}

impl H2Connection {
    /// `preface`: the client preface was the first egress bytes; otherwise the connection is
    /// joined mid-way and the HPACK tables' history is unknown.
    pub fn new(settings: Settings, preface: bool) -> Self {
        H2Connection {
            parser: H2Parser::new(settings.body_cap, preface),
            open: HashMap::new(),
            classified: false,
            deferred: Vec::new(),
            ingress_seen: false,
            last_ingress_ns: None,
            events: Vec::new(),
            settings,
        }
    }

    /// Whether the bytes so far prove an HTTP/2 client (preface, or a decoded request); before
    /// that an error means the guess "HTTP/2" was wrong, not that parsing failed.
    pub fn verified(&self) -> bool {
        self.parser.verified()
    }

    pub fn feed(&mut self, piece: Piece<'_>, out: &mut Outcome) -> Result<(), H2Error> {
        let Piece { direction, ts_ns, data, gap } = piece;
        let role = match direction {
            Direction::Egress => Role::Request,
            Direction::Ingress => Role::Response,
        };
        if role == Role::Response {
            self.last_ingress_ns = Some(ts_ns);
        }
        if role == Role::Response && !self.ingress_seen {
            self.ingress_seen = true;
            // The peer sends the client preface: we are the server of this connection.
            if data.is_some_and(starts_with_preface) {
                return Err(H2Error::ServerSide);
            }
        }
        let mut events = std::mem::take(&mut self.events);
        let result = match data {
            Some(bytes) => self.parser.feed(role, bytes, &mut events),
            None => self.parser.feed_gap(role, gap, &mut events),
        };
        for event in events.drain(..) {
            self.on_event(ts_ns, event, out);
        }
        self.events = events;
        if role == Role::Response && self.settings.call_hooks {
            self.follow(out);
        }
        result
    }

    /// Counts the new output of every followed stream; a stream's response head decides whether
    /// it is followed, the first time it is seen.
    fn follow(&mut self, out: &mut Outcome) {
        for (&id, open) in self.open.iter_mut() {
            let (Some(api), Some((model, stream))) = (open.endpoint, open.planned.as_ref()) else { continue };
            let Some((head, body, body_len)) = self.parser.response_so_far(id) else { continue };
            let follow = open.follow.get_or_insert_with(|| Follow::for_response(api, model.as_deref(), *stream, head));
            if let Some(tokens) = follow.as_mut().and_then(|f| f.advance(body, body_len)) {
                out.progress.push((u64::from(id), tokens));
            }
        }
    }

    /// The request of stream `id` is whole: report what it may cost.
    fn plan(&mut self, id: u32, out: &mut Outcome) {
        let Some(open) = self.open.get_mut(&id) else { return };
        let (Some(api), true, None) = (open.endpoint, self.settings.call_hooks, &open.planned) else { return };
        let Some((head, body, body_len)) = self.parser.request_so_far(id) else { return };
        let truncated = body_len > body.len() as u64;
        let plan = calls::plan(api, head, body, body_len, truncated, self.settings.body_cap);
        open.planned = Some((plan.model.clone(), plan.stream));
        out.requests.push(CallStart { seq: u64::from(id), api, plan });
    }

    /// The connection ended: responses cut by the close complete with what arrived (as on
    /// HTTP/1.1); streams still unanswered are counted by the caller (`unanswered`).
    pub fn finish(&mut self, ts_ns: u64, out: &mut Outcome) {
        let mut events = std::mem::take(&mut self.events);
        self.parser.finish(&mut events);
        for event in events.drain(..) {
            self.on_event(ts_ns, event, out);
        }
        self.events = events;
        out.failures.append(&mut self.deferred);
    }

    pub fn unanswered(&self) -> usize {
        self.parser.unanswered()
    }

    fn on_event(&mut self, ts_ns: u64, event: H2Event, out: &mut Outcome) {
        match event {
            H2Event::Request { id, head } => {
                let (_, endpoint, verdict) =
                    recognise_request(&head, &mut self.classified, &self.settings.extra_ai_hosts, out);
                if let Some(ai) = verdict {
                    if ai {
                        out.failures.append(&mut self.deferred);
                    }
                    self.deferred.clear();
                }
                let open = Open { endpoint, start_ns: ts_ns, first_body_ns: None, planned: None, follow: None };
                self.open.insert(id, open);
            }
            H2Event::RequestEnd { id } => self.plan(id, out),
            H2Event::ResponseBody { id } => {
                if let Some(open) = self.open.get_mut(&id) {
                    open.first_body_ns.get_or_insert(ts_ns);
                }
            }
            H2Event::Complete { id, request, response, cut } => {
                let Some(open) = self.open.remove(&id) else { return };
                out.cut_responses += u64::from(cut);
                if let Some(endpoint) = open.endpoint {
                    out.exchanges.push(Exchange {
                        endpoint,
                        seq: u64::from(id),
                        request_head: request.head.clone(),
                        request: Some(request),
                        response,
                        request_start_ns: open.start_ns,
                        response_first_body_ns: open.first_body_ns,
                        response_end_ns: if cut { self.last_ingress_ns.unwrap_or(ts_ns) } else { ts_ns },
                    });
                }
            }
            H2Event::Failed { id, reason } => {
                let open = self.open.remove(&id);
                if open.as_ref().is_some_and(|o| o.planned.is_some()) {
                    out.ended.push(u64::from(id));
                }
                // A failed stream of a non-AI endpoint on an AI connection is no lost usage.
                if open.is_some_and(|o| o.endpoint.is_none()) {
                    return;
                }
                if self.classified {
                    out.failures.push(reason);
                } else if self.deferred.len() < MAX_DEFERRED {
                    self.deferred.push(reason);
                }
            }
        }
    }
}
