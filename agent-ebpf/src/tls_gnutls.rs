//! GnuTLS (libgnutls.so.30) probes.
//!
//! `gnutls_record_send(session, data, size)` / `gnutls_record_recv(session, data, size)` return
//! an `ssize_t`: the bytes moved, 0 at end of stream, or a negative GnuTLS error (`E_AGAIN`,
//! `E_INTERRUPTED`, ...). The entry probe remembers the arguments per thread; the return probe
//! knows how many bytes really moved. The connection key is the `gnutls_session_t` pointer,
//! which lives from `gnutls_init` to `gnutls_deinit`.
//!
//! `gnutls_record_send` is a tail jump to `gnutls_record_send2` in 3.7; only the former is
//! probed, so each send is seen once (callers of `send2` directly are rare and not covered).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tokentap_common::{direction, library};

use crate::{
    calls::{caller, close, remember, take},
    emit::emit_call,
    enforce::note_fd,
    maps::CallArgs,
};

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u32) -> u32 {
    let Some(pid_tgid) = caller() else {
        return 0;
    };
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    if conn == 0 || buf == 0 {
        return 0;
    }
    remember(pid_tgid, &CallArgs { conn, buf, out_len: 0, direction: dir, library: library::GNUTLS })
}

#[uprobe]
pub fn gnutls_send_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, direction::EGRESS)
}

#[uprobe]
pub fn gnutls_recv_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, direction::INGRESS)
}

/// Return of `gnutls_record_send`/`gnutls_record_recv`: a positive `ssize_t` is the byte count.
#[uretprobe]
pub fn gnutls_ret(ctx: RetProbeContext) -> u32 {
    let Some(args) = take(bpf_get_current_pid_tgid(), Some(library::GNUTLS)) else {
        return 0;
    };
    let ret: i64 = ctx.ret::<i64>();
    if ret > 0 {
        emit_call(&args, ret as u64);
    }
    0
}

/// `gnutls_bye(session, how)` and `gnutls_deinit(session)`: the session ends.
#[uprobe]
pub fn gnutls_close(ctx: ProbeContext) -> u32 {
    close(&ctx, library::GNUTLS)
}

/// `gnutls_transport_set_int2(session, recv_fd, send_fd)` (behind the `gnutls_transport_set_int`
/// macro): the socket the session writes to, for `CONN_FDS`.
#[uprobe]
pub fn gnutls_set_fd(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = caller() else {
        return 0;
    };
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    let fd: i32 = ctx.arg(2).unwrap_or(-1);
    if conn != 0 && fd >= 0 {
        note_fd((pid_tgid >> 32) as u32, conn, fd as u64);
    }
    0
}
