//! Loading the eBPF object, attaching tracepoints and library probes, and owning the maps.
use std::path::Path;

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{uprobe::UProbeScope, CgroupAttachMode, CgroupSockAddr, TracePoint, UProbe},
    Ebpf, EbpfLoader,
};
use thiserror::Error;
use tokentap_common::{counter, direction, names, ConnKey, ConnState, LostKey, SOCKET_CONN_TAG};

use super::{
    super::enforce::{actuate::cgroup2_root, kernel::KernelEnforcement},
    event::{ConnId, TlsLibrary},
    probes::{ProbeSpec, SOCKET_TRACEPOINTS, TRACEPOINTS},
};

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tokentap-ebpf"));

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("this binary was built with AYA_BUILD_SKIP=1 and has no eBPF object; build it with `cargo xtask build`")]
    NoObject,
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {name} was rejected: {source}")]
    Program { name: &'static str, source: aya::programs::ProgramError },
    #[error("attaching tracepoint {category}:{name} failed: {source}")]
    Tracepoint { category: &'static str, name: &'static str, source: aya::programs::ProgramError },
    #[error("eBPF map {0} is missing or of the wrong type")]
    Map(&'static str),
    #[error("{path}: program {program} could not be attached: {source}")]
    Attach { path: String, program: &'static str, source: aya::programs::ProgramError },
    #[error("{path}: required symbol {symbol} could not be probed: {source}")]
    RequiredProbe { path: String, symbol: &'static str, source: aya::programs::ProgramError },
    #[error("enforcement needs cgroup v2, and no cgroup2 mount is listed in /proc/self/mountinfo")]
    NoCgroup2,
    #[error("attaching {program} at cgroup {path}: {source}")]
    CgroupAttach { program: &'static str, path: String, source: std::io::Error },
}

/// Settings fixed at load time.
pub struct LoadOptions {
    pub call_cap: u64,
    pub ring_bytes: u32,
    /// Ports whose TCP connections are captured as plain HTTP; empty: no socket tracepoints.
    pub plain_ports: Vec<u16>,
    /// Attach the enforcement hooks: `connect4`/`connect6` at the cgroup v2 root and the write
    /// syscall tracepoints that map TLS connections to their sockets. The hold itself lives in
    /// the TLS probes and costs one map lookup per write while no verdict is set.
    pub enforce: bool,
}

pub struct Capture {
    ebpf: Ebpf,
    conn_state: HashMap<MapData, ConnKey, ConnState>,
    lost_calls: HashMap<MapData, LostKey, u64>,
    counters: PerCpuArray<MapData, u64>,
    plain_sockets: HashMap<MapData, ConnKey, u32>,
    enforcement: KernelEnforcement,
}

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelCounters {
    pub data_lost: u64,
    pub calls_truncated: u64,
    pub proc_lost: u64,
    pub calls_skipped: u64,
    /// Library calls with bytes lost, by stack.
    pub calls_lost: [(TlsLibrary, u64); TlsLibrary::ALL.len()],
    /// Processes stopped by the hold at an egress call.
    pub held: u64,
    /// Signals sent in-kernel for a SIGNAL verdict.
    pub signalled: u64,
    /// Connects to AI endpoints refused.
    pub connect_denied: u64,
    /// Holds or signals that could not be sent or reported.
    pub enforce_failed: u64,
}

impl Default for KernelCounters {
    fn default() -> Self {
        KernelCounters {
            data_lost: 0,
            calls_truncated: 0,
            proc_lost: 0,
            calls_skipped: 0,
            calls_lost: TlsLibrary::ALL.map(|l| (l, 0)),
            held: 0,
            signalled: 0,
            connect_denied: 0,
            enforce_failed: 0,
        }
    }
}

/// The ring buffers, read by the agent's event loop.
pub struct Rings {
    pub data: RingBuf<MapData>,
    pub proc: RingBuf<MapData>,
    /// TLS-library-open notices (decoded like `proc`'s records), kept apart so that the
    /// discarded reservations of every `openat` cannot crowd out exec and exit notices.
    pub libs: RingBuf<MapData>,
}

impl Capture {
    pub fn load(options: &LoadOptions) -> Result<(Capture, Rings), CaptureError> {
        if EBPF_OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        let tgid = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .override_global(names::AGENT_TGID, &tgid, true)
            .override_global(names::CALL_CAP, &options.call_cap, true)
            .map_max_entries(names::DATA_EVENTS, options.ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(CaptureError::Load)?;
        // Every uprobe program in the object is loaded up front (each stack's module adds its
        // own); they are attached per library or executable as discovery finds them.
        for (name, program) in ebpf.programs_mut() {
            if let aya::programs::Program::UProbe(program) = program {
                program.load().map_err(|source| CaptureError::Program { name: leak_name(name), source })?;
            }
        }
        for &(category, name, program) in TRACEPOINTS {
            let tp: &mut TracePoint = program_mut(&mut ebpf, program)?;
            tp.load().map_err(|source| CaptureError::Program { name: program, source })?;
            tp.attach(category, name).map_err(|source| CaptureError::Tracepoint { category, name, source })?;
        }
        // Enforcement needs the write tracepoints too (CONN_FDS); with no port in PLAIN_PORTS
        // they capture nothing.
        if !options.plain_ports.is_empty() || options.enforce {
            let mut ports: HashMap<MapData, u16, u8> = take_map(&mut ebpf, names::PLAIN_PORTS)?;
            for &port in &options.plain_ports {
                ports.insert(port, 1, 0).map_err(|_| CaptureError::Map(names::PLAIN_PORTS))?;
            }
            for &name in SOCKET_TRACEPOINTS {
                let tp: &mut TracePoint = program_mut(&mut ebpf, name)?;
                tp.load().map_err(|source| CaptureError::Program { name, source })?;
                tp.attach("syscalls", name).map_err(|source| CaptureError::Tracepoint {
                    category: "syscalls",
                    name,
                    source,
                })?;
            }
        }
        if options.enforce {
            attach_connect_hooks(&mut ebpf)?;
        }
        let enforcement = KernelEnforcement::from_ebpf(&mut ebpf)?;
        let plain_sockets = take_map(&mut ebpf, names::PLAIN_SOCKETS)?;
        let data = take_map(&mut ebpf, names::DATA_EVENTS)?;
        let proc = take_map(&mut ebpf, names::PROC_EVENTS)?;
        let libs = take_map(&mut ebpf, names::LIB_EVENTS)?;
        let conn_state = take_map(&mut ebpf, names::CONN_STATE)?;
        let counters = take_map(&mut ebpf, names::COUNTERS)?;
        let lost_calls = take_map(&mut ebpf, names::LOST_CALLS)?;
        Ok((Capture { ebpf, conn_state, lost_calls, counters, plain_sockets, enforcement }, Rings { data, proc, libs }))
    }

    /// Attaches the probe table to one library file. Returns how many probes attached and
    /// the optional symbols that could not be probed.
    pub fn attach_library(
        &mut self,
        path: &Path,
        table: &[ProbeSpec],
    ) -> Result<(usize, Vec<&'static str>), CaptureError> {
        let mut attached = 0;
        let mut missing = Vec::new();
        for spec in table {
            let program: &mut UProbe = program_mut(&mut self.ebpf, spec.program)?;
            match program.attach(spec.symbol, path, UProbeScope::AllProcesses) {
                Ok(_) => attached += 1,
                Err(source) if spec.required => {
                    return Err(CaptureError::RequiredProbe {
                        path: path.display().to_string(),
                        symbol: spec.symbol,
                        source,
                    })
                }
                Err(_) => {
                    if !missing.contains(&spec.symbol) {
                        missing.push(spec.symbol);
                    }
                }
            }
        }
        Ok((attached, missing))
    }

    /// Attaches one uprobe program at a symbol, a symbol plus offset, or a file offset of
    /// `path` (Go return sites, signature matches), for every process that maps the file.
    /// A `UProbeAttachPoint` may carry a cookie the program reads (`bpf_get_attach_cookie`).
    pub fn attach_at<'a>(
        &mut self,
        program: &'static str,
        location: impl Into<aya::programs::uprobe::UProbeAttachPoint<'a>>,
        path: &Path,
    ) -> Result<(), CaptureError> {
        let prog: &mut UProbe = program_mut(&mut self.ebpf, program)?;
        prog.attach(location.into(), path, UProbeScope::AllProcesses)
            .map(|_| ())
            .map_err(|source| CaptureError::Attach { path: path.display().to_string(), program, source })
    }

    pub fn set_verdict(&mut self, id: ConnId, verdict: u32) {
        let key = ConnKey { tgid: id.tgid, _pad: 0, conn: id.conn };
        // A full map only costs efficiency: the connection keeps being shipped and dropped.
        let _ = self.conn_state.insert(key, ConnState { verdict, _pad: 0 }, 0);
    }

    /// Whether the kernel lost bytes of this connection that no shipped chunk has reported
    /// yet (the lost call was its last one); clears the marks.
    pub fn take_lost(&mut self, id: ConnId) -> bool {
        let mut lost = false;
        for dir in [direction::EGRESS, direction::INGRESS] {
            let key = LostKey { tgid: id.tgid, direction: dir, conn: id.conn };
            lost |= self.lost_calls.remove(&key).is_ok();
        }
        lost
    }

    pub fn forget(&mut self, id: ConnId) {
        let key = ConnKey { tgid: id.tgid, _pad: 0, conn: id.conn };
        let _ = self.conn_state.remove(&key);
        // Its pointer may be reused by a new connection, which must not inherit the marks.
        self.take_lost(id);
        // A dead process's socket entry must go before its pid (and fd numbers) are reused.
        if id.conn & SOCKET_CONN_TAG != 0 {
            let _ = self.plain_sockets.remove(&key);
        }
    }

    /// The enforcement verdict maps.
    pub fn enforcement(&mut self) -> &mut KernelEnforcement {
        &mut self.enforcement
    }

    pub fn counters(&self) -> KernelCounters {
        let sum = |index: u32| -> u64 { self.counters.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        KernelCounters {
            data_lost: sum(counter::DATA_LOST),
            calls_truncated: sum(counter::CALLS_TRUNCATED),
            proc_lost: sum(counter::PROC_LOST),
            calls_skipped: sum(counter::CALLS_SKIPPED),
            calls_lost: TlsLibrary::ALL.map(|l| (l, sum(counter::CALLS_LOST + l.id()))),
            held: sum(counter::HELD),
            signalled: sum(counter::SIGNALLED),
            connect_denied: sum(counter::CONNECT_DENIED),
            enforce_failed: sum(counter::ENFORCE_FAILED),
        }
    }
}

/// Program names come from the object, which lives as long as the agent; errors want `'static`.
fn leak_name(name: &str) -> &'static str {
    Box::leak(name.to_string().into_boxed_str())
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    let program = ebpf.program_mut(name).ok_or(CaptureError::Map(name))?;
    program.try_into().map_err(|_| CaptureError::Map(name))
}

/// `connect4`/`connect6` at the cgroup v2 root, so every cgroup is covered. As links: several
/// agents on one host (or one per test) each keep their own programs side by side.
fn attach_connect_hooks(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    let root = cgroup2_root().ok_or(CaptureError::NoCgroup2)?;
    let dir = std::fs::File::open(&root).map_err(|source| CaptureError::CgroupAttach {
        program: names::PROG_CONNECT4,
        path: root.display().to_string(),
        source,
    })?;
    for program in [names::PROG_CONNECT4, names::PROG_CONNECT6] {
        let prog: &mut CgroupSockAddr = program_mut(ebpf, program)?;
        prog.load().map_err(|source| CaptureError::Program { name: program, source })?;
        prog.attach(&dir, CgroupAttachMode::default()).map_err(|source| CaptureError::CgroupAttach {
            program,
            path: root.display().to_string(),
            source: std::io::Error::other(source),
        })?;
    }
    Ok(())
}

pub(crate) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map>,
{
    let map = ebpf.take_map(name).ok_or(CaptureError::Map(name))?;
    T::try_from(map).map_err(|_| CaptureError::Map(name))
}
