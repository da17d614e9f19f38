//! Helpers for the `tokentap report` tests: running the real binary, consistent snapshots of a
//! live ledger, independent SQL sums over a ledger, extra agents with their own ledger, and
//! headless Chromium for the HTML report.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::agent::{agent_bin, READY_LINE, READY_TIMEOUT};
use crate::env;

/// `tokentap report ARGS…` with the real binary.
pub fn report(args: &[&str]) -> Output {
    Command::new(agent_bin()).arg("report").args(args).stdin(Stdio::null()).output().expect("run tokentap report")
}

/// Its stdout, after checking it exited 0 (else panics with its stderr).
pub fn report_ok(args: &[&str]) -> String {
    let out = report(args);
    assert!(out.status.success(), "tokentap report {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 report")
}

/// Opens a ledger read-only (for checks; never written by tests).
pub fn open_ro(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open ledger read-only")
}

/// A consistent copy of a live ledger (`VACUUM INTO`: one read transaction), so a report and
/// the test's own SQL see the same calls while the agent keeps writing.
pub fn snapshot(live: &Path, dest: &Path) {
    let conn = open_ro(live);
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute("VACUUM INTO ?1", [dest.to_str().expect("UTF-8 path")]).expect("VACUUM INTO");
}

/// Exact sums, as the report names them (`cost_pusd`: pico-USD), over a ledger's calls in
/// `[from_ns, to_ns)`, grouped by the SQL expressions `by` (e.g. `team`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub calls: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub estimated_calls: u64,
    pub cost_pusd: i128,
}

impl Sums {
    pub fn add(&mut self, o: &Sums) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cached_input_tokens += o.cached_input_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.estimated_calls += o.estimated_calls;
        self.cost_pusd += o.cost_pusd;
    }

    /// A counter by its report name (`cost_usd` as pico-USD).
    pub fn get(&self, field: &str) -> i128 {
        match field {
            "calls" => self.calls.into(),
            "errors" => self.errors.into(),
            "input_tokens" => self.input_tokens.into(),
            "output_tokens" => self.output_tokens.into(),
            "cached_input_tokens" => self.cached_input_tokens.into(),
            "reasoning_tokens" => self.reasoning_tokens.into(),
            "estimated_calls" => self.estimated_calls.into(),
            "cost_usd" => self.cost_pusd,
            other => panic!("unknown field {other}"),
        }
    }
}

/// The counters of the report, in report order.
pub const FIELDS: [&str; 8] = [
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "estimated_calls",
    "cost_usd",
];

/// Sums of calls per value of `by` (SQL expressions over `calls`), written independently of
/// the agent's report code; the cost is recomputed from each call's stored unit prices and
/// must equal its stored `cost_pusd` (asserted).
pub fn ledger_sums(path: &Path, from_ns: i64, to_ns: i64, by: &[&str]) -> BTreeMap<Vec<Option<String>>, Sums> {
    let conn = open_ro(path);
    let keys = if by.is_empty() { "''".to_string() } else { by.join(", ") };
    let sql = format!(
        "SELECT {keys}, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens,
                (error_type IS NOT NULL OR http_status >= 400), usage_source, cost_pusd,
                price_input, price_cached_input, price_output, price_reasoning
         FROM calls WHERE ts_ns >= ?1 AND ts_ns < ?2"
    );
    let mut stmt = conn.prepare(&sql).expect("prepare");
    let n = by.len().max(1);
    let mut out: BTreeMap<Vec<Option<String>>, Sums> = BTreeMap::new();
    let mut rows = stmt.query([from_ns, to_ns]).expect("query");
    while let Some(r) = rows.next().expect("row") {
        let key: Vec<Option<String>> = if by.is_empty() { vec![] } else { (0..n).map(|i| r.get(i).unwrap()).collect() };
        let g = |i: usize| -> i64 { r.get(n + i).unwrap() };
        let (input, output, cached, reasoning) = (g(0), g(1), g(2), g(3));
        let cost: Option<i64> = r.get(n + 6).unwrap();
        let prices: [Option<i64>; 4] =
            [r.get(n + 7).unwrap(), r.get(n + 8).unwrap(), r.get(n + 9).unwrap(), r.get(n + 10).unwrap()];
        if let [Some(pi), Some(pc), Some(po), Some(pr)] = prices {
            let recomputed = i128::from(pi) * i128::from(input - cached)
                + i128::from(pc) * i128::from(cached)
                + i128::from(po) * i128::from(output - reasoning)
                + i128::from(pr) * i128::from(reasoning);
            assert_eq!(Some(recomputed), cost.map(i128::from), "a call's stored cost is tokens × its stored prices");
        }
        let source: String = r.get(n + 5).unwrap();
        let s = out.entry(key).or_default();
        s.calls += 1;
        s.errors += u64::from(g(4) != 0);
        s.input_tokens += input as u64;
        s.output_tokens += output as u64;
        s.cached_input_tokens += cached as u64;
        s.reasoning_tokens += reasoning as u64;
        s.estimated_calls += u64::from(source == "estimated");
        s.cost_pusd += i128::from(cost.unwrap_or(0));
    }
    out
}

/// Exact decimal USD text (as the report's machine formats write it) → pico-USD.
pub fn parse_usd(text: &str) -> i128 {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    assert!(frac.len() <= 12, "more than 12 decimals: {text}");
    let neg = int.starts_with('-');
    let int: i128 = int.trim_start_matches('-').parse().unwrap_or_else(|_| panic!("bad amount {text:?}"));
    let frac: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<12}").parse().unwrap() };
    let v = int * 1_000_000_000_000 + frac;
    if neg {
        -v
    } else {
        v
    }
}

/// Pico-USD rounded to micro-USD (halves away from zero) with at least two decimals: the
/// report's human text.
pub fn usd_human(pico: i128) -> String {
    let micro = (pico.abs() + 500_000) / 1_000_000;
    let frac = format!("{:06}", micro % 1_000_000);
    let frac = frac.trim_end_matches('0');
    format!("{}{}.{:0<2}", if pico < 0 && micro != 0 { "-" } else { "" }, micro / 1_000_000, frac)
}

/// An extra agent with its own ledger and config (besides the binary's shared one); killed
/// (SIGTERM, then waited for) on drop. Every agent meters the whole host.
pub struct ExtraAgent {
    pub ledger: PathBuf,
    pub dir: PathBuf,
    child: Child,
}

impl ExtraAgent {
    pub fn start(config_toml: &str) -> ExtraAgent {
        let dir = env::temp_subdir("extra-agent");
        let config = dir.join("tokentap.toml");
        std::fs::write(&config, config_toml).unwrap();
        let ledger = dir.join("ledger.db");
        let stderr = dir.join("agent.stderr");
        let mut cmd = Command::new(agent_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--usage-log")
            .arg(dir.join("usage.jsonl"))
            .arg("--ledger")
            .arg(&ledger)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        env::set_pdeathsig(&mut cmd, libc::SIGTERM);
        let mut child = cmd.spawn().expect("spawn extra agent");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if String::from_utf8_lossy(&std::fs::read(&stderr).unwrap_or_default()).contains(READY_LINE) {
                break;
            }
            if let Ok(Some(s)) = child.try_wait() {
                panic!("extra agent exited ({s}):\n{}", env::tail_lines(&stderr, 30));
            }
            assert!(Instant::now() < deadline, "extra agent not ready:\n{}", env::tail_lines(&stderr, 30));
            std::thread::sleep(Duration::from_millis(50));
        }
        ExtraAgent { ledger, dir, child }
    }

    /// SIGTERM and wait: the ledger's last batch is committed on a clean exit.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) of our own child by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for ExtraAgent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Waits until `ledger` holds `n` calls matching the SQL condition `filter`.
pub fn wait_ledger_calls(ledger: &Path, filter: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while Instant::now() < deadline {
        if ledger.exists() {
            let conn = open_ro(ledger);
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            seen = conn
                .query_row(&format!("SELECT count(*) FROM calls WHERE {filter}"), [], |r| r.get::<_, i64>(0))
                .unwrap_or(0) as u64;
            if seen >= n {
                assert_eq!(seen, n, "{}: more calls than made for {filter}", ledger.display());
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{}: {seen} of {n} calls for {filter} after 30 s", ledger.display());
}

/// Headless Chromium (Debian `chromium`, as root: `--no-sandbox`) on a local file: a
/// screenshot (`png`, returned as bytes) and the DOM after rendering.
pub fn chromium(html: &Path, dir: &Path, window: (u32, u32)) -> (Vec<u8>, String) {
    let bin = env::which("chromium")
        .expect("chromium not installed (Debian package `chromium`; `cargo xtask test` installs it)");
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let png = dir.join("report.png");
    let base = |cmd: &mut Command| {
        cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
            .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
            .arg(format!("--window-size={},{}", window.0, window.1))
            .stdin(Stdio::null());
        env::set_pdeathsig(cmd, libc::SIGKILL);
    };
    let mut shot = Command::new(&bin);
    base(&mut shot);
    let out = shot.arg(format!("--screenshot={}", png.display())).arg(&url).output().expect("run chromium");
    assert!(out.status.success(), "chromium --screenshot: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let mut dump = Command::new(&bin);
    base(&mut dump);
    let out = dump.arg("--dump-dom").arg(&url).output().expect("run chromium");
    assert!(out.status.success(), "chromium --dump-dom: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    (std::fs::read(&png).expect("screenshot written"), String::from_utf8(out.stdout).expect("UTF-8 DOM"))
}

/// The value of attribute `name` in the first tag of `tag_text` (`<td a="1">`), unescaped.
pub fn attr(tag_text: &str, name: &str) -> Option<String> {
    let end = tag_text.find('>')?;
    let open = &tag_text[..end];
    let needle = format!(" {name}=\"");
    let start = open.find(&needle)? + needle.len();
    let len = open[start..].find('"')?;
    Some(unescape(&open[start..start + len]))
}

/// The element (from its opening tag to the matching close of `tag`, not nested) with this id.
pub fn element_by_id<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let start = dom.find(&format!(" id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the DOM"));
    let start = dom[..start].rfind('<').unwrap();
    let close = format!("</{tag}>");
    let end = dom[start..].find(&close).unwrap_or_else(|| panic!("#{id} not closed")) + start + close.len();
    &dom[start..end]
}

/// Every `<td …>` of a row: (its `data-key` or `data-field`, its `data-value`).
pub fn cells(row: &str) -> Vec<(String, Option<String>)> {
    row.match_indices("<td")
        .map(|(i, _)| {
            let t = &row[i..];
            let name = attr(t, "data-key").or_else(|| attr(t, "data-field")).unwrap_or_default();
            (name, attr(t, "data-value"))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&#39;", "'").replace("&amp;", "&")
}
