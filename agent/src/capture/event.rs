//! Decoding ring-buffer records into typed capture events. Pure: tested from byte fixtures.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;
use tokentap_common::{
    data_kind, direction, flags, library, mode, proc_kind, DataHeader, HoldEvent, ProcEvent, DATA_HEADER_LEN, PATH_LEN,
};

/// A TLS session: the owning process and the library's session object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub tgid: u32,
    pub conn: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written by the process (a client's requests).
    Egress,
    /// Read by the process (a client's responses).
    Ingress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLibrary {
    OpenSsl,
    Go,
    GnuTls,
    Rustls,
    /// No TLS: plain HTTP seen at the socket.
    Plain,
    BoringSsl,
}

impl TlsLibrary {
    pub const ALL: [TlsLibrary; 6] = [
        TlsLibrary::OpenSsl,
        TlsLibrary::Go,
        TlsLibrary::GnuTls,
        TlsLibrary::Rustls,
        TlsLibrary::Plain,
        TlsLibrary::BoringSsl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsLibrary::OpenSsl => "openssl",
            TlsLibrary::Go => "go",
            TlsLibrary::GnuTls => "gnutls",
            TlsLibrary::Rustls => "rustls",
            TlsLibrary::Plain => "plain",
            TlsLibrary::BoringSsl => "boringssl",
        }
    }

    pub fn id(self) -> u32 {
        match self {
            TlsLibrary::OpenSsl => library::OPENSSL,
            TlsLibrary::Go => library::GO,
            TlsLibrary::GnuTls => library::GNUTLS,
            TlsLibrary::Rustls => library::RUSTLS,
            TlsLibrary::Plain => library::PLAIN,
            TlsLibrary::BoringSsl => library::BORINGSSL,
        }
    }

    pub fn from_id(id: u32) -> Option<TlsLibrary> {
        Some(match id {
            library::OPENSSL => TlsLibrary::OpenSsl,
            library::GO => TlsLibrary::Go,
            library::GNUTLS => TlsLibrary::GnuTls,
            library::RUSTLS => TlsLibrary::Rustls,
            library::PLAIN => TlsLibrary::Plain,
            library::BORINGSSL => TlsLibrary::BoringSsl,
            _ => return None,
        })
    }
}

/// One chunk of plaintext moved by one library call.
#[derive(Clone, PartialEq, Eq)]
pub struct DataChunk<'a> {
    pub id: ConnId,
    pub tid: u32,
    pub cgroup_id: u64,
    pub ts_ns: u64,
    pub direction: Direction,
    pub library: TlsLibrary,
    /// Bytes the library call moved in total.
    pub call_len: u64,
    /// Position of `data` within the call.
    pub offset: u64,
    /// The kernel shipped only a prefix of the call.
    pub truncated: bool,
    /// Bytes of earlier calls in this direction were lost without a trace of their size.
    pub lost_before: bool,
    pub data: &'a [u8],
}

// Hand-written so that a stray `{:?}` can never print plaintext.
impl std::fmt::Debug for DataChunk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataChunk")
            .field("id", &self.id)
            .field("direction", &self.direction)
            .field("call_len", &self.call_len)
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .field("truncated", &self.truncated)
            .field("lost_before", &self.lost_before)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRecord<'a> {
    Chunk(DataChunk<'a>),
    Close {
        id: ConnId,
        ts_ns: u64,
    },
    /// The TLS server name (SNI) the client set for this session.
    ServerName {
        id: ConnId,
        /// The caller's cgroup, as in every record: names its workload without the pid.
        cgroup_id: u64,
        ts_ns: u64,
        name: String,
    },
    /// The socket peer the client connected to.
    Peer {
        id: ConnId,
        cgroup_id: u64,
        ts_ns: u64,
        addr: SocketAddr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcRecord {
    Exec {
        tgid: u32,
        ts_ns: u64,
        seen: ExecSeen,
    },
    Exit {
        tgid: u32,
    },
    /// A process opened a `libssl.so*` or `libgnutls.so*` file; `path` as the process named it.
    LibOpen {
        tgid: u32,
        path: String,
    },
    /// The kernel stopped a process at an egress call (SIGSTOP): user space decides, then
    /// resumes it.
    Held(Hold),
    /// The kernel sent a SIGNAL verdict's signal to a writer on a tracked AI connection.
    Acted(Acted),
}

/// The verdict a `Hold` or `Acted` was made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldMode {
    Gate,
    Signal,
    Deny,
}

/// A process stopped before its write reached the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub id: ConnId,
    pub tid: u32,
    pub cgroup_id: u64,
    pub library: TlsLibrary,
    pub mode: HeldMode,
    pub ts_ns: u64,
    /// The SIGSTOP could not be sent (the kernel refused): the process was not stopped.
    pub failed: bool,
}

/// A signal sent in-kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acted {
    pub id: ConnId,
    pub tid: u32,
    pub cgroup_id: u64,
    pub library: TlsLibrary,
    pub signal: i32,
    pub ts_ns: u64,
    /// The kernel refused to send it.
    pub failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("record shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("record length does not match its header")]
    LengthMismatch,
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("unknown direction {0}")]
    UnknownDirection(u32),
    #[error("unknown TLS library {0}")]
    UnknownLibrary(u32),
    #[error("server name is not a host name")]
    BadServerName,
    #[error("peer address of unknown family")]
    BadPeer,
    #[error("unknown enforcement mode {0}")]
    UnknownMode(u32),
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Short(_) => "record_short",
            DecodeError::LengthMismatch => "record_length",
            DecodeError::UnknownKind(_) => "record_kind",
            DecodeError::UnknownDirection(_) => "record_direction",
            DecodeError::UnknownLibrary(_) => "record_library",
            DecodeError::BadServerName => "record_server_name",
            DecodeError::BadPeer => "record_peer",
            DecodeError::UnknownMode(_) => "record_mode",
        }
    }
}

fn read_header(bytes: &[u8]) -> Result<DataHeader, DecodeError> {
    if bytes.len() < DATA_HEADER_LEN {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; DataHeader is plain old data valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const DataHeader) })
}

pub fn decode_data(bytes: &[u8]) -> Result<DataRecord<'_>, DecodeError> {
    let h = read_header(bytes)?;
    let id = ConnId { tgid: h.tgid, conn: h.conn };
    match h.kind {
        data_kind::CLOSE => Ok(DataRecord::Close { id, ts_ns: h.ts_ns }),
        data_kind::SERVER_NAME => {
            let name = payload(bytes, &h)?;
            // A host name is ASCII letters, digits, dots and dashes; anything else in that slot
            // is a misread, and a garbage name must not become a record's server_address.
            let valid =
                !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            if !valid {
                return Err(DecodeError::BadServerName);
            }
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            Ok(DataRecord::ServerName { id, cgroup_id: h.cgroup_id, ts_ns: h.ts_ns, name })
        }
        data_kind::PEER => {
            let addr = decode_sockaddr(payload(bytes, &h)?).ok_or(DecodeError::BadPeer)?;
            Ok(DataRecord::Peer { id, cgroup_id: h.cgroup_id, ts_ns: h.ts_ns, addr })
        }
        data_kind::DATA => {
            let data = &bytes[DATA_HEADER_LEN..];
            if data.len() != h.len as usize {
                return Err(DecodeError::LengthMismatch);
            }
            let direction = match h.direction {
                direction::EGRESS => Direction::Egress,
                direction::INGRESS => Direction::Ingress,
                other => return Err(DecodeError::UnknownDirection(other)),
            };
            let library = TlsLibrary::from_id(h.library).ok_or(DecodeError::UnknownLibrary(h.library))?;
            Ok(DataRecord::Chunk(DataChunk {
                id,
                tid: h.tid,
                cgroup_id: h.cgroup_id,
                ts_ns: h.ts_ns,
                direction,
                library,
                call_len: h.call_len,
                offset: u64::from(h.offset),
                truncated: h.flags & flags::TRUNCATED != 0,
                lost_before: h.flags & flags::LOST_BEFORE != 0,
                data,
            }))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The `len` bytes after the header of a fixed-size record (`NameEvent`, `PeerEvent`).
fn payload<'a>(bytes: &'a [u8], h: &DataHeader) -> Result<&'a [u8], DecodeError> {
    bytes.get(DATA_HEADER_LEN..DATA_HEADER_LEN + h.len as usize).ok_or(DecodeError::LengthMismatch)
}

/// A `sockaddr_in` or `sockaddr_in6` as the process passed it to `connect`.
fn decode_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(4..8)?).ok()?)),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(b.get(8..24)?).ok()?);
            // An IPv4 peer reached through a dual-stack socket is reported as IPv4.
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// What the kernel saw of a process at its exec: the fallback identity of a process that is
/// gone before the agent reads its `/proc` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSeen {
    pub comm: String,
    /// The file the kernel executed, as named to `execve` after path search.
    pub filename: String,
    pub uid: u32,
    /// The cgroup the new program starts in: names its workload even once the process is gone.
    pub cgroup_id: u64,
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn decode_hold(bytes: &[u8], kind: u32) -> Result<ProcRecord, DecodeError> {
    if bytes.len() < std::mem::size_of::<HoldEvent>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; HoldEvent is plain old data valid for any bit pattern.
    let e = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const HoldEvent) };
    let id = ConnId { tgid: e.tgid, conn: e.conn };
    let library = TlsLibrary::from_id(e.library).ok_or(DecodeError::UnknownLibrary(e.library))?;
    if kind == proc_kind::ACTED {
        let signal = e.signal.abs();
        let failed = e.signal < 0;
        return Ok(ProcRecord::Acted(Acted {
            id,
            tid: e.tid,
            cgroup_id: e.cgroup_id,
            library,
            signal,
            ts_ns: e.ts_ns,
            failed,
        }));
    }
    let mode = match e.mode {
        mode::GATE => HeldMode::Gate,
        mode::SIGNAL => HeldMode::Signal,
        mode::DENY => HeldMode::Deny,
        other => return Err(DecodeError::UnknownMode(other)),
    };
    Ok(ProcRecord::Held(Hold {
        id,
        tid: e.tid,
        cgroup_id: e.cgroup_id,
        library,
        mode,
        ts_ns: e.ts_ns,
        failed: e.signal < 0,
    }))
}

pub fn decode_proc(bytes: &[u8]) -> Result<ProcRecord, DecodeError> {
    // Records differ in size: the kind (first field of every one) says which this is.
    let kind = u32::from_ne_bytes(bytes.get(0..4).ok_or(DecodeError::Short(bytes.len()))?.try_into().unwrap_or([0; 4]));
    if kind == proc_kind::HELD || kind == proc_kind::ACTED {
        return decode_hold(bytes, kind);
    }
    if bytes.len() < std::mem::size_of::<ProcEvent>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; ProcEvent is plain old data valid for any bit pattern.
    let e = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const ProcEvent) };
    match e.kind {
        proc_kind::EXEC => Ok(ProcRecord::Exec {
            tgid: e.tgid,
            ts_ns: e.ts_ns,
            seen: ExecSeen { comm: c_string(&e.comm), filename: c_string(&e.path), uid: e.uid, cgroup_id: e.cgroup_id },
        }),
        proc_kind::EXIT => Ok(ProcRecord::Exit { tgid: e.tgid }),
        proc_kind::LIB_OPEN => {
            let end = e.path.iter().position(|&b| b == 0).unwrap_or(PATH_LEN);
            let path = String::from_utf8_lossy(&e.path[..end]).into_owned();
            Ok(ProcRecord::LibOpen { tgid: e.tgid, path })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokentap_common::COMM_LEN;

    pub fn data_record(h: DataHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; DATA_HEADER_LEN];
        // SAFETY: writing a POD header into a buffer of its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr() as *mut DataHeader, h) };
        v.extend_from_slice(payload);
        v
    }

    fn header(kind: u32, len: u32) -> DataHeader {
        DataHeader {
            kind,
            direction: direction::INGRESS,
            tgid: 42,
            tid: 43,
            cgroup_id: 7,
            ts_ns: 1000,
            conn: 0xdead,
            call_len: 10,
            offset: 0,
            len,
            flags: flags::TRUNCATED,
            library: library::OPENSSL,
        }
    }

    #[test]
    fn decodes_chunk() {
        let rec = data_record(header(data_kind::DATA, 3), b"abc");
        let DataRecord::Chunk(c) = decode_data(&rec).unwrap() else { panic!("not a chunk") };
        assert_eq!(c.id, ConnId { tgid: 42, conn: 0xdead });
        assert_eq!(c.direction, Direction::Ingress);
        assert!(c.truncated);
        assert!(!c.lost_before);
        assert_eq!(c.data, b"abc");
        assert!(!format!("{c:?}").contains("abc"));
        let mut h = header(data_kind::DATA, 3);
        h.flags = flags::LOST_BEFORE;
        let rec = data_record(h, b"abc");
        let DataRecord::Chunk(c) = decode_data(&rec).unwrap() else { panic!("not a chunk") };
        assert!(c.lost_before && !c.truncated);
    }

    #[test]
    fn decodes_close_and_rejects_garbage() {
        let rec = data_record(header(data_kind::CLOSE, 0), b"");
        assert!(matches!(decode_data(&rec), Ok(DataRecord::Close { .. })));
        assert_eq!(decode_data(&rec[..10]), Err(DecodeError::Short(10)));
        let rec = data_record(header(data_kind::DATA, 5), b"abc");
        assert_eq!(decode_data(&rec), Err(DecodeError::LengthMismatch));
        let rec = data_record(header(99, 0), b"");
        assert_eq!(decode_data(&rec), Err(DecodeError::UnknownKind(99)));
        let mut h = header(data_kind::DATA, 0);
        h.direction = 9;
        assert_eq!(decode_data(&data_record(h, b"")), Err(DecodeError::UnknownDirection(9)));
    }

    #[test]
    fn decodes_server_name_and_peer() {
        let mut h = header(data_kind::SERVER_NAME, 11);
        // Fixed-size records: bytes past `len` are slack.
        let mut name = b"API.example".to_vec();
        name.resize(256, 0);
        let rec = data_record(h, &name);
        assert_eq!(
            decode_data(&rec),
            Ok(DataRecord::ServerName {
                id: ConnId { tgid: 42, conn: 0xdead },
                cgroup_id: 7,
                ts_ns: 1000,
                name: "api.example".into()
            })
        );
        assert_eq!(decode_data(&data_record(h, b"bad name\n")), Err(DecodeError::LengthMismatch));
        h.len = 4;
        assert_eq!(decode_data(&data_record(h, b"a\x01b\n")), Err(DecodeError::BadServerName));

        let mut v4 = vec![2, 0, 0x2c, 0x9a, 127, 0, 0, 1];
        v4.resize(28, 0);
        let rec = data_record(header(data_kind::PEER, 16), &v4);
        let Ok(DataRecord::Peer { addr, .. }) = decode_data(&rec) else { panic!("no peer") };
        assert_eq!(addr, "127.0.0.1:11418".parse().unwrap());
        let mut v6 = vec![10, 0, 0x1f, 0x90, 0, 0, 0, 0];
        v6.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
        v6.resize(28, 0);
        let Ok(DataRecord::Peer { addr, .. }) = decode_data(&data_record(header(data_kind::PEER, 28), &v6)) else {
            panic!("no peer")
        };
        assert_eq!(addr, "10.1.2.3:8080".parse().unwrap());
        v6[18] = 0x20;
        let Ok(DataRecord::Peer { addr, .. }) = decode_data(&data_record(header(data_kind::PEER, 28), &v6)) else {
            panic!("no peer")
        };
        assert!(addr.is_ipv6());
        let unix = [1u8; 28];
        assert_eq!(decode_data(&data_record(header(data_kind::PEER, 28), &unix)), Err(DecodeError::BadPeer));
        assert_eq!(
            decode_data(&data_record(header(data_kind::PEER, 28), &unix[..3])),
            Err(DecodeError::LengthMismatch)
        );
    }

    fn hold_record(e: HoldEvent) -> Vec<u8> {
        let mut v = vec![0u8; std::mem::size_of::<HoldEvent>()];
        // SAFETY: POD write into a buffer of its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr() as *mut HoldEvent, e) };
        v
    }

    #[test]
    fn decodes_held_and_acted() {
        let mut e = HoldEvent {
            kind: proc_kind::HELD,
            tgid: 5,
            tid: 6,
            mode: mode::GATE,
            cgroup_id: 77,
            conn: 0xabc,
            ts_ns: 9,
            library: library::OPENSSL,
            signal: 19,
        };
        let Ok(ProcRecord::Held(h)) = decode_proc(&hold_record(e)) else { panic!("not a hold") };
        assert_eq!(
            (h.id, h.tid, h.cgroup_id, h.mode, h.failed),
            (ConnId { tgid: 5, conn: 0xabc }, 6, 77, HeldMode::Gate, false)
        );
        e.kind = proc_kind::ACTED;
        e.mode = mode::SIGNAL;
        e.signal = -15;
        let Ok(ProcRecord::Acted(a)) = decode_proc(&hold_record(e)) else { panic!("not acted") };
        assert_eq!((a.signal, a.failed, a.library), (15, true, TlsLibrary::OpenSsl));
        e.kind = proc_kind::HELD;
        e.mode = 42;
        assert_eq!(decode_proc(&hold_record(e)), Err(DecodeError::UnknownMode(42)));
        assert_eq!(decode_proc(&hold_record(e)[..20]), Err(DecodeError::Short(20)));
        assert_eq!(decode_proc(&[1, 0]), Err(DecodeError::Short(2)));
    }

    #[test]
    fn decodes_lib_open() {
        let mut e = ProcEvent {
            kind: proc_kind::LIB_OPEN,
            tgid: 5,
            cgroup_id: 1,
            ts_ns: 2,
            comm: [0; COMM_LEN],
            uid: 0,
            _pad: 0,
            path: [0; PATH_LEN],
        };
        e.path[..11].copy_from_slice(b"libssl.so.3");
        let mut v = vec![0u8; std::mem::size_of::<ProcEvent>()];
        // SAFETY: POD write into a buffer of its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr() as *mut ProcEvent, e) };
        assert_eq!(decode_proc(&v), Ok(ProcRecord::LibOpen { tgid: 5, path: "libssl.so.3".into() }));
        assert_eq!(decode_proc(&v[..3]), Err(DecodeError::Short(3)));
        e.kind = proc_kind::EXEC;
        e.comm[..4].copy_from_slice(b"curl");
        e.uid = 1000;
        e.path = [0; PATH_LEN];
        e.path[..13].copy_from_slice(b"/usr/bin/curl");
        // SAFETY: POD write into a buffer of its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr() as *mut ProcEvent, e) };
        let seen = ExecSeen { comm: "curl".into(), filename: "/usr/bin/curl".into(), uid: 1000, cgroup_id: 1 };
        assert_eq!(decode_proc(&v), Ok(ProcRecord::Exec { tgid: 5, ts_ns: 2, seen }));
    }
}
