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
use tokentap_common::{counter, direction, library, ConnKey};

use crate::{
    emit::{emit_call, emit_close, ignored},
    maps::{bump, CallArgs, ACTIVE_CALLS, AGENT_TGID, CONN_STATE},
};

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == AGENT_TGID.load() {
        return 0;
    }
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    if conn == 0 || buf == 0 {
        return 0;
    }
    if ignored(tgid, conn) {
        bump(counter::CALLS_SKIPPED);
        return 0;
    }
    let args = CallArgs { conn, buf, out_len: 0, direction: dir, library: library::GNUTLS };
    let _ = ACTIVE_CALLS.insert(&pid_tgid, &args, 0);
    0
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
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out before removal.
    let Some(args) = (unsafe { ACTIVE_CALLS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    // Another stack's call on the same thread (one library wrapping another) is not ours.
    if args.library != library::GNUTLS {
        return 0;
    }
    let _ = ACTIVE_CALLS.remove(&pid_tgid);
    let ret: i64 = ctx.ret::<i64>();
    if ret > 0 {
        emit_call(&args, ret as u64);
    }
    0
}

/// `gnutls_bye(session, how)` and `gnutls_deinit(session)`: the session ends.
#[uprobe]
pub fn gnutls_close(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == AGENT_TGID.load() {
        return 0;
    }
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    if conn == 0 {
        return 0;
    }
    let _ = CONN_STATE.remove(&ConnKey { tgid, _pad: 0, conn });
    emit_close(tgid, pid_tgid as u32, conn, library::GNUTLS);
    0
}
