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
//! read probes' attach cookie.
//!
//! tokio-rustls (under hyper-rustls and reqwest) reads through `BufRead` instead:
//! `Reader::into_first_chunk(self)` returns the first buffered chunk (through a return slot:
//! RDI is the slot, RSI the `&Reader`; the slot holds the slice's pointer and length), and
//! `<Reader as BufRead>::consume(&mut self, amt)` then drops the `amt` bytes the caller took.
//! The chunk's address is remembered per thread at the first, and `amt` bytes from it shipped
//! at the second.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use tokentap_common::{direction, library};

use crate::{
    calls::{close, remember, take},
    emit::emit_call,
    maps::{CallArgs, AGENT_TGID},
};

/// Per thread: the connection and the address of the chunk `into_first_chunk` last handed out
/// (`CallArgs::buf`), until `consume` ships from it. LRU: an abandoned chunk must not pile up.
#[map]
static RUSTLS_CHUNKS: LruHashMap<u64, CallArgs> = LruHashMap::with_max_entries(16384, 0);

/// The connection a `&Writer`/`&Reader` at `this` belongs to: its first word points
/// `field_offset` bytes into the `ConnectionCommon`. `None` for the agent itself or bad input.
#[inline(always)]
fn reader_conn(tgid: u32, this: u64, field_offset: u64) -> Option<u64> {
    if tgid == AGENT_TGID.load() || this == 0 {
        return None;
    }
    // SAFETY: user memory read through the helper; failure is handled.
    let field = unsafe { bpf_probe_read_user(this as *const u64) }.ok()?;
    (field != 0 && field >= field_offset).then(|| field - field_offset)
}

/// Entry of `Writer::write`/`Reader::read`: RDI is the `&Writer`/`&Reader`, RSI the buffer.
#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u32, field_offset: u64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let Some(conn) = reader_conn(tgid, ctx.arg(0).unwrap_or(0), field_offset) else {
        return 0;
    };
    if buf == 0 {
        return 0;
    }
    remember(pid_tgid, &CallArgs { conn, buf, out_len: 0, direction: dir, library: library::RUSTLS })
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
    let Some(args) = take(pid_tgid, Some(library::RUSTLS)) else {
        return 0;
    };
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
    close(&ctx, library::RUSTLS)
}

/// `Reader::into_first_chunk(self)`: RDI is the return slot, RSI the `&Reader`.
#[uprobe]
pub fn rustls_chunk_enter(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the helper only reads the cookie of the running attachment.
    let offset = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let slot: u64 = ctx.arg(0).unwrap_or(0);
    let Some(conn) = reader_conn((pid_tgid >> 32) as u32, ctx.arg(1).unwrap_or(0), offset) else {
        return 0;
    };
    if slot == 0 {
        return 0;
    }
    remember(
        pid_tgid,
        &CallArgs { conn, buf: slot, out_len: 0, direction: direction::INGRESS, library: library::RUSTLS },
    )
}

/// Return of `into_first_chunk`: the slot holds `Ok(&[u8])` as (pointer, length), or a null
/// pointer for `Err`. The chunk's address waits for `consume`.
#[uretprobe]
pub fn rustls_chunk_ret(_ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(mut args) = take(pid_tgid, Some(library::RUSTLS)) else {
        return 0;
    };
    // SAFETY: user memory read through the helper; failure is handled.
    let Ok(chunk) = (unsafe { bpf_probe_read_user(args.buf as *const u64) }) else {
        return 0;
    };
    if chunk == 0 {
        let _ = RUSTLS_CHUNKS.remove(&pid_tgid);
        return 0;
    }
    args.buf = chunk;
    let _ = RUSTLS_CHUNKS.insert(&pid_tgid, &args, 0);
    0
}

/// `<Reader as BufRead>::consume(&mut self, amt)`: the caller took `amt` bytes of the chunk.
#[uprobe]
pub fn rustls_consume_enter(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the helper only reads the cookie of the running attachment.
    let offset = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let Some(conn) = reader_conn((pid_tgid >> 32) as u32, ctx.arg(0).unwrap_or(0), offset) else {
        return 0;
    };
    let amt: u64 = ctx.arg(1).unwrap_or(0);
    // SAFETY: copied out before use.
    let Some(mut args) = (unsafe { RUSTLS_CHUNKS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    if args.conn != conn || amt == 0 {
        return 0;
    }
    emit_call(&args, amt);
    // A second consume without a new chunk continues where this one stopped.
    args.buf += amt;
    let _ = RUSTLS_CHUNKS.insert(&pid_tgid, &args, 0);
    0
}
