//! `tokentap top` end to end: a real agent meters real clients (curl, the OpenAI Python SDK)
//! into its ledger while `top` runs in a real terminal (tmux); the screen must show each team,
//! model and process of those calls with the numbers the fake LLM server logged, switch views
//! and sort by keys, and quit on `q` / Ctrl-C with the terminal restored.
//!
//! The agent meters the whole host, where other tests run too: only rows of this test's own
//! teams, models (unique names, priced by an override file) and pids are checked.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tokentap_tests::expect::Tokens;
use tokentap_tests::tmux::Tmux;
use tokentap_tests::{agent, env, require_bpf, Case, ClientRun, Expected, LlmServer, ServerOpts};

/// Per test binary (the agent's configuration is fixed once): unique team and model names.
struct World {
    team_a: String,
    team_b: String,
    /// The 80×24 test's own team and (unpriced) model: tests of this binary run in parallel.
    team_c: String,
    model_a: String,
    model_b: String,
    model_c: String,
}

/// USD per 1M tokens, as in the override file; big enough that a few calls cost cents.
const PRICE_A: (i128, i128) = (1_000, 3_000);
const PRICE_B: (i128, i128) = (250, 500);
const WINDOW_S: i128 = 600;

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let tag = env::random_hex(3);
        let w = World {
            team_a: format!("top-a-{tag}"),
            team_b: format!("top-b-{tag}"),
            team_c: format!("top-c-{tag}"),
            model_a: format!("topmodel-a-{tag}"),
            model_b: format!("topmodel-b-{tag}"),
            model_c: format!("topmodel-c-{tag}"),
        };
        let dir = env::temp_subdir("top-config");
        let mapping = dir.join("mapping.toml");
        std::fs::write(&mapping, "[[rule]]\nname = \"by-header\"\n[rule.match]\nheaders = { \"x-team\" = \"*\" }\n[rule.set]\nteam = \"{header.x-team}\"\n")
            .unwrap();
        let prices = dir.join("prices.toml");
        let entry = |m: &str, (i, o): (i128, i128)| {
            // Cached input at the input price and reasoning at the output price: a call's cost is
            // then input × in + output × out, whatever the server's split.
            format!("[[model]]\nprovider = \"openai\"\nmodel = \"{m}\"\ninput = {i}\ncached_input = {i}\noutput = {o}\nreasoning = {o}\n\n")
        };
        let text = format!("as_of = \"2026-01-01\"\nsource = \"top_e2e\"\n\n{}{}", entry(&w.model_a, PRICE_A), entry(&w.model_b, PRICE_B));
        std::fs::write(&prices, text).unwrap();
        agent::configure(&format!(
            "[attribution]\nmapping_file = \"{}\"\n\n[pricing]\noverride_file = \"{}\"\n",
            mapping.display(),
            prices.display()
        ));
        w
    })
}

fn ledger() -> PathBuf {
    agent::agent().ledger.clone()
}

fn top_bin() -> PathBuf {
    agent::agent_bin()
}

/// What one group of calls must show: calls, input and output tokens, exact cost (pico-USD).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Want {
    calls: u64,
    input: u64,
    output: u64,
    cost: i128,
}

fn exact(t: &Tokens) -> u64 {
    match t {
        Tokens::Exact(n) => *n,
        other => panic!("the fake server reported usage, expected exact counts: {other:?}"),
    }
}

/// `top`'s money format: 2 decimals from $1, 4 from $0.01, else 6, rounded half away from 0.
fn usd(pico: i128) -> String {
    let decimals = if pico >= 1_000_000_000_000 {
        2
    } else if pico >= 10_000_000_000 {
        4
    } else {
        6
    };
    let unit = 10i128.pow(12 - decimals);
    let q = (pico + unit / 2) / unit;
    let scale = 10i128.pow(decimals);
    format!("{}.{:0w$}", q / scale, q % scale, w = decimals as usize)
}

/// The fields of the table row whose first cell is `first`, keyed by column title (the sort
/// arrow removed). Titles with a space ("IN TOK") are one column.
fn row(screen: &str, first: &str) -> Option<BTreeMap<String, String>> {
    let lines: Vec<&str> = screen.lines().collect();
    let head = lines.iter().position(|l| {
        let t = l.trim_start();
        ["TEAM", "MODEL", "PID"].iter().any(|h| t.starts_with(h))
    })?;
    let titles: Vec<String> = lines[head]
        .replace("IN TOK", "IN_TOK")
        .replace("OUT TOK", "OUT_TOK")
        .replace("$ WINDOW", "$_WINDOW")
        .split_whitespace()
        .map(|t| t.trim_end_matches(['▲', '▼']).replace('_', " "))
        .collect();
    let line = lines[head + 1..].iter().find(|l| l.split_whitespace().next() == Some(first))?;
    Some(titles.into_iter().zip(line.split_whitespace().map(str::to_string)).collect())
}

fn check_row(screen: &str, first: &str, want: Want, what: &str) {
    let r = row(screen, first).unwrap_or_else(|| panic!("{what}: no row {first:?} on the screen:\n{screen}"));
    let get = |k: &str| r.get(k).cloned().unwrap_or_else(|| panic!("{what}: no column {k} in {r:?}\n{screen}"));
    assert_eq!(get("CALLS"), want.calls.to_string(), "{what}: calls\n{screen}");
    assert_eq!(get("IN TOK"), want.input.to_string(), "{what}: input tokens\n{screen}");
    assert_eq!(get("OUT TOK"), want.output.to_string(), "{what}: output tokens\n{screen}");
    if want.cost > 0 {
        assert_eq!(get("$ WINDOW"), usd(want.cost), "{what}: cost in the window\n{screen}");
        // Exact: the window's cost × 3600 / window.
        assert_eq!(get("$/H"), usd(want.cost * 3600 / WINDOW_S), "{what}: cost per hour\n{screen}");
    }
    assert_eq!(get("ERR"), "0", "{what}: errors\n{screen}");
}

/// The row `first` once it shows `calls` calls (the agent commits within a second).
fn wait_row(t: &Tmux, first: &str, calls: u64, what: &str) -> String {
    t.wait_screen(what, Duration::from_secs(15), |s| {
        row(s, first).and_then(|r| r.get("CALLS").cloned()) == Some(calls.to_string())
    })
}

/// Line index of the row `first`.
fn line_of(screen: &str, first: &str) -> usize {
    screen
        .lines()
        .position(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?}:\n{screen}"))
}

/// The expectations of a client's calls, from the server's log entries it made.
fn wants(
    server: &LlmServer,
    runs: &[(&ClientRun, &str)],
) -> (BTreeMap<String, Want>, BTreeMap<u32, Want>, BTreeMap<String, Want>) {
    let w = world();
    let (mut teams, mut pids, mut models) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let entries = server.entries();
    assert_eq!(entries.len(), runs.len(), "one server log entry per call made");
    for (e, (run, team)) in entries.iter().zip(runs) {
        let exp = Expected::from_entry(e, server.port);
        let (input, output) = (exact(&exp.input_tokens), exact(&exp.output_tokens));
        let model = e.response_model().to_string();
        let price = if model == w.model_a {
            PRICE_A
        } else if model == w.model_b {
            PRICE_B
        } else {
            (0, 0)
        };
        let one = Want {
            calls: 1,
            input,
            output,
            cost: i128::from(input) * price.0 * 1_000_000 + i128::from(output) * price.1 * 1_000_000,
        };
        for want in [
            teams.entry(team.to_string()).or_default(),
            pids.entry(run.pid).or_default(),
            models.entry(model).or_default(),
        ] {
            let w: &mut Want = want;
            *w = Want {
                calls: w.calls + one.calls,
                input: w.input + one.input,
                output: w.output + one.output,
                cost: w.cost + one.cost,
            };
        }
    }
    (teams, pids, models)
}

/// Pages down through the table until the row `first` shows (other tests' processes can fill
/// more than a screen); the screen it is on.
fn find_paged(t: &Tmux, first: &str) -> String {
    t.keys(&["Home"]);
    let mut last = String::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(300));
        let s = t.screen();
        if row(&s, first).is_some() {
            return s;
        }
        if s == last {
            break;
        }
        last = s;
        t.keys(&["PageDown"]);
    }
    panic!("no row {first:?} on any page; the last screen:\n{last}");
}

#[test]
fn top_shows_the_live_calls_by_team_model_and_process_and_sorts_by_key() {
    if !require_bpf() {
        return;
    }
    let w = world();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let dir = env::temp_subdir("top-tmux");
    let bin = top_bin();
    let ledger = ledger();
    let argv =
        [bin.as_os_str(), "top".as_ref(), "--ledger".as_ref(), ledger.as_os_str(), "--window".as_ref(), "600".as_ref()];
    let t = Tmux::start(&dir, 120, 40, &argv);
    t.wait_screen("top's first screen", Duration::from_secs(10), |s| s.contains("[Team]") && s.contains("q quit"));

    // Calls made while top runs: team A one curl call (model A), team B two (models A and B),
    // and a Python SDK process with 20 calls on one connection.
    let hdr = |team: &str| format!("x-team: {team}");
    let (ha, hb) = (hdr(&w.team_a), hdr(&w.team_b));
    let c1 = case.curl_chat_model(&server, &w.model_a, &["-H", &ha]);
    let c2 = case.curl_chat_model(&server, &w.model_a, &["-H", &hb]);
    let c3 = case.curl_chat_model(&server, &w.model_b, &["-H", &hb]);
    let py = case.openai(&server, "keepalive20");
    let recs = case.wait_records(&server, 23);
    let unattributed = "unattributed";
    let mut runs: Vec<(&ClientRun, &str)> = vec![(&c1, &w.team_a), (&c2, &w.team_b), (&c3, &w.team_b)];
    runs.extend(std::iter::repeat_n((&py, unattributed), 20));
    // The server logs calls in the order it answered them: the curl calls ran one after the
    // other, then the Python process.
    let (teams, pids, models) = wants(&server, &runs);
    assert_eq!(recs.len(), 23);

    // Team view (the first): each team's calls, tokens and exact cost.
    let s = wait_row(&t, &w.team_b, 2, "team B's two calls");
    let s = if row(&s, &w.team_a).is_some() { s } else { wait_row(&t, &w.team_a, 1, "team A's call") };
    check_row(&s, &w.team_a, teams[&w.team_a], "team A");
    check_row(&s, &w.team_b, teams[&w.team_b], "team B");

    // Sorting: by name (ascending, then reversed), by calls (most first).
    t.keys(&["n"]);
    let s = t.wait_screen("sorted by team name", Duration::from_secs(5), |s| s.contains("TEAM▲"));
    assert!(line_of(&s, &w.team_a) < line_of(&s, &w.team_b), "name ascending:\n{s}");
    t.keys(&["n"]);
    let s = t.wait_screen("sorted by team name, reversed", Duration::from_secs(5), |s| s.contains("TEAM▼"));
    assert!(line_of(&s, &w.team_a) > line_of(&s, &w.team_b), "name descending:\n{s}");
    t.keys(&["c"]);
    let s = t.wait_screen("sorted by calls", Duration::from_secs(5), |s| s.contains("CALLS▼"));
    assert!(line_of(&s, &w.team_b) < line_of(&s, &w.team_a), "team B (2 calls) above team A (1):\n{s}");
    t.keys(&["c"]);
    let s = t.wait_screen("sorted by calls, fewest first", Duration::from_secs(5), |s| s.contains("CALLS▲"));
    assert!(line_of(&s, &w.team_a) < line_of(&s, &w.team_b), "calls ascending:\n{s}");

    // Model view.
    t.keys(&["m"]);
    let s = t.wait_screen("model view", Duration::from_secs(5), |s| s.contains("[Model]") && s.contains("MODEL"));
    check_row(&s, &w.model_a, models[&w.model_a], "model A");
    check_row(&s, &w.model_b, models[&w.model_b], "model B");

    // Process view: each curl process, and the Python process with its 20 calls. Sorted by
    // calls, the Python process comes before any curl process of this test.
    t.keys(&["p"]);
    t.wait_screen("process view", Duration::from_secs(5), |s| s.contains("[Process]") && s.contains("COMM"));
    for (run, what) in [(&c1, "curl #1"), (&c2, "curl #2"), (&c3, "curl #3"), (&py, "python")] {
        let pid = run.pid.to_string();
        let s = find_paged(&t, &pid);
        check_row(&s, &pid, pids[&run.pid], what);
        // The comm the agent recorded (empty, shown as "-", when a loaded host made it lose the
        // process's exec notice; the client's own view is checked by the capture tests).
        let rec = recs.iter().find(|r| r["pid"].as_u64() == Some(u64::from(run.pid))).expect("a record of the pid");
        let comm = rec["comm"].as_str().filter(|c| !c.is_empty()).unwrap_or("-");
        assert_eq!(row(&s, &pid).unwrap().get("COMM").map(String::as_str), Some(comm), "{what}: comm\n{s}");
    }
    // Calls were last sorted fewest first (team view): `c` turns it to most first.
    t.keys(&["Home", "c"]);
    let s = t.wait_screen("processes by calls", Duration::from_secs(5), |s| s.contains("CALLS▼"));
    let py_pid = py.pid.to_string();
    assert!(row(&s, &py_pid).is_some(), "the 20-call process is on the first page by calls:\n{s}");

    // Tab cycles back to the team view; q quits with status 0 and the terminal restored (the
    // alternate screen left: top's table is gone from the pane).
    t.keys(&["Tab"]);
    t.wait_screen("tab back to teams", Duration::from_secs(5), |s| s.contains("[Team]"));
    t.keys(&["q"]);
    assert_eq!(t.wait_exit(Duration::from_secs(5)), 0, "top's exit status after q");
    let after = t.screen();
    assert!(!after.contains("q quit") && !after.contains(&w.team_a), "the terminal was not restored:\n{after}");
    case.finish(&server);
}

#[test]
fn top_fits_80x24_and_quits_on_ctrl_c() {
    if !require_bpf() {
        return;
    }
    let w = world();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let hdr = format!("x-team: {}", w.team_c);
    case.curl_chat_model(&server, &w.model_c, &["-H", &hdr]);
    case.wait_records(&server, 1);
    let dir = env::temp_subdir("top-small");
    let bin = top_bin();
    let ledger = ledger();
    let argv = [bin.as_os_str(), "top".as_ref(), "--ledger".as_ref(), ledger.as_os_str()];
    let t = Tmux::start(&dir, 80, 24, &argv);
    let s = t.wait_screen("team C on an 80x24 screen", Duration::from_secs(15), |s| row(s, &w.team_c).is_some());
    let lines: Vec<&str> = s.lines().collect();
    // The summary lines take the form that fits (a cut line would lose its end).
    assert!(lines[1].trim_end().ends_with("err") && lines[2].contains("month:"), "summary lines cut:\n{s}");
    assert!(lines.iter().any(|l| l.starts_with("q quit")), "the keys are shown:\n{s}");
    let r = row(&s, &w.team_c).unwrap();
    for col in ["CALLS", "$/H", "IN TOK", "OUT TOK"] {
        assert!(r.contains_key(col), "{col} fits in 80 columns: {r:?}\n{s}");
    }
    t.keys(&["C-c"]);
    assert_eq!(t.wait_exit(Duration::from_secs(5)), 0, "top's exit status after Ctrl-C");
    case.finish(&server);
}

fn top_cmd(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(top_bin()).arg("top").args(args).output().expect("run tokentap top")
}

#[test]
fn top_refuses_a_pipe_and_bad_ledgers_by_name() {
    if !require_bpf() {
        return;
    }
    let _ = world();
    let ledger = ledger();
    // Not a terminal: a clear refusal, and --once prints the same tables as text.
    let out = top_cmd(&["--ledger".as_ref(), ledger.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a terminal") && err.contains("--once"), "{err}");
    let out = top_cmd(&["--ledger".as_ref(), ledger.as_os_str(), "--once".as_ref()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in ["== Team ==", "== Model ==", "== Process ==", "TEAM", "CALLS"] {
        assert!(text.contains(want), "{want}:\n{text}");
    }

    let dir = env::temp_subdir("top-bad");
    let missing = dir.join("missing.db");
    let foreign = dir.join("foreign.db");
    std::fs::write(&foreign, "these are not the bytes of a ledger\n".repeat(10)).unwrap();
    let before = std::fs::read(&foreign).unwrap();
    for (path, says) in [(&missing, "no such ledger file"), (&foreign, "not a tokentap ledger")] {
        let out = top_cmd(&["--ledger".as_ref(), path.as_os_str(), "--once".as_ref()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&path.display().to_string()) && err.contains(says), "{err}");
    }
    assert_eq!(std::fs::read(&foreign).unwrap(), before, "the foreign file is untouched");
    assert!(!missing.exists(), "no ledger is created by top");
    let out = top_cmd(&["--ledger".as_ref(), ledger.as_os_str(), "--window".as_ref(), "0".as_ref()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--window"));
}

/// A status file as the enforcing agent writes it, `age_s` seconds old.
fn write_quota_status(path: &std::path::Path, age_s: i64) {
    let written = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(age_s);
    let e = |name: &str, used: f64, reserved: f64, state: &str| {
        serde_json::json!({
            "name": name, "scope": "local", "limit_kind": "total_tokens", "unit": "tokens",
            "limit": 2000.0, "used": used, "reserved": reserved, "remaining": (2000.0 - used - reserved).max(0.0),
            "window_start": "2026-11-28T00:00:00Z", "window_end": "2026-11-29T00:00:00Z",
            "state": state, "action": "deny", "actions_taken": 0, "warnings": 0,
        })
    };
    let status = serde_json::json!({
        "written_at": written.to_string(), "host": "top-host",
        "entitlements": [e("quota-blue", 500.0, 100.0, "ok"), e("quota-red", 2100.0, 0.0, "exhausted")],
    });
    std::fs::write(path, serde_json::to_vec(&status).unwrap()).unwrap();
}

#[test]
fn once_shows_quota_bars_from_the_status_file() {
    if !require_bpf() {
        return;
    }
    let _ = world();
    let ledger = ledger();
    let dir = env::temp_subdir("top-quota");
    let status = dir.join("quota.json");
    write_quota_status(&status, 0);
    let once = |extra: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["--once".as_ref()];
        args.extend_from_slice(extra);
        let out = top_cmd(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = once(&["--ledger".as_ref(), ledger.as_os_str(), "--status-file".as_ref(), status.as_os_str()]);
    let quotas: Vec<&str> = text.lines().skip_while(|l| *l != "== Quotas ==").collect();
    assert!(quotas.len() >= 4, "no quota section:\n{text}");
    assert!(quotas[1].starts_with("QUOTAS  (status of top-host at "), "{text}");
    // 500 of 2000 used (5 cells of 20) and 100 reserved (1 cell).
    assert_eq!(quotas[2], "quota-blue  [#####+--------------]  25%  500/2000 tokens  ok", "{text}");
    assert_eq!(quotas[3], "quota-red   [####################] 105%  2100/2000 tokens  exhausted", "{text}");

    // The config names both the ledger and the status file.
    let config = dir.join("tokentap.toml");
    let toml = format!(
        "[ledger]\npath = {:?}\n\n[enforcement]\nstatus_file = {:?}\n",
        ledger.to_str().unwrap(),
        status.to_str().unwrap()
    );
    std::fs::write(&config, toml).unwrap();
    let text = once(&["--config".as_ref(), config.as_os_str()]);
    assert!(text.lines().any(|l| l.starts_with("quota-red") && l.ends_with("exhausted")), "{text}");

    // A stale file says the agent seems stopped, and top still shows its tables.
    write_quota_status(&status, 120);
    let text = once(&["--ledger".as_ref(), ledger.as_os_str(), "--status-file".as_ref(), status.as_os_str()]);
    assert!(text.contains("== Team ==") && text.contains("seems stopped"), "{text}");
    // A file named on the command line but missing is said; one from the config is no section.
    std::fs::remove_file(&status).unwrap();
    let text = once(&["--ledger".as_ref(), ledger.as_os_str(), "--status-file".as_ref(), status.as_os_str()]);
    assert!(text.contains("does not exist") && text.contains(status.to_str().unwrap()), "{text}");
    let text = once(&["--config".as_ref(), config.as_os_str()]);
    assert!(!text.contains("== Quotas =="), "{text}");
}
