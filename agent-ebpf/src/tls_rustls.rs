//! rustls probes, on executables that keep their symbol table.
//!
//! `<rustls::conn::connection::Writer as std::io::Write>::write(&mut self, buf)` and
//! `<rustls::conn::connection::Reader as std::io::Read>::read(&mut self, buf)`: `self` (RDI)
//! points at a `Writer { sink: &mut dyn PlaintextSink }` / `Reader { received_plaintext:
//! &mut ChunkVecBuffer, .. }` temporary on the caller's stack, the buffer is RSI, its length RDX.
//! Both return `io::Result<usize>` in RAX (tag: 0 = `Ok`, in the low byte) and RDX (the count).
//!
//! The connection key is the `ConnectionCommon` address, the same for both directions: the
//! Writer's sink data pointer is the `ConnectionCommon` itself; the Reader's pointer is its
//! `received_plaintext` field, a fixed offset further into the same object. User space finds
//! that offset per executable (from the code that builds a `Reader`) and passes it as the
//! read probe's attach cookie.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use tokentap_common::{counter, direction, library, ConnKey};

use crate::{
    emit::{emit_call, emit_close, ignored},
    maps::{bump, CallArgs, ACTIVE_CALLS, AGENT_TGID, CONN_STATE},
};

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u32, field_offset: u64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == AGENT_TGID.load() {
        return 0;
    }
    let this: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    if this == 0 || buf == 0 {
        return 0;
    }
    // The first word of the Writer/Reader temporary: a pointer into the connection.
    // SAFETY: user memory read through the helper; failure is handled.
    let Ok(field) = (unsafe { bpf_probe_read_user(this as *const u64) }) else {
        return 0;
    };
    if field == 0 || field < field_offset {
        return 0;
    }
    let conn = field - field_offset;
    if ignored(tgid, conn) {
        bump(counter::CALLS_SKIPPED);
        return 0;
    }
    let args = CallArgs { conn, buf, out_len: 0, direction: dir, library: library::RUSTLS };
    let _ = ACTIVE_CALLS.insert(&pid_tgid, &args, 0);
    0
}

#[uprobe]
pub fn rustls_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, direction::EGRESS, 0)
}

/// The attach cookie is the offset of `received_plaintext` within `ConnectionCommon`.
#[uprobe]
pub fn rustls_read_enter(ctx: ProbeContext) -> u32 {
    // SAFETY: the helper only reads the cookie of the running attachment.
    let offset = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    enter(&ctx, direction::INGRESS, offset)
}

/// Return of `Writer::write`/`Reader::read`: `Ok(n)` is a zero tag byte in RAX and n in RDX.
#[uretprobe]
pub fn rustls_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out before removal.
    let Some(args) = (unsafe { ACTIVE_CALLS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    if args.library != library::RUSTLS {
        return 0;
    }
    let _ = ACTIVE_CALLS.remove(&pid_tgid);
    let tag: u64 = ctx.ret::<u64>();
    // SAFETY: `regs` is the probe's register snapshot, valid while the program runs.
    let count = unsafe { (*ctx.regs).rdx };
    if tag & 0xff == 0 && count > 0 {
        emit_call(&args, count);
    }
    0
}

/// `core::ptr::drop_in_place::<rustls::conn::ConnectionCommon<_>>`: the connection is gone.
#[uprobe]
pub fn rustls_close(ctx: ProbeContext) -> u32 {
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
    emit_close(tgid, pid_tgid as u32, conn, library::RUSTLS);
    0
}
