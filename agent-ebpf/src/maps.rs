//! Every map and load-time global of the eBPF object.
use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
    Global,
};
use tokentap_common::{counter, ConnKey, ConnState, DataEvent, LostKey};

/// Plaintext chunks and connection ends. Large: a single 4 MiB write lands here at once.
#[map]
pub static DATA_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024 * 1024, 0);

/// Exec, exit and TLS-library-open notices; small and separate so that a flood of data can
/// never make the agent miss a new library.
#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// TLS-library-open notices (`ProcEvent`s of kind `LIB_OPEN`), apart from `PROC_EVENTS`: every
/// `openat` on the host reserves a record here to read its path, discarded unless it names a
/// TLS library, and a discarded record keeps its ring space until the agent reads past it. In
/// `PROC_EVENTS`, a lagging agent lost the exec notices of short-lived processes that way (and
/// with them their names: 905 of them lost behind 50 curl processes in 2.5 s).
#[map]
pub static LIB_EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// Per-connection verdicts written by user space (and removed here when a session ends). LRU:
/// sessions of killed processes never reach SSL_free, and losing an old verdict only means
/// its connection is shipped (and judged) again.
#[map]
pub static CONN_STATE: LruHashMap<ConnKey, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// Arguments of an in-flight `SSL_read*`/`SSL_write*`, keyed by pid_tgid, for the return probe.
/// LRU: a thread that dies inside a call leaves its entry behind, which must not fill the map.
#[map]
pub static ACTIVE_CALLS: LruHashMap<u64, CallArgs> = LruHashMap::with_max_entries(16384, 0);

/// Connection directions that lost bytes user space has not been told about yet: the next
/// call shipped on it carries `flags::LOST_BEFORE` (and the entry goes); when none follows
/// (the lost read was the last), user space looks here when the connection ends. Without
/// this, a call whose first chunk cannot be shipped vanishes without a trace and the parser
/// stitches the bytes around it together into a wrong but valid-looking response. LRU: the
/// entries of connections nobody ends must not fill the map.
#[map]
pub static LOST_CALLS: LruHashMap<LostKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Scratch space to assemble a chunk: too large for the 512-byte BPF stack.
#[map]
pub static SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// The agent's own process: its traffic (OTLP export and the like) is never captured.
#[unsafe(no_mangle)]
pub static AGENT_TGID: Global<u32> = Global::new(0);

/// Bytes of one library call shipped to user space; the rest is counted, flagged, dropped.
#[unsafe(no_mangle)]
pub static CALL_CAP: Global<u64> = Global::new(tokentap_common::DEFAULT_CALL_CAP);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallArgs {
    pub conn: u64,
    pub buf: u64,
    /// Fourth argument of the `_ex` variants: where the library stores the byte count.
    pub out_len: u64,
    pub direction: u32,
    pub library: u32,
}

pub fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, valid for the lifetime of the program.
        unsafe { *slot += 1 };
    }
}
