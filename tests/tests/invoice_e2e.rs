//! Invoices end to end: a real agent meters real clients (curl, the OpenAI Python SDK) talking
//! TLS to the fake LLM server; a mapping file gives some calls a cost centre from request
//! headers; the agent's ledger fills; `tokentap report --invoice --by cost_center` writes the
//! invoices. Their numbers are checked against the ledger (SQL over `cost_pusd`) and against the
//! server's own usage log priced by hand, read back from the CSV and from the DOM headless
//! Chromium builds, and the invoice ids are stable across runs.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokentap_tests::invoice_check::{cents, dump_dom, parse_csv, screenshot, DomInvoice};
use tokentap_tests::{agent, env, require_bpf, Case, LlmServer, ServerEntry, ServerOpts};

const MAPPING: &str = r#"
[[rule]]
name = "team-and-cost-centre"
[rule.match]
headers = { "x-team" = "*", "x-cc" = "*" }
[rule.set]
team = "{header.x-team}"
cost_center = "{header.x-cc}"

[[rule]]
name = "team-only"
[rule.match]
headers = { "x-team" = "*" }
[rule.set]
team = "{header.x-team}"
"#;

/// Prices with six decimals, high enough that every call costs cents and fractions of a cent
/// (micro-USD per 1M tokens: input, cached input, output, reasoning).
const PRICES: [i64; 4] = [1_234_567_891, 617_283_947, 4_321_987_653, 9_876_543_211];
const PRICING: &str = r#"as_of = "2026-11-invoice-test"
[[model]]
provider = "openai"
model = "gpt-4o-mini"
input = 1234.567891
cached_input = 617.283947
output = 4321.987653
reasoning = 9876.543211
"#;

const PICO_PER_CENT: i128 = 10_000_000_000;
const UNPRICED_MODEL: &str = "mystery-model-7b";

fn round_cents(pico: i128) -> i128 {
    (pico + PICO_PER_CENT / 2).div_euclid(PICO_PER_CENT)
}

/// Starts this binary's agent with the mapping and prices; returns its own ledger file.
fn start_agent() -> PathBuf {
    let dir = env::temp_subdir("invoice-agent");
    let mapping = dir.join("mapping.toml");
    let pricing = dir.join("pricing.toml");
    std::fs::write(&mapping, MAPPING).unwrap();
    std::fs::write(&pricing, PRICING).unwrap();
    agent::configure(&format!(
        "[attribution]\nmapping_file = \"{}\"\n\n[pricing]\noverride_file = \"{}\"\n",
        mapping.display(),
        pricing.display(),
    ));
    agent::agent().ledger.clone()
}

/// The exact token counts a chat completion's usage bills, by type: uncached input, cached
/// input, visible output, reasoning.
fn billed_tokens(e: &ServerEntry) -> [u64; 4] {
    let u = e.usage().expect("the server reported usage");
    let n = |path: &[&str]| path.iter().try_fold(u, |v, k| v.get(*k)).and_then(Value::as_u64).unwrap();
    let (prompt, cached) = (n(&["prompt_tokens"]), n(&["prompt_tokens_details", "cached_tokens"]));
    let (completion, reasoning) = (n(&["completion_tokens"]), n(&["completion_tokens_details", "reasoning_tokens"]));
    [prompt - cached, cached, completion - reasoning, reasoning]
}

/// What one team's calls on `server` should put on an invoice: tokens per type of the priced
/// model, and the exact cost.
struct TeamTruth {
    team: String,
    cost_center: String,
    tokens: [u64; 4],
    unpriced_tokens: [u64; 4],
    exact_pico: i128,
}

fn truth(team: &str, cost_center: &str, server: &LlmServer) -> TeamTruth {
    let mut t = TeamTruth {
        team: team.into(),
        cost_center: cost_center.into(),
        tokens: [0; 4],
        unpriced_tokens: [0; 4],
        exact_pico: 0,
    };
    for e in server.entries() {
        let billed = billed_tokens(&e);
        let into = if e.request_model() == UNPRICED_MODEL { &mut t.unpriced_tokens } else { &mut t.tokens };
        for i in 0..4 {
            into[i] += billed[i];
        }
        if e.request_model() != UNPRICED_MODEL {
            t.exact_pico += (0..4).map(|i| i128::from(PRICES[i]) * i128::from(billed[i])).sum::<i128>();
        }
    }
    t
}

fn rfc3339(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    jiff::Timestamp::from_second(s).unwrap().to_string()
}

/// Per cost centre (None: none) in `[from, to)`: (calls, exact cost in pico-USD), by SQL.
fn ledger_sums(ledger: &Path, from: i64, to: i64) -> BTreeMap<Option<String>, (u64, i128)> {
    let db = rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let rollups: i64 = db.query_row("SELECT count(*) FROM rollups", [], |r| r.get(0)).unwrap();
    assert_eq!(rollups, 0, "no call is old enough for a rollup");
    let mut q = db
        .prepare(
            "SELECT cost_center, count(*), sum(coalesce(cost_pusd, 0)) FROM calls \
             WHERE ts_ns >= ?1 AND ts_ns < ?2 GROUP BY cost_center",
        )
        .unwrap();
    let rows = q
        .query_map([from * 1_000_000_000, to * 1_000_000_000], |r| {
            Ok((r.get::<_, Option<String>>(0)?, (r.get::<_, i64>(1)? as u64, i128::from(r.get::<_, i64>(2)?))))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

fn calls_for_port(ledger: &Path, port: u16) -> i64 {
    let Ok(db) = rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return 0;
    };
    db.query_row("SELECT count(*) FROM calls WHERE server_port = ?1", [port], |r| r.get(0)).unwrap_or(0)
}

fn report_cmd(ledger: &Path, from: &str, to: &str, out: &Path) -> std::process::Output {
    Command::new(agent::agent_bin())
        .args(["report", "--ledger"])
        .arg(ledger)
        .args(["--from", from, "--to", to, "--invoice", "--by", "cost_center", "--output"])
        .arg(out)
        .output()
        .unwrap()
}

/// `tokentap report --invoice`, which must succeed.
fn report(ledger: &Path, from: &str, to: &str, out: &Path) {
    let o = report_cmd(ledger, from, to, out);
    assert!(
        o.status.success(),
        "tokentap report --invoice failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `tokentap report --invoice`, which must fail naming `path` and leave `path` as it was.
fn report_refused(ledger: &Path, from: &str, to: &str, out: &Path, path: &Path) {
    let before = std::fs::read(path).unwrap();
    let o = report_cmd(ledger, from, to, out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "tokentap report --invoice into {} succeeded", out.display());
    assert!(stderr.contains(&path.display().to_string()), "the error names {}: {stderr}", path.display());
    assert_eq!(std::fs::read(path).unwrap(), before, "{} was changed", path.display());
}

/// The invoices in `dir` by the key value each shows (`unassigned` for none): (HTML, CSV).
/// Found by content, not by file name, so that the key values of other tests' calls, which
/// this agent meters too, need no escaping here.
fn invoices_by_key(dir: &Path) -> BTreeMap<String, (PathBuf, PathBuf)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let html = e.unwrap().path();
        if html.extension().is_some_and(|x| x == "html") {
            let inv = DomInvoice::parse(&std::fs::read_to_string(&html).unwrap());
            let csv = html.with_extension("csv");
            assert!(out.insert(inv.one("key").to_string(), (html, csv)).is_none(), "two invoices for one key");
        }
    }
    out
}

#[test]
fn invoices_equal_the_ledger_and_the_server_to_the_cent() {
    if !require_bpf() {
        return;
    }
    let ledger = start_agent();
    let case = Case::new();
    let from_time = SystemTime::now() - Duration::from_secs(2);
    // One server per team, so that the server's log is each team's ground truth.
    // Cost centres of this run only: other tests' clients, which this agent meters too, may
    // send the same headers.
    let run = env::random_hex(3);
    let (cc1, cc2, evil) = (format!("cc1-{run}"), format!("cc2-{run}"), format!("../escape-{run}"));
    let teams = [("search", cc1.as_str()), ("ads", &cc1), ("web", &cc2), ("evil", &evil)];
    let mut truths = Vec::new();
    let mut servers = Vec::new();
    for (i, (team, cc)) in teams.iter().enumerate() {
        let server = case.server(ServerOpts::default());
        let headers = [format!("x-team: {team}"), format!("x-cc: {cc}")];
        let extra = ["-H", &headers[0], "-H", &headers[1]];
        for _ in 0..(i % 2 + 1) {
            case.curl_chat(&server, &extra);
        }
        if *team == "search" {
            case.curl_chat_model(&server, UNPRICED_MODEL, &extra);
        }
        servers.push(server);
    }
    // A call with a team but no cost centre, and one no rule matches: the unassigned invoice.
    let loose = case.server(ServerOpts::default());
    case.curl_chat(&loose, &["-H", "x-team: misc"]);
    case.openai(&loose, "chat");
    for (server, (team, cc)) in servers.iter().zip(teams) {
        let n = server.entries().len();
        let recs = case.wait_records(server, n);
        for r in &recs {
            assert_eq!((r["team"].as_str(), r["cost_center"].as_str()), (Some(team), Some(cc)), "attribution");
        }
        truths.push(truth(team, cc, server));
    }
    case.wait_records(&loose, 2);
    // Every call is in the ledger (commits are at most a second apart)…
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for s in servers.iter().chain([&loose]) {
        while calls_for_port(&ledger, s.port) < s.entries().len() as i64 {
            assert!(std::time::Instant::now() < deadline, "the ledger never held the calls to port {}", s.port);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // …and the period ends in the past, after any call started before its end was committed,
    // so the ledger's content for the period no longer changes (other processes' calls too).
    let to_time = SystemTime::now() + Duration::from_secs(1);
    std::thread::sleep(Duration::from_secs(5));
    let (from, to) = (rfc3339(from_time), rfc3339(to_time));
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let work = env::temp_subdir("invoice-out");
    let (out1, out2) = (work.join("run1"), work.join("run2/new"));
    report(&ledger, &from, &to, &out1);
    report(&ledger, &from, &to, &out2);
    let sums = ledger_sums(&ledger, secs(from_time), secs(to_time));
    let (invoices1, invoices2) = (invoices_by_key(&out1), invoices_by_key(&out2));
    assert_eq!(invoices1.len(), sums.len(), "one invoice per cost centre of the ledger");

    // Invoice = ledger, to the cent, for every cost centre (the unassigned one included).
    for (cc, (calls, pico)) in &sums {
        let key = cc.clone().unwrap_or("unassigned".into());
        let (html, csv) = &invoices1[&key];
        let dom = DomInvoice::parse(&dump_dom(html, &work));
        let total = cents(dom.one("total"));
        assert_eq!(total, round_cents(*pico), "{key}: invoice total vs the ledger's sum of cost_pusd ({pico} pUSD)");
        assert_eq!(dom.lines.iter().map(|l| l.amount_cents).sum::<i128>(), total, "{key}: lines add up to the total");
        let subtotals: i128 = dom.fields["subtotal"].iter().map(|s| cents(s)).sum();
        assert_eq!(subtotals, total, "{key}: subtotals add up to the total");
        assert_eq!(dom.one("calls").parse::<u64>().unwrap(), *calls, "{key}: calls");
        // The CSV says the same, line for line.
        let records = parse_csv(&std::fs::read_to_string(csv).unwrap());
        let header = &records[0];
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        assert_eq!(records.len() - 1, dom.lines.len(), "{key}: CSV and HTML line items");
        for (r, l) in records[1..].iter().zip(&dom.lines) {
            assert_eq!(r[col("invoice_id")], dom.id);
            assert_eq!(r[col("key")], cc.clone().unwrap_or("unassigned".into()));
            assert_eq!(
                (r[col("team")].as_str(), r[col("token_type")].as_str()),
                (l.team.as_str(), l.token_type.as_str())
            );
            assert_eq!(r[col("tokens")].parse::<u64>().unwrap(), l.tokens);
            assert_eq!(cents(&r[col("amount_usd")]), l.amount_cents);
        }
        // The same ledger and period give the same id.
        let again = DomInvoice::parse(&std::fs::read_to_string(&invoices2[&key].0).unwrap());
        assert_eq!(again.id, dom.id, "{key}: invoice id across two runs");
    }
    // A key value cannot steer a file out of the directory.
    let escaped = format!("escape-{run}");
    assert!(!work.join(&escaped).exists() && !out1.parent().unwrap().join(&escaped).exists());
    let evil_html = invoices1[&evil].0.file_name().unwrap().to_string_lossy().into_owned();
    assert!(evil_html.starts_with(&format!("invoice_cost_center_~2E~2E~2Fescape-{run}_")), "{evil_html}");

    // The server's own numbers, priced by hand: each team's lines and each cost centre's total.
    let per_cc = |cc: &str| truths.iter().filter(|t| t.cost_center == cc).collect::<Vec<_>>();
    for cc in [&cc1, &cc2, &evil] {
        let html = &invoices1[cc].0;
        let png = screenshot(html, &work);
        let dom = DomInvoice::parse(&dump_dom(html, &work));
        let exact: i128 = per_cc(cc).iter().map(|t| t.exact_pico).sum();
        assert_eq!(cents(dom.one("total")), round_cents(exact), "{cc}: total vs the server's usage × prices");
        assert_eq!(dom.one("key"), cc);
        assert!(dom.one("pricing-versions").contains("2026-11-invoice-test"), "{cc}: pricing version");
        for t in per_cc(cc) {
            for (i, kind) in ["input", "cached_input", "output", "reasoning"].into_iter().enumerate() {
                let priced: Vec<_> = dom
                    .lines
                    .iter()
                    .filter(|l| l.team == t.team && l.token_type == kind && l.unit_price.is_some())
                    .collect();
                assert_eq!(priced.len(), 1, "{cc}/{}: one {kind} line at one price", t.team);
                assert_eq!(
                    (priced[0].model.as_str(), priced[0].tokens),
                    ("gpt-4o-mini", t.tokens[i]),
                    "{cc}/{} {kind}",
                    t.team
                );
                let unpriced: Vec<_> = dom
                    .lines
                    .iter()
                    .filter(|l| l.team == t.team && l.token_type == kind && l.unit_price.is_none())
                    .collect();
                if t.unpriced_tokens[i] > 0 {
                    assert_eq!(unpriced.len(), 1, "{cc}/{}: the unpriced {kind} line", t.team);
                    assert_eq!(
                        (unpriced[0].model.as_str(), unpriced[0].tokens, unpriced[0].amount_cents),
                        (UNPRICED_MODEL, t.unpriced_tokens[i], 0)
                    );
                } else {
                    assert!(unpriced.is_empty(), "{cc}/{}: {unpriced:?}", t.team);
                }
            }
        }
        assert!(png.is_file());
    }
    // Another run into the same directory replaces the same invoices (nothing else is there).
    let before: Vec<_> = std::fs::read_dir(&out1).unwrap().map(|e| e.unwrap().file_name()).collect();
    report(&ledger, &from, &to, &out1);
    let after: Vec<_> = std::fs::read_dir(&out1).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before.len(), after.len());
    assert_eq!(before.len(), 2 * sums.len(), "an HTML and a CSV per cost centre, nothing else");
    // A file that is not this invoice under its name is not overwritten; nor is a file given
    // as the output directory.
    let csv = &invoices1[&cc2].1;
    std::fs::write(csv, "someone's notes\n").unwrap();
    report_refused(&ledger, &from, &to, &out1, csv);
    report_refused(&ledger, &from, &to, csv, csv);
    // Neither the ledger nor an invoice holds a prompt, a completion or the API key.
    for s in servers.iter().chain([&loose]) {
        case.finish(s);
    }
    let secrets = case.secrets();
    let mut files = vec![ledger.clone()];
    for dir in [&out1, &out2] {
        files.extend(std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()));
    }
    for f in files {
        let data = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(!data.contains(s.as_str()), "{} holds a secret of the test", f.display());
        }
    }
}
