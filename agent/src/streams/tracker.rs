//! All live TLS connections: routes chunks to their connection, accounts for lost bytes,
//! decides which connections are worth capturing, and hands complete exchanges on.
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use super::{
    conn::{Exchange, Outcome, Piece},
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
}

struct Tracked {
    http: Connection,
    egress: CallCursor,
    ingress: CallCursor,
    origin: Origin,
    last_ns: u64,
    /// The kernel lost a call of this connection that no chunk reported (see `mark_lost`).
    lost: bool,
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
}

pub struct Tracker {
    conns: HashMap<ConnId, Tracked>,
    /// Connections judged not worth capturing; their in-flight chunks are dropped.
    ignored: HashMap<ConnId, u64>,
    call_cap: u64,
    body_cap: usize,
    extra_ai_hosts: Arc<Vec<String>>,
    endpoints: Endpoints,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Tracker {
            conns: HashMap::new(),
            ignored: HashMap::new(),
            call_cap: config.call_cap,
            body_cap: config.body_cap,
            extra_ai_hosts: Arc::new(config.extra_ai_hosts),
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
        let (body_cap, hosts) = (self.body_cap, self.extra_ai_hosts.clone());
        let tracked = self.conns.entry(chunk.id).or_insert_with(|| Tracked {
            http: Connection::new(body_cap, hosts),
            egress: CallCursor::default(),
            ingress: CallCursor::default(),
            origin,
            last_ns: chunk.ts_ns,
            lost: false,
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
        out.failures.extend(outcome.failures.iter().map(|r| (*r, origin.library)));
        out.cut_responses += outcome.cut_responses;
        for exchange in outcome.exchanges {
            out.exchanges.push(TrackedExchange { origin, exchange, endpoint: self.endpoints.get(origin.id) });
        }
        match outcome.classified {
            Some(true) => out.verdicts.push((origin.id, Verdict::Track)),
            Some(false) => self.ignore(origin.id, ts_ns, out),
            None => {}
        }
    }

    fn ignore(&mut self, id: ConnId, ts_ns: u64, out: &mut Output) {
        self.conns.remove(&id);
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
        let endpoint = self.endpoints.get(tracked.origin.id);
        out.failures.extend(outcome.failures.iter().map(|r| (*r, tracked.origin.library)));
        for exchange in outcome.exchanges {
            out.exchanges.push(TrackedExchange { origin: tracked.origin, exchange, endpoint: endpoint.clone() });
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
