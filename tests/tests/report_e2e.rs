//! `tokentap report` end to end: a real agent (eBPF) meters real curl calls to the fake LLM
//! server into its ledger; reports over that ledger must give, in every format, exactly the
//! calls made (the server's log is the ground truth for tokens, the ledger's own rows for
//! cost), merge ledgers by adding them, and render an HTML page headless Chromium opens.
//!
//! Every agent meters the whole host, so other tests' calls land in the same ledgers: each
//! test tags its calls with request headers that the mapping turns into teams and cost
//! centres of its own, and reports over a consistent snapshot of the live ledger.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use jiff::Timestamp;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokentap_tests::case::{CHAT_MODEL, SYSTEM_PROMPT};
use tokentap_tests::expect::{Expected, Tokens};
use tokentap_tests::report::{
    attr, cells, chromium, element_by_id, ledger_sums, parse_usd, report, report_ok, snapshot, usd_human,
    wait_ledger_calls, ExtraAgent, Sums, FIELDS,
};
use tokentap_tests::{agent, clients, env, require_bpf, Case, LlmServer, ServerOpts};

const MAPPING: &str = r#"
[[rule]]
name = "report-tests"
[rule.match]
headers = { "x-team" = "*", "x-cc" = "*" }
[rule.set]
team = "{header.x-team}"
cost_center = "{header.x-cc}"
"#;

/// The agent configuration of this binary (its mapping file is written once).
fn config() -> &'static str {
    static CONFIG: OnceLock<String> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mapping = env::temp_root().join("report-mapping.toml");
        std::fs::write(&mapping, MAPPING).unwrap();
        format!("[attribution]\nmapping_file = \"{}\"\n", mapping.display())
    })
}

fn shared_agent() -> &'static agent::Agent {
    agent::configure(config());
    agent::agent()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A chat completion; the server reports usage.
    Chat(&'static str),
    /// A streamed chat without usage: tokentap estimates the tokens.
    StreamNoUsage,
    /// A request the server refuses (400, invalid JSON): an error with zero tokens.
    BadRequest,
}

/// One call as `team` / `cost_center` (request headers the mapping copies).
fn call(case: &Case, server: &LlmServer, team: &str, cc: &str, kind: Kind) {
    let (th, ch) = (format!("x-team: {team}"), format!("x-cc: {cc}"));
    let model = match kind {
        Kind::Chat(m) => m,
        _ => CHAT_MODEL,
    };
    let mut body = json!({
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": case.prompt()}],
    });
    let mut extra = vec!["-H", th.as_str(), "-H", ch.as_str()];
    if kind == Kind::StreamNoUsage {
        body["stream"] = json!(true);
    }
    if kind == Kind::BadRequest {
        // A second --data-binary is appended with '&': the body is no longer JSON.
        extra.extend(["--data-binary", "x"]);
    }
    let run = clients::curl_post_json(server, "/v1/chat/completions", &case.api_key, &body, &extra);
    case.expect_ok(&run);
    let want = if kind == Kind::BadRequest { "400" } else { "200" };
    assert_eq!(run.stdout.trim(), want, "HTTP status");
}

/// Makes `plan`'s calls, checks each record against the server's log, and returns the
/// records' sums per (team, cost_center): the ground truth for the report.
fn make_calls(case: &Case, server: &LlmServer, plan: &[(&str, &str, Kind)]) -> BTreeMap<(String, String), Sums> {
    for (team, cc, kind) in plan {
        call(case, server, team, cc, *kind);
    }
    let recs = case.wait_records(server, plan.len());
    let entries = server.entries();
    let ok: Vec<&Value> = recs.iter().filter(|r| r["http_status"].as_u64() < Some(400)).collect();
    assert_eq!(ok.len(), entries.len(), "one server log entry per successful call");
    // The counts a report adds up, against the server's log. (Process identity is checked by
    // the capture tests; under load a short-lived curl is at times recorded without comm/exe,
    // an agent race reported separately, which must not fail a report test.)
    for (rec, e) in ok.iter().zip(&entries) {
        let exp = Expected::from_entry(e, server.port);
        let within = |field: &str, t: &Tokens| {
            let got = rec[field].as_u64().unwrap();
            match *t {
                Tokens::Exact(n) => assert_eq!(got, n, "{field}"),
                Tokens::Approx { expected, tolerance } => {
                    assert!(got.abs_diff(expected) <= tolerance, "{field}: {got} vs {expected} ± {tolerance}")
                }
            }
        };
        within("input_tokens", &exp.input_tokens);
        within("output_tokens", &exp.output_tokens);
        assert_eq!(rec["cached_input_tokens"].as_u64(), Some(exp.cached_input_tokens));
        assert_eq!(rec["reasoning_tokens"].as_u64(), Some(exp.reasoning_tokens));
        assert_eq!(rec["usage_source"].as_str(), Some(exp.usage_source.as_str()));
        assert_eq!(rec["response_model"].as_str(), Some(exp.response_model.as_str()));
    }
    let mut sums: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for (rec, (team, cc, kind)) in recs.iter().zip(plan) {
        assert_eq!((rec["team"].as_str(), rec["cost_center"].as_str()), (Some(*team), Some(*cc)), "attribution");
        assert_eq!(rec["http_status"].as_u64() >= Some(400), *kind == Kind::BadRequest);
        let n = |k: &str| rec[k].as_u64().unwrap();
        let s = sums.entry((team.to_string(), cc.to_string())).or_default();
        s.calls += 1;
        s.errors += u64::from(n("http_status") >= 400);
        s.input_tokens += n("input_tokens");
        s.output_tokens += n("output_tokens");
        s.cached_input_tokens += n("cached_input_tokens");
        s.reasoning_tokens += n("reasoning_tokens");
        s.estimated_calls += u64::from(rec["usage_source"] == "estimated");
    }
    case.finish(server);
    sums
}

/// The period of a test: from a second before its first call to a second after its last.
struct Window {
    from: Timestamp,
    to: Timestamp,
}

impl Window {
    fn open() -> Window {
        let from = Timestamp::from_second(Timestamp::now().as_second() - 1).unwrap();
        Window { from, to: from }
    }

    fn close(&mut self) {
        self.to = Timestamp::from_second(Timestamp::now().as_second() + 1).unwrap();
    }

    fn args(&self) -> [String; 4] {
        ["--from".into(), self.from.to_string(), "--to".into(), self.to.to_string()]
    }

    fn ns(&self) -> (i64, i64) {
        (self.from.as_nanosecond() as i64, self.to.as_nanosecond() as i64)
    }
}

fn args<'a>(ledgers: &'a [&'a Path], w: &'a [String; 4], rest: &[&'a str]) -> Vec<&'a str> {
    let mut a: Vec<&str> = Vec::new();
    for l in ledgers {
        a.extend(["--ledger", l.to_str().unwrap()]);
    }
    a.extend(w.iter().map(String::as_str));
    a.extend(rest);
    a
}

/// The ledger's sums per (team, cost_center) in the window.
fn sums_by_team_cc(ledger: &Path, w: &Window) -> BTreeMap<(String, String), Sums> {
    let (from, to) = w.ns();
    ledger_sums(ledger, from, to, &["team", "cost_center"])
        .into_iter()
        .map(|(k, v)| ((k[0].clone().unwrap(), k[1].clone().unwrap_or_default()), v))
        .collect()
}

fn total(sums: &BTreeMap<(String, String), Sums>) -> Sums {
    let mut t = Sums::default();
    sums.values().for_each(|s| t.add(s));
    t
}

/// Counters from a JSON group or totals object (cost exactly, from its decimal text).
fn json_sums(obj: &BTreeMap<String, Box<RawValue>>) -> Sums {
    let n = |k: &str| -> u64 { obj[k].get().parse().unwrap_or_else(|_| panic!("{k}: {}", obj[k].get())) };
    Sums {
        calls: n("calls"),
        errors: n("errors"),
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cached_input_tokens: n("cached_input_tokens"),
        reasoning_tokens: n("reasoning_tokens"),
        estimated_calls: n("estimated_calls"),
        cost_pusd: parse_usd(obj["cost_usd"].get()),
    }
}

/// A JSON report with its numbers kept as written (costs are exact decimals, not floats).
struct JsonReport {
    period: BTreeMap<String, String>,
    groups: Vec<BTreeMap<String, Box<RawValue>>>,
    totals: BTreeMap<String, Box<RawValue>>,
}

fn parse_json(text: &str) -> JsonReport {
    let top: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).expect("JSON report parses");
    let mut names: Vec<&str> = top.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["groups", "period", "totals"]);
    JsonReport {
        period: serde_json::from_str(top["period"].get()).expect("period: {from, to}"),
        groups: serde_json::from_str(top["groups"].get()).expect("groups: [objects]"),
        totals: serde_json::from_str(top["totals"].get()).expect("totals: object"),
    }
}

fn key_text(v: &RawValue) -> String {
    serde_json::from_str::<Option<String>>(v.get()).unwrap().unwrap_or_default()
}

#[test]
fn report_totals_equal_the_calls_in_every_format() {
    if !require_bpf() {
        return;
    }
    let a = shared_agent();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let tag = env::random_hex(4);
    let (ta, tb) = (format!("rpt{tag}-a"), format!("rpt{tag}-b"));
    let (c1, c2) = (format!("cc{tag}-1"), format!("cc{tag}-2"));
    let mut w = Window::open();
    let plan = [
        (ta.as_str(), c1.as_str(), Kind::Chat(CHAT_MODEL)),
        (ta.as_str(), c1.as_str(), Kind::Chat(CHAT_MODEL)),
        (ta.as_str(), c2.as_str(), Kind::Chat("gpt-4o")),
        (tb.as_str(), c1.as_str(), Kind::StreamNoUsage),
        (tb.as_str(), c1.as_str(), Kind::BadRequest),
    ];
    let truth = make_calls(&case, &server, &plan);
    w.close();
    wait_ledger_calls(&a.ledger, &format!("team IN ('{ta}', '{tb}')"), plan.len() as u64);
    let dir = env::temp_subdir("report-formats");
    let snap = dir.join("snapshot.db");
    snapshot(&a.ledger, &snap);

    // The ledger holds exactly the records (tokens), and every call's cost is tokens × price.
    let ledger = sums_by_team_cc(&snap, &w);
    let mut expected = BTreeMap::new();
    for (k, t) in &truth {
        let l = ledger[k];
        assert_eq!(Sums { cost_pusd: 0, ..l }, *t, "ledger vs records for {k:?}");
        assert!(l.cost_pusd > 0 || t.input_tokens + t.output_tokens == 0, "{k:?} is priced");
        expected.insert(k.clone(), l);
    }
    assert_eq!(expected.len(), 3);
    let all = total(&ledger);
    let wa = w.args();
    let ledgers = [snap.as_path()];

    // JSON: the documented shape, exact costs, totals over every call of the period.
    let text = report_ok(&args(&ledgers, &wa, &["--by", "team,cost_center", "--format", "json"]));
    let j = parse_json(&text);
    assert_eq!(j.period["from"], w.from.to_string());
    assert_eq!(j.period["to"], w.to.to_string());
    let got: BTreeMap<(String, String), Sums> =
        j.groups.iter().map(|g| ((key_text(&g["team"]), key_text(&g["cost_center"])), json_sums(g))).collect();
    for (k, s) in &expected {
        assert_eq!(got.get(k), Some(s), "json group {k:?}");
    }
    assert_eq!(got, ledger, "json groups = the ledger's calls of the period");
    assert_eq!(json_sums(&j.totals), all, "json totals");
    let first_keys: Vec<&String> = j.groups[0].keys().collect();
    assert_eq!(first_keys.len(), 2 + FIELDS.len());

    // One key: a team's row is the sum of its cost centres.
    let text = report_ok(&args(&ledgers, &wa, &["--by", "team", "--format", "json"]));
    let j = parse_json(&text);
    let team_a = j.groups.iter().find(|g| key_text(&g["team"]) == ta).map(json_sums).expect("team a");
    let mut want_a = expected[&(ta.clone(), c1.clone())];
    want_a.add(&expected[&(ta.clone(), c2.clone())]);
    assert_eq!(team_a, want_a);

    // CSV parses back to the same groups; no total line.
    let text = report_ok(&args(&ledgers, &wa, &["--by", "team,cost_center", "--format", "csv"]));
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(header[..2], ["team", "cost_center"]);
    assert_eq!(header[2..], FIELDS);
    let mut got = BTreeMap::new();
    for rec in rd.records() {
        let rec = rec.expect("CSV record");
        let n = |i: usize| rec[i].parse::<u64>().unwrap();
        let s = Sums {
            calls: n(2),
            errors: n(3),
            input_tokens: n(4),
            output_tokens: n(5),
            cached_input_tokens: n(6),
            reasoning_tokens: n(7),
            estimated_calls: n(8),
            cost_pusd: parse_usd(&rec[9]),
        };
        got.insert((rec[0].to_string(), rec[1].to_string()), s);
    }
    assert_eq!(got, ledger, "csv groups");

    // Table and Markdown: the same numbers, cost rounded to micro-USD.
    let human = |s: &Sums| -> Vec<String> {
        FIELDS.iter().map(|f| if *f == "cost_usd" { usd_human(s.cost_pusd) } else { s.get(f).to_string() }).collect()
    };
    let table = report_ok(&args(&ledgers, &wa, &["--by", "team,cost_center"]));
    for ((t, c), s) in &expected {
        let line =
            table.lines().find(|l| l.split_whitespace().take(2).eq([t.as_str(), c.as_str()])).expect("table row");
        let nums: Vec<&str> = line.split_whitespace().skip(2).collect();
        assert_eq!(nums, human(s), "table row {t} {c}");
    }
    let last: Vec<&str> = table.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(last[0], "TOTAL");
    assert_eq!(last[1..], human(&all));
    let md = report_ok(&args(&ledgers, &wa, &["--by", "team,cost_center", "--format", "markdown"]));
    for ((t, c), s) in &expected {
        let row = md
            .lines()
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect::<Vec<_>>())
            .find(|cols| cols.len() == 10 && cols[0] == t && cols[1] == c)
            .expect("markdown row");
        assert_eq!(row[2..], human(s), "markdown row {t} {c}");
    }

    // --output writes the same bytes as stdout.
    let out = dir.join("report.json");
    let o = out.to_str().unwrap();
    report_ok(&args(&ledgers, &wa, &["--by", "team,cost_center", "--format", "csv", "--output", o]));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
}

#[test]
fn merging_two_ledgers_equals_the_sum_of_each() {
    if !require_bpf() {
        return;
    }
    let shared = shared_agent();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let tag = env::random_hex(4);
    let (tc, td) = (format!("rpt{tag}-c"), format!("rpt{tag}-d"));
    let cc = format!("cc{tag}");
    let mut w = Window::open();
    // Both agents meter the first calls; only the shared one the last.
    let mut extra = ExtraAgent::start(config());
    let both = make_calls(&case, &server, &[(tc.as_str(), cc.as_str(), Kind::Chat(CHAT_MODEL)); 2]);
    wait_ledger_calls(&extra.ledger, &format!("team = '{tc}'"), 2);
    extra.stop();
    let server2 = case.server(ServerOpts::default());
    let one = make_calls(&case, &server2, &[(td.as_str(), cc.as_str(), Kind::Chat("gpt-4o"))]);
    w.close();
    wait_ledger_calls(&shared.ledger, &format!("team IN ('{tc}', '{td}')"), 3);
    let dir = env::temp_subdir("report-merge");
    let (s, e) = (dir.join("shared.db"), dir.join("extra.db"));
    snapshot(&shared.ledger, &s);
    snapshot(&extra.ledger, &e);
    let wa = w.args();
    let json = |ledgers: &[&Path]| -> JsonReport {
        parse_json(&report_ok(&args(ledgers, &wa, &["--by", "team", "--format", "json"])))
    };
    let by_team = |j: &JsonReport| -> BTreeMap<String, Sums> {
        j.groups.iter().map(|g| (key_text(&g["team"]), json_sums(g))).collect()
    };
    let (js, je, jm) = (json(&[&s]), json(&[&e]), json(&[&s, &e]));
    let (gs, ge, gm) = (by_team(&js), by_team(&je), by_team(&jm));
    let mut sum = json_sums(&js.totals);
    sum.add(&json_sums(&je.totals));
    assert_eq!(json_sums(&jm.totals), sum, "merged totals = the sum of each ledger's");
    for (team, m) in &gm {
        let mut want = gs.get(team).copied().unwrap_or_default();
        want.add(&ge.get(team).copied().unwrap_or_default());
        assert_eq!(*m, want, "merged team {team}");
    }
    // The ground truth: team c's calls are in both ledgers, team d's only in the shared one.
    let truth_c = both[&(tc.clone(), cc.clone())];
    let truth_d = one[&(td.clone(), cc.clone())];
    let strip = |s: &Sums| Sums { cost_pusd: 0, ..*s };
    assert_eq!(strip(&gs[&tc]), truth_c);
    assert_eq!(strip(&ge[&tc]), truth_c);
    assert_eq!(gm[&tc].calls, 4);
    assert_eq!(strip(&gs[&td]), truth_d);
    assert!(!ge.contains_key(&td), "the extra agent was stopped before team d's call");
    assert_eq!(gm[&td], gs[&td]);

    // A copy of a ledger is the same ledger: refused, not counted twice.
    let copy = dir.join("copy.db");
    std::fs::copy(&s, &copy).unwrap();
    let out = report(&args(&[&s, &copy], &wa, &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("same ledger") && err.contains("copy.db"), "{err}");

    // A period without calls names the files and when their calls are.
    let before = std::fs::read(&s).unwrap();
    let sp = s.to_str().unwrap();
    let out = report(&["--ledger", sp, "--from", "2001-01-01", "--to", "2001-02-01"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(sp) && err.contains("no calls from 2001-01-01T00:00:00Z") && err.contains("it holds calls from"),
        "{err}"
    );
    assert_eq!(std::fs::read(&s).unwrap(), before);
}

/// PNG signature and the IHDR width and height.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG ({} bytes)", png.len());
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn html_report_opens_in_chromium_with_the_ledgers_numbers() {
    if !require_bpf() {
        return;
    }
    let a = shared_agent();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let tag = env::random_hex(4);
    let te = format!("rpt{tag}-e");
    let cc = format!("cc{tag}");
    let mut w = Window::open();
    let plan = [
        (te.as_str(), cc.as_str(), Kind::Chat(CHAT_MODEL)),
        (te.as_str(), cc.as_str(), Kind::Chat("gpt-4o")),
        (te.as_str(), cc.as_str(), Kind::StreamNoUsage),
    ];
    let truth = make_calls(&case, &server, &plan);
    w.close();
    wait_ledger_calls(&a.ledger, &format!("team = '{te}'"), 3);
    let dir = env::temp_subdir("report-html");
    let snap = dir.join("snapshot.db");
    snapshot(&a.ledger, &snap);
    let (from, to) = w.ns();
    let all = total(&sums_by_team_cc(&snap, &w));
    let teams = ledger_sums(&snap, from, to, &["team"]);
    let mine = teams[&vec![Some(te.clone())]];
    assert_eq!(Sums { cost_pusd: 0, ..mine }, truth[&(te.clone(), cc.clone())]);

    let html = dir.join("report.html");
    let wa = w.args();
    let out_arg = html.to_str().unwrap();
    report_ok(&args(&[&snap], &wa, &["--by", "team", "--format", "html", "--tz", "Europe/Paris", "--output", out_arg]));
    let (png, dom) = chromium(&html, &dir, (1200, 2400));
    assert_eq!(png_size(&png), (1200, 2400), "screenshot at the window size");

    // The period, in --tz.
    let period = element_by_id(&dom, "p", "period");
    let paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    assert_eq!(
        attr(period, "data-from").unwrap(),
        w.from.to_zoned(paris.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    );
    // Totals: every counter equals the ledger's sum over the period.
    let totals = element_by_id(&dom, "table", "totals");
    let cs = cells(totals);
    assert_eq!(cs.len(), FIELDS.len());
    for (name, value) in cs {
        let v = value.unwrap();
        let got = if name == "cost_usd" { parse_usd(&v) } else { v.parse().unwrap() };
        assert_eq!(got, all.get(&name), "#totals {name}");
    }
    // This test's team row in the grouped table.
    let groups = element_by_id(&dom, "table", "groups");
    let row = groups
        .split("<tr")
        .find(|r| r.contains(&format!("data-value=\"{te}\"")))
        .unwrap_or_else(|| panic!("no row for {te}"));
    let cs = cells(&format!("<tr{row}"));
    assert_eq!(cs[0], ("team".to_string(), Some(te.clone())));
    for (name, value) in &cs[1..] {
        let v = value.clone().unwrap();
        let got = if name == "cost_usd" { parse_usd(&v) } else { v.parse().unwrap() };
        assert_eq!(got, mine.get(name), "#groups {te} {name}");
    }
    // Shares: unattributed calls (other tests') and estimated calls, as the ledger has them.
    let unattributed = teams.get(&vec![Some("unattributed".to_string())]).copied().unwrap_or_default();
    let ua = element_by_id(&dom, "div", "unattributed");
    assert_eq!(attr(ua, "data-calls").unwrap(), unattributed.calls.to_string());
    assert_eq!(parse_usd(&attr(ua, "data-cost").unwrap()), unattributed.cost_pusd);
    let est = element_by_id(&dom, "div", "estimated");
    assert_eq!(attr(est, "data-calls").unwrap(), all.estimated_calls.to_string());
    assert!(all.estimated_calls >= 1);
    // Trend: one bar per day in Paris, adding up to the total.
    let trend = element_by_id(&dom, "svg", "trend");
    let bars: Vec<&str> = trend.match_indices("<rect").map(|(i, _)| &trend[i..]).collect();
    assert!(!bars.is_empty());
    let calls: u64 = bars.iter().map(|b| attr(b, "data-calls").unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(calls, all.calls);
    let days: Vec<String> = [w.from, w.to].iter().map(|t| t.to_zoned(paris.clone()).date().to_string()).collect();
    let on_our_days: u64 = bars
        .iter()
        .filter(|b| attr(b, "data-day").is_some_and(|d| days.contains(&d)))
        .map(|b| attr(b, "data-calls").unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(on_our_days >= mine.calls, "the bars of the calls' days hold them");
    // Top teams lists this team with its calls.
    let top = element_by_id(&dom, "table", "top-teams");
    assert!(top.contains(&format!("data-key=\"{te}\"")) || teams.len() > 10, "{te} in the top teams");
    // Self-contained: nothing to fetch.
    let page = std::fs::read_to_string(&html).unwrap();
    for bad in ["<script", "<link", "src=", "url(", "https://"] {
        assert!(!page.contains(bad), "{bad} in the report");
    }
}
