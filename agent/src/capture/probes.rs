//! The declarative probe table: which library functions get which program.
use tokentap_common::names;

#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    pub symbol: &'static str,
    pub program: &'static str,
    /// A library without this symbol is not the library we know: refuse to half-attach.
    pub required: bool,
}

const fn probe(symbol: &'static str, program: &'static str, required: bool) -> ProbeSpec {
    ProbeSpec { symbol, program, required }
}

/// OpenSSL 1.1 and 3.x. The `_ex` variants appeared in 1.1.1; Python's ssl module uses only
/// them, curl only the plain ones. `SSL_shutdown` and `SSL_free` end a session.
pub const OPENSSL: &[ProbeSpec] = &[
    probe("SSL_write", names::PROG_SSL_WRITE_ENTER, true),
    probe("SSL_write", names::PROG_SSL_RET, true),
    probe("SSL_read", names::PROG_SSL_READ_ENTER, true),
    probe("SSL_read", names::PROG_SSL_RET, true),
    probe("SSL_write_ex", names::PROG_SSL_WRITE_ENTER, false),
    probe("SSL_write_ex", names::PROG_SSL_RET_EX, false),
    probe("SSL_read_ex", names::PROG_SSL_READ_ENTER, false),
    probe("SSL_read_ex", names::PROG_SSL_RET_EX, false),
    probe("SSL_shutdown", names::PROG_SSL_CLOSE, false),
    probe("SSL_free", names::PROG_SSL_CLOSE, false),
    // SNI: `SSL_set_tlsext_host_name` is a macro over `SSL_ctrl` (endpoint identity).
    probe("SSL_ctrl", names::PROG_SSL_CTRL, false),
    // The socket of a session, for enforcement (CONN_FDS) before its first write.
    probe("SSL_set_fd", names::PROG_SSL_SET_FD, false),
    probe("SSL_do_handshake", names::PROG_SSL_HANDSHAKE_ENTER, false),
    probe("SSL_do_handshake", names::PROG_SSL_HANDSHAKE_RET, false),
    probe("SSL_connect", names::PROG_SSL_HANDSHAKE_ENTER, false),
    probe("SSL_connect", names::PROG_SSL_HANDSHAKE_RET, false),
];

/// GnuTLS 3.x (`libgnutls.so.30`). `gnutls_record_send` and `gnutls_record_recv` return the
/// byte count; `gnutls_bye` and `gnutls_deinit` end a session.
pub const GNUTLS: &[ProbeSpec] = &[
    probe("gnutls_record_send", names::PROG_GNUTLS_SEND_ENTER, true),
    probe("gnutls_record_send", names::PROG_GNUTLS_RET, true),
    probe("gnutls_record_recv", names::PROG_GNUTLS_RECV_ENTER, true),
    probe("gnutls_record_recv", names::PROG_GNUTLS_RET, true),
    probe("gnutls_bye", names::PROG_GNUTLS_CLOSE, false),
    probe("gnutls_deinit", names::PROG_GNUTLS_CLOSE, false),
    probe("gnutls_transport_set_int2", names::PROG_GNUTLS_SET_FD, false),
];

/// `(category, name, program)` of every tracepoint.
pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sched", "sched_process_exec", names::PROG_EXEC),
    ("sched", "sched_process_exit", names::PROG_EXIT),
    ("syscalls", "sys_enter_openat", names::PROG_OPENAT),
];

/// Plain HTTP over sockets (`syscalls:<name>` runs the program of the same name). Attached
/// only when plain-HTTP capture is enabled: each hit costs a map lookup on every read and write
/// on the host.
pub const SOCKET_TRACEPOINTS: &[&str] = &[
    "sys_enter_connect",
    "sys_exit_connect",
    "sys_enter_write",
    "sys_exit_write",
    "sys_enter_sendto",
    "sys_exit_sendto",
    "sys_enter_writev",
    "sys_exit_writev",
    "sys_enter_sendmsg",
    "sys_exit_sendmsg",
    "sys_enter_read",
    "sys_exit_read",
    "sys_enter_recvfrom",
    "sys_exit_recvfrom",
    "sys_enter_readv",
    "sys_exit_readv",
    "sys_enter_recvmsg",
    "sys_exit_recvmsg",
    "sys_enter_close",
    "sys_enter_dup2",
    "sys_enter_dup3",
];
