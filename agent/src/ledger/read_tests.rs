use std::path::PathBuf;

use jiff::tz::TimeZone;

use super::*;
use crate::pricing::Tokens;
use crate::report::rows::{group, Counters};
use crate::report::test_ledger::{insert_rollup, ledger, temp_dir, Call};

fn period(from: &str, to: &str) -> Period {
    Period { from: from.parse().unwrap(), to: to.parse().unwrap(), tz: TimeZone::UTC }
}

fn november() -> Period {
    period("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
}

fn key(v: &[&str]) -> Vec<Option<String>> {
    v.iter().map(|s| Some(s.to_string())).collect()
}

fn calls() -> Vec<Call> {
    let mut cached = Call::new("2026-11-03T10:15:00Z", "search", "gpt-4o", 1000, 200);
    cached.tokens = Tokens { input: 1000, output: 200, cached_input: 400, reasoning: 50 };
    let mut failed = Call::new("2026-11-03T10:59:59.999Z", "search", "gpt-4o", 0, 0);
    failed.http_status = 429;
    let mut estimated = Call::new("2026-11-04T08:00:00Z", "billing", "gpt-4o", 300, 30);
    estimated.estimated = true;
    let mut unpriced = Call::new("2026-11-04T09:00:00Z", "billing", "mystery-1", 10, 5);
    unpriced.price = None;
    vec![
        cached,
        failed,
        estimated,
        unpriced,
        Call::new("2026-11-03T11:00:00Z", "search", "gpt-4o-mini", 100, 10),
        // Outside November: the day before and the first instant after.
        Call::new("2026-10-31T23:59:59.999999999Z", "search", "gpt-4o", 7, 7),
        Call::new("2026-12-01T00:00:00Z", "search", "gpt-4o", 7, 7),
    ]
}

fn total(rows: &[Row]) -> Counters {
    rows.iter().fold(Counters::default(), |mut a, r| {
        a += r.counters;
        a
    })
}

#[test]
fn sums_the_calls_of_the_period_by_hour_and_key() {
    let dir = temp_dir("sums");
    let path = dir.join("a.db");
    let all = calls();
    drop(ledger(&path, "ledger-a", &all));
    let src = LedgerSource::open(std::slice::from_ref(&path)).unwrap();
    let rows = src.rows(&november()).unwrap();
    let t = total(&rows);
    let inside = &all[..5];
    let expected_cost: i128 = inside.iter().filter_map(|c| c.cost_pusd()).map(i128::from).sum();
    assert_eq!(t.calls, 5);
    assert_eq!(t.errors, 1);
    assert_eq!(t.estimated_calls, 1);
    assert_eq!(t.input_tokens, 1000 + 300 + 10 + 100);
    assert_eq!(t.output_tokens, 200 + 30 + 5 + 10);
    assert_eq!((t.cached_input_tokens, t.reasoning_tokens), (400, 50));
    assert_eq!(t.cost, Pico(expected_cost));
    // 1000 in (400 cached) + 200 out (50 reasoning) at 2.5/1.25/10/10 USD per 1M.
    assert_eq!(all[0].cost_pusd(), Some(600 * 2_500_000 + 400 * 1_250_000 + 200 * 10_000_000));

    // The two 10:xx calls share an hour and keys: one row.
    let hour = |s: &str| s.parse::<Timestamp>().unwrap().as_second();
    let r10: Vec<&Row> = rows.iter().filter(|r| r.hour == hour("2026-11-03T10:00:00Z")).collect();
    assert_eq!(r10.len(), 1);
    assert_eq!((r10[0].counters.calls, r10[0].counters.errors), (2, 1));
    assert_eq!(r10[0].keys.get(Dim::Model), Some("gpt-4o-snap"), "the response's model");
    assert_eq!(r10[0].priced.as_ref().map(|p| p.model.as_str()), Some("gpt-4o"));
    assert_eq!(r10[0].priced.as_ref().map(|p| p.price), Some(crate::report::test_ledger::price()));
    let unpriced = rows.iter().find(|r| r.keys.get(Dim::Model) == Some("mystery-1-snap")).unwrap();
    assert_eq!((unpriced.priced.clone(), unpriced.counters.cost), (None, Pico(0)));

    let by_team = group(&rows, &[Dim::Team]);
    assert_eq!(by_team[&key(&["search"])].calls, 3);
    assert_eq!(by_team[&key(&["billing"])].calls, 2);
    let two = group(&rows, &[Dim::Team, Dim::Model]);
    assert_eq!(two.len(), 4);
    assert_eq!(two[&key(&["search", "gpt-4o-snap"])].calls, 2);
    assert_eq!(group(&rows, &[Dim::CostCenter])[&vec![None]].calls, 5);

    // Boundaries: [from, to) to the nanosecond.
    let oct = src.rows(&period("2026-10-31T23:59:59.999999999Z", "2026-11-01T00:00:00Z")).unwrap();
    assert_eq!(total(&oct).calls, 1);
    let dec = src.rows(&period("2026-12-01T00:00:00Z", "2026-12-01T00:00:00.000000001Z")).unwrap();
    assert_eq!(total(&dec).calls, 1);
    assert_eq!(
        src.held_range().unwrap(),
        Some(("2026-10-31T23:59:59.999999999Z".parse().unwrap(), "2026-12-01T00:00:00Z".parse().unwrap()))
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rollups_count_by_whole_hours_starting_in_the_period() {
    let dir = temp_dir("rollups");
    let path = dir.join("r.db");
    let conn = ledger(&path, "ledger-r", &[Call::new("2026-11-10T12:30:00Z", "search", "gpt-4o", 100, 10)]);
    let h = |s: &str| s.parse::<Timestamp>().unwrap().as_second();
    insert_rollup(&conn, h("2026-11-02T05:00:00Z"), "search", "gpt-4o", [40, 4000, 400, 14_000_000_000]);
    insert_rollup(&conn, h("2026-11-02T05:00:00Z"), "search", "gpt-4o", [2, 20, 2, 70_000_000]);
    insert_rollup(&conn, h("2026-10-31T23:00:00Z"), "search", "gpt-4o", [5, 5, 5, 5]);
    drop(conn);
    let src = LedgerSource::open(std::slice::from_ref(&path)).unwrap();
    let rows = src.rows(&november()).unwrap();
    let t = total(&rows);
    assert_eq!((t.calls, t.input_tokens, t.output_tokens), (43, 4120, 412));
    assert_eq!(t.cost, Pico(14_070_000_000 + 100 * 2_500_000 + 10 * 10_000_000));
    // An hour that starts before `from` belongs to the previous period, even if it ends inside.
    let late = src.rows(&period("2026-10-31T23:30:00Z", "2026-11-01T00:00:00Z")).unwrap();
    assert_eq!(total(&late).calls, 0);
    let whole = src.rows(&period("2026-10-31T23:00:00Z", "2026-10-31T23:00:01Z")).unwrap();
    assert_eq!(total(&whole).calls, 5);
    assert_eq!(src.held_range().unwrap().unwrap().0, "2026-10-31T23:00:00Z".parse().unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn two_ledgers_merge_into_the_sum_of_each() {
    let dir = temp_dir("merge");
    let (a, b) = (dir.join("a.db"), dir.join("b.db"));
    drop(ledger(&a, "ledger-a", &calls()));
    drop(ledger(&b, "ledger-b", &[Call::new("2026-11-03T10:20:00Z", "search", "gpt-4o", 50, 5)]));
    let one = |p: &PathBuf| total(&LedgerSource::open(std::slice::from_ref(p)).unwrap().rows(&november()).unwrap());
    let both = LedgerSource::open(&[a.clone(), b.clone()]).unwrap();
    let merged = total(&both.rows(&november()).unwrap());
    let mut sum = one(&a);
    sum += one(&b);
    assert_eq!(merged, sum);
    assert_eq!(merged.calls, 6);
    assert_eq!(both.describe(), format!("{}, {}", a.display(), b.display()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_same_ledger_twice_is_refused() {
    let dir = temp_dir("twice");
    let a = dir.join("a.db");
    drop(ledger(&a, "ledger-a", &calls()));
    // A copy keeps the ledger id: it is the same host's data.
    let copy = dir.join("copy.db");
    std::fs::copy(&a, &copy).unwrap();
    let e = LedgerSource::open(&[a.clone(), copy.clone()]).err().expect("refused").to_string();
    assert!(e.contains("same ledger") && e.contains("copy.db") && e.contains("ledger-a"), "{e}");
    // The same file under another name (no id needed to tell).
    let link = dir.join("link.db");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let e = LedgerSource::open(&[a.clone(), link]).err().expect("refused").to_string();
    assert!(e.contains("same ledger"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn foreign_corrupt_and_missing_files_are_refused_untouched() {
    let dir = temp_dir("bad");
    let junk = dir.join("junk.db");
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&junk, &bytes).unwrap();
    let foreign = dir.join("foreign.db");
    Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    let foreign_bytes = std::fs::read(&foreign).unwrap();
    for (path, want) in [(&junk, "junk.db"), (&foreign, "foreign.db")] {
        match LedgerSource::open(std::slice::from_ref(path)) {
            Err(OpenError::Input(m)) => assert!(m.contains(want) && m.contains("not a tokentap ledger"), "{m}"),
            Err(e) => panic!("wrong kind: {e}"),
            Ok(_) => panic!("{want} accepted"),
        }
    }
    assert_eq!(std::fs::read(&junk).unwrap(), bytes);
    assert_eq!(std::fs::read(&foreign).unwrap(), foreign_bytes);
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["foreign.db", "junk.db"], "no side files");
    match LedgerSource::open(&[dir.join("nope.db")]) {
        Err(OpenError::Input(m)) => assert!(m.contains("nope.db"), "{m}"),
        _ => panic!("missing file accepted"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}
