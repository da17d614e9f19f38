//! OpenSSL (libssl 1.1 and 3.x) probes.
//!
//! `SSL_write(ssl, buf, num)` / `SSL_read(ssl, buf, num)` return the byte count;
//! `SSL_write_ex(ssl, buf, num, *written)` / `SSL_read_ex(ssl, buf, num, *readbytes)` return 1
//! and store the count. The entry probe remembers the arguments per thread; the return probe
//! knows how many bytes really moved (for reads, only then are they in the buffer).
//!
//! The same programs serve BoringSSL found by signature in stripped executables: that attach
//! carries the library id as its cookie; libssl and symbol attaches carry none (0: OpenSSL).
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes, generated::bpf_get_attach_cookie,
    },
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use tokentap_common::{counter, data_kind, direction, library, NameEvent};

use crate::{
    calls::{caller, close, remember, take},
    emit::{emit_call, meta_header},
    enforce::{note_fd, HANDSHAKING},
    maps::{bump, CallArgs, AGENT_TGID, DATA_EVENTS},
};

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u32) -> u32 {
    let Some(pid_tgid) = caller() else {
        return 0;
    };
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let out_len: u64 = ctx.arg(3).unwrap_or(0);
    if conn == 0 || buf == 0 {
        return 0;
    }
    remember(pid_tgid, &CallArgs { conn, buf, out_len, direction: dir, library: attached_library(ctx) })
}

/// The library id this attach was tagged with, OpenSSL when untagged.
#[inline(always)]
fn attached_library(ctx: &ProbeContext) -> u32 {
    // SAFETY: the helper only reads the attach's cookie from the program's context.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        library::OPENSSL
    } else {
        cookie as u32
    }
}

#[uprobe]
pub fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, direction::EGRESS)
}

#[uprobe]
pub fn ssl_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, direction::INGRESS)
}

/// Return of `SSL_write`/`SSL_read`: the return value is the byte count.
#[uretprobe]
pub fn ssl_ret(ctx: RetProbeContext) -> u32 {
    // Any library: BoringSSL shares these programs (its id comes from the attach cookie).
    let Some(args) = take(bpf_get_current_pid_tgid(), None) else {
        return 0;
    };
    let ret: i64 = ctx.ret::<i64>() as i32 as i64;
    if ret > 0 {
        emit_call(&args, ret as u64);
    }
    0
}

/// Return of `SSL_write_ex`/`SSL_read_ex`: 1 on success, count stored through the 4th argument.
#[uretprobe]
pub fn ssl_ret_ex(ctx: RetProbeContext) -> u32 {
    // Any library: BoringSSL shares these programs (its id comes from the attach cookie).
    let Some(args) = take(bpf_get_current_pid_tgid(), None) else {
        return 0;
    };
    let ret: i32 = ctx.ret::<i32>();
    if ret != 1 || args.out_len == 0 {
        return 0;
    }
    // SAFETY: user pointer read through the helper.
    let Ok(count) = (unsafe { bpf_probe_read_user(args.out_len as *const u64) }) else {
        return 0;
    };
    if count > 0 {
        emit_call(&args, count);
    }
    0
}

/// `SSL_shutdown(ssl)` and `SSL_free(ssl)`: the session ends.
#[uprobe]
pub fn ssl_close(ctx: ProbeContext) -> u32 {
    close(&ctx, attached_library(&ctx))
}

/// `SSL_ctrl` command behind the `SSL_set_tlsext_host_name` macro.
const SSL_CTRL_SET_TLSEXT_HOSTNAME: i32 = 55;

/// `SSL_ctrl(ssl, cmd, larg, parg)`: with `SSL_CTRL_SET_TLSEXT_HOSTNAME` the client names the
/// server it means (SNI), before the handshake. That name is the endpoint's identity even when
/// the HTTP `Host` header says something else (a gateway, an IP-addressed upstream).
#[uprobe]
pub fn ssl_ctrl(ctx: ProbeContext) -> u32 {
    let cmd: i32 = ctx.arg(1).unwrap_or(0);
    if cmd != SSL_CTRL_SET_TLSEXT_HOSTNAME {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == AGENT_TGID.load() {
        return 0;
    }
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    let name: u64 = ctx.arg(3).unwrap_or(0);
    if conn == 0 || name == 0 {
        return 0;
    }
    let Some(mut entry) = DATA_EVENTS.reserve::<NameEvent>(0) else {
        bump(counter::DATA_LOST);
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: the reservation is sized for a NameEvent and exclusively ours until submit.
    let buf = unsafe { &mut (*event).name };
    // SAFETY: reading a user string through the helper; failure is handled.
    let len = match unsafe { bpf_probe_read_user_str_bytes(name as *const u8, buf) } {
        Ok(s) if !s.is_empty() => s.len(),
        _ => {
            entry.discard(0);
            return 0;
        }
    };
    // SAFETY: as above.
    unsafe { (*event).header = meta_header(data_kind::SERVER_NAME, conn, library::OPENSSL, len as u32) };
    entry.submit(0);
    0
}

/// `SSL_set_fd(ssl, fd)` (Python's ssl module, curl): the connection's socket, known before its
/// first write, so user space can name the socket of a request held at that very write.
#[uprobe]
pub fn ssl_set_fd(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = caller() else {
        return 0;
    };
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    let fd: i32 = ctx.arg(1).unwrap_or(-1);
    if conn != 0 && fd >= 0 {
        note_fd((pid_tgid >> 32) as u32, conn, fd as u64);
    }
    0
}

/// `SSL_do_handshake(ssl)` / `SSL_connect(ssl)`: the thread's write syscalls until the return
/// are the session's (`CONN_FDS`, see `HANDSHAKING`).
#[uprobe]
pub fn ssl_handshake_enter(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = caller() else {
        return 0;
    };
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    if conn != 0 {
        let _ = HANDSHAKING.insert(&pid_tgid, &conn, 0);
    }
    0
}

#[uretprobe]
pub fn ssl_handshake_ret(_ctx: RetProbeContext) -> u32 {
    let _ = HANDSHAKING.remove(&bpf_get_current_pid_tgid());
    0
}
