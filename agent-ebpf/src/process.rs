//! Process tracepoints: new programs, exits, and TLS libraries being opened.
//!
//! Uprobes attach per library file (inode), so a process that maps an already-attached
//! library is covered from its first call. These notices let the agent attach to libraries
//! it has not seen yet (new container images, vendored copies) as soon as they are opened.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_str_bytes,
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use tokentap_common::{counter, proc_kind, ProcEvent, COMM_LEN, PATH_LEN};

use crate::maps::{bump, AGENT_TGID, LIB_EVENTS, PROC_EVENTS};

/// Offsets of `filename` and `flags` in `syscalls:sys_enter_openat` (see its tracefs `format`).
const OPENAT_FILENAME_OFFSET: usize = 24;
const OPENAT_FLAGS_OFFSET: usize = 32;
/// `O_WRONLY | O_RDWR`: the dynamic loader opens libraries read-only; an open for writing is
/// a copy or an install in progress, whose half-written file cannot be probed yet.
const O_ACCMODE_WRITE: u64 = 0o1 | 0o2;
/// Basename prefixes of the TLS libraries probed by file: OpenSSL's libssl and GnuTLS.
const LIBSSL: &[u8] = b"libssl.so";
const LIBGNUTLS: &[u8] = b"libgnutls.so";

/// Offset of `__data_loc char[] filename` in `sched:sched_process_exec` (see its `format`):
/// a u32 whose low half is the string's offset in the record, the high half its length.
const EXEC_FILENAME_LOC_OFFSET: usize = 8;

#[inline(always)]
fn emit(kind: u32, tgid: u32, exec_ctx: Option<&TracePointContext>) {
    let Some(mut entry) = PROC_EVENTS.reserve::<ProcEvent>(0) else {
        bump(counter::PROC_LOST);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: the reservation is sized for a ProcEvent and exclusively ours until submit.
    unsafe {
        (*event).kind = kind;
        (*event).tgid = tgid;
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        (*event).uid = bpf_get_current_uid_gid() as u32;
        (*event)._pad = 0;
        (*event).path[0] = 0;
    }
    if let Some(ctx) = exec_ctx {
        // SAFETY: reading the tracepoint record at its documented offset; the string is in the
        // record itself (kernel memory), read with the kernel string helper.
        if let Ok(loc) = unsafe { ctx.read_at::<u32>(EXEC_FILENAME_LOC_OFFSET) } {
            let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
            let path = unsafe { &mut (*event).path };
            if unsafe { bpf_probe_read_kernel_str_bytes(src, path) }.is_err() {
                path[0] = 0;
            }
        }
    }
    entry.submit(0);
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    emit(proc_kind::EXEC, tgid, Some(&ctx));
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Only the thread-group leader's exit ends the process for our purposes.
    if (pid_tgid >> 32) as u32 == pid_tgid as u32 {
        emit(proc_kind::EXIT, (pid_tgid >> 32) as u32, None);
    }
    0
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == AGENT_TGID.load() {
        return 0;
    }
    // SAFETY: reading the tracepoint record at its documented offsets.
    let Ok(flags) = (unsafe { ctx.read_at::<u64>(OPENAT_FLAGS_OFFSET) }) else {
        return 0;
    };
    if flags & O_ACCMODE_WRITE != 0 {
        return 0;
    }
    // SAFETY: as above.
    let Ok(filename) = (unsafe { ctx.read_at::<u64>(OPENAT_FILENAME_OFFSET) }) else {
        return 0;
    };
    // The path is read straight into a reservation (the stack is too small to stage it) and
    // the reservation discarded when the name does not match: far cheaper than waking user
    // space for every open on the host.
    // Not PROC_EVENTS: see LIB_EVENTS. A failed reservation is not counted as a lost event:
    // nearly every open is not a TLS library's, and counting them all (as the proc ring's
    // losses did) buried the real losses under thousands a second while the agent lagged.
    let Some(mut entry) = LIB_EVENTS.reserve::<ProcEvent>(0) else {
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: the reservation is sized for a ProcEvent and exclusively ours until submit.
    let path = unsafe { &mut (*event).path };
    let n = match unsafe { bpf_probe_read_user_str_bytes(filename as *const u8, path) } {
        Ok(s) => s.len(),
        Err(_) => {
            entry.discard(0);
            return 0;
        }
    };
    if !(has_basename(path, n, LIBSSL) || has_basename(path, n, LIBGNUTLS)) {
        entry.discard(0);
        return 0;
    }
    unsafe {
        (*event).kind = proc_kind::LIB_OPEN;
        (*event).tgid = tgid;
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).comm = [0; COMM_LEN];
        (*event).uid = bpf_get_current_uid_gid() as u32;
        (*event)._pad = 0;
    }
    entry.submit(0);
    0
}

/// Longest basename considered, e.g. `libssl.so.1.0.2k-fips` and `libgnutls.so.30.34.3` fit.
const MAX_BASENAME: usize = 24;

/// True if the last path component starts with `needle`. Tests the few possible start
/// positions near the end instead of scanning the path: a scan with data-dependent state
/// multiplies verifier states beyond the instruction limit. Each failed position returns to
/// the same loop state, so a second needle adds its instructions, not a product of states.
#[inline(always)]
fn has_basename(path: &[u8; PATH_LEN], n: usize, needle: &[u8]) -> bool {
    let mut l = needle.len();
    while l <= MAX_BASENAME {
        if n >= l {
            let start = n - l;
            let after_slash = start == 0 || path[(start - 1) & (PATH_LEN - 1)] == b'/';
            if after_slash && matches_at(path, start, needle) {
                return true;
            }
        }
        l += 1;
    }
    false
}

#[inline(always)]
fn matches_at(path: &[u8; PATH_LEN], start: usize, needle: &[u8]) -> bool {
    let mut j = 0;
    while j < needle.len() {
        if path[(start + j) & (PATH_LEN - 1)] != needle[j] {
            return false;
        }
        j += 1;
    }
    true
}
