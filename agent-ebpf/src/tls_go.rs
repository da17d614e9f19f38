//! Go `crypto/tls` probes (Go 1.17+ register ABI on x86-64).
//!
//! `func (c *Conn) Write(b []byte) (int, error)` and `Read`: at entry the receiver is in RAX,
//! the slice's pointer in RBX and its length in RCX. User space puts one more probe on every
//! `RET` instruction of the two functions (found by disassembly): there RAX holds `n` and
//! RBX/RCX the error interface. Never uretprobes: Go grows goroutine stacks by copying them,
//! and the return address a uretprobe plants on the stack would be copied to a place the
//! kernel no longer recognises, crashing the program.
//!
//! A goroutine can be parked inside `Read` and resume on another OS thread, so the in-flight
//! call is keyed by the goroutine (`g`, kept in R14 by the register ABI), not by the thread.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use tokentap_common::{counter, direction, library, ConnKey};

use crate::{
    emit::{emit_call, emit_close, ignored, mark_lost},
    enforce::{gate, read_started},
    maps::{bump, CallArgs, AGENT_TGID, CONN_STATE},
};

/// An in-flight `Read`/`Write`: the process and the goroutine running it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoCallKey {
    pub tgid: u32,
    pub _pad: u32,
    pub goroutine: u64,
}

/// Arguments of in-flight Go calls for the RET probes. LRU: a goroutine that never returns
/// (its program killed mid-call) must not fill the map.
#[map]
pub static GO_ACTIVE_CALLS: LruHashMap<GoCallKey, CallArgs> = LruHashMap::with_max_entries(16384, 0);

/// The connection a thread is writing to inside `Write`, by pid_tgid, for the write syscall
/// that follows (`CONN_FDS`). By thread, unlike the calls: the syscall happens on the thread
/// that runs the goroutine then, which is where `Write` started unless it was preempted.
#[map]
pub static GO_WRITING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// The registers of the probed instruction. A uprobe context always carries them.
#[inline(always)]
fn regs(ctx: &ProbeContext) -> &aya_ebpf::bindings::pt_regs {
    // SAFETY: `ctx.regs` is the kernel's pt_regs for this hit, valid while the program runs.
    unsafe { &*ctx.regs }
}

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u32) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == AGENT_TGID.load() {
        return 0;
    }
    let r = regs(ctx);
    let (conn, buf, goroutine) = (r.rax, r.rbx, r.r14);
    if conn == 0 || buf == 0 || goroutine == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if dir == direction::EGRESS {
        gate(pid_tgid, conn, library::GO);
        let _ = GO_WRITING.insert(&pid_tgid, &conn, 0);
    } else {
        read_started(pid_tgid, conn);
    }
    if ignored(tgid, conn) {
        bump(counter::CALLS_SKIPPED);
        return 0;
    }
    let key = GoCallKey { tgid, _pad: 0, goroutine };
    // An entry still there means an earlier call of this goroutine returned without any
    // RET probe seeing it (or its entry was re-run after a stack growth, with the same
    // arguments): its bytes are gone, and the connection must not look whole.
    // SAFETY: copied out at once.
    if let Some(old) = unsafe { GO_ACTIVE_CALLS.get(&key) }.copied() {
        if old.conn != conn || old.buf != buf || old.direction != dir {
            mark_lost(tgid, old.direction, old.conn);
        }
    }
    let args = CallArgs { conn, buf, out_len: 0, direction: dir, library: library::GO };
    let _ = GO_ACTIVE_CALLS.insert(&key, &args, 0);
    0
}

#[uprobe]
pub fn go_tls_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, direction::EGRESS)
}

#[uprobe]
pub fn go_tls_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, direction::INGRESS)
}

/// A `RET` of `Read` or `Write`: `n` in RAX. The bytes counted by `n` really moved even when
/// an error comes with them (io.Reader/io.Writer contract), so `n > 0` is what decides; an
/// error with `n == 0` (EOF, deadline) ships nothing.
#[uprobe]
pub fn go_tls_ret(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = GO_WRITING.remove(&pid_tgid);
    let tgid = (pid_tgid >> 32) as u32;
    let r = regs(&ctx);
    let key = GoCallKey { tgid, _pad: 0, goroutine: r.r14 };
    // SAFETY: copied out before removal.
    let Some(args) = (unsafe { GO_ACTIVE_CALLS.get(&key) }).copied() else {
        return 0;
    };
    let _ = GO_ACTIVE_CALLS.remove(&key);
    let n = r.rax as i64;
    if n > 0 {
        emit_call(&args, n as u64);
    }
    0
}

/// `(*Conn).Close`: the session ends.
#[uprobe]
pub fn go_tls_close(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == AGENT_TGID.load() {
        return 0;
    }
    let conn = regs(&ctx).rax;
    if conn == 0 {
        return 0;
    }
    let _ = CONN_STATE.remove(&ConnKey { tgid, _pad: 0, conn });
    emit_close(tgid, pid_tgid as u32, conn, library::GO);
    0
}
