//! Decision-latency benchmark: from the moment user space puts a cgroup in DENY (its budget is
//! exhausted) to the kernel acting on the next write or connect of a real client in it.
//!
//! - write: a client (system libssl) writes a never-ending request body in a tight loop; the
//!   latency is the HELD notice's kernel timestamp minus the time just before the verdict map
//!   update (both CLOCK_MONOTONIC).
//! - connect: a client opens TCP connections to an AI endpoint in a tight loop; the latency is
//!   the time its first refused `connect` (EPERM) returned minus the same start. The endpoint is
//!   a closed local port (instant reset while allowed): the hook decides before any SYN.
//!
//! Root only. Run by `cargo xtask bench` (release build), which starts the fixture server:
//! `enforce_latency --port P --ca CA --client tests/fixtures/enforce_bench_client.py [--runs N]`.
//! Prints a Markdown table on stdout, progress on stderr; no payload exists to print.
use std::{
    fs,
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use tokentap::{
    capture::{decode_proc, probes, Capture, LoadOptions, ProcRecord, TlsLibrary},
    discovery::Discovery,
    enforce::{
        actuate::cgroup2_root,
        kernel::{Mode, Target},
    },
};

struct Args {
    port: u16,
    ca: PathBuf,
    client: PathBuf,
    runs: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { port: 0, ca: PathBuf::new(), client: PathBuf::new(), runs: 15 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => a.port = value.parse()?,
            "--ca" => a.ca = value.into(),
            "--client" => a.client = value.into(),
            "--runs" => a.runs = value.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.port == 0 || !a.client.is_file() {
        bail!("usage: enforce_latency --port P --ca CA --client enforce_bench_client.py [--runs N]");
    }
    Ok(a)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A client in its own fresh cgroup; continued, killed and its cgroup removed when dropped.
struct Client {
    child: Child,
    cgroup: PathBuf,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Client {
    fn start(args: &Args, mode: &str, port: u16, run: usize) -> Result<(Client, u64)> {
        let root = cgroup2_root().context("no cgroup2 mount")?;
        let cgroup = root.join(format!("tokentap-bench-{}-{mode}-{run}", std::process::id()));
        fs::create_dir_all(&cgroup)?;
        let id = fs::metadata(&cgroup)?.ino();
        let mut child = Command::new("sh")
            .args(["-c", r#"echo $$ > "$0/cgroup.procs" && exec "$@""#])
            .arg(&cgroup)
            .arg("python3")
            .arg(&args.client)
            .args(["--port", &port.to_string(), "--ca"])
            .arg(&args.ca)
            .args(["--mode", mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the bench client")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut client = Client { child, cgroup, stdout };
        if client.line()? != "ready" {
            bail!("the bench client did not get ready");
        }
        Ok((client, id))
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim().to_string())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) of our own child: never left stopped, never left running.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = fs::remove_dir(&self.cgroup);
    }
}

/// The kernel timestamp of the first HELD notice about `pid`.
fn held_at(ring: &mut RingBuf<MapData>, pid: u32, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        while let Some(item) = ring.next() {
            if let Ok(ProcRecord::Held(h)) = decode_proc(&item) {
                if h.id.tgid == pid {
                    return Some(h.ts_ns);
                }
            }
        }
        std::thread::yield_now();
    }
    None
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> Result<()> {
    let args = args()?;
    let (mut capture, mut rings) = Capture::load(&LoadOptions {
        call_cap: 64 * 1024,
        ring_bytes: 1 << 20,
        plain_ports: Vec::new(),
        enforce: true,
    })?;
    let mut discovery = Discovery::new();
    discovery.scan_standard_dirs(&mut capture);
    if !discovery.attached.iter().any(|a| a.library == TlsLibrary::OpenSsl) {
        capture.attach_library(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3"), probes::OPENSSL)?;
    }
    // A port nothing listens on (bound, then released).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let peer = SocketAddr::from(([127, 0, 0, 1], closed));
    capture.enforcement().add_ai_peer(peer)?;
    let (mut write_us, mut connect_us) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        // Interleaved, so drift on a noisy machine spreads over both.
        for mode in ["write", "connect"] {
            let port = if mode == "write" { args.port } else { closed };
            let (mut client, id) = Client::start(&args, mode, port, run)?;
            let pid = client.child.id();
            // The client is busy (writing or connecting) before the verdict lands.
            std::thread::sleep(Duration::from_millis(30));
            while rings.proc.next().is_some() {}
            let start = monotonic_ns();
            capture.enforcement().set(Target::Cgroup(id), Mode::Deny)?;
            let acted = if mode == "write" {
                held_at(&mut rings.proc, pid, Duration::from_secs(10)).context("no HELD notice")?
            } else {
                client.line()?.parse::<u64>().context("no refused connect")?
            };
            capture.enforcement().clear(Target::Cgroup(id));
            drop(client);
            let us = acted.saturating_sub(start) as f64 / 1e3;
            if mode == "write" {
                write_us.push(us)
            } else {
                connect_us.push(us)
            }
        }
        eprint!(".");
    }
    eprintln!();
    capture.enforcement().remove_ai_peer(peer);
    let (w_max, c_max) = (write_us.iter().copied().fold(0.0, f64::max), connect_us.iter().copied().fold(0.0, f64::max));
    println!("| kernel acts on | runs | median (µs) | max (µs) |");
    println!("|---|---:|---:|---:|");
    println!("| next TLS write (held, SIGSTOP) | {} | {:.1} | {:.1} |", write_us.len(), median(&mut write_us), w_max);
    println!(
        "| next connect to an AI endpoint (EPERM) | {} | {:.1} | {:.1} |",
        connect_us.len(),
        median(&mut connect_us),
        c_max
    );
    Ok(())
}
