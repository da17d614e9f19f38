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
