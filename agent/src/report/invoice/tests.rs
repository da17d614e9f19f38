use std::path::Path;

use jiff::tz::TimeZone;

use super::*;
use crate::money::{Cents, Pico, UnitPrice, PICO_PER_USD};
use crate::pricing::{Price, Tokens};
use crate::report::rows::{Counters, Keys, Priced};

fn period() -> Period {
    Period {
        from: "2026-11-01T00:00:00Z".parse().unwrap(),
        to: "2026-12-01T00:00:00Z".parse().unwrap(),
        tz: TimeZone::UTC,
    }
}

fn price(input: i64, cached: i64, output: i64, reasoning: i64) -> Price {
    Price {
        input: UnitPrice(input),
        cached_input: UnitPrice(cached),
        output: UnitPrice(output),
        reasoning: UnitPrice(reasoning),
    }
}

fn priced(model: &str, p: Price, table: &str) -> Option<Priced> {
    Some(Priced { model: model.into(), price: p, table: table.into() })
}

/// A row of `calls` calls with these token sums; its cost is the price formula's.
fn row(cc: Option<&str>, team: &str, model: &str, p: Option<Priced>, t: [u64; 4], calls: u64) -> Row {
    let mut keys = Keys::default();
    keys.set(Dim::CostCenter, cc.map(str::to_string));
    keys.set(Dim::Team, Some(team.into()));
    keys.set(Dim::Model, Some(model.into()));
    let tokens = Tokens { input: t[0], cached_input: t[1], output: t[2], reasoning: t[3] };
    let cost = p.as_ref().map(|p| p.price.cost(tokens)).unwrap_or_default();
    let counters = Counters {
        calls,
        input_tokens: t[0],
        cached_input_tokens: t[1],
        output_tokens: t[2],
        reasoning_tokens: t[3],
        cost,
        ..Counters::default()
    };
    Row { hour: 1_793_491_200, keys, priced: p, counters }
}

fn gpt(team: &str, cc: &str, t: [u64; 4]) -> Row {
    row(
        Some(cc),
        team,
        "gpt-4o-2024-08-06",
        priced("gpt-4o", price(2_500_000, 1_250_000, 10_000_000, 10_000_000), "2026-10-01"),
        t,
        1,
    )
}

fn lines_of<'a>(inv: &'a Invoice, team: &str, kind: Kind) -> Vec<&'a Line> {
    inv.lines.iter().filter(|l| l.team == team && l.kind == kind).collect()
}

#[test]
fn token_type_lines_add_up_to_the_exact_cost() {
    let rows = [
        gpt("a", "cc1", [1000, 200, 300, 100]),
        gpt("a", "cc1", [17, 0, 3, 0]),
        gpt("b", "cc1", [5, 5, 9, 9]),
        row(
            Some("cc1"),
            "b",
            "o3",
            priced("o3", price(2_000_000, 500_000, 8_000_000, 8_000_000), "2026-10-01"),
            [333, 111, 777, 555],
            2,
        ),
    ];
    let inv = &invoices(&rows, &period(), Dim::CostCenter)[0];
    let exact: Pico = rows.iter().map(|r| r.counters.cost).sum();
    assert_eq!(inv.lines.iter().map(|l| l.exact).sum::<Pico>(), exact);
    assert_eq!(inv.exact, exact);
    assert!(inv.lines.iter().all(|l| l.kind != Kind::Unitemized), "{:?}", inv.lines);
    // Uncached input and visible output: 1000 − 200 + 17 − 0 = 817 input tokens for team a.
    assert_eq!(lines_of(inv, "a", Kind::Input)[0].tokens, 817);
    assert_eq!(lines_of(inv, "a", Kind::Output)[0].tokens, 203);
    assert_eq!(lines_of(inv, "a", Kind::Reasoning)[0].tokens, 100);
    // Team b's gpt-4o calls had only cached input and reasoning: no empty lines.
    let b_gpt: Vec<_> = inv.lines.iter().filter(|l| l.team == "b" && l.model == "gpt-4o").map(|l| l.kind).collect();
    assert_eq!(b_gpt, [Kind::CachedInput, Kind::Reasoning]);
    assert_eq!(inv.calls, 5);
}

#[test]
fn cents_add_up_to_the_lines_and_to_the_exact_cost_rounded_once() {
    // 60 teams × 4 token types, each line a fraction of a cent: rounding each line on its own
    // would be off by many cents.
    let mut rows = Vec::new();
    for i in 0..60u64 {
        rows.push(gpt(&format!("team{i:02}"), "cc", [1_333 + i, 7 + i, 555 + 3 * i, 11]));
    }
    let inv = &invoices(&rows, &period(), Dim::CostCenter)[0];
    let exact: Pico = rows.iter().map(|r| r.counters.cost).sum();
    assert_eq!(inv.total, exact.round_cents());
    assert_eq!(inv.lines.iter().map(|l| l.cents).sum::<Cents>(), inv.total);
    assert_eq!(inv.teams.values().map(|t| t.1).sum::<Cents>(), inv.total);
    let naive: i128 = inv.lines.iter().map(|l| l.exact.round_cents().0).sum();
    assert_ne!(naive, inv.total.0, "the test should have lines whose separate rounding drifts");
    for l in &inv.lines {
        assert!((l.cents.0 * PICO_PER_USD / 100 - l.exact.0).abs() < PICO_PER_USD / 100, "{l:?}");
    }
}

#[test]
fn a_price_change_within_the_period_gives_a_line_per_price() {
    let old = priced("gpt-4o", price(2_500_000, 1_250_000, 10_000_000, 10_000_000), "2026-10-01");
    let new = priced("gpt-4o", price(2_000_000, 1_000_000, 8_000_000, 8_000_000), "2026-11-15");
    let rows = [
        row(Some("cc"), "a", "gpt-4o", old, [1000, 0, 100, 0], 1),
        row(Some("cc"), "a", "gpt-4o", new, [3000, 0, 200, 0], 2),
    ];
    let inv = &invoices(&rows, &period(), Dim::CostCenter)[0];
    let input = lines_of(inv, "a", Kind::Input);
    assert_eq!(input.len(), 2);
    assert_eq!(
        (input[0].tokens, input[0].price, input[0].table.as_deref()),
        (1000, Some(UnitPrice(2_500_000)), Some("2026-10-01"))
    );
    assert_eq!(
        (input[1].tokens, input[1].price, input[1].table.as_deref()),
        (3000, Some(UnitPrice(2_000_000)), Some("2026-11-15"))
    );
    assert_eq!(input[1].exact, Pico(3000 * 2_000_000));
    assert_eq!(inv.tables.iter().collect::<Vec<_>>(), ["2026-10-01", "2026-11-15"]);
}

#[test]
fn unpriced_calls_are_listed_without_price_at_zero() {
    let rows = [gpt("a", "cc", [100, 0, 10, 0]), row(Some("cc"), "a", "mystery-1", None, [4000, 0, 50, 0], 3)];
    let inv = &invoices(&rows, &period(), Dim::CostCenter)[0];
    let unpriced: Vec<_> = inv.lines.iter().filter(|l| l.model == "mystery-1").collect();
    assert_eq!(unpriced.len(), 2);
    for l in &unpriced {
        assert_eq!((l.price, l.exact, l.cents, l.table.as_deref()), (None, Pico(0), Cents(0), None));
    }
    assert_eq!(unpriced[0].tokens, 4000);
    let html = html::render(inv, "test");
    assert!(html.contains("data-model=\"mystery-1\" data-token-type=\"input\""), "{html}");
    assert!(html.contains("data-field=\"unit-price\">unpriced<"), "{html}");
    let csv = csv::render(inv);
    assert!(csv.contains(",a,mystery-1,input,4000,,,0.00,0\r\n"), "{csv}");
}

#[test]
fn cost_without_unit_prices_is_billed_on_an_unitemized_line() {
    // A Prometheus source: cost from the agents' counter, no unit prices.
    let mut r = row(Some("cc"), "a", "gpt-4o", None, [100, 0, 10, 0], 1);
    r.counters.cost = Pico(123_456_789_012);
    let inv = &invoices(&[r], &period(), Dim::CostCenter)[0];
    let rest = lines_of(inv, "a", Kind::Unitemized);
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].exact, rest[0].cents, inv.total), (Pico(123_456_789_012), Cents(12), Cents(12)));
}

#[test]
fn rows_without_a_key_value_go_to_the_unassigned_invoice() {
    let rows = [gpt("a", "cc", [100, 0, 10, 0]), row(None, "b", "m", None, [1, 0, 1, 0], 1)];
    let invs = invoices(&rows, &period(), Dim::CostCenter);
    let keys: Vec<_> = invs.iter().map(|i| i.key_label()).collect();
    assert_eq!(keys, [UNASSIGNED, "cc"]);
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tokentap-invoice-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn field(html: &str, name: &str) -> String {
    let marker = format!("data-field=\"{name}\">");
    let at = html.find(&marker).unwrap() + marker.len();
    html[at..at + html[at..].find('<').unwrap()].to_string()
}

#[test]
fn the_id_is_stable_and_depends_only_on_what_is_billed() {
    let rows = vec![gpt("a", "cc", [1000, 200, 300, 100]), gpt("b", "cc", [50, 0, 5, 0])];
    let (d1, d2) = (tmp("id1"), tmp("id2"));
    let f1 = write(&rows, &period(), Dim::CostCenter, &d1, "ledger one").unwrap();
    let mut reversed = rows.clone();
    reversed.reverse();
    let f2 = write(&reversed, &period(), Dim::CostCenter, &d2.join("new/sub"), "ledger two").unwrap();
    let id = |f: &Path| field(&std::fs::read_to_string(f).unwrap(), "invoice-id");
    assert_eq!(id(&f1[0]), id(&f2[0]));
    assert!(id(&f1[0]).starts_with("TT-"), "{}", id(&f1[0]));
    assert_eq!(f1[0].file_name(), f2[0].file_name());
    assert_eq!(f1[0].file_name().unwrap(), "invoice_cost_center_cc_2026-11.html");
    // Another call, another period, another key: another id.
    let base = &invoices(&rows, &period(), Dim::CostCenter)[0].id;
    let mut more = rows.clone();
    more.push(gpt("a", "cc", [1, 0, 0, 0]));
    assert_ne!(&invoices(&more, &period(), Dim::CostCenter)[0].id, base);
    let mut p = period();
    p.to = "2026-11-30T00:00:00Z".parse().unwrap();
    assert_ne!(&invoices(&rows, &p, Dim::CostCenter)[0].id, base);
    assert_ne!(&invoices(&rows, &period(), Dim::Team)[0].id, base);
    // The written numbers are the invoice's.
    let html = std::fs::read_to_string(&f1[0]).unwrap();
    let inv = &invoices(&rows, &period(), Dim::CostCenter)[0];
    assert_eq!(field(&html, "total"), inv.total.to_string());
    let _ = (std::fs::remove_dir_all(d1), std::fs::remove_dir_all(d2));
}

#[test]
fn key_values_cannot_leave_the_directory_or_collide() {
    let d = tmp("paths");
    let evil =
        ["../x", "/etc/passwd", "..", ".", "", "unassigned", "a/b", "a%2Fb", "a~2Fb", "x\ny", "é", &"z".repeat(300)];
    let mut rows: Vec<Row> = evil.iter().map(|k| gpt("a", k, [10, 0, 1, 0])).collect();
    rows.push(row(None, "a", "m", None, [1, 0, 1, 0], 1));
    let files = write(&rows, &period(), Dim::CostCenter, &d, "t").unwrap();
    assert_eq!(files.len(), 2 * (evil.len() + 1));
    let mut names = std::collections::BTreeSet::new();
    for f in &files {
        assert_eq!(f.parent().unwrap(), d, "{}", f.display());
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(!name.contains('/') && !name.starts_with('.') && name.len() < 200, "{name}");
        assert!(f.is_file(), "{name}");
        assert!(names.insert(name.to_string()), "{name} twice");
    }
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), files.len(), "nothing else was written");
    assert!(names.contains("invoice_cost_center_unassigned_2026-11.csv"));
    assert!(names.contains("invoice_cost_center_~2E~2E~2Fx_2026-11.html"));
    // A second run replaces every one of them (line breaks in a key included).
    assert_eq!(write(&rows, &period(), Dim::CostCenter, &d, "t").unwrap(), files);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn only_the_same_invoice_is_overwritten() {
    let d = tmp("overwrite");
    let mut rows = vec![gpt("a", "cc", [1000, 0, 10, 0])];
    let files = write(&rows, &period(), Dim::CostCenter, &d, "t").unwrap();
    // More calls since: the new version replaces the old one.
    rows.push(gpt("b", "cc", [1000, 0, 10, 0]));
    assert_eq!(write(&rows, &period(), Dim::CostCenter, &d, "t").unwrap(), files);
    assert!(std::fs::read_to_string(&files[1]).unwrap().contains(",b,gpt-4o,"));
    // A file of something else under an invoice's name is left alone, and so are the others.
    std::fs::write(&files[1], "my notes\n").unwrap();
    let html_before = std::fs::read_to_string(&files[0]).unwrap();
    rows.push(gpt("c", "cc", [1000, 0, 10, 0]));
    let e = write(&rows, &period(), Dim::CostCenter, &d, "t").unwrap_err();
    assert!(e.contains(&files[1].display().to_string()) && e.contains("not this invoice"), "{e}");
    assert_eq!(std::fs::read_to_string(&files[1]).unwrap(), "my notes\n");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), html_before);
    // An output "directory" that is a file is named.
    let e = write(&rows, &period(), Dim::CostCenter, &files[1], "t").unwrap_err();
    assert!(e.starts_with(&files[1].display().to_string()), "{e}");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn periods_name_files_by_month_or_by_their_ends() {
    let mut p = period();
    assert_eq!(names::period_label(&p), "2026-11");
    p.to = "2026-11-15T12:30:00Z".parse().unwrap();
    assert_eq!(names::period_label(&p), "2026-11-01_2026-11-15T1230");
    let paris = TimeZone::get("Europe/Paris").unwrap();
    let p = Period {
        from: "2026-10-31T23:00:00Z".parse().unwrap(),
        to: "2026-11-30T23:00:00Z".parse().unwrap(),
        tz: paris,
    };
    assert_eq!(names::period_label(&p), "2026-11");
    assert_eq!(format::period_ends(&p).0, "2026-11-01T00:00:00+01:00");
}

#[test]
fn key_values_are_escaped_in_html_and_quoted_in_csv() {
    let rows = [gpt("<b>\"x\"</b>", "a&b,'c'\n", [10, 0, 1, 0])];
    let inv = &invoices(&rows, &period(), Dim::CostCenter)[0];
    let html = html::render(inv, "<source>");
    assert!(!html.contains("<b>") && !html.contains("<source>"), "{html}");
    assert!(html.contains("data-field=\"key\" data-unassigned=\"false\">a&amp;b,&#39;c&#39;\n<"), "{html}");
    assert!(html.contains("&lt;b&gt;&quot;x&quot;&lt;/b&gt;"), "{html}");
    let csv = csv::render(inv);
    assert!(csv.contains("cost_center,\"a&b,'c'\n\",2026-11-01T00:00:00+00:00,"), "{csv}");
    assert!(csv.contains(",\"<b>\"\"x\"\"</b>\",gpt-4o,input,10,"), "{csv}");
}

#[test]
fn no_rows_write_nothing() {
    let d = tmp("empty");
    assert_eq!(write(&[], &period(), Dim::CostCenter, &d, "t").unwrap(), Vec::<std::path::PathBuf>::new());
    assert!(!d.exists());
}
