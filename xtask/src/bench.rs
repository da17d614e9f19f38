//! `cargo xtask bench`: the parsing pipeline (pure, no privileges) and the capture overhead end
//! to end (root + BPF), printed as Markdown and written to `<target>/bench/results.md`.
//! What each number means: docs/benchmarks.md.
//!
//! The machine is noisy, so variants run interleaved (A, B, B, A, …) and every figure is a
//! median; ratios compare variants measured in the same run. Nothing here asserts on time.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{output, run, setup, workspace_root};

/// The agent's stderr line once its probes are attached.
const READY_LINE: &str = "tokentap: capture ready";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after the ready line before measuring, so the agent's start-up work (first scans,
/// attaching to libraries found in running processes) does not land in the first timed window.
const SETTLE: Duration = Duration::from_millis(500);
const CHAT: &str = "/v1/chat/completions";
const HEALTH: &str = "/health";

pub struct Options {
    /// Repetitions of the pipeline benchmark and rounds of the capture benchmark.
    pub reps: usize,
    /// Timed requests per client run in the capture benchmark.
    pub requests: usize,
    /// Skip the capture benchmark (no root needed).
    pub no_capture: bool,
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub fn bench(opts: Options) -> Result<()> {
    let started = Instant::now();
    // One cargo invocation: the release agent (eBPF object included; the same artifact as
    // `cargo xtask build --release`) and the pipeline benchmark, which links the same library.
    setup::ensure()?;
    let mut cmd = crate::cargo();
    cmd.args([
        "build",
        "--release",
        "--package",
        "tokentap",
        "--bin",
        "tokentap",
        "--example",
        "pipeline_bench",
        "--example",
        "enforce_latency",
        "--example",
        "cluster_bench",
    ]);
    run(&mut cmd)?;
    let release = target_dir().join("release");
    let out_dir = target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    let built = started.elapsed();

    let mut report = String::new();
    report
        .push_str(&format!("# tokentap benchmarks — {}\n\n", output(Command::new("date").args(["-u", "+%F %T UTC"]))?));
    report.push_str(&machine());
    report.push_str(&format!("\nCommand: `cargo xtask bench --reps {} --requests {}`\n\n", opts.reps, opts.requests));

    eprintln!("xtask bench: parsing pipeline ({} repetitions)", opts.reps);
    let table = output(
        Command::new(release.join("examples/pipeline_bench"))
            .args(["--reps", &opts.reps.to_string()])
            .stderr(Stdio::inherit()),
    )?;
    report.push_str("## Parsing pipeline (user space, no kernel)\n\n");
    report.push_str(&table);
    report.push_str("\n\n");

    report.push_str("## Redis load of cluster entitlements\n\n");
    report.push_str(&cluster_redis(&release));

    report.push_str("## Capture overhead, end to end\n\n");
    let capture = if opts.no_capture {
        Err("--no-capture given".to_string())
    } else {
        capture_preconditions().and_then(|()| {
            capture_bench(&release.join("tokentap"), &out_dir.join("capture"), &opts).map_err(|e| format!("{e:#}"))
        })
    };
    match capture {
        Ok(text) => report.push_str(&text),
        Err(why) => {
            let line = format!("SKIPPED capture overhead benchmark: {why}");
            eprintln!("xtask bench: {line}");
            report.push_str(&line);
            report.push('\n');
        }
    }

    report.push_str("\n## Enforcement decision latency\n\n");
    let latency = if opts.no_capture {
        Err("--no-capture given".to_string())
    } else {
        capture_preconditions().and_then(|()| {
            let example = release.join("examples/enforce_latency");
            crate::bench_enforce::decision_latency(&example, &out_dir.join("enforce"), opts.reps.max(5))
                .map_err(|e| format!("{e:#}"))
        })
    };
    match latency {
        Ok(text) => report.push_str(&text),
        Err(why) => report.push_str(&format!("SKIPPED enforcement decision latency: {why}\n")),
    }

    let path = out_dir.join("results.md");
    fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("{report}");
    eprintln!(
        "xtask bench: wrote {} (build {:.0}s, benchmarks {:.0}s)",
        path.display(),
        built.as_secs_f64(),
        (started.elapsed() - built).as_secs_f64()
    );
    Ok(())
}

/// `agent/examples/cluster_bench.rs` against a real redis-server (no root needed).
fn cluster_redis(release: &Path) -> String {
    eprintln!("xtask bench: Redis operations of cluster entitlements");
    let run = Command::new(release.join("examples/cluster_bench")).stderr(Stdio::inherit()).output();
    match run {
        Ok(out) if out.status.success() => format!("{}\n", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => format!("FAILED Redis benchmark ({}); see the output above.\n\n", out.status),
        Err(e) => format!("SKIPPED Redis benchmark: {e}\n\n"),
    }
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / (1024.0 * 1024.0))
        .unwrap_or(0.0);
    let openssl = output(Command::new("openssl").arg("version")).unwrap_or_else(|_| "openssl CLI not found".into());
    let python = output(
        Command::new("python3").args(["-c", "import ssl,sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)"]),
    )
    .unwrap_or_else(|_| "python3 not found".into());
    format!("Machine: {cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}; {openssl}; Python {python}\n", kernel.trim())
}

// ----------------------------------------------------------------------------- capture

fn capture_preconditions() -> Result<(), String> {
    let euid = fs::metadata("/proc/self").map(|m| m.uid()).map_err(|e| format!("cannot stat /proc/self: {e}"))?;
    if euid != 0 {
        return Err("needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) to load the probes".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err("no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    for (tool, arg) in [("python3", "--version"), ("openssl", "version")] {
        if Command::new(tool).arg(arg).output().map(|o| !o.status.success()).unwrap_or(true) {
            return Err(format!("`{tool}` not found"));
        }
    }
    Ok(())
}

/// A child process this benchmark started; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CA + leaf the end-to-end tests use, from the same fixture script.
pub(crate) fn make_certs(dir: &Path) -> Result<()> {
    let script = workspace_root().join("tests/fixtures/make_certs.sh");
    output(Command::new("sh").arg(script).arg(dir).arg("2"))?;
    Ok(())
}

/// The fixture server (tests/fixtures/llm_server.py); prints its port first.
pub(crate) fn start_server(dir: &Path) -> Result<(Proc, u16)> {
    let script = workspace_root().join("tests/fixtures/llm_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg("--cert")
        .arg(dir.join("leaf.pem"))
        .arg("--key")
        .arg(dir.join("leaf.key"))
        // Holds (synthetic) payloads: stays in the bench directory, never printed, removed at the end.
        .arg("--log")
        .arg(dir.join("server-log.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tests/fixtures/llm_server.py")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let server = Proc { child };
    let port = line.trim().parse().with_context(|| "the fixture server did not print its port".to_string())?;
    Ok((server, port))
}

struct Agent {
    proc: Proc,
    startup: Duration,
}

fn start_agent(bin: &Path, dir: &Path) -> Result<Agent> {
    let stderr = dir.join("agent.stderr");
    let started = Instant::now();
    let child = Command::new(bin)
        .args(["run", "--usage-log", "/dev/null", "--ledger"])
        .arg(dir.join("ledger.db"))
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("agent.stdout"))?)
        .stderr(fs::File::create(&stderr)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut proc = Proc { child };
    loop {
        // The agent never writes payloads, only counts and reasons: its stderr is safe to show.
        let text = fs::read_to_string(&stderr).unwrap_or_default();
        if text.contains(READY_LINE) {
            let startup = started.elapsed();
            std::thread::sleep(SETTLE);
            return Ok(Agent { proc, startup });
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            bail!("the agent exited ({status}) before {READY_LINE:?}; stderr tail:\n{}", tail(&text, 15));
        }
        if started.elapsed() > READY_TIMEOUT {
            proc.stop();
            bail!("the agent did not print {READY_LINE:?} within {READY_TIMEOUT:?}; stderr tail:\n{}", tail(&text, 15));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU time of all the agent's threads, in ns (`/proc/PID/task/*/schedstat`, first field).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// Run count and run time per BPF program, by name (`bpftool prog show`, text form), for the
/// programs whose ids are in `ids`.
type ProgStats = BTreeMap<String, (u64, u64)>;

fn prog_stats(ids: &BTreeSet<u32>) -> Result<ProgStats> {
    let text = output(Command::new("bpftool").args(["prog", "show"]))?;
    let mut stats = ProgStats::new();
    for line in text.lines() {
        let Some((id, rest)) = line.split_once(':') else { continue };
        let Ok(id) = id.parse::<u32>() else { continue };
        if !ids.contains(&id) {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
        let e = stats.entry(after("name").unwrap_or("?").to_string()).or_default();
        e.0 += after("run_cnt").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        e.1 += after("run_time_ns").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(stats)
}

/// Ids of the BPF programs a process holds (its program and link file descriptors say
/// `prog_id:` in their fdinfo). Other agents on the host (a test run) load programs of the
/// same names, so names alone would not do, and bpftool builds without `pids` support are common.
fn prog_ids(pid: u32) -> Result<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))?.flatten() {
        let Ok(info) = fs::read_to_string(entry.path()) else { continue };
        ids.extend(
            info.lines().filter_map(|l| l.strip_prefix("prog_id:")).filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    Ok(ids)
}

fn ensure_bpftool() -> Result<(), String> {
    let works = || Command::new("bpftool").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if works() {
        return Ok(());
    }
    eprintln!("xtask bench: bpftool missing, installing it with `apt-get install -y bpftool`");
    let quiet = |args: &[&str]| {
        Command::new("apt-get").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success())
    };
    if !matches!(quiet(&["install", "-y", "bpftool"]), Ok(true)) {
        let _ = quiet(&["update"]);
        let _ = quiet(&["install", "-y", "bpftool"]);
    }
    if works() {
        Ok(())
    } else {
        Err("bpftool is not installed and `apt-get install -y bpftool` failed".into())
    }
}

/// Restores `kernel.bpf_stats_enabled` when dropped.
struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<BpfStats> {
        let before = fs::read_to_string(BPF_STATS)?.trim().to_string();
        fs::write(BPF_STATS, "1")?;
        Ok(BpfStats { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.before);
    }
}

struct Client {
    script: PathBuf,
    port: u16,
    ca: PathBuf,
    requests: usize,
}

/// What one client run measured, and what happened around exactly its timed requests.
struct Window {
    median_us: f64,
    agent_cpu_ns: u64,
    progs: Option<(ProgStats, ProgStats)>,
}

fn read_line(r: &mut BufReader<ChildStdout>) -> Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn json_number(text: &str, key: &str) -> Option<f64> {
    let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = text[at..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

impl Client {
    fn run(&self, path: &str, agent: Option<u32>, progs: Option<&BTreeSet<u32>>) -> Result<Window> {
        let child = Command::new("python3")
            .arg(&self.script)
            .args(["--port", &self.port.to_string(), "--path", path, "--requests", &self.requests.to_string()])
            .arg("--ca")
            .arg(&self.ca)
            .arg("--gate")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting tests/fixtures/bench_client.py")?;
        let mut proc = Proc { child };
        let mut out = BufReader::new(proc.child.stdout.take().context("client stdout")?);
        if read_line(&mut out)? != "warm" {
            bail!("bench_client.py failed during its warm-up");
        }
        let cpu0 = agent.map(cpu_ns).unwrap_or(0);
        let progs0 = progs.map(prog_stats).transpose()?;
        proc.child.stdin.take().context("client stdin")?.write_all(b"go\n")?;
        let result = read_line(&mut out)?;
        let cpu1 = agent.map(cpu_ns).unwrap_or(0);
        let progs1 = progs.map(prog_stats).transpose()?;
        let status = proc.child.wait()?;
        if !status.success() {
            bail!("bench_client.py failed: {status}");
        }
        let median_us = json_number(&result, "median_us").context("bench_client.py printed no median")?;
        Ok(Window { median_us, agent_cpu_ns: cpu1.saturating_sub(cpu0), progs: progs0.zip(progs1) })
    }
}

/// Other `tokentap` processes on the host (another session's tests, say): their probes would
/// slow the "no agent" runs down too, so the report says when one was seen.
fn other_agents() -> BTreeSet<u32> {
    let Ok(procs) = fs::read_dir("/proc") else { return BTreeSet::new() };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "tokentap"))
        .collect()
}

#[derive(Default)]
struct Series {
    /// Per client run: the median request latency of that run, µs; index = round.
    none: Vec<f64>,
    agent: Vec<f64>,
    agent_cpu_ns: u64,
}

/// Per-program runs and average run time over each endpoint's timed requests, with the agent
/// running and `kernel.bpf_stats_enabled=1`; also uprobe program runs per request, by endpoint.
fn kernel_counters(
    bin: &Path,
    dir: &Path,
    client: &Client,
    opts: &Options,
) -> Result<(String, BTreeMap<&'static str, f64>)> {
    ensure_bpftool().map_err(anyhow::Error::msg)?;
    let stats = BpfStats::enable().context("enabling kernel.bpf_stats_enabled")?;
    let mut agent = start_agent(bin, dir)?;
    let pid = agent.proc.pid();
    let ids = prog_ids(pid)?;
    if ids.is_empty() {
        bail!("found no BPF programs in the agent's file descriptors (pid {pid})");
    }
    let mut rows = String::new();
    let mut uprobe_runs = BTreeMap::new();
    for path in [CHAT, HEALTH] {
        let w = client.run(path, Some(pid), Some(&ids))?;
        let (before, after) = w.progs.context("no program counters")?;
        let label = if path == CHAT { "chat" } else { "health" };
        let mut uprobes = 0;
        for (name, (cnt1, ns1)) in &after {
            let (cnt0, ns0) = before.get(name).copied().unwrap_or((0, 0));
            let (runs, ns) = (cnt1.saturating_sub(cnt0), ns1.saturating_sub(ns0));
            if runs == 0 {
                continue;
            }
            if name.starts_with("ssl_") {
                uprobes += runs;
            }
            rows.push_str(&format!(
                "| {label} | `{name}` | {runs} | {:.2} | {:.0} |\n",
                runs as f64 / opts.requests as f64,
                ns as f64 / runs as f64,
            ));
        }
        uprobe_runs.insert(path, uprobes as f64 / opts.requests as f64);
    }
    agent.proc.stop();
    drop(stats);
    let mut text = format!(
        "Kernel programs (separate pass with `kernel.bpf_stats_enabled=1`, agent running, {} timed requests per \
         endpoint, programs found by id in the agent's file descriptors). Counts are host-wide: client and server \
         both hit the uprobes, and the tracepoints fire for every process on the host. `run_time_ns` covers the BPF \
         program only, not the uprobe trap around it.\n\n",
        opts.requests
    );
    text.push_str("| endpoint | program | runs | runs / request | avg ns / run |\n|---|---|---:|---:|---:|\n");
    text.push_str(&rows);
    Ok((text, uprobe_runs))
}

fn capture_bench(bin: &Path, dir: &Path, opts: &Options) -> Result<String> {
    if !bin.is_file() {
        bail!("{} not built", bin.display());
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    make_certs(dir)?;
    let (mut server, port) = start_server(dir)?;
    let client = Client {
        script: workspace_root().join("tests/fixtures/bench_client.py"),
        port,
        ca: dir.join("ca.pem"),
        requests: opts.requests,
    };
    let endpoints = [CHAT, HEALTH];
    let mut series: BTreeMap<&str, Series> = endpoints.iter().map(|e| (*e, Series::default())).collect();
    let mut startups = Vec::new();
    let mut others = BTreeSet::new();

    eprintln!(
        "xtask bench: capture overhead, {} rounds × (no agent, agent) × (chat, health) × {} requests",
        opts.reps, opts.requests
    );
    for round in 0..opts.reps {
        others.extend(other_agents());
        // A B | B A | A B …: neither variant always runs first (drift, caches, agent start-up).
        let agent_first = round % 2 == 1;
        let order: Vec<&str> =
            if (round / 2) % 2 == 0 { endpoints.to_vec() } else { endpoints.iter().rev().copied().collect() };
        for with_agent in [agent_first, !agent_first] {
            let mut agent = if with_agent { Some(start_agent(bin, dir)?) } else { None };
            let pid = agent.as_ref().map(|a| a.proc.pid());
            for path in &order {
                let w = client.run(path, pid, None)?;
                let s = series.get_mut(path).expect("known endpoint");
                if with_agent {
                    s.agent.push(w.median_us);
                    s.agent_cpu_ns += w.agent_cpu_ns;
                } else {
                    s.none.push(w.median_us);
                }
            }
            if let Some(a) = agent.as_mut() {
                startups.push(a.startup.as_secs_f64() * 1e3);
                a.proc.stop();
            }
        }
        eprint!(".");
    }
    others.extend(other_agents());
    eprintln!();

    let mut text = String::new();
    if !others.is_empty() {
        let line = format!(
            "WARNING: other tokentap agents were running during the rounds (pids {others:?}): the \"no agent\" \
             runs were probed too, so the ratios below understate the overhead.\n\n"
        );
        eprint!("xtask bench: {line}");
        text.push_str(&line);
    }
    text.push_str(&format!(
        "Local HTTPS server `tests/fixtures/llm_server.py` (Python `ssl`); client `tests/fixtures/bench_client.py` \
         (Python `http.client` + `ssl`), both on the system libssl. Per client run: one keep-alive connection, \
         1 untimed warm-up request, {} timed requests; a run's figure is its median request latency. {} rounds, \
         each with one run per endpoint without and with the agent (`tokentap run --usage-log /dev/null`, \
         started for the round and stopped after it), order alternating A B | B A. \
         Median agent start-up to `{READY_LINE}`: {:.0} ms.\n\n",
        opts.requests,
        opts.reps,
        median(&startups)
    ));
    text.push_str("| endpoint | no agent µs/req | agent µs/req | ratio (of medians) | ratio (median of paired rounds) | added µs/req | agent CPU µs/req |\n");
    text.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for path in endpoints {
        let s = &series[path];
        let (none, agent) = (median(&s.none), median(&s.agent));
        let paired: Vec<f64> = s.none.iter().zip(&s.agent).map(|(n, a)| a / n).collect();
        let label = if path == CHAT {
            "`POST /v1/chat/completions` (tracked)"
        } else {
            "`GET /health` (ignored after 1st request)"
        };
        text.push_str(&format!(
            "| {label} | {none:.0} | {agent:.0} | {:.3} | {:.3} | {:+.0} | {:.1} |\n",
            agent / none,
            median(&paired),
            agent - none,
            s.agent_cpu_ns as f64 / 1e3 / (s.agent.len() * opts.requests) as f64,
        ));
    }
    text.push('\n');

    // Kernel-side cost per program, in a separate pass: `bpf_stats_enabled` itself adds a
    // little to every program run, so it is off during the interleaved rounds above.
    match kernel_counters(bin, dir, &client, opts) {
        Err(why) => text.push_str(&format!("SKIPPED kernel program counters: {why:#}\n")),
        Ok((table, uprobe_runs)) => {
            text.push_str(&table);
            text.push_str(
                "\nAdded latency per uprobe program run (both sides' SSL calls; includes the trap, the program, \
                           and the agent's user-space work competing for the 2 cores):\n\n",
            );
            for path in endpoints {
                let s = &series[path];
                let added = median(&s.agent) - median(&s.none);
                let runs = uprobe_runs.get(path).copied().unwrap_or(0.0);
                text.push_str(&format!(
                    "- {}: {added:+.0} µs over {runs:.1} uprobe runs per request = {:.1} µs per run\n",
                    if path == CHAT { "chat" } else { "health" },
                    if runs > 0.0 { added / runs } else { f64::NAN },
                ));
            }
        }
    }
    server.stop();
    // The server log holds the (synthetic) request payloads: do not leave it around.
    let _ = fs::remove_file(dir.join("server-log.jsonl"));
    Ok(text)
}
