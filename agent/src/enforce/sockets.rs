//! A process's TCP sockets as `/proc` shows them: fd → socket inode (`/proc/PID/fd`) → the
//! 4-tuple in the process's own network namespace (`/proc/PID/net/tcp{,6}`).
use std::{
    collections::HashSet,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

/// One TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub inode: u64,
}

/// TCP states of `/proc/net/tcp` (`include/net/tcp_states.h`).
const TCP_LISTEN: u8 = 10;
const TCP_CLOSE: u8 = 7;

/// One row of `/proc/PID/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    pub info: SocketInfo,
    pub state: u8,
}

impl TcpRow {
    /// A socket with a peer: worth destroying (not a listener, not already closed).
    pub fn connected(&self) -> bool {
        self.state != TCP_LISTEN && self.state != TCP_CLOSE
    }
}

/// `"0100007F:1F90"` (IPv4) or 32 hex digits + port (IPv6): each 32-bit word of the address is
/// printed in host byte order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses a `/proc/net/tcp`-format table; malformed rows are skipped.
pub fn parse_tcp_table(text: &str) -> Vec<TcpRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = parse_addr(f.get(1)?)?;
            let peer = parse_addr(f.get(2)?)?;
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let inode = f.get(9)?.parse().ok()?;
            Some(TcpRow { info: SocketInfo { local, peer, inode }, state })
        })
        .collect()
}

/// The TCP sockets of `pid`'s network namespace (IPv4 and IPv6 tables).
pub fn tcp_rows(pid: u32) -> Vec<TcpRow> {
    let mut rows = Vec::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            rows.extend(parse_tcp_table(&text));
        }
    }
    rows
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &Path) -> Option<u64> {
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Inodes of every socket `pid` has open.
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(Result::ok).filter_map(|e| socket_inode(&fs::read_link(e.path()).ok()?)).collect()
}

/// The TCP sockets `pid` holds, connected ones only.
pub fn process_sockets(pid: u32) -> Vec<SocketInfo> {
    let inodes = socket_inodes(pid);
    if inodes.is_empty() {
        return Vec::new();
    }
    tcp_rows(pid).into_iter().filter(|r| r.connected() && inodes.contains(&r.info.inode)).map(|r| r.info).collect()
}

/// The TCP socket open as `fd` in `pid`.
pub fn socket_of_fd(pid: u32, fd: u32) -> Option<SocketInfo> {
    let inode = socket_inode(&fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?)?;
    tcp_rows(pid).into_iter().find(|r| r.info.inode == inode).map(|r| r.info)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0 100 0 0 10 0
   1: 0100007F:D2F0 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0 20 4 30 10 -1
   2: garbage
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:A1B2 0000000000000000FFFF00000100007F:01BB 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0 20 4 30 10 -1
   1: B80D0120000000000000000001000000:A1B3 B80D0120000000000000000002000000:01BB 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 20 4 30 10 -1
";

    #[test]
    fn parses_ipv4_rows() {
        let rows = parse_tcp_table(TCP);
        assert_eq!(rows.len(), 2);
        assert!(!rows[0].connected());
        assert!(rows[1].connected());
        assert_eq!(rows[1].info.local, "127.0.0.1:54000".parse().unwrap());
        assert_eq!(rows[1].info.peer, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(rows[1].info.inode, 2222);
    }

    #[test]
    fn parses_ipv6_rows() {
        let rows = parse_tcp_table(TCP6);
        assert_eq!(rows[0].info.peer, "[::ffff:127.0.0.1]:443".parse().unwrap());
        assert_eq!(rows[1].info.local, "[2001:db8::1]:41395".parse().unwrap());
        assert_eq!(rows[1].info.peer, "[2001:db8::2]:443".parse().unwrap());
    }

    #[test]
    fn reads_own_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mine = process_sockets(std::process::id());
        let found = mine.iter().find(|s| s.local == client.local_addr().unwrap()).expect("own socket listed");
        assert_eq!(found.peer, listener.local_addr().unwrap());
        use std::os::fd::AsRawFd;
        let by_fd = socket_of_fd(std::process::id(), client.as_raw_fd() as u32).unwrap();
        assert_eq!(by_fd, *found);
    }
}
