//! An OTLP collector for the export tests, and what tokentap's metrics must look like.
//!
//! The collector is rotel (`rotel-agent` from the PyPI `rotel` wheel pinned in
//! `fixtures/requirements.txt`, found through `TOKENTAP_PYTHON`, or `TOKENTAP_ROTEL`) with
//! `fixtures/rotel_dump.py` as its metrics processor: every data point it receives, over gRPC or
//! HTTP, becomes one JSON line (name, unit, type, temporality, monotonic, attributes, resource,
//! value or count/sum/explicit_bounds/bucket_counts). Metrics carry no payloads, yet the dump is
//! checked for the test's secrets too ([`Collector::assert_private`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{self, Agent};
use crate::env;

/// How long rotel may take to listen on both ports.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound for the expected metrics to arrive (the tests export every second).
pub const METRICS_TIMEOUT: Duration = Duration::from_secs(30);
/// Once the expected values are seen, wait this long (two export intervals and more) and check
/// again: a value counted twice would show by then.
pub const SETTLE: Duration = Duration::from_millis(2500);

pub const TOKEN_BOUNDS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
pub const SECONDS_BOUNDS: &[f64] =
    &[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Monotonic cumulative sum.
    Counter,
    Histogram(&'static [f64]),
    Gauge,
}

/// Every metric tokentap may export (without the semconv opt-in): name, unit, kind.
pub const METRICS: &[(&str, &str, Kind)] = &[
    ("gen_ai.client.token.usage", "{token}", Kind::Histogram(TOKEN_BOUNDS)),
    ("gen_ai.client.operation.duration", "s", Kind::Histogram(SECONDS_BOUNDS)),
    ("gen_ai.client.operation.time_to_first_chunk", "s", Kind::Histogram(SECONDS_BOUNDS)),
    ("tokentap.tokens.input", "{token}", Kind::Counter),
    ("tokentap.tokens.output", "{token}", Kind::Counter),
    ("tokentap.tokens.cached_input", "{token}", Kind::Counter),
    ("tokentap.tokens.reasoning", "{token}", Kind::Counter),
    ("tokentap.requests", "{request}", Kind::Counter),
    ("tokentap.requests.failed", "{request}", Kind::Counter),
    ("tokentap.cost", "USD", Kind::Counter),
    ("tokentap.calls.unpriced", "{call}", Kind::Counter),
    ("tokentap.agent.events.lost", "{event}", Kind::Counter),
    ("tokentap.agent.calls.truncated", "{call}", Kind::Counter),
    ("tokentap.agent.parse_failures", "{failure}", Kind::Counter),
    ("tokentap.agent.libraries.attached", "{library}", Kind::Gauge),
    ("tokentap.agent.export.failures", "{export}", Kind::Counter),
    ("tokentap.agent.attribute_values.folded", "{value}", Kind::Counter),
    ("tokentap.calls.unattributed", "{call}", Kind::Counter),
    ("tokentap.capture.calls", "{call}", Kind::Counter),
    ("tokentap.agent.executables.unprobed", "{executable}", Kind::Gauge),
    ("tokentap.agent.start_time", "s", Kind::Gauge),
    ("tokentap.agent.ledger.healthy", "", Kind::Gauge),
    ("tokentap.agent.ledger.records.written", "{record}", Kind::Counter),
    ("tokentap.agent.ledger.records.dropped", "{record}", Kind::Counter),
    ("tokentap.agent.ledger.records.pending", "{record}", Kind::Gauge),
    ("tokentap.agent.ledger.commits.failed", "{attempt}", Kind::Counter),
    ("tokentap.quota.limit", "", Kind::Gauge),
    ("tokentap.quota.used", "", Kind::Gauge),
    ("tokentap.quota.reserved", "", Kind::Gauge),
    ("tokentap.quota.remaining", "", Kind::Gauge),
    ("tokentap.quota.warnings", "{warning}", Kind::Counter),
    ("tokentap.quota.actions", "{action}", Kind::Counter),
    ("tokentap.enforcement.redis.operations", "{operation}", Kind::Counter),
    ("tokentap.enforcement.redis.failures", "{operation}", Kind::Counter),
    ("tokentap.enforcement.redis.up", "", Kind::Gauge),
    ("tokentap.enforcement.events", "{event}", Kind::Counter),
];

/// Per-call counters, in the order they are checked.
pub const CALL_COUNTERS: &[&str] = &[
    "tokentap.requests",
    "tokentap.requests.failed",
    "tokentap.tokens.input",
    "tokentap.tokens.output",
    "tokentap.tokens.cached_input",
    "tokentap.tokens.reasoning",
    "tokentap.cost",
    "tokentap.calls.unpriced",
];

/// `rotel-agent`: `TOKENTAP_ROTEL`, else the one in the `rotel` package of the test Python.
pub fn rotel_agent() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("TOKENTAP_ROTEL").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let code = "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))";
        let out = Command::new(env::python()).arg("-c").arg(code).stderr(Stdio::null()).output();
        let path =
            out.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        match path.map(PathBuf::from) {
            Some(p) if p.is_file() => p,
            _ => panic!(
                "no rotel-agent: install tests/fixtures/requirements.txt (rotel) into {} or set TOKENTAP_ROTEL",
                env::python()
            ),
        }
    })
    .clone()
}

/// `n` distinct ports that were free a moment ago (all bound at once, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    ls.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

/// Spawns `cmd` from a thread that never exits, so a `PR_SET_PDEATHSIG` set in `cmd` fires when
/// the test process dies, not when the test (thread) that started it ends.
fn spawn_kept(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("collector-parent".into())
            .spawn(move || {
                // The static sender is never dropped, so this loop never ends.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the collector parent thread");
        Mutex::new(tx)
    });
    let gone = || std::io::Error::other("collector parent thread gone");
    let (tx, rx) = mpsc::channel();
    keeper.lock().unwrap_or_else(|e| e.into_inner()).send((cmd, tx)).map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

pub struct Collector {
    pub grpc_port: u16,
    pub http_port: u16,
    pub pid: u32,
    /// Private temp dir: the dump, rotel's output, pid and log files.
    pub dir: PathBuf,
    /// The processor's JSON lines.
    pub dump: PathBuf,
    /// rotel's stdout + stderr.
    pub output: PathBuf,
    child: Mutex<Child>,
    /// Bytes of the dump parsed so far, and what they held.
    cache: Mutex<(u64, Snapshot)>,
}

impl Collector {
    /// rotel on two fresh ports.
    pub fn start() -> Collector {
        let p = free_ports(2);
        Collector::start_on(p[0], p[1])
    }

    /// rotel with its OTLP gRPC and HTTP receivers on these ports; returns once both listen.
    pub fn start_on(grpc_port: u16, http_port: u16) -> Collector {
        let dir = env::temp_subdir("collector");
        let dump = dir.join("points.jsonl");
        let output = dir.join("rotel.out");
        let out = std::fs::File::create(&output).expect("create rotel output");
        let err = out.try_clone().expect("clone rotel output");
        let mut cmd = Command::new(rotel_agent());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ROTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("start")
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(["--exporter", "blackhole"])
            .arg("--otlp-with-metrics-processor")
            .arg(env::fixtures_dir().join("rotel_dump.py"))
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .env("ROTEL_DUMP_FILE", &dump)
            .env("NO_COLOR", "1")
            .env_remove("PYTHONHOME")
            .env_remove("PYTHONPATH")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        env::set_pdeathsig(&mut cmd, libc::SIGKILL);
        let child = spawn_kept(cmd).unwrap_or_else(|e| panic!("cannot start {}: {e}", rotel_agent().display()));
        let c = Collector {
            grpc_port,
            http_port,
            pid: child.id(),
            dir,
            dump,
            output,
            child: Mutex::new(child),
            cache: Default::default(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let listens =
            |p: u16| TcpStream::connect_timeout(&([127, 0, 0, 1], p).into(), Duration::from_millis(200)).is_ok();
        while !(listens(grpc_port) && listens(http_port)) {
            let status = c.status();
            assert!(
                status == "running" && Instant::now() < deadline,
                "rotel ({status}) is not listening on {grpc_port} and {http_port} after {}s; output tail:\n{}",
                START_TIMEOUT.as_secs(),
                env::tail_lines(&c.output, 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// `http://127.0.0.1:GRPC_PORT`
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:HTTP_PORT` (the exporter appends `/v1/metrics`).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// "running" or how rotel exited.
    pub fn status(&self) -> String {
        match self.child.lock().unwrap_or_else(|e| e.into_inner()).try_wait() {
            Ok(None) => "running".into(),
            Ok(Some(s)) => format!("exited ({s})"),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Everything received so far.
    pub fn snapshot(&self) -> Snapshot {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (read, snap) = &mut *cache;
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.dump) {
            let _ = f.seek(SeekFrom::Start(*read)).and_then(|_| f.read_to_end(&mut bytes));
        }
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1); // whole lines only
        *read += end as u64;
        for line in bytes[..end].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Value>(line) {
                Ok(v) if v.get("name").is_some() => snap.points.push(Arc::new(v)),
                Ok(v) => snap.problems.push(format!("processor error: {}", v["error"].as_str().unwrap_or("?"))),
                Err(_) => snap.problems.push("malformed dump line".into()),
            }
        }
        snap.clone()
    }

    /// All data points received so far.
    pub fn points(&self) -> Vec<Value> {
        self.snapshot().points.iter().map(|p| Value::clone(p)).collect()
    }

    /// Sum over series of the latest value of counter `name` (see [`Snapshot::counter_total`]).
    pub fn counter_total(&self, name: &str, filter: &[(&str, Value)]) -> f64 {
        self.snapshot().counter_total(name, filter)
    }

    /// The latest point of the one histogram series matching `filter`.
    pub fn latest_histogram(&self, name: &str, filter: &[(&str, Value)]) -> Option<Value> {
        self.snapshot().latest_histogram(name, filter).cloned()
    }

    /// Polls (≤ [`METRICS_TIMEOUT`]) until `check` finds nothing wrong, then waits [`SETTLE`]
    /// and requires that again; returns the final snapshot. Panics with the (redacted)
    /// mismatches, rotel's and the shared agent's output otherwise, or as soon as either exits.
    pub fn wait_exact(&self, what: &str, secrets: &[String], check: impl Fn(&Snapshot) -> Vec<String>) -> Snapshot {
        self.wait(what, secrets, Some(agent::agent()), check)
    }

    /// [`Collector::wait_exact`] for a test without an agent.
    pub fn wait_received(&self, what: &str, check: impl Fn(&Snapshot) -> Vec<String>) -> Snapshot {
        self.wait(what, &[], None, check)
    }

    fn wait(
        &self,
        what: &str,
        secrets: &[String],
        a: Option<&Agent>,
        check: impl Fn(&Snapshot) -> Vec<String>,
    ) -> Snapshot {
        let deadline = Instant::now() + METRICS_TIMEOUT;
        let mut settled = false;
        loop {
            let (agent_status, status) = (a.map_or("running".into(), Agent::status), self.status());
            let snap = self.snapshot();
            let bad = check(&snap);
            if bad.is_empty() && settled {
                return snap;
            }
            if bad.is_empty() {
                std::thread::sleep(SETTLE);
                settled = true;
                continue;
            }
            if settled || Instant::now() >= deadline || agent_status != "running" || status != "running" {
                panic!(
                    "{what}: {} ({} point(s) received; agent {agent_status}; rotel {status}):\n  {}\n\
                     rotel output tail:\n{}\nagent stderr tail:\n{}",
                    if settled { "changed after settling" } else { "not as expected within the timeout" },
                    snap.points.len(),
                    env::redact(&bad.join("\n  "), secrets),
                    env::tail_lines(&self.output, 10),
                    a.map_or(String::new(), |a| a.stderr_tail(20, secrets))
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Asserts no secret occurs in anything the collector received.
    pub fn assert_private(&self, secrets: &[String]) {
        let data = std::fs::read(&self.dump).unwrap_or_default();
        let leaks: Vec<usize> = secrets
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty() && data.windows(s.len()).any(|w| w == s.as_bytes()))
            .map(|(i, _)| i)
            .collect();
        assert!(leaks.is_empty(), "PRIVACY VIOLATION: exported metrics contain secret(s) #{leaks:?}");
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: kill(2) of our own child, by its own pid.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: as above; still our unreaped child, so the pid is still its.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = child.wait();
        if !env::keep_tmp() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `("server.port", port)`: the filter that keeps one test's calls.
pub fn port_attr(port: u16) -> (&'static str, Value) {
    ("server.port", Value::from(port))
}

/// The data points the collector had at one moment.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// In the order received (shared: a snapshot is cheap to take).
    pub points: Vec<Arc<Value>>,
    /// Processor errors and malformed lines.
    pub problems: Vec<String>,
}

/// Whether point `p` is of metric `name` and has every attribute of `filter`.
pub fn matches(p: &Value, name: &str, filter: &[(&str, Value)]) -> bool {
    p["name"] == name && filter.iter().all(|(k, v)| p["attributes"].get(*k) == Some(v))
}

impl Snapshot {
    /// Points of `name` matching `filter`, grouped by series (attributes + resource), each in
    /// time order.
    pub fn series(&self, name: &str, filter: &[(&str, Value)]) -> Vec<Vec<&Value>> {
        let mut by: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for p in self.points.iter().filter(|p| matches(p, name, filter)) {
            by.entry(format!("{}|{}", p["attributes"], p["resource"])).or_default().push(p);
        }
        let mut out: Vec<Vec<&Value>> = by.into_values().collect();
        for s in &mut out {
            s.sort_by_key(|p| p["time_unix_nano"].as_u64().unwrap_or(0)); // stable: file order on ties
        }
        out
    }

    /// The latest point of each series of `name` matching `filter`.
    pub fn latest(&self, name: &str, filter: &[(&str, Value)]) -> Vec<&Value> {
        self.series(name, filter).into_iter().filter_map(|s| s.last().copied()).collect()
    }

    /// Sum over the matching series of their latest (cumulative) value; 0 if none.
    pub fn counter_total(&self, name: &str, filter: &[(&str, Value)]) -> f64 {
        self.latest(name, filter).iter().filter_map(|p| p["value"].as_f64()).sum()
    }

    /// The latest point of the one histogram series matching `filter` (panics on several).
    pub fn latest_histogram(&self, name: &str, filter: &[(&str, Value)]) -> Option<&Value> {
        let latest = self.latest(name, filter);
        assert!(latest.len() <= 1, "{} series of {name} match the filter, expected at most one", latest.len());
        latest.into_iter().next()
    }

    /// Every way a received point breaks the spec: unknown name, unit, type, temporality,
    /// monotonicity, bucket bounds, histogram consistency, resource; plus processor problems.
    pub fn shape_mismatches(&self) -> Vec<String> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        let mut bad: BTreeSet<String> = self.problems.iter().cloned().collect();
        for p in &self.points {
            let name = p["name"].as_str().unwrap_or("?");
            let Some((_, unit, kind)) = METRICS.iter().find(|m| m.0 == name) else {
                bad.insert(format!("unexpected metric {name}"));
                continue;
            };
            let mut is = |ok: bool, what: String| {
                if !ok {
                    bad.insert(format!("{name}: {what}"));
                }
            };
            is(p["unit"] == *unit, format!("unit {} (want {unit:?})", p["unit"]));
            let ty = match kind {
                Kind::Counter => "sum",
                Kind::Histogram(_) => "histogram",
                Kind::Gauge => "gauge",
            };
            is(p["type"] == ty, format!("type {} (want {ty})", p["type"]));
            if *kind != Kind::Gauge {
                is(p["temporality"] == "cumulative", format!("temporality {}", p["temporality"]));
            }
            if *kind == Kind::Counter {
                is(p["monotonic"] == true, "not monotonic".into());
            }
            if let Kind::Histogram(bounds) = kind {
                let got: Vec<f64> =
                    p["explicit_bounds"].as_array().map_or(vec![], |a| a.iter().filter_map(Value::as_f64).collect());
                is(got == *bounds, format!("bounds {got:?}"));
                let counts: Vec<u64> =
                    p["bucket_counts"].as_array().map_or(vec![], |a| a.iter().filter_map(Value::as_u64).collect());
                let consistent = counts.len() == bounds.len() + 1
                    && counts.iter().sum::<u64>() == p["count"].as_u64().unwrap_or(u64::MAX);
                is(consistent, format!("bucket_counts {counts:?} vs count {}", p["count"]));
            }
            let r = &p["resource"];
            is(r["service.name"] == "tokentap", format!("resource service.name {}", r["service.name"]));
            is(r["host.name"] == host.as_str(), format!("resource host.name {} (want {host:?})", r["host.name"]));
        }
        bad.into_iter().collect()
    }
}
