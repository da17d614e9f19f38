//! Types shared by the eBPF programs and the user-space agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding and `u32` flags instead of `bool`, so
//! both sides agree on the layout byte for byte; the layout is pinned by compile-time asserts.
//! The capture format is deliberately independent of the TLS library that produced the bytes:
//! OpenSSL today, GnuTLS, Go and rustls later emit the same `DataHeader`.
#![no_std]

/// Bytes of plaintext carried by one ring-buffer record. A library call that moves more is
/// split into ordered chunks with increasing `offset`.
pub const CHUNK_LEN: usize = 16 * 1024;
/// Upper bound on chunks per library call the probe loop will emit. Bounds the verifier's
/// work; with `CHUNK_LEN` it sets the largest configurable per-call capture cap.
pub const MAX_CHUNKS_PER_CALL: u32 = 512;
/// Largest per-call capture cap the kernel side can honour (8 MiB).
pub const MAX_CALL_CAP: u64 = CHUNK_LEN as u64 * MAX_CHUNKS_PER_CALL as u64;
/// Default per-call capture cap: bytes of one `SSL_write`/`SSL_read` shipped to user space.
pub const DEFAULT_CALL_CAP: u64 = 4 * 1024 * 1024;
/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Length of a file path carried by a `LibOpen` event.
pub const PATH_LEN: usize = 256;

/// Names shared by both sides, so a rename cannot silently break loading.
pub mod names {
    pub const DATA_EVENTS: &str = "DATA_EVENTS";
    pub const PROC_EVENTS: &str = "PROC_EVENTS";
    pub const LIB_EVENTS: &str = "LIB_EVENTS";
    pub const CONN_STATE: &str = "CONN_STATE";
    pub const COUNTERS: &str = "COUNTERS";
    pub const AGENT_TGID: &str = "AGENT_TGID";
    pub const CALL_CAP: &str = "CALL_CAP";
    pub const LOST_CALLS: &str = "LOST_CALLS";
    pub const PROG_SSL_WRITE_ENTER: &str = "ssl_write_enter";
    pub const PROG_SSL_READ_ENTER: &str = "ssl_read_enter";
    pub const PROG_SSL_RET: &str = "ssl_ret";
    pub const PROG_SSL_RET_EX: &str = "ssl_ret_ex";
    pub const PROG_SSL_CLOSE: &str = "ssl_close";
    pub const PROG_GNUTLS_SEND_ENTER: &str = "gnutls_send_enter";
    pub const PROG_GNUTLS_RECV_ENTER: &str = "gnutls_recv_enter";
    pub const PROG_GNUTLS_RET: &str = "gnutls_ret";
    pub const PROG_GNUTLS_CLOSE: &str = "gnutls_close";
    pub const PROG_RUSTLS_WRITE_ENTER: &str = "rustls_write_enter";
    pub const PROG_RUSTLS_READ_ENTER: &str = "rustls_read_enter";
    pub const PROG_RUSTLS_RET: &str = "rustls_ret";
    pub const PROG_RUSTLS_CLOSE: &str = "rustls_close";
    pub const PROG_RUSTLS_CHUNK_ENTER: &str = "rustls_chunk_enter";
    pub const PROG_RUSTLS_CHUNK_RET: &str = "rustls_chunk_ret";
    pub const PROG_RUSTLS_CONSUME_ENTER: &str = "rustls_consume_enter";
    pub const PROG_EXEC: &str = "sched_process_exec";
    pub const PROG_EXIT: &str = "sched_process_exit";
    pub const PROG_OPENAT: &str = "sys_enter_openat";
    pub const PROG_SSL_CTRL: &str = "ssl_ctrl";
    /// Ports whose TCP connections are captured as plain HTTP (key: port in host order).
    pub const PLAIN_PORTS: &str = "PLAIN_PORTS";
    /// Plain sockets being captured, keyed like `CONN_STATE` (`SOCKET_CONN_TAG | fd`).
    pub const PLAIN_SOCKETS: &str = "PLAIN_SOCKETS";
    /// Enforcement verdicts by process (`u32` tgid → `Enforce`); checked before the cgroup's.
    pub const ENFORCE_PROCS: &str = "ENFORCE_PROCS";
    /// Enforcement verdicts by cgroup v2 id (`u64` → `Enforce`).
    pub const ENFORCE_CGROUPS: &str = "ENFORCE_CGROUPS";
    /// Connections user space let through the hold for the request being written (`ConnKey`).
    pub const HOLD_PASSES: &str = "HOLD_PASSES";
    /// AI endpoints (`PeerKey`) that `connect4`/`connect6` refuse to callers in DENY/SIGNAL.
    pub const AI_PEERS: &str = "AI_PEERS";
    /// The socket fd a TLS connection writes to (`ConnKey` → `u32` fd).
    pub const CONN_FDS: &str = "CONN_FDS";
    pub const PROG_SSL_SET_FD: &str = "ssl_set_fd";
    pub const PROG_SSL_HANDSHAKE_ENTER: &str = "ssl_handshake_enter";
    pub const PROG_SSL_HANDSHAKE_RET: &str = "ssl_handshake_ret";
    pub const PROG_GNUTLS_SET_FD: &str = "gnutls_set_fd";
    pub const PROG_CONNECT4: &str = "enforce_connect4";
    pub const PROG_CONNECT6: &str = "enforce_connect6";
}

/// What the kernel does with an egress call of a process or cgroup (`Enforce::mode`).
pub mod mode {
    /// Never act (an explicit process entry overrides its cgroup's).
    pub const FREE: u32 = 0;
    /// Budget nearly used: every request is held until user space approves it.
    pub const GATE: u32 = 1;
    /// Exhausted, action signal: `Enforce::signal` goes to a writer on a tracked AI connection.
    pub const SIGNAL: u32 = 2;
    /// Exhausted, action deny or cut: held, new AI connections refused.
    pub const DENY: u32 = 3;
}

/// An entry of `ENFORCE_PROCS` / `ENFORCE_CGROUPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enforce {
    pub mode: u32,
    /// Signal number for `mode::SIGNAL`.
    pub signal: u32,
}

/// An AI endpoint for the connect hooks: family (`AF_INET`/`AF_INET6`), port in host order,
/// address in network order (IPv4 in the first 4 bytes, the rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}

/// A `HELD` or `ACTED` record in `PROC_EVENTS`. `kind` comes first, as in `ProcEvent`, so a
/// reader dispatches on it before knowing the record's size.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    /// The `mode` the process or cgroup was in.
    pub mode: u32,
    pub cgroup_id: u64,
    pub conn: u64,
    pub ts_ns: u64,
    pub library: u32,
    /// For `ACTED`: the signal sent; for `HELD`: `SIGSTOP`. Negative: the helper failed.
    pub signal: i32,
}

/// Direction of a data chunk, from the point of view of the process that owns the TLS session.
pub mod direction {
    /// Plaintext the process handed to the library to send (`SSL_write*`).
    pub const EGRESS: u32 = 0;
    /// Plaintext the library handed to the process (`SSL_read*`).
    pub const INGRESS: u32 = 1;
}

/// Which TLS implementation (or plain socket) produced an event. Every stack emits the same
/// `DataHeader`; only this id tells them apart (a metric label and the coverage matrix).
pub mod library {
    /// libssl, dynamically linked or statically linked into an executable with its symbols.
    pub const OPENSSL: u32 = 1;
    /// Go `crypto/tls`.
    pub const GO: u32 = 2;
    pub const GNUTLS: u32 = 3;
    pub const RUSTLS: u32 = 4;
    /// Plain HTTP over a socket (syscall tracepoints, no TLS).
    pub const PLAIN: u32 = 5;
    /// BoringSSL found by prologue signatures in a stripped executable.
    pub const BORINGSSL: u32 = 6;
}

/// Bits of `DataHeader::flags`.
pub mod flags {
    /// The call moved more than the per-call cap; bytes past `call_len.min(cap)` were not shipped.
    pub const TRUNCATED: u32 = 1;
    /// Bytes of earlier calls of this connection and direction were lost (ring buffer full,
    /// user memory unreadable, a return never seen): the stream has a hole of unknown size
    /// before this call.
    pub const LOST_BEFORE: u32 = 2;
}

/// Kinds of record in `DATA_EVENTS`.
pub mod data_kind {
    pub const DATA: u32 = 1;
    /// The library freed or shut down the session: the connection is over.
    pub const CLOSE: u32 = 2;
    /// The TLS server name (SNI) the client set for this session; the name follows the header.
    pub const SERVER_NAME: u32 = 3;
    /// The socket peer of this connection: a `sockaddr_in`/`sockaddr_in6` follows the header.
    pub const PEER: u32 = 4;
}

/// Kinds of record in `PROC_EVENTS`.
pub mod proc_kind {
    pub const EXEC: u32 = 1;
    pub const EXIT: u32 = 2;
    /// A process opened a file whose name looks like a TLS library (`libssl.so*`, `libgnutls.so*`).
    pub const LIB_OPEN: u32 = 3;
    /// A process in GATE/DENY/SIGNAL mode started a write: it was stopped (`HoldEvent`).
    pub const HELD: u32 = 4;
    /// A process in SIGNAL mode wrote on a tracked AI connection: the signal went (`HoldEvent`).
    pub const ACTED: u32 = 5;
}

/// Indices of `COUNTERS` (a per-CPU array the agent sums and reports).
pub mod counter {
    /// A data chunk could not be written to the ring buffer (user space too slow or ring full).
    pub const DATA_LOST: u32 = 0;
    /// A library call exceeded the per-call cap.
    pub const CALLS_TRUNCATED: u32 = 1;
    /// A process event could not be written to its ring buffer.
    pub const PROC_LOST: u32 = 2;
    /// A call skipped because its connection's verdict said so (non-AI traffic).
    pub const CALLS_SKIPPED: u32 = 3;
    /// `CALLS_LOST + library id`: library calls of that stack whose bytes (some or all) could
    /// not be shipped, so a user sees completeness per stack.
    pub const CALLS_LOST: u32 = 4;
    /// Processes stopped at an egress call by the hold.
    pub const HELD: u32 = CALLS_LOST + 8;
    /// Signals sent in-kernel for `mode::SIGNAL`.
    pub const SIGNALLED: u32 = HELD + 1;
    /// Connections to an AI endpoint refused by `connect4`/`connect6`.
    pub const CONNECT_DENIED: u32 = HELD + 2;
    /// A hold or signal could not be sent or reported (helper or ring buffer failure).
    pub const ENFORCE_FAILED: u32 = HELD + 3;
    pub const COUNT: u32 = HELD + 4;
}

/// Verdicts user space writes into `CONN_STATE`.
pub mod verdict {
    /// Not decided yet: ship bytes.
    pub const UNKNOWN: u32 = 0;
    /// An AI API connection: ship bytes.
    pub const TRACK: u32 = 1;
    /// Not AI traffic (or the server side of a connection): stop shipping its bytes.
    pub const IGNORE: u32 = 2;
}

/// Identifies one connection: the process and the library's session object (`SSL*`,
/// `gnutls_session_t`, Go's `*tls.Conn`, rustls' connection), or for plain sockets
/// `SOCKET_CONN_TAG | fd`, which no user-space pointer can equal.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub _pad: u32,
    pub conn: u64,
}

/// One direction of one connection, for `LOST_CALLS`: whose bytes went missing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LostKey {
    pub tgid: u32,
    pub direction: u32,
    pub conn: u64,
}

/// Per-connection state kept in the kernel, so probes can decide without a round trip.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnState {
    pub verdict: u32,
    pub _pad: u32,
}

/// Header of every `DATA_EVENTS` record; `len` bytes of plaintext follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub kind: u32,
    pub direction: u32,
    pub tgid: u32,
    pub tid: u32,
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns` at the library call's return.
    pub ts_ns: u64,
    pub conn: u64,
    /// Bytes the library call moved in total (may exceed what was shipped).
    pub call_len: u64,
    /// Position of this chunk's first byte within the call.
    pub offset: u32,
    pub len: u32,
    pub flags: u32,
    pub library: u32,
}

/// A data record as the probes build it in per-CPU scratch memory before output.
#[repr(C)]
pub struct DataEvent {
    pub header: DataHeader,
    pub data: [u8; CHUNK_LEN],
}

/// A `PROC_EVENTS` record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcEvent {
    pub kind: u32,
    pub tgid: u32,
    pub cgroup_id: u64,
    pub ts_ns: u64,
    /// The task's `comm` when the event was made, NUL-padded. For `EXEC` it is what user space
    /// falls back on when the process is gone before its `/proc` entry could be read (a
    /// short-lived client whose calls are parsed after its exit).
    pub comm: [u8; COMM_LEN],
    /// Real uid of the task.
    pub uid: u32,
    pub _pad: u32,
    /// For `LIB_OPEN`: the path as the process passed it (may be relative); for `EXEC`: the
    /// file the kernel executed. NUL-terminated.
    pub path: [u8; PATH_LEN],
}

/// Longest TLS server name carried by a `SERVER_NAME` record (RFC 6066 allows 255 bytes).
pub const SERVER_NAME_LEN: usize = 256;
/// Bytes after the header of a `PEER` record: room for a `sockaddr_in6`.
pub const PEER_ADDR_LEN: usize = 28;

/// A `SERVER_NAME` record: the header's `len` bytes of `name` are the name (no NUL).
#[repr(C)]
pub struct NameEvent {
    pub header: DataHeader,
    pub name: [u8; SERVER_NAME_LEN],
}

/// A `PEER` record: the peer `sockaddr_in` or `sockaddr_in6` as the process passed it to
/// `connect`, `len` bytes of `addr` valid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PeerEvent {
    pub header: DataHeader,
    pub addr: [u8; PEER_ADDR_LEN],
    pub _pad: [u8; 4],
}

/// Marks `ConnKey::conn` values that are file descriptors of plain sockets.
pub const SOCKET_CONN_TAG: u64 = 1 << 63;

pub const DATA_HEADER_LEN: usize = core::mem::size_of::<DataHeader>();

const _: () = assert!(core::mem::size_of::<DataHeader>() == 64);
const _: () = assert!(core::mem::size_of::<ConnKey>() == 16);
const _: () = assert!(core::mem::size_of::<ConnState>() == 8);
const _: () = assert!(core::mem::size_of::<ProcEvent>() == 48 + PATH_LEN);
const _: () = assert!(core::mem::size_of::<DataEvent>() == 64 + CHUNK_LEN);
const _: () = assert!(CHUNK_LEN.is_power_of_two());
const _: () = assert!(core::mem::size_of::<PeerEvent>() == 64 + 32);
const _: () = assert!(core::mem::size_of::<NameEvent>() == 64 + SERVER_NAME_LEN);
const _: () = assert!(DEFAULT_CALL_CAP <= MAX_CALL_CAP);
const _: () = assert!(core::mem::size_of::<LostKey>() == 16);
const _: () = assert!(core::mem::size_of::<Enforce>() == 8);
const _: () = assert!(core::mem::size_of::<PeerKey>() == 20);
const _: () = assert!(core::mem::size_of::<HoldEvent>() == 48);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data with explicit padding, no pointers, every bit pattern valid.
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::LostKey {}
    unsafe impl aya::Pod for super::ConnState {}
    unsafe impl aya::Pod for super::DataHeader {}
    unsafe impl aya::Pod for super::Enforce {}
    unsafe impl aya::Pod for super::PeerKey {}
}
