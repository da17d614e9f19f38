//! Enforcement in the kernel: the hold at every egress entry and the connect hooks.
//!
//! User space writes a verdict per process (`ENFORCE_PROCS`, checked first, so an explicit
//! `FREE` exempts one process of an enforced cgroup) or per cgroup (`ENFORCE_CGROUPS`) the
//! moment a budget changes. An egress call of a process under a verdict is stopped here, in the
//! entry probe, before the library has seen the bytes: `bpf_send_signal(SIGSTOP)` takes effect
//! on the way back to user space, so the call never starts until user space has decided and
//! sent SIGCONT (with a pass in `HOLD_PASSES`, or after destroying the connection so that the
//! write fails). Only a `SIGNAL` verdict on a connection user space already judged to be AI
//! traffic acts in the kernel at once, with the configured signal.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_send_signal},
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap},
    programs::SockAddrContext,
};
use tokentap_common::{counter, mode, proc_kind, verdict, ConnKey, Enforce, HoldEvent, PeerKey};

use crate::maps::{bump, AGENT_TGID, CONN_STATE, PROC_EVENTS};

/// Verdicts by process; an entry here wins over the process's cgroup.
#[map]
pub static ENFORCE_PROCS: HashMap<u32, Enforce> = HashMap::with_max_entries(16384, 0);

/// Verdicts by cgroup v2 id (the caller's own cgroup, not its ancestors: user space writes
/// every cgroup of an enforced subtree).
#[map]
pub static ENFORCE_CGROUPS: HashMap<u64, Enforce> = HashMap::with_max_entries(16384, 0);

/// Connections user space let through for the request being written; the first read on the
/// connection (the response) takes the pass away, so the next request is held again. LRU: a
/// connection that never reads must not keep its slot.
#[map]
pub static HOLD_PASSES: LruHashMap<ConnKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// AI endpoints, written by user space; `connect` to one is refused under DENY/SIGNAL.
#[map]
pub static AI_PEERS: HashMap<PeerKey, u8> = HashMap::with_max_entries(4096, 0);

/// The socket fd each TLS connection writes to, so user space can find the socket to destroy.
#[map]
pub static CONN_FDS: LruHashMap<ConnKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// Threads inside a TLS handshake (`SSL_do_handshake`/`SSL_connect`), by pid_tgid → connection:
/// the handshake's writes name the socket of a session set up through a custom BIO (curl), which
/// `SSL_set_fd` never saw, before its first request is written (and possibly held).
#[map]
pub static HANDSHAKING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

const SIGSTOP: u32 = 19;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The verdict on the current process: its own entry, else its cgroup's.
#[inline(always)]
fn verdict_of(tgid: u32) -> Option<Enforce> {
    // SAFETY: values are copied out at once.
    if let Some(e) = unsafe { ENFORCE_PROCS.get(&tgid) } {
        return Some(*e);
    }
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    unsafe { ENFORCE_CGROUPS.get(&cgroup) }.copied()
}

/// Called by every egress entry (TLS write, plain socket write) before it remembers the call.
/// Never blocks the call itself: it stops or signals the process, whose return to user space
/// then happens under that signal.
#[inline(always)]
pub fn gate(pid_tgid: u64, conn: u64, library: u32) {
    let tgid = (pid_tgid >> 32) as u32;
    // Guards: init and the agent are never acted on (the kernel refuses init anyway).
    if tgid <= 1 || tgid == AGENT_TGID.load() {
        return;
    }
    let Some(e) = verdict_of(tgid) else {
        return;
    };
    if e.mode == mode::FREE {
        return;
    }
    let key = ConnKey { tgid, _pad: 0, conn };
    // SAFETY: only read.
    let state = match unsafe { CONN_STATE.get(&key) } {
        Some(s) => s.verdict,
        None => verdict::UNKNOWN,
    };
    if state == verdict::IGNORE {
        return;
    }
    // SAFETY: only tested for presence.
    if unsafe { HOLD_PASSES.get(&key) }.is_some() {
        return;
    }
    let (kind, signal) = if e.mode == mode::SIGNAL && state == verdict::TRACK {
        bump(counter::SIGNALLED);
        (proc_kind::ACTED, e.signal)
    } else {
        bump(counter::HELD);
        (proc_kind::HELD, SIGSTOP)
    };
    // SAFETY: the helper signals the current process; it refuses init and kernel threads.
    let rc = unsafe { bpf_send_signal(signal) };
    let signal = if rc == 0 { signal as i32 } else { -(signal as i32) };
    if rc != 0 {
        bump(counter::ENFORCE_FAILED);
    }
    let event = HoldEvent {
        kind,
        tgid,
        tid: pid_tgid as u32,
        mode: e.mode,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        conn,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        library,
        signal,
    };
    if PROC_EVENTS.output::<HoldEvent>(&event, 0).is_err() {
        // A stopped process nobody hears of: user space's periodic sweep of stopped
        // enforced processes is the backstop; count it so it shows.
        bump(counter::PROC_LOST);
        bump(counter::ENFORCE_FAILED);
    }
}

/// Ingress entry on a connection: the request has been written, the next write is a new one.
#[inline(always)]
pub fn read_started(pid_tgid: u64, conn: u64) {
    let key = ConnKey { tgid: (pid_tgid >> 32) as u32, _pad: 0, conn };
    let _ = HOLD_PASSES.remove(&key);
}

/// A write syscall made while `conn` has an egress library call in flight on this thread:
/// `fd` is that connection's socket.
#[inline(always)]
pub fn note_fd(tgid: u32, conn: u64, fd: u64) {
    let key = ConnKey { tgid, _pad: 0, conn };
    // SAFETY: only read.
    if let Some(old) = unsafe { CONN_FDS.get(&key) } {
        if *old as u64 == fd {
            return;
        }
    }
    let _ = CONN_FDS.insert(&key, &(fd as u32), 0);
}

/// Whether a caller under this verdict may not open new AI connections.
#[inline(always)]
fn refuses_connect() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid <= 1 || tgid == AGENT_TGID.load() {
        return false;
    }
    matches!(verdict_of(tgid), Some(e) if e.mode == mode::DENY || e.mode == mode::SIGNAL)
}

#[inline(always)]
fn connect_verdict(peer: &PeerKey) -> i32 {
    // SAFETY: only tested for presence.
    if unsafe { AI_PEERS.get(peer) }.is_none() || !refuses_connect() {
        return 1;
    }
    bump(counter::CONNECT_DENIED);
    // 0: the kernel fails the connect with EPERM.
    0
}

#[cgroup_sock_addr(connect4)]
pub fn enforce_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context is the kernel's bpf_sock_addr for this connect.
    let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port) };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip.to_ne_bytes());
    connect_verdict(&PeerKey { family: AF_INET, port: u16::from_be(port as u16), addr })
}

#[cgroup_sock_addr(connect6)]
pub fn enforce_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as above; `user_ip6` is read one 4-byte word at a time, as the verifier demands.
    let (w, port) = unsafe {
        let s = &*ctx.sock_addr;
        ([s.user_ip6[0], s.user_ip6[1], s.user_ip6[2], s.user_ip6[3]], s.user_port)
    };
    let port = u16::from_be(port as u16);
    let mut addr = [0u8; 16];
    // An IPv4 peer reached through a dual-stack socket (::ffff:a.b.c.d) is an IPv4 peer.
    if w[0] == 0 && w[1] == 0 && w[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
        addr[..4].copy_from_slice(&w[3].to_ne_bytes());
        return connect_verdict(&PeerKey { family: AF_INET, port, addr });
    }
    addr[..4].copy_from_slice(&w[0].to_ne_bytes());
    addr[4..8].copy_from_slice(&w[1].to_ne_bytes());
    addr[8..12].copy_from_slice(&w[2].to_ne_bytes());
    addr[12..].copy_from_slice(&w[3].to_ne_bytes());
    connect_verdict(&PeerKey { family: AF_INET6, port, addr })
}
