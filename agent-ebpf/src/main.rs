//! tokentap's kernel side: uprobes on TLS libraries and process tracepoints.
//!
//! Plaintext leaves these programs only through the `DATA_EVENTS` ring buffer, to the agent,
//! which parses it in memory and keeps counts only.
#![no_std]
#![no_main]

mod calls;
mod emit;
mod enforce;
mod maps;
mod process;
mod sockets;
mod tls_gnutls;
mod tls_go;
mod tls_openssl;
mod tls_rustls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// `bpf_probe_read_user` and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
