use jiff::tz::TimeZone;

use super::*;
use crate::ledger::read::LedgerSource;
use crate::report::rows::UsageSource;
use crate::report::test_ledger::{ledger, temp_dir, Call};

/// A report over a real ledger: two teams, two models, one call without a cost centre.
fn report(by: &[Dim], tz: TimeZone) -> (Report, std::path::PathBuf) {
    let dir = temp_dir("format");
    let path = dir.join("l.db");
    let mut a = Call::new("2026-11-03T10:15:00Z", "search", "gpt-4o", 1234, 56);
    a.cost_center = Some("cc-1");
    let mut b = Call::new("2026-11-03T23:30:00Z", "search", "gpt-4o-mini", 100, 10);
    b.cost_center = Some("cc-1");
    b.estimated = true;
    let mut c = Call::new("2026-11-05T08:00:00Z", "unattributed", "gpt-4o", 10, 1);
    c.http_status = 500;
    c.tokens = Default::default();
    let mut d = Call::new("2026-11-05T09:00:00Z", "team \"<x>\", | y", "gpt-4o", 7, 3);
    d.cost_center = Some("cc-2");
    drop(ledger(&path, "l1", &[a, b, c, d]));
    let src = LedgerSource::open(std::slice::from_ref(&path)).unwrap();
    let zone = tz.iana_name().map(str::to_string);
    let args = crate::report::period::PeriodArgs { month: Some("2026-11"), tz: zone.as_deref(), ..Default::default() };
    let period = crate::report::period::resolve(args, jiff::Timestamp::now()).unwrap();
    assert_eq!(period.tz, tz);
    let rows = src.rows(&period).unwrap();
    (Report::new(rows, period, by.to_vec(), src.describe()), dir)
}

fn cost(input: i128, output: i128) -> Pico {
    Pico(input * 2_500_000 + output * 10_000_000)
}

#[test]
fn totals_are_exact_sums() {
    let (r, dir) = report(&[Dim::Team], TimeZone::UTC);
    assert_eq!(r.totals.calls, 4);
    assert_eq!(r.totals.errors, 1);
    assert_eq!(r.totals.estimated_calls, 1);
    assert_eq!(r.totals.input_tokens, 1234 + 100 + 7);
    assert_eq!(r.totals.cost, cost(1234 + 100 + 7, 56 + 10 + 3));
    assert_eq!(r.groups.len(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn json_has_the_documented_shape_and_exact_costs() {
    let (r, dir) = report(&[Dim::Team, Dim::CostCenter], TimeZone::UTC);
    let text = json::render(&r);
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["period"]["from"], "2026-11-01T00:00:00Z");
    assert_eq!(v["period"]["to"], "2026-12-01T00:00:00Z");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    let search = groups.iter().find(|g| g["team"] == "search").unwrap();
    assert_eq!(search["cost_center"], "cc-1");
    assert_eq!(search["calls"], 2);
    assert_eq!(search["input_tokens"], 1334);
    assert_eq!(search["estimated_calls"], 1);
    let unattributed = groups.iter().find(|g| g["team"] == "unattributed").unwrap();
    assert!(unattributed["cost_center"].is_null());
    assert_eq!(unattributed["errors"], 1);
    // Key order: the grouping keys, then the counters in FIELDS order.
    let obj = search.as_object().unwrap();
    let names: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut want = vec!["team", "cost_center"];
    want.extend(FIELDS);
    let mut sorted_names = names.clone();
    sorted_names.sort();
    let mut sorted_want = want.clone();
    sorted_want.sort();
    assert_eq!(sorted_names, sorted_want);
    let pos = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
    assert!(
        pos("team") < pos("cost_center")
            && pos("cost_center") < pos("calls")
            && pos("estimated_calls") < pos("cost_usd")
    );
    assert_eq!(v["totals"]["calls"], 4);
    assert_eq!(v["totals"].as_object().unwrap().len(), FIELDS.len());
    // The exact decimal text, not a float's.
    assert!(text.contains(&format!("\"cost_usd\": {}", r.totals.cost.to_decimal())), "{text}");
    assert_eq!(r.totals.cost.to_decimal(), "0.0040425");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn csv_parses_back_to_the_groups() {
    let (r, dir) = report(&[Dim::Team, Dim::Model], TimeZone::UTC);
    let text = csv::render(&r).unwrap();
    let mut rd = ::csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_string).collect();
    let mut want = vec!["team".to_string(), "model".to_string()];
    want.extend(FIELDS.iter().map(|f| f.to_string()));
    assert_eq!(header, want);
    let recs: Vec<::csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), r.groups.len());
    let calls: u64 = recs.iter().map(|x| x[2].parse::<u64>().unwrap()).sum();
    assert_eq!(calls, 4);
    // A value with quotes, comma and pipe survives.
    assert!(recs.iter().any(|x| &x[0] == "team \"<x>\", | y" && &x[1] == "gpt-4o-snap"));
    let costs: Vec<String> = recs.iter().map(|x| x[9].to_string()).collect();
    let want_costs: Vec<String> = r.groups.iter().map(|(_, c)| c.cost.to_decimal()).collect();
    assert_eq!(costs, want_costs);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn table_and_markdown_show_every_group_and_the_total() {
    let (r, dir) = report(&[Dim::Team], TimeZone::UTC);
    let t = table::render(&r);
    assert!(t.lines().nth(1).unwrap().starts_with("team"), "{t}");
    let total = t.lines().last().unwrap();
    assert!(total.starts_with("TOTAL") && total.contains(" 1341 ") && total.ends_with("0.004043"), "{t}");
    assert_eq!(t.lines().count(), 1 + 1 + 3 + 2);
    let m = markdown::render(&r);
    assert!(m.contains("| team | calls | errors |"), "{m}");
    assert!(m.contains("| search | 2 | 0 | 1334 |"), "{m}");
    // Pipes in values are escaped, so the row keeps its columns.
    assert!(m.contains("team \"\\<x\\>\", \\| y"), "{m}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn html_is_self_contained_and_carries_the_exact_numbers() {
    let (r, dir) = report(&[Dim::Team], TimeZone::get("Europe/Paris").unwrap());
    let h = html::render(&r);
    for forbidden in ["<script", "<link", "@import", "url(", "src=", "https://"] {
        assert!(!h.contains(forbidden), "{forbidden} in the page");
    }
    // Only the SVG namespace URI, which is no request.
    assert_eq!(h.matches("http://").count(), h.matches("http://www.w3.org/2000/svg").count());
    assert!(h.contains(r#"data-from="2026-11-01T00:00:00+01:00""#), "the period in --tz");
    assert!(h.contains(r#"<td class="n" data-field="input_tokens" data-value="1341">1341</td>"#));
    assert!(h.contains(&format!(r#"data-field="cost_usd" data-value="{}""#, r.totals.cost.to_decimal())));
    // 1 of 4 calls unattributed; 1 of 4 estimated.
    assert!(h.contains(r#"id="unattributed" data-calls="1" data-cost="0" data-share="0.250000""#), "{h}");
    assert!(h.contains(r#"id="estimated" data-calls="1" data-reported="3""#));
    // Days in Paris: the 23:30Z call is on the 4th there; the period is 30 bars.
    assert_eq!(h.matches("<rect class=\"bar\"").count(), 30);
    assert!(h.contains(r#"data-day="2026-11-04" data-calls="1""#), "{h}");
    assert!(h.contains(r#"data-day="2026-11-03" data-calls="1""#));
    assert!(h.contains(r#"data-day="2026-11-05" data-calls="2""#));
    assert!(h.contains("id=\"top-teams\"") && h.contains("id=\"top-models\""));
    // Values are escaped.
    assert!(h.contains("team &quot;&lt;x&gt;&quot;, | y") && !h.contains("<x>"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn human_usd_rounds_to_micro() {
    assert_eq!(usd_human(Pico(0)), "0.00");
    assert_eq!(usd_human(Pico(12_500_000_000_000)), "12.50");
    assert_eq!(usd_human(Pico(185_100_000)), "0.000185");
    assert_eq!(usd_human(Pico(185_500_000)), "0.000186");
    assert_eq!(usd_human(Pico(-185_500_000)), "-0.000186");
    assert_eq!(usd_human(Pico(1_000_000_000_000)), "1.00");
}
