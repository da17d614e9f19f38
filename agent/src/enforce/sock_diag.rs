//! `SOCK_DESTROY` over netlink `NETLINK_SOCK_DIAG`: the kernel aborts a TCP socket named by its
//! 4-tuple (`tcp_abort`: the owner's next write fails with `ECONNABORTED`, the peer gets a
//! reset). Needs `CAP_NET_ADMIN` and `CONFIG_INET_DIAG_DESTROY`. A hand-written encoder: one
//! fixed-size request and its ack, not worth a netlink crate.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then `inet_diag_sockid`.
const REQ_LEN: usize = 8 + 48;
/// Both cookie words all ones: "look the socket up by its 4-tuple only".
const NOCOOKIE: u32 = !0;

pub struct SockDiag {
    fd: OwnedFd,
}

/// The netlink request that destroys the TCP socket `local` ↔ `peer` (`seq` echoed in the ack).
pub fn encode_destroy(local: SocketAddr, peer: SocketAddr, seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    m.extend_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DESTROY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // A v4-mapped pair lives in the IPv6 table but the kernel finds it either way; a plain
    // IPv4 pair is asked for as AF_INET.
    let v4 = local.is_ipv4() && peer.is_ipv4();
    let family = if v4 { libc::AF_INET } else { libc::AF_INET6 } as u8;
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: any
    m.extend_from_slice(&local.port().to_be_bytes());
    m.extend_from_slice(&peer.port().to_be_bytes());
    m.extend_from_slice(&addr_bytes(local.ip()));
    m.extend_from_slice(&addr_bytes(peer.ip()));
    m.extend_from_slice(&0u32.to_ne_bytes()); // idiag_if
    m.extend_from_slice(&NOCOOKIE.to_ne_bytes());
    m.extend_from_slice(&NOCOOKIE.to_ne_bytes());
    m
}

/// 16 bytes, network order; IPv4 in the first 4 (as `inet_diag_sockid` holds it). An IPv4
/// address paired with an IPv6 one is written v4-mapped.
fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The errno of an `NLMSG_ERROR` ack (0: success), for the request with `seq`.
pub fn decode_ack(buf: &[u8], seq: u32) -> Option<i32> {
    if buf.len() < NLMSG_HDRLEN + 4 {
        return None;
    }
    let ty = u16::from_ne_bytes(buf[4..6].try_into().ok()?);
    let got = u32::from_ne_bytes(buf[8..12].try_into().ok()?);
    if ty != NLMSG_ERROR || got != seq {
        return None;
    }
    Some(-i32::from_ne_bytes(buf[16..20].try_into().ok()?))
}

impl SockDiag {
    pub fn open() -> io::Result<SockDiag> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        Ok(SockDiag { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Destroys one socket; `ENOENT` when no such socket exists (already closed).
    pub fn destroy(&self, local: SocketAddr, peer: SocketAddr) -> io::Result<()> {
        let mut local = local;
        let mut peer = peer;
        // Mixed families cannot be one socket; fold mapped addresses back to IPv4 pairs.
        if let (IpAddr::V6(l), IpAddr::V6(p)) = (local.ip(), peer.ip()) {
            if let (Some(l4), Some(p4)) = (l.to_ipv4_mapped(), p.to_ipv4_mapped()) {
                local.set_ip(IpAddr::V4(l4));
                peer.set_ip(IpAddr::V4(p4));
            }
        }
        let seq = next_seq();
        let msg = encode_destroy(local, peer, seq);
        // SAFETY: an all-zero sockaddr_nl is the kernel's address (pid 0, no groups).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buffer and address valid for the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: receiving into a local buffer of the given size.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            match decode_ack(&buf[..n as usize], seq) {
                Some(0) => return Ok(()),
                Some(errno) => return Err(io::Error::from_raw_os_error(errno)),
                // Another message (a late ack of an earlier request): keep reading.
                None => continue,
            }
        }
    }
}

fn next_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(1);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_an_ipv4_destroy() {
        let m = encode_destroy("127.0.0.1:40000".parse().unwrap(), "10.0.0.2:443".parse().unwrap(), 7);
        assert_eq!(m.len(), 72);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 21);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 6, 0, 0]);
        assert_eq!(&m[24..28], &[0x9c, 0x40, 0x01, 0xbb]);
        assert_eq!(&m[28..32], &[127, 0, 0, 1]);
        assert_eq!(&m[44..48], &[10, 0, 0, 2]);
        assert_eq!(&m[64..72], &[0xff; 8]);
    }

    #[test]
    fn decodes_acks() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[8..12].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(decode_ack(&ack, 9), Some(0));
        ack[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(decode_ack(&ack, 9), Some(libc::ENOENT));
        assert_eq!(decode_ack(&ack, 8), None);
        assert_eq!(decode_ack(&ack[..10], 9), None);
    }

    /// Root only (CAP_NET_ADMIN): a real loopback connection is aborted under the client.
    #[test]
    fn destroys_a_real_socket() {
        use std::io::{Read, Write};
        let Ok(diag) = SockDiag::open() else { return };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        match diag.destroy(client.local_addr().unwrap(), client.peer_addr().unwrap()) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
            other => other.unwrap(),
        }
        let e = client.write_all(b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNABORTED), "{e}");
        let mut b = [0u8; 1];
        assert!(server.read(&mut b).is_err() || server.read(&mut b).unwrap() == 0);
    }
}
