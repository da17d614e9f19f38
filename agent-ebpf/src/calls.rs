//! The per-thread life of a library read/write, shared by the uprobe stacks that key their
//! in-flight calls by thread (OpenSSL/BoringSSL, GnuTLS, rustls): the entry probe remembers
//! the arguments, the return probe takes them back once it knows how many bytes moved, and a
//! close probe forgets the connection's verdict.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, programs::ProbeContext};
use tokentap_common::{counter, direction, ConnKey};

use crate::{
    emit::{emit_close, ignored},
    enforce::{gate, read_started},
    maps::{bump, CallArgs, ACTIVE_CALLS, AGENT_TGID, CONN_STATE},
};

/// This thread's pid_tgid, or `None` inside the agent (its own TLS is never captured).
#[inline(always)]
pub fn caller() -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32 != AGENT_TGID.load()).then_some(pid_tgid)
}

/// Entry of a call: remembers `args` for the return probe, unless user space already judged
/// the connection not worth shipping (then the call is only counted as skipped). An egress
/// call passes the enforcement gate first (it may stop the process before the library runs);
/// an ingress call ends the connection's pass.
#[inline(always)]
pub fn remember(pid_tgid: u64, args: &CallArgs) -> u32 {
    if args.direction == direction::EGRESS {
        gate(pid_tgid, args.conn, args.library);
    } else {
        read_started(pid_tgid, args.conn);
    }
    if ignored((pid_tgid >> 32) as u32, args.conn) {
        bump(counter::CALLS_SKIPPED);
        return 0;
    }
    let _ = ACTIVE_CALLS.insert(&pid_tgid, args, 0);
    0
}

/// Return of a call: this thread's remembered arguments, removed from the map. With
/// `Some(library)`, another stack's call on the same thread (one library wrapping another) is
/// not ours and stays in place for its own return probe.
#[inline(always)]
pub fn take(pid_tgid: u64, library: Option<u32>) -> Option<CallArgs> {
    // SAFETY: copied out before removal.
    let args = (unsafe { ACTIVE_CALLS.get(&pid_tgid) }).copied()?;
    if library.is_some_and(|library| args.library != library) {
        return None;
    }
    let _ = ACTIVE_CALLS.remove(&pid_tgid);
    Some(args)
}

/// A session-ending call whose first argument is the connection: its verdict is forgotten (the
/// address may be reused by a new connection) and user space told it closed.
#[inline(always)]
pub fn close(ctx: &ProbeContext, library: u32) -> u32 {
    let Some(pid_tgid) = caller() else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    if conn == 0 {
        return 0;
    }
    let _ = CONN_STATE.remove(&ConnKey { tgid, _pad: 0, conn });
    emit_close(tgid, pid_tgid as u32, conn, library);
    0
}
