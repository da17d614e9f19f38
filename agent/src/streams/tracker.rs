//! All live TLS connections: routes chunks to their connection, accounts for lost bytes,
//! decides which connections are worth capturing, and hands complete exchanges on.
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use super::{
    calls::{CallKey, Estimate, RequestStart, StreamProgress},
    conn::{Exchange, Outcome, Piece, Settings},
    cursor::CallCursor,
    endpoint::{Endpoint, Endpoints},
    proto::{ConnError, Connection},
};
use crate::capture::event::{ConnId, DataChunk, Direction, TlsLibrary};

/// Where an exchange came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub id: ConnId,
    pub tid: u32,
    pub cgroup_id: u64,
    pub library: TlsLibrary,
}

pub struct TrackedExchange {
    pub origin: Origin,
    /// The same key its `RequestStart` had.
    pub call: CallKey,
    pub exchange: Exchange,
    /// TLS server name and socket peer, when the capture saw them.
    pub endpoint: Endpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Track,
    /// Not HTTP to an AI API, or the server side of a connection: stop capturing it.
    Ignore,
}

#[derive(Default)]
pub struct Output {
    pub exchanges: Vec<TrackedExchange>,
    /// Verdicts to write to the kernel's connection map.
    pub verdicts: Vec<(ConnId, Verdict)>,
    /// Kernel connection-map entries to delete (their process is gone).
    pub forget: Vec<ConnId>,
    /// Parse failures by reason (a metric label) and the stack whose bytes failed.
    pub failures: Vec<(&'static str, TlsLibrary)>,
    /// Responses whose body was completed by the connection's close (see `HttpConnection::finish`).
    pub cut_responses: u64,
    /// Requests to AI endpoints sent whole, with what they may cost (call hooks only).
    pub requests: Vec<RequestStart>,
    /// Output so far of streaming responses (call hooks only).
    pub progress: Vec<StreamProgress>,
    /// Calls reported in `requests` that ended without an exchange: their connection closed,
    /// failed, idled out or its process exited, or their HTTP/2 stream failed.
    pub ended: Vec<CallKey>,
}

struct Tracked {
    http: Connection,
    egress: CallCursor,
    ingress: CallCursor,
    origin: Origin,
    last_ns: u64,
    /// The kernel lost a call of this connection that no chunk reported (see `mark_lost`).
    lost: bool,
    /// Calls reported in `Output::requests` whose exchange has not come (a handful at most).
    open_calls: Vec<u64>,
}

impl Tracked {
    /// The connection is gone: every call still open ends without an exchange.
    fn end_calls(&mut self, out: &mut Output) {
        let conn = self.origin.id;
        out.ended.extend(self.open_calls.drain(..).map(|seq| CallKey { conn, seq }));
    }
}

/// Parse-failure reason for a connection whose byte stream has a hole of unknown size.
pub const DATA_LOST: &str = "data_lost";

pub struct TrackerConfig {
    /// The kernel's per-call capture cap.
    pub call_cap: u64,
    /// Largest body kept for parsing.
    pub body_cap: usize,
    /// Hosts to treat as AI APIs besides the built-in provider hosts, and (entries that start
    /// with `/`) request path prefixes.
    pub extra_ai_hosts: Vec<String>,
    /// Report `Output::requests` and `Output::progress` (enforcement): costs a token count of
    /// every request, so off unless something uses them.
    pub call_hooks: bool,
}

pub struct Tracker {
    conns: HashMap<ConnId, Tracked>,
    /// Connections judged not worth capturing; their in-flight chunks are dropped.
    ignored: HashMap<ConnId, u64>,
    call_cap: u64,
    settings: Settings,
    endpoints: Endpoints,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        if config.call_hooks {
            // Building a tokenizer takes a good fraction of a second: not while the first
            // request's caller is held waiting for its estimate.
            std::thread::spawn(|| {
                use tokentap_proto::tokens::{count, Encoding};
                count(Encoding::Cl100k, "warm");
                count(Encoding::O200k, "warm");
            });
        }
        Tracker {
            conns: HashMap::new(),
            ignored: HashMap::new(),
            call_cap: config.call_cap,
            settings: Settings {
                body_cap: config.body_cap,
                extra_ai_hosts: Arc::new(config.extra_ai_hosts),
                call_hooks: config.call_hooks,
            },
            endpoints: Endpoints::default(),
        }
    }

    pub fn live_connections(&self) -> usize {
        self.conns.len()
    }

    pub fn on_server_name(&mut self, id: ConnId, ts_ns: u64, name: String) {
        self.endpoints.set_server_name(id, ts_ns, name);
    }

    pub fn on_peer(&mut self, id: ConnId, ts_ns: u64, addr: SocketAddr) {
        self.endpoints.set_peer(id, ts_ns, addr);
    }

    pub fn on_chunk(&mut self, chunk: &DataChunk<'_>, out: &mut Output) {
        self.endpoints.touch(chunk.id, chunk.ts_ns);
        if let Some(seen) = self.ignored.get_mut(&chunk.id) {
            *seen = chunk.ts_ns;
            return;
        }
        let origin = Origin { id: chunk.id, tid: chunk.tid, cgroup_id: chunk.cgroup_id, library: chunk.library };
        let settings = &self.settings;
        let tracked = self.conns.entry(chunk.id).or_insert_with(|| Tracked {
            http: Connection::new(settings.clone()),
            egress: CallCursor::default(),
            ingress: CallCursor::default(),
            origin,
            last_ns: chunk.ts_ns,
            lost: false,
            open_calls: Vec::new(),
        });
        if chunk.lost_before {
            // Bytes are missing and nobody knows how many: any framing from here on is a
            // guess, and a guess can stitch a wrong response together. Count the connection
            // as unparseable rather than risk a wrong record.
            let calls = tracked.http.unanswered().max(1);
            self.lose(chunk.id, chunk.library, chunk.ts_ns, calls, out);
            return;
        }
        tracked.last_ns = chunk.ts_ns;
        tracked.origin.tid = chunk.tid;
        let cursor = match chunk.direction {
            Direction::Egress => &mut tracked.egress,
            Direction::Ingress => &mut tracked.ingress,
        };
        let feed = cursor.on_chunk(chunk.offset, chunk.data.len() as u64, chunk.call_len, self.call_cap);
        let mut outcome = Outcome::default();
        let mut result = Ok(());
        if feed.gap_before > 0 {
            result = tracked.http.feed(Piece::gap(chunk.direction, chunk.ts_ns, feed.gap_before), &mut outcome);
        }
        if result.is_ok() && feed.use_data {
            result = tracked.http.feed(Piece::bytes(chunk.direction, chunk.ts_ns, chunk.data), &mut outcome);
        }
        if result.is_ok() && feed.gap_after > 0 {
            result = tracked.http.feed(Piece::gap(chunk.direction, chunk.ts_ns, feed.gap_after), &mut outcome);
        }
        let origin = tracked.origin;
        self.absorb(origin, chunk.ts_ns, outcome, out);
        if let Err(e) = result {
            self.fail(chunk.id, chunk.library, chunk.ts_ns, &e, out);
        }
    }

    fn absorb(&mut self, origin: Origin, ts_ns: u64, outcome: Outcome, out: &mut Output) {
        if let Some(tracked) = self.conns.get_mut(&origin.id) {
            calls_of(tracked, &self.endpoints, &outcome, out);
        }
        out.failures.extend(outcome.failures.iter().map(|r| (*r, origin.library)));
        out.cut_responses += outcome.cut_responses;
        for exchange in outcome.exchanges {
            let call = CallKey { conn: origin.id, seq: exchange.seq };
            out.exchanges.push(TrackedExchange { origin, call, exchange, endpoint: self.endpoints.get(origin.id) });
        }
        match outcome.classified {
            Some(true) => out.verdicts.push((origin.id, Verdict::Track)),
            Some(false) => self.ignore(origin.id, ts_ns, out),
            None => {}
        }
    }

    fn ignore(&mut self, id: ConnId, ts_ns: u64, out: &mut Output) {
        if let Some(mut tracked) = self.conns.remove(&id) {
            tracked.end_calls(out);
        }
        self.ignored.insert(id, ts_ns);
        out.verdicts.push((id, Verdict::Ignore));
    }

    /// The kernel reports (in its loss map) that a call of `id` vanished without any chunk
    /// saying so; the connection's end must then not complete a response from what arrived.
    pub fn mark_lost(&mut self, id: ConnId) {
        if let Some(tracked) = self.conns.get_mut(&id) {
            tracked.lost = true;
        }
    }

    /// Live connections of one process (to look up loss marks before `on_exit`).
    pub fn connections_of(&self, tgid: u32) -> Vec<ConnId> {
        self.conns.keys().filter(|id| id.tgid == tgid).copied().collect()
    }

    /// Connections `expire_idle` would end now (to look up loss marks first).
    pub fn idle_connections(&self, now_ns: u64, idle_ns: u64) -> Vec<ConnId> {
        self.conns.iter().filter(|(_, t)| now_ns.saturating_sub(t.last_ns) > idle_ns).map(|(id, _)| *id).collect()
    }

    /// `calls`: the requests in flight (all of an HTTP/2 connection's streams), at least one.
    fn lose(&mut self, id: ConnId, library: TlsLibrary, ts_ns: u64, calls: usize, out: &mut Output) {
        out.failures.extend(std::iter::repeat_n((DATA_LOST, library), calls));
        self.ignore(id, ts_ns, out);
    }

    fn fail(&mut self, id: ConnId, library: TlsLibrary, ts_ns: u64, error: &ConnError, out: &mut Output) {
        // Bytes that are not an HTTP client's are a verdict, not a failure: the server side of
        // a connection, or another protocol over TLS.
        if !error.is_verdict() {
            out.failures.push((error.reason(), library));
        }
        self.ignore(id, ts_ns, out);
    }

    pub fn on_close(&mut self, id: ConnId, ts_ns: u64, out: &mut Output) {
        self.ignored.remove(&id);
        if let Some(mut tracked) = self.conns.remove(&id) {
            self.close_tracked(&mut tracked, ts_ns, out);
        }
        self.endpoints.remove(id);
    }

    fn close_tracked(&mut self, tracked: &mut Tracked, ts_ns: u64, out: &mut Output) {
        self.finish_tracked(tracked, ts_ns, out);
        tracked.end_calls(out);
    }

    fn finish_tracked(&mut self, tracked: &mut Tracked, ts_ns: u64, out: &mut Output) {
        if tracked.lost {
            // What arrived is a prefix with holes: completing it would write a wrong record.
            let calls = tracked.http.unanswered().max(1);
            out.failures.extend(std::iter::repeat_n((DATA_LOST, tracked.origin.library), calls));
            return;
        }
        let mut outcome = Outcome::default();
        let lost = tracked.ingress.take_pending();
        let mut result = Ok(());
        if lost > 0 {
            result = tracked.http.feed(Piece::gap(Direction::Ingress, ts_ns, lost), &mut outcome);
        }
        if result.is_ok() {
            result = tracked.http.finish(ts_ns, &mut outcome);
        }
        out.cut_responses += outcome.cut_responses;
        calls_of(tracked, &self.endpoints, &outcome, out);
        let endpoint = self.endpoints.get(tracked.origin.id);
        out.failures.extend(outcome.failures.iter().map(|r| (*r, tracked.origin.library)));
        for exchange in outcome.exchanges {
            let call = CallKey { conn: tracked.origin.id, seq: exchange.seq };
            out.exchanges.push(TrackedExchange { origin: tracked.origin, call, exchange, endpoint: endpoint.clone() });
        }
        if let Err(e) = result {
            if !e.is_verdict() {
                out.failures.push((e.reason(), tracked.origin.library));
            }
        } else if tracked.http.unanswered() > 0 {
            out.failures.push(("no_response", tracked.origin.library));
        }
    }

    /// The process is gone: its sessions end now.
    pub fn on_exit(&mut self, tgid: u32, ts_ns: u64, out: &mut Output) {
        for id in self.connections_of(tgid) {
            if let Some(mut tracked) = self.conns.remove(&id) {
                self.close_tracked(&mut tracked, ts_ns, out);
            }
            out.forget.push(id);
        }
        let ignored: Vec<ConnId> = self.ignored.keys().filter(|id| id.tgid == tgid).copied().collect();
        for id in ignored {
            self.ignored.remove(&id);
            out.forget.push(id);
        }
        // Sockets that never carried data still have kernel entries to drop.
        for id in self.endpoints.remove_process(tgid) {
            if !out.forget.contains(&id) {
                out.forget.push(id);
            }
        }
    }

    /// Drops connections silent for longer than `idle_ns` (a leaked session, a killed peer).
    pub fn expire_idle(&mut self, now_ns: u64, idle_ns: u64, out: &mut Output) {
        for id in self.idle_connections(now_ns, idle_ns) {
            if let Some(mut tracked) = self.conns.remove(&id) {
                self.close_tracked(&mut tracked, now_ns, out);
            }
            out.forget.push(id);
        }
        self.endpoints.expire(now_ns, idle_ns);
        self.ignored.retain(|id, seen| {
            let keep = now_ns.saturating_sub(*seen) <= idle_ns;
            if !keep {
                out.forget.push(*id);
            }
            keep
        });
    }
}

/// Reports a connection's call events and keeps its open calls: a request start opens a call,
/// its exchange or a stream failure closes it. Takes the requests out of `outcome`.
fn calls_of(tracked: &mut Tracked, endpoints: &Endpoints, outcome: &Outcome, out: &mut Output) {
    let (origin, conn) = (tracked.origin, tracked.origin.id);
    for start in &outcome.requests {
        tracked.open_calls.push(start.seq);
        out.requests.push(RequestStart {
            origin,
            endpoint: endpoints.get(conn),
            call: CallKey { conn, seq: start.seq },
            api: start.api,
            provider: start.api.provider.as_str(),
            request_model: start.plan.model.clone(),
            streaming: start.plan.stream,
            estimate: Estimate {
                input_tokens: start.plan.input_tokens,
                max_output_tokens: start.plan.max_output_tokens,
            },
        });
    }
    let open = &tracked.open_calls;
    out.progress.extend(
        (outcome.progress.iter())
            .filter(|(seq, _)| open.contains(seq))
            .map(|&(seq, tokens)| StreamProgress { call: CallKey { conn, seq }, output_tokens_so_far: tokens }),
    );
    for exchange in &outcome.exchanges {
        tracked.open_calls.retain(|s| *s != exchange.seq);
    }
    for seq in &outcome.ended {
        if let Some(i) = tracked.open_calls.iter().position(|s| s == seq) {
            tracked.open_calls.swap_remove(i);
            out.ended.push(CallKey { conn, seq: *seq });
        }
    }
}
