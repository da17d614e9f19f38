//! Plain HTTP over TCP sockets, from syscall tracepoints (this kernel has no kprobes).
//!
//! `connect` to a port in `PLAIN_PORTS` (the usual local model-server ports, or what the
//! configuration says) puts the client socket `(tgid, fd)` into `PLAIN_SOCKETS`; only fds in
//! that map are ever read from, so files, pipes and every other socket cost one map lookup
//! per syscall and ship nothing. Bytes moved by the write and read families are shipped after
//! the syscall returns, with the count it returned, as `library::PLAIN` calls on the
//! connection `SOCKET_CONN_TAG | fd`; `close` ends the connection. User space judges the first
//! bytes: anything but an HTTP request to an AI endpoint (TLS ciphertext included) gets the
//! IGNORE verdict, which stops the shipping here.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::TracePointContext,
};
use tokentap_common::{counter, data_kind, direction, library, ConnKey, PeerEvent, PEER_ADDR_LEN, SOCKET_CONN_TAG};

use crate::{
    emit::{emit_call, emit_call_avail, emit_close, ignored, meta_header},
    enforce::{gate, note_fd, read_started, HANDSHAKING},
    maps::{bump, CallArgs, ACTIVE_CALLS, AGENT_TGID, CONN_STATE, DATA_EVENTS},
    tls_go::GO_WRITING,
};

/// Ports (host byte order) whose connections are captured; filled by user space at load.
#[map]
pub static PLAIN_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(256, 0);

/// Captured client sockets. LRU: a process killed without closing leaves entries behind; user
/// space also removes a process's entries when it exits, before its pid can be reused.
#[map]
pub static PLAIN_SOCKETS: LruHashMap<ConnKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// A `connect` in flight, by pid_tgid: the fd and the peer address read at entry.
#[map]
static CONNECTING: LruHashMap<u64, Connecting> = LruHashMap::with_max_entries(4096, 0);

/// A read or write on a captured socket in flight, by pid_tgid.
#[map]
static SOCK_CALLS: LruHashMap<u64, SockCall> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct Connecting {
    fd: u64,
    len: u32,
    _pad: u32,
    addr: [u8; PEER_ADDR_LEN],
    _pad2: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SockCall {
    conn: u64,
    /// The buffer, or for vectored calls the `iovec` array.
    buf: u64,
    /// Entries of the `iovec` array; 0 for a flat buffer.
    iovcnt: u64,
    direction: u32,
    _pad: u32,
}

/// Syscall tracepoint layout (see `events/syscalls/*/format`): 8 bytes of common fields, the
/// syscall number, then each argument in an 8-byte slot; the exit record carries `ret` there.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const RET: usize = 16;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCKADDR_IN_LEN: u32 = 16;
const SOCKADDR_IN6_LEN: u32 = 28;
const EINPROGRESS: i64 = 115;
/// `struct msghdr`: `msg_iov` and `msg_iovlen` offsets.
const MSG_IOV: u64 = 16;
const MSG_IOVLEN: u64 = 24;
/// Segments of a vectored call that are shipped; bytes past them are declared lost. HTTP
/// clients send a head and a body, rarely more.
const MAX_IOV: u64 = 4;

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: reading the tracepoint record at a documented offset.
    unsafe { ctx.read_at::<u64>(offset) }.unwrap_or(0)
}

#[inline(always)]
fn socket_key(tgid: u32, fd: u64) -> ConnKey {
    ConnKey { tgid, _pad: 0, conn: SOCKET_CONN_TAG | (fd & 0xffff_ffff) }
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == AGENT_TGID.load() {
        return 0;
    }
    let (fd, uaddr, addrlen) = (arg(&ctx, ARG0), arg(&ctx, ARG1), arg(&ctx, ARG2));
    if uaddr == 0 {
        return 0;
    }
    // SAFETY: user memory read through the helper; failure is handled.
    let Ok(family) = (unsafe { bpf_probe_read_user(uaddr as *const u16) }) else {
        return 0;
    };
    let len = match family {
        AF_INET if addrlen >= SOCKADDR_IN_LEN as u64 => SOCKADDR_IN_LEN,
        AF_INET6 if addrlen >= SOCKADDR_IN6_LEN as u64 => SOCKADDR_IN6_LEN,
        _ => return 0,
    };
    // sin_port / sin6_port: bytes 2..4, network order.
    // SAFETY: as above.
    let Ok(port) = (unsafe { bpf_probe_read_user((uaddr + 2) as *const u16) }) else {
        return 0;
    };
    let port = u16::from_be(port);
    // SAFETY: the value is only tested for presence.
    if unsafe { PLAIN_PORTS.get(&port) }.is_none() {
        return 0;
    }
    let mut c = Connecting { fd, len, _pad: 0, addr: [0; PEER_ADDR_LEN], _pad2: [0; 4] };
    // SAFETY: as above; `len` is at most the size of `addr`.
    let Ok(addr) = (unsafe { bpf_probe_read_user(uaddr as *const [u8; PEER_ADDR_LEN]) }) else {
        // A sockaddr_in at the very end of a mapping: the short form is enough.
        // SAFETY: as above.
        let Ok(short) = (unsafe { bpf_probe_read_user(uaddr as *const [u8; 16]) }) else {
            return 0;
        };
        c.addr[..16].copy_from_slice(&short);
        let _ = CONNECTING.insert(&pid_tgid, &c, 0);
        return 0;
    };
    c.addr = addr;
    let _ = CONNECTING.insert(&pid_tgid, &c, 0);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out before removal.
    let Some(c) = (unsafe { CONNECTING.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = CONNECTING.remove(&pid_tgid);
    let ret = arg(&ctx, RET) as i64;
    // A non-blocking connect returns EINPROGRESS and completes later on the same fd.
    if ret != 0 && ret != -EINPROGRESS {
        return 0;
    }
    let key = socket_key((pid_tgid >> 32) as u32, c.fd);
    // A verdict left by an earlier socket with the same fd number must not apply to this one.
    let _ = CONN_STATE.remove(&key);
    let _ = PLAIN_SOCKETS.insert(&key, &0, 0);
    let event =
        PeerEvent { header: meta_header(data_kind::PEER, key.conn, library::PLAIN, c.len), addr: c.addr, _pad: [0; 4] };
    if DATA_EVENTS.output::<PeerEvent>(&event, 0).is_err() {
        bump(counter::DATA_LOST);
    }
    0
}

/// Entry of a read or write: remembers the buffer if the fd is a captured socket.
/// `iov_at` is where the `iovec` array pointer sits: 0 flat buffer (ARG1), 1 `readv`/`writev`
/// (ARG1, count in ARG2), 2 `sendmsg`/`recvmsg` (inside the `msghdr` at ARG1).
#[inline(always)]
fn call_enter(ctx: &TracePointContext, dir: u32, iov_at: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let fd = arg(ctx, ARG0);
    if dir == direction::EGRESS {
        tls_socket(pid_tgid, fd);
    }
    let key = socket_key(tgid, fd);
    // SAFETY: the value is only tested for presence.
    if unsafe { PLAIN_SOCKETS.get(&key) }.is_none() {
        return 0;
    }
    // The syscall has the bytes already: a hold here stops the process after this write (the
    // TLS probes stop it before; plain HTTP has no earlier point without kprobes).
    if dir == direction::EGRESS {
        gate(pid_tgid, key.conn, library::PLAIN);
    } else {
        read_started(pid_tgid, key.conn);
    }
    if ignored(tgid, key.conn) {
        bump(counter::CALLS_SKIPPED);
        return 0;
    }
    let ptr = arg(ctx, ARG1);
    if ptr == 0 {
        return 0;
    }
    let (buf, iovcnt) = match iov_at {
        0 => (ptr, 0),
        1 => (ptr, arg(ctx, ARG2)),
        _ => {
            // SAFETY: user memory read through the helper; failure is handled.
            let iov = unsafe { bpf_probe_read_user((ptr + MSG_IOV) as *const u64) }.unwrap_or(0);
            let cnt = unsafe { bpf_probe_read_user((ptr + MSG_IOVLEN) as *const u64) }.unwrap_or(0);
            (iov, cnt)
        }
    };
    if buf == 0 || (iov_at != 0 && iovcnt == 0) {
        return 0;
    }
    let call = SockCall { conn: key.conn, buf, iovcnt, direction: dir, _pad: 0 };
    let _ = SOCK_CALLS.insert(&pid_tgid, &call, 0);
    0
}

/// A write syscall inside a TLS library's egress call on this thread: `fd` is that
/// connection's socket (`CONN_FDS`).
#[inline(always)]
fn tls_socket(pid_tgid: u64, fd: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == AGENT_TGID.load() {
        return;
    }
    // SAFETY: values copied out at once.
    if let Some(call) = unsafe { ACTIVE_CALLS.get(&pid_tgid) } {
        if call.direction == direction::EGRESS {
            note_fd(tgid, call.conn, fd);
        }
        return;
    }
    if let Some(conn) = unsafe { GO_WRITING.get(&pid_tgid) } {
        note_fd(tgid, *conn, fd);
        return;
    }
    if let Some(conn) = unsafe { HANDSHAKING.get(&pid_tgid) } {
        note_fd(tgid, *conn, fd);
    }
}

/// Exit of a read or write: ships what the syscall really moved.
#[inline(always)]
fn call_exit(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out before removal.
    let Some(call) = (unsafe { SOCK_CALLS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = SOCK_CALLS.remove(&pid_tgid);
    let ret = arg(ctx, RET) as i64;
    if ret <= 0 {
        return 0;
    }
    let mut args =
        CallArgs { conn: call.conn, buf: call.buf, out_len: 0, direction: call.direction, library: library::PLAIN };
    if call.iovcnt == 0 {
        emit_call(&args, ret as u64);
        return 0;
    }
    // Each segment goes out as its own call, in order; the last one read declares every
    // byte still unaccounted for, so user space sees a gap rather than a shorter stream.
    let mut remaining = ret as u64;
    let mut i = 0;
    while i < MAX_IOV {
        if remaining == 0 || i >= call.iovcnt {
            break;
        }
        // SAFETY: user memory read through the helper; failure is handled.
        let Ok(iov) = (unsafe { bpf_probe_read_user((call.buf + i * 16) as *const [u64; 2]) }) else {
            break;
        };
        let seg = if iov[1] < remaining { iov[1] } else { remaining };
        let last = i + 1 == MAX_IOV || i + 1 == call.iovcnt;
        if seg > 0 || last {
            args.buf = iov[0];
            emit_call_avail(&args, if last { remaining } else { seg }, seg);
        }
        remaining -= seg;
        i += 1;
    }
    0
}

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    call_enter(&ctx, direction::EGRESS, 0)
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    call_enter(&ctx, direction::EGRESS, 0)
}

#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    call_enter(&ctx, direction::EGRESS, 1)
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    call_enter(&ctx, direction::EGRESS, 2)
}

#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    call_enter(&ctx, direction::INGRESS, 0)
}

#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    call_enter(&ctx, direction::INGRESS, 0)
}

#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    call_enter(&ctx, direction::INGRESS, 1)
}

#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    call_enter(&ctx, direction::INGRESS, 2)
}

// One exit program per syscall (a program is loaded and attached once); the in-flight entry
// says what the call was.
#[tracepoint]
pub fn sys_exit_write(ctx: TracePointContext) -> u32 {
    call_exit(&ctx)
}

#[tracepoint]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    call_exit(&ctx)
}

#[tracepoint]
pub fn sys_exit_writev(ctx: TracePointContext) -> u32 {
    call_exit(&ctx)
}

#[tracepoint]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    call_exit(&ctx)
}

#[tracepoint]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    call_exit(&ctx)
}

#[tracepoint]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    call_exit(&ctx)
}

#[tracepoint]
pub fn sys_exit_readv(ctx: TracePointContext) -> u32 {
    call_exit(&ctx)
}

#[tracepoint]
pub fn sys_exit_recvmsg(ctx: TracePointContext) -> u32 {
    call_exit(&ctx)
}

/// The fd stops naming the captured socket: the connection is over for us.
#[inline(always)]
fn fd_gone(fd: u64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let key = socket_key(tgid, fd);
    // SAFETY: the value is only tested for presence.
    if unsafe { PLAIN_SOCKETS.get(&key) }.is_none() {
        return 0;
    }
    let _ = PLAIN_SOCKETS.remove(&key);
    let _ = CONN_STATE.remove(&key);
    emit_close(tgid, pid_tgid as u32, key.conn, library::PLAIN);
    0
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    fd_gone(arg(&ctx, ARG0))
}

/// `dup2(old, new)` and `dup3(old, new, flags)` silently close `new` first: whatever it names
/// next (a file, a pipe) must not inherit the socket's capture.
#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    fd_gone(arg(&ctx, ARG1))
}

#[tracepoint]
pub fn sys_enter_dup3(ctx: TracePointContext) -> u32 {
    fd_gone(arg(&ctx, ARG1))
}
