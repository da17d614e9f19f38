//! The kernel's verdict maps, as user space writes them: which processes and cgroups are held,
//! signalled or denied, which connections may pass the hold, which endpoints are AI peers.
use std::net::{IpAddr, SocketAddr};

use aya::{
    maps::{HashMap, MapData},
    Ebpf,
};
use tokentap_common::{mode, names, ConnKey, Enforce, PeerKey};

use super::sockets::{self, SocketInfo};
use crate::capture::{event::ConnId, loader::take_map, CaptureError};

/// What the kernel does with a target's egress calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Never act, even if the target's cgroup is enforced (a process-level exemption).
    Free,
    /// Hold every request until user space approves it (budget nearly used).
    Gate,
    /// Send this signal to a writer on a tracked AI connection; hold unjudged ones.
    Signal(i32),
    /// Hold every request (user space destroys the connection) and refuse new AI connections.
    Deny,
}

impl Mode {
    fn to_kernel(self) -> Enforce {
        match self {
            Mode::Free => Enforce { mode: mode::FREE, signal: 0 },
            Mode::Gate => Enforce { mode: mode::GATE, signal: 0 },
            Mode::Signal(sig) => Enforce { mode: mode::SIGNAL, signal: sig as u32 },
            Mode::Deny => Enforce { mode: mode::DENY, signal: 0 },
        }
    }

    /// Decodes a kernel entry; `None` for a mode this build does not know.
    pub fn from_kernel(e: Enforce) -> Option<Mode> {
        Some(match e.mode {
            mode::FREE => Mode::Free,
            mode::GATE => Mode::Gate,
            mode::SIGNAL => Mode::Signal(e.signal as i32),
            mode::DENY => Mode::Deny,
            _ => return None,
        })
    }
}

/// Whom a verdict applies to. A process entry is checked before its cgroup's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A cgroup v2 id (the inode number of its directory); not its descendants.
    Cgroup(u64),
    /// A process (tgid).
    Process(u32),
}

#[derive(Debug, thiserror::Error)]
#[error("eBPF map {map}: {source}")]
pub struct MapError {
    pub map: &'static str,
    #[source]
    pub source: aya::maps::MapError,
}

/// Owns the enforcement maps of a loaded capture.
pub struct KernelEnforcement {
    procs: HashMap<MapData, u32, Enforce>,
    cgroups: HashMap<MapData, u64, Enforce>,
    passes: HashMap<MapData, ConnKey, u64>,
    peers: HashMap<MapData, PeerKey, u8>,
    fds: HashMap<MapData, ConnKey, u32>,
}

fn err(map: &'static str) -> impl Fn(aya::maps::MapError) -> MapError {
    move |source| MapError { map, source }
}

fn conn_key(id: ConnId) -> ConnKey {
    ConnKey { tgid: id.tgid, _pad: 0, conn: id.conn }
}

/// The `AI_PEERS` key of an endpoint; an IPv4-mapped IPv6 address is its IPv4 address (the
/// connect6 hook does the same).
pub fn peer_key(addr: SocketAddr) -> PeerKey {
    let mut bytes = [0u8; 16];
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let family = match ip {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            libc::AF_INET as u16
        }
        IpAddr::V6(v6) => {
            bytes = v6.octets();
            libc::AF_INET6 as u16
        }
    };
    PeerKey { family, port: addr.port(), addr: bytes }
}

impl KernelEnforcement {
    pub(crate) fn from_ebpf(ebpf: &mut Ebpf) -> Result<KernelEnforcement, CaptureError> {
        Ok(KernelEnforcement {
            procs: take_map(ebpf, names::ENFORCE_PROCS)?,
            cgroups: take_map(ebpf, names::ENFORCE_CGROUPS)?,
            passes: take_map(ebpf, names::HOLD_PASSES)?,
            peers: take_map(ebpf, names::AI_PEERS)?,
            fds: take_map(ebpf, names::CONN_FDS)?,
        })
    }

    /// Puts `target` under `mode`; effective for the next egress call or connect.
    pub fn set(&mut self, target: Target, mode: Mode) -> Result<(), MapError> {
        let e = mode.to_kernel();
        match target {
            Target::Cgroup(id) => self.cgroups.insert(id, e, 0).map_err(err(names::ENFORCE_CGROUPS)),
            Target::Process(tgid) => self.procs.insert(tgid, e, 0).map_err(err(names::ENFORCE_PROCS)),
        }
    }

    /// Removes the target's verdict (absent already is fine).
    pub fn clear(&mut self, target: Target) {
        let _ = match target {
            Target::Cgroup(id) => self.cgroups.remove(&id),
            Target::Process(tgid) => self.procs.remove(&tgid),
        };
    }

    /// The verdict the kernel holds for a target.
    pub fn get(&self, target: Target) -> Option<Mode> {
        let e = match target {
            Target::Cgroup(id) => self.cgroups.get(&id, 0).ok()?,
            Target::Process(tgid) => self.procs.get(&tgid, 0).ok()?,
        };
        Mode::from_kernel(e)
    }

    /// Every target with a verdict, for a sweep or a status view.
    pub fn targets(&self) -> Vec<(Target, Mode)> {
        let cgroups = self.cgroups.iter().filter_map(Result::ok).map(|(k, v)| (Target::Cgroup(k), v));
        let procs = self.procs.iter().filter_map(Result::ok).map(|(k, v)| (Target::Process(k), v));
        cgroups.chain(procs).filter_map(|(t, e)| Some((t, Mode::from_kernel(e)?))).collect()
    }

    /// Lets the request being written on `id` through the hold; the connection's next read
    /// takes the pass away.
    pub fn grant_pass(&mut self, id: ConnId) -> Result<(), MapError> {
        self.passes.insert(conn_key(id), 1, 0).map_err(err(names::HOLD_PASSES))
    }

    /// Withdraws a pass (a connection that ended, a process that exited).
    pub fn revoke_pass(&mut self, id: ConnId) {
        let _ = self.passes.remove(&conn_key(id));
    }

    pub fn has_pass(&self, id: ConnId) -> bool {
        self.passes.get(&conn_key(id), 0).is_ok()
    }

    /// An endpoint whose new connections are refused to targets in DENY or SIGNAL mode.
    pub fn add_ai_peer(&mut self, addr: SocketAddr) -> Result<(), MapError> {
        self.peers.insert(peer_key(addr), 1, 0).map_err(err(names::AI_PEERS))
    }

    pub fn remove_ai_peer(&mut self, addr: SocketAddr) {
        let _ = self.peers.remove(&peer_key(addr));
    }

    /// The socket fd the kernel saw the connection write to, if any write happened yet (the
    /// first write of a new connection is held before it reaches the socket).
    pub fn fd_of(&self, id: ConnId) -> Option<u32> {
        self.fds.get(&conn_key(id), 0).ok()
    }

    /// The TCP socket behind a TLS connection: fd from the kernel, then `/proc`.
    pub fn socket_of(&self, id: ConnId) -> Option<SocketInfo> {
        sockets::socket_of_fd(id.tgid, self.fd_of(id)?)
    }

    /// Drops a process's verdict once it has exited: its pid may be reused by a process the
    /// verdict was not meant for. Its passes and fds age out of their LRU maps (walking them
    /// on every exit would cost a syscall per entry).
    pub fn forget_process(&mut self, tgid: u32) {
        let _ = self.procs.remove(&tgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip() {
        for m in [Mode::Free, Mode::Gate, Mode::Signal(15), Mode::Deny] {
            assert_eq!(Mode::from_kernel(m.to_kernel()), Some(m));
        }
        assert_eq!(Mode::from_kernel(Enforce { mode: 9, signal: 0 }), None);
    }

    #[test]
    fn peer_keys_fold_mapped_addresses() {
        let v4 = peer_key("10.1.2.3:443".parse().unwrap());
        assert_eq!((v4.family, v4.port, &v4.addr[..5]), (libc::AF_INET as u16, 443, &[10, 1, 2, 3, 0][..]));
        assert_eq!(peer_key("[::ffff:10.1.2.3]:443".parse().unwrap()), v4);
        let v6 = peer_key("[2001:db8::1]:443".parse().unwrap());
        assert_eq!(v6.family, libc::AF_INET6 as u16);
        assert_eq!(v6.addr[0..2], [0x20, 0x01]);
    }
}
