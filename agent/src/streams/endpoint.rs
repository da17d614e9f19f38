//! Who a connection talks to, as the capture saw it outside the HTTP bytes: the TLS server
//! name the client set (SNI) and the socket peer it connected to. Kept per connection from the
//! record that announces it (before the first byte of data) until the connection ends.
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use crate::capture::event::ConnId;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub server_name: Option<Arc<str>>,
    pub peer: Option<SocketAddr>,
}

/// Entries of connections that announced an endpoint but never carried data are dropped
/// when the table grows past this (a host opening many TLS sessions to other services).
const MAX_ENTRIES: usize = 65536;

#[derive(Default)]
pub struct Endpoints {
    map: HashMap<ConnId, (Endpoint, u64)>,
}

impl Endpoints {
    pub fn set_server_name(&mut self, id: ConnId, ts_ns: u64, name: String) {
        self.entry(id, ts_ns).server_name = Some(name.into());
    }

    pub fn set_peer(&mut self, id: ConnId, ts_ns: u64, addr: SocketAddr) {
        self.entry(id, ts_ns).peer = Some(addr);
    }

    fn entry(&mut self, id: ConnId, ts_ns: u64) -> &mut Endpoint {
        if self.map.len() >= MAX_ENTRIES && !self.map.contains_key(&id) {
            let oldest = self.map.iter().min_by_key(|(_, (_, ts))| *ts).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.map.remove(&oldest);
            }
        }
        let slot = self.map.entry(id).or_insert_with(|| (Endpoint::default(), ts_ns));
        slot.1 = ts_ns;
        &mut slot.0
    }

    pub fn get(&self, id: ConnId) -> Endpoint {
        self.map.get(&id).map(|(e, _)| e.clone()).unwrap_or_default()
    }

    /// Marks the connection as alive at `ts_ns` (it carries data).
    pub fn touch(&mut self, id: ConnId, ts_ns: u64) {
        if let Some(slot) = self.map.get_mut(&id) {
            slot.1 = ts_ns;
        }
    }

    pub fn remove(&mut self, id: ConnId) {
        self.map.remove(&id);
    }

    /// Removes and returns the process's connections.
    pub fn remove_process(&mut self, tgid: u32) -> Vec<ConnId> {
        let ids: Vec<ConnId> = self.map.keys().filter(|id| id.tgid == tgid).copied().collect();
        for id in &ids {
            self.map.remove(id);
        }
        ids
    }

    /// Drops entries silent for longer than `idle_ns`.
    pub fn expire(&mut self, now_ns: u64, idle_ns: u64) {
        self.map.retain(|_, (_, ts)| now_ns.saturating_sub(*ts) <= idle_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capture::event::{DataChunk, Direction, TlsLibrary},
        streams::{Output, Tracker, TrackerConfig},
    };

    fn chunk(conn: u64, direction: Direction, ts_ns: u64, data: &[u8]) -> DataChunk<'_> {
        crate::streams::tests::chunk_of(100, TlsLibrary::Plain, conn, direction, ts_ns, data)
    }

    /// The tracker hands each exchange its connection's endpoint, and forgets it at close and
    /// exit (a socket that never carried data included: its kernel entry must go too).
    #[test]
    fn tracker_attaches_and_forgets_endpoints() {
        const BODY: &str = r#"{"model":"m","messages":[]}"#;
        const RESP: &str =
            r#"{"object":"chat.completion","model":"m","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 10.0.0.5:11434\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{RESP}", RESP.len());
        let mut t = Tracker::new(TrackerConfig {
            call_cap: 1 << 20,
            body_cap: 1 << 20,
            extra_ai_hosts: vec![],
            call_hooks: false,
        });
        let mut out = Output::default();
        let (id, idle) = (ConnId { tgid: 100, conn: 1 }, ConnId { tgid: 100, conn: 2 });
        let peer: SocketAddr = "10.0.0.5:11434".parse().unwrap();
        t.on_peer(id, 1, peer);
        t.on_peer(idle, 1, peer);
        t.on_server_name(ConnId { tgid: 7, conn: 1 }, 1, "other.example".into());
        t.on_chunk(&chunk(1, Direction::Egress, 10, req.as_bytes()), &mut out);
        t.on_chunk(&chunk(1, Direction::Ingress, 20, resp.as_bytes()), &mut out);
        assert_eq!(out.exchanges.len(), 1);
        assert_eq!(out.exchanges[0].endpoint, Endpoint { server_name: None, peer: Some(peer) });
        t.on_close(id, 30, &mut out);
        t.on_chunk(&chunk(1, Direction::Egress, 40, req.as_bytes()), &mut out);
        t.on_chunk(&chunk(1, Direction::Ingress, 50, resp.as_bytes()), &mut out);
        assert_eq!(out.exchanges[1].endpoint, Endpoint::default(), "a reused id must not inherit the peer");
        t.on_exit(100, 60, &mut out);
        assert!(out.forget.contains(&idle), "a data-less socket's kernel entry is forgotten at exit");
    }

    #[test]
    fn lifecycle() {
        let mut e = Endpoints::default();
        let a = ConnId { tgid: 1, conn: 7 };
        let b = ConnId { tgid: 2, conn: 7 };
        e.set_server_name(a, 10, "api.example".into());
        e.set_peer(a, 11, "127.0.0.1:8000".parse().unwrap());
        e.set_peer(b, 12, "[::1]:8000".parse().unwrap());
        assert_eq!(e.get(a).server_name.as_deref(), Some("api.example"));
        assert_eq!(e.get(a).peer, Some("127.0.0.1:8000".parse().unwrap()));
        assert_eq!(e.get(ConnId { tgid: 3, conn: 7 }), Endpoint::default());
        e.touch(b, 100);
        e.expire(105, 50);
        assert_eq!(e.get(a), Endpoint::default());
        assert!(e.get(b).peer.is_some());
        assert_eq!(e.remove_process(2), vec![b]);
        assert_eq!(e.get(b), Endpoint::default());
    }
}
