//! Shipping a library call's plaintext to user space in ordered chunks.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    generated::{bpf_loop, bpf_probe_read_user},
};
use tokentap_common::{
    counter, data_kind, flags, ConnKey, DataHeader, LostKey, CHUNK_LEN, DATA_HEADER_LEN, MAX_CHUNKS_PER_CALL,
};

use crate::maps::{bump, CallArgs, CALL_CAP, CONN_STATE, DATA_EVENTS, LOST_CALLS, SCRATCH};

/// Remembers that bytes of this connection direction are gone (see `LOST_CALLS`).
#[inline(always)]
pub fn mark_lost(tgid: u32, direction: u32, conn: u64) {
    let key = LostKey { tgid, direction, conn };
    let count = match LOST_CALLS.get_ptr(&key) {
        // SAFETY: a valid map value pointer, read once.
        Some(p) => (unsafe { *p }).saturating_add(1),
        None => 1,
    };
    let _ = LOST_CALLS.insert(&key, &count, 0);
}

/// Takes the loss mark of a connection direction, if any: the call about to be shipped
/// must tell user space that bytes before it are missing.
#[inline(always)]
fn take_lost(tgid: u32, direction: u32, conn: u64) -> bool {
    let key = LostKey { tgid, direction, conn };
    // SAFETY: only whether the value exists is used.
    if unsafe { LOST_CALLS.get(&key) }.is_none() {
        return false;
    }
    let _ = LOST_CALLS.remove(&key);
    true
}

/// True when user space decided this connection is not worth shipping.
#[inline(always)]
pub fn ignored(tgid: u32, conn: u64) -> bool {
    let key = ConnKey { tgid, _pad: 0, conn };
    // SAFETY: the value is only read.
    match unsafe { CONN_STATE.get(&key) } {
        Some(state) => state.verdict == tokentap_common::verdict::IGNORE,
        None => false,
    }
}

/// Emits `call_len` bytes from the user buffer `args.buf`, capped by `CALL_CAP`.
#[inline(always)]
pub fn emit_call(args: &CallArgs, call_len: u64) {
    emit_call_avail(args, call_len, call_len);
}

/// Like `emit_call`, but only the first `avail` bytes are at `args.buf` (one segment of a
/// vectored call whose later segments are not read): the rest is declared, not shipped, and
/// user space accounts for it as a gap.
#[inline(always)]
pub fn emit_call_avail(args: &CallArgs, call_len: u64, avail: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let cap = CALL_CAP.load();
    let cap = if avail < cap { avail } else { cap };
    let ship = if call_len > cap { cap } else { call_len };
    let truncated = call_len > ship;
    if truncated {
        bump(counter::CALLS_TRUNCATED);
    }
    let tgid = (pid_tgid >> 32) as u32;
    // If this call's own first chunk is lost too, `lost` marks the direction again.
    let lost_before = take_lost(tgid, args.direction, args.conn);
    let flags = if truncated { flags::TRUNCATED } else { 0 } | if lost_before { flags::LOST_BEFORE } else { 0 };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs on this CPU.
    let event = unsafe { &mut *scratch };
    event.header = DataHeader {
        kind: data_kind::DATA,
        direction: args.direction,
        tgid,
        tid: pid_tgid as u32,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn: args.conn,
        call_len,
        offset: 0,
        len: 0,
        flags,
        library: args.library,
    };
    let mut state = ChunkLoop { buf: args.buf, ship, library: args.library as u64 };
    // bpf_loop verifies the callback once; an open-coded loop of MAX_CHUNKS_PER_CALL
    // iterations exceeds the verifier's instruction budget.
    // SAFETY: the callback only touches `state` through the pointer it is given.
    unsafe {
        bpf_loop(
            MAX_CHUNKS_PER_CALL,
            emit_chunk as *mut core::ffi::c_void,
            &mut state as *mut ChunkLoop as *mut core::ffi::c_void,
            0,
        );
    }
}

#[repr(C)]
struct ChunkLoop {
    buf: u64,
    ship: u64,
    library: u64,
}

/// Counts a call whose bytes could not all be shipped, overall and for its stack. When its
/// first chunk is the one lost, user space would never learn the call existed (a later
/// chunk's offset tells it the size of the hole): mark its connection direction.
#[inline(always)]
fn lost(library: u64, header: &DataHeader, offset: u64) {
    bump(counter::DATA_LOST);
    if library < 8 {
        bump(counter::CALLS_LOST + library as u32);
    }
    if offset == 0 {
        mark_lost(header.tgid, header.direction, header.conn);
    }
}

/// One iteration of the chunk loop: returns 1 to stop.
///
/// The offset derives from the iteration index and the callback never writes to `ctx`: a
/// loop state that changes every iteration keeps the verifier from ever converging.
#[inline(never)]
extern "C" fn emit_chunk(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `ChunkLoop` on the caller's stack, alive for the whole loop.
    let state = unsafe { &*(ctx as *const ChunkLoop) };
    let offset = index * CHUNK_LEN as u64;
    if offset >= state.ship {
        return 1;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs on this CPU.
    let event = unsafe { &mut *scratch };
    let remaining = state.ship - offset;
    let len = if remaining > CHUNK_LEN as u64 { CHUNK_LEN as u64 } else { remaining };
    if len == 0 || len > CHUNK_LEN as u64 {
        return 1;
    }
    let src = (state.buf + offset) as *const core::ffi::c_void;
    // SAFETY: reading user memory through the helper; failure is handled.
    let rc = unsafe { bpf_probe_read_user(event.data.as_mut_ptr() as *mut _, len as u32, src) };
    if rc != 0 {
        lost(state.library, &event.header, offset);
        return 1;
    }
    event.header.offset = offset as u32;
    event.header.len = len as u32;
    let size = DATA_HEADER_LEN as u64 + len;
    // SAFETY: `size` is at most the size of `DataEvent`, which `event` points into.
    let record = unsafe { core::slice::from_raw_parts(event as *const _ as *const u8, size as usize) };
    if DATA_EVENTS.output::<[u8]>(record, 0).is_err() {
        // The rest of the call cannot be parsed without this chunk: stop, count one loss.
        lost(state.library, &event.header, offset);
        return 1;
    }
    0
}

/// Header of a record that is about a connection rather than its bytes (`SERVER_NAME`, `PEER`).
#[inline(always)]
pub fn meta_header(kind: u32, conn: u64, library: u32, len: u32) -> DataHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    DataHeader {
        kind,
        direction: 0,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn,
        call_len: 0,
        offset: 0,
        len,
        flags: 0,
        library,
    }
}

/// Tells user space a session is over.
#[inline(always)]
pub fn emit_close(tgid: u32, tid: u32, conn: u64, library: u32) {
    let header = DataHeader {
        kind: data_kind::CLOSE,
        direction: 0,
        tgid,
        tid,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn,
        call_len: 0,
        offset: 0,
        len: 0,
        flags: 0,
        library,
    };
    if DATA_EVENTS.output::<DataHeader>(header, 0).is_err() {
        bump(counter::DATA_LOST);
    }
}
