//! `tokentap report` on bad input, with the real binary (no agent, no privileges needed): a
//! clear error naming the file or argument, a non-zero exit (2), and every file left exactly
//! as it was — no `-wal`, `-shm` or `-journal` file appears next to it.
use std::path::{Path, PathBuf};

use tokentap_tests::env;
use tokentap_tests::report::report;

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Runs the report and checks exit 2, a message containing every one of `want`, and `files`
/// (with their directory) unchanged.
fn refused(args: &[&str], want: &[&str], files: &[&PathBuf]) -> String {
    let before: Vec<(Vec<u8>, Vec<String>)> =
        files.iter().map(|f| (std::fs::read(f).unwrap(), listing(f.parent().unwrap()))).collect();
    let out = report(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "exit code for {args:?}; stderr: {err}");
    assert!(out.stdout.is_empty(), "no report on stdout");
    for w in want {
        assert!(err.contains(w), "{args:?}: message lacks {w:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    for (f, (bytes, names)) in files.iter().zip(before) {
        assert_eq!(std::fs::read(f).unwrap(), bytes, "{} changed", f.display());
        assert_eq!(listing(f.parent().unwrap()), names, "files appeared next to {}", f.display());
    }
    err
}

#[test]
fn a_corrupt_ledger_is_refused_untouched() {
    let dir = env::temp_subdir("report-corrupt");
    let path = dir.join("ledger.db");
    let junk: Vec<u8> = env::random_hex(6000).into_bytes().iter().map(|b| b.wrapping_mul(31)).collect();
    std::fs::write(&path, &junk).unwrap();
    let p = path.to_str().unwrap();
    refused(&["--ledger", p, "--month", "2026-11"], &[p, "not a tokentap ledger"], &[&path]);
    // A real SQLite header followed by garbage is no better.
    let mut half = b"SQLite format 3\0".to_vec();
    half.extend_from_slice(&junk);
    std::fs::write(&path, &half).unwrap();
    refused(&["--ledger", p, "--month", "2026-11"], &[p], &[&path]);
}

#[test]
fn a_foreign_sqlite_file_is_refused_untouched() {
    let dir = env::temp_subdir("report-foreign");
    let path = dir.join("other.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode = DELETE; CREATE TABLE calls (x); INSERT INTO calls VALUES (1);").unwrap();
    }
    let p = path.to_str().unwrap();
    refused(&["--ledger", p, "--format", "json"], &[p, "not a tokentap ledger", "application id"], &[&path]);
}

#[test]
fn a_missing_ledger_is_named() {
    let dir = env::temp_subdir("report-missing");
    let path = dir.join("nope.db");
    let p = path.to_str().unwrap();
    refused(&["--ledger", p], &[p, "no such ledger"], &[]);
    assert!(!path.exists(), "a report never creates a ledger");
}

#[test]
fn bad_arguments_name_the_argument() {
    let dir = env::temp_subdir("report-args");
    let path = dir.join("junk.db");
    std::fs::write(&path, b"not a database at all, and not checked before the arguments").unwrap();
    let p = path.to_str().unwrap();
    let err = refused(&["--ledger", p, "--by", "team,colour"], &["--by", "\"colour\"", "cost_center"], &[&path]);
    assert!(!err.contains(p), "arguments are checked before any file is opened: {err}");
    refused(&["--ledger", p, "--by", "team,team"], &["--by", "twice"], &[&path]);
    let out_dir = dir.join("invoices");
    let o = out_dir.to_str().unwrap();
    refused(&["--ledger", p, "--invoice", "--by", "cost_center,team", "-o", o], &["--by", "one key"], &[&path]);
    assert!(!out_dir.exists(), "nothing written for a refused invoice run");
    refused(&["--ledger", p, "--from", "2026-11-02", "--to", "2026-11-02"], &["empty period", "--from"], &[&path]);
    refused(&["--ledger", p, "--from", "2026-11-03T00:00:00Z", "--to", "2026-11-02"], &["empty period"], &[&path]);
    refused(&["--ledger", p, "--month", "2026-13"], &["--month", "2026-13"], &[&path]);
    refused(&["--ledger", p, "--from", "last tuesday"], &["--from", "last tuesday"], &[&path]);
    refused(&["--ledger", p, "--tz", "Mars/Olympus_Mons"], &["--tz", "Mars/Olympus_Mons"], &[&path]);
    // clap's own refusals (unknown format) exit 2 as well.
    let out = report(&["--ledger", p, "--format", "pdf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
}

#[test]
fn the_ledger_comes_from_the_configs_ledger_path() {
    let dir = env::temp_subdir("report-config");
    let path = dir.join("configured.db");
    std::fs::write(&path, b"junk, so that the error shows which file was chosen").unwrap();
    let config = dir.join("tokentap.toml");
    std::fs::write(&config, format!("[ledger]\npath = \"{}\"\n", path.display())).unwrap();
    let c = config.to_str().unwrap();
    refused(&["--config", c], &[path.to_str().unwrap(), "not a tokentap ledger"], &[&path, &config]);
    // A bad configuration is named as such.
    std::fs::write(&config, "[ledger]\ncolour = 1\n").unwrap();
    refused(&["--config", c], &["--config", c], &[&config]);
}
