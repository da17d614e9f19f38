//! One client TLS connection speaking HTTP/2: each completed stream becomes an [`Exchange`],
//! exactly as a request/response pair does on HTTP/1.1 (see conn.rs).
use std::{collections::HashMap, sync::Arc};

use tokentap_proto::{
    http::Role,
    http2::{starts_with_preface, H2Error, H2Event, H2Parser},
    llm::Endpoint,
};

use super::conn::{recognise_request, Exchange, Outcome, Piece};
use crate::capture::event::Direction;

/// Failures kept while a connection is unclassified; a joined-late connection that never shows a
/// decodable request could otherwise grow this without limit.
const MAX_DEFERRED: usize = 1024;

/// A request whose response has not ended.
struct Open {
    endpoint: Option<Endpoint>,
    start_ns: u64,
    first_body_ns: Option<u64>,
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
    extra_ai_hosts: Arc<Vec<String>>,
}

impl H2Connection {
    /// `preface`: the client preface was the first egress bytes; otherwise the connection is
    /// joined mid-way and the HPACK tables' history is unknown.
    pub fn new(body_cap: usize, preface: bool, extra_ai_hosts: Arc<Vec<String>>) -> Self {
        H2Connection {
            parser: H2Parser::new(body_cap, preface),
            open: HashMap::new(),
            classified: false,
            deferred: Vec::new(),
            ingress_seen: false,
            last_ingress_ns: None,
            events: Vec::new(),
            extra_ai_hosts,
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
        result
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
                let (_, endpoint, verdict) = recognise_request(&head, &mut self.classified, &self.extra_ai_hosts, out);
                if let Some(ai) = verdict {
                    if ai {
                        out.failures.append(&mut self.deferred);
                    }
                    self.deferred.clear();
                }
                self.open.insert(id, Open { endpoint, start_ns: ts_ns, first_body_ns: None });
            }
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
