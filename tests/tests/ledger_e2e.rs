//! Privileged end-to-end tests of the usage ledger: a real agent meters real curl and SDK calls
//! to the fake LLM server, and its SQLite ledger is read back and compared with the server's own
//! log (exact tokens), through `kill -9`, a restart, a real full disk (tmpfs), an unwritable
//! path and foreign files.
//!
//! Needs root + kernel BTF (else skipped, or a failure with `TOKENTAP_REQUIRE_BPF=1`).
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokentap_tests::ledger::{calls, integrity, read_only, wait_for, CallRow, OwnAgent, Tmpfs};
use tokentap_tests::{agent, env, require_bpf, Case, Expected, LlmServer, ServerEntry, ServerOpts, Tokens};

const LEDGER_TIMEOUT: Duration = Duration::from_secs(30);

/// One test at a time: they start agents of their own and time a kill; on a shared, small
/// machine parallel agents would only blur that.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn exact(t: Tokens) -> u64 {
    match t {
        Tokens::Exact(n) => n,
        Tokens::Approx { .. } => panic!("these calls report their usage: exact counts expected"),
    }
}

/// Each row equals its server log entry (same order: one client at a time).
fn assert_rows_match(rows: &[CallRow], entries: &[ServerEntry], port: u16) {
    assert_eq!(rows.len(), entries.len(), "ledger rows vs server log entries for port {port}");
    for (i, (row, e)) in rows.iter().zip(entries).enumerate() {
        let exp = Expected::from_entry(e, port);
        assert_eq!(
            (row.input_tokens, row.output_tokens, row.cached_input_tokens, row.reasoning_tokens),
            (exact(exp.input_tokens), exact(exp.output_tokens), exp.cached_input_tokens, exp.reasoning_tokens),
            "row {i}: tokens (input, output, cached, reasoning)"
        );
        assert_eq!((row.provider.as_str(), row.operation.as_str()), (exp.provider.as_str(), exp.operation.as_str()));
        assert_eq!(row.request_model.as_deref(), Some(exp.request_model.as_str()), "row {i}: request model");
        assert_eq!(row.response_model.as_deref(), Some(exp.response_model.as_str()), "row {i}: response model");
        assert_eq!((row.http_status, row.usage_source.as_str()), (200, exp.usage_source.as_str()), "row {i}");
    }
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

#[test]
fn metered_calls_are_in_the_shared_agents_ledger_exactly() {
    if !require_bpf() {
        return;
    }
    let _serial = serial();
    let case = Case::new();
    let server = case.server(ServerOpts::default());
    let started = now_ns();
    let runs = [case.curl_chat(&server, &[]), case.openai(&server, "chat"), case.openai(&server, "chat_stream_usage")];
    let recs = case.wait_records(&server, 3);
    let ledger = &agent().ledger;
    let rows = wait_for("3 ledger rows", LEDGER_TIMEOUT, || {
        let rows = calls(ledger, server.port);
        (rows.len() >= 3).then_some(rows)
    });
    assert_rows_match(&rows, &server.entries(), server.port);
    for (row, (rec, run)) in rows.iter().zip(recs.iter().zip(&runs)) {
        assert_eq!(row.pid, run.pid, "the client's pid");
        assert_eq!(Some(row.output_tokens), rec["output_tokens"].as_u64(), "ledger row = usage record");
        assert!(row.ts_ns >= started - 1_000_000_000 && row.ts_ns <= now_ns(), "row time within the test");
        // gpt-4o-mini is in the shipped pricing table: priced, with the table's version.
        assert_eq!(row.priced_model.as_deref(), Some("gpt-4o-mini"));
        assert!(row.cost_pusd.is_some_and(|c| c > 0), "priced call has a cost");
        assert!(!row.pricing_version.is_empty() && !row.host.is_empty());
    }
    let mode = std::fs::metadata(ledger).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "ledger file mode");
    let journal: String = read_only(ledger).query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(integrity(ledger), "ok");
    // Never payloads: the test's prompt, key and the completions' markers are not in the file.
    case.finish(&server);
    let mut bytes = std::fs::read(ledger).unwrap();
    bytes.extend(std::fs::read(ledger.with_extension("db-wal")).unwrap_or_default());
    for (i, s) in case.secrets().iter().enumerate() {
        assert!(!bytes.windows(s.len()).any(|w| w == s.as_bytes()), "secret #{i} found in the ledger");
    }
}

/// Curl calls one after another until `stop`; returns, per call, when it completed (unix ns).
fn burst(case: &Case, server: &LlmServer, stop: &AtomicBool, max: usize) -> Vec<i64> {
    let mut done = Vec::new();
    while !stop.load(Ordering::Relaxed) && done.len() < max {
        case.curl_chat(server, &[]);
        done.push(now_ns());
    }
    done
}

#[test]
fn kill_9_loses_at_most_the_last_second_and_a_restart_counts_nothing_twice() {
    if !require_bpf() {
        return;
    }
    let _serial = serial();
    let case = Arc::new(Case::new());
    let server = Arc::new(LlmServer::start(ServerOpts::default()));
    let dir = env::temp_subdir("ledger-kill");
    let ledger = dir.join("ledger.db");
    let mut first = OwnAgent::start(&dir, &ledger);

    // A burst of calls; the agent is killed while it goes on.
    let stop = Arc::new(AtomicBool::new(false));
    let calls_a = {
        let (case, server, stop) = (case.clone(), server.clone(), stop.clone());
        std::thread::spawn(move || burst(&case, &server, &stop, 200))
    };
    wait_for("10 records before the kill", Duration::from_secs(60), || {
        (first.records(server.port).len() >= 10).then_some(())
    });
    std::thread::sleep(Duration::from_millis(700));
    let killed_at = now_ns();
    first.kill9();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let done_a = calls_a.join().expect("burst thread");
    let logged_a = first.records(server.port).len();
    let entries_a = server.entries().len();
    assert_eq!(entries_a, done_a.len());

    assert_eq!(integrity(&ledger), "ok", "the ledger after kill -9");
    let rows_a = calls(&ledger, server.port);
    let outputs_a: Vec<u64> =
        server.entries().iter().map(|e| exact(Expected::from_entry(e, server.port).output_tokens)).collect();
    // Every row is a call the server answered (output tokens are unique per call), once.
    let mut seen = BTreeSet::new();
    for row in &rows_a {
        assert!(outputs_a.contains(&row.output_tokens), "a ledger row matches no server call");
        assert!(seen.insert(row.output_tokens), "a call is in the ledger twice");
    }
    // Every call completed over ~1 s (one batch, plus slack for a busy machine) before the
    // kill was committed.
    let slack_ns = 2_000_000_000;
    for (i, (&done, out)) in done_a.iter().zip(&outputs_a).enumerate() {
        if done < killed_at - slack_ns {
            assert!(
                seen.contains(out),
                "call #{i}, completed {} ms before the kill, is not in the ledger",
                (killed_at - done) / 1_000_000
            );
        }
    }
    assert!(rows_a.len() >= 5 && rows_a.len() <= logged_a, "rows {} vs records logged {logged_a}", rows_a.len());

    // A restarted agent on the same ledger adds the new calls only.
    let mut second = OwnAgent::start(&dir, &ledger);
    let before_b = second.records(server.port).len();
    for _ in 0..3 {
        case.curl_chat(&server, &[]);
    }
    second.wait_records(server.port, before_b + 3);
    second.stop();
    let entries = server.entries();
    let rows = calls(&ledger, server.port);
    assert_eq!(rows.len(), rows_a.len() + 3, "after the restart: the rows before plus the 3 new calls");
    assert_eq!(rows[..rows_a.len()], rows_a[..], "the rows written before the kill are unchanged");
    assert_rows_match(&rows[rows_a.len()..], &entries[entries_a..], server.port);
    let unique: BTreeSet<u64> = rows.iter().map(|r| r.output_tokens).collect();
    assert_eq!(unique.len(), rows.len(), "no call counted twice");
    assert_eq!(integrity(&ledger), "ok");
}

#[test]
fn a_full_disk_is_reported_while_metering_goes_on_and_pending_records_land() {
    if !require_bpf() {
        return;
    }
    let _serial = serial();
    let case = Case::new();
    let server = LlmServer::start(ServerOpts::default());
    let dir = env::temp_subdir("ledger-full");
    let disk = Tmpfs::mount(&dir.join("disk"), "256k");
    let ledger = disk.dir.join("ledger.db");
    let mut a = OwnAgent::start(&dir, &ledger);
    case.curl_chat(&server, &[]);
    wait_for("the first row", LEDGER_TIMEOUT, || (calls(&ledger, server.port).len() == 1).then_some(()));
    assert_eq!(a.metric("tokentap_agent_ledger_healthy"), Some(1.0));

    let filler = disk.fill();
    for _ in 0..4 {
        case.curl_chat(&server, &[]);
    }
    // Metering goes on: the usage log has every call.
    a.wait_records(server.port, 5);
    wait_for("the ledger reported unhealthy", LEDGER_TIMEOUT, || {
        (a.metric("tokentap_agent_ledger_healthy") == Some(0.0)).then_some(())
    });
    assert!(a.metric("tokentap_agent_ledger_commits_failed_total").is_some_and(|n| n >= 1.0));
    wait_for("4 records pending", LEDGER_TIMEOUT, || {
        (a.metric("tokentap_agent_ledger_records_pending") == Some(4.0)).then_some(())
    });
    assert_eq!(calls(&ledger, server.port).len(), 1, "nothing committed on a full disk");
    // Several failed retries are one episode: logged once.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.log_lines("ledger commit failed"), 1, "one log line per episode");

    std::fs::remove_file(&filler).expect("free the disk");
    let rows = wait_for("the pending rows", LEDGER_TIMEOUT, || {
        let rows = calls(&ledger, server.port);
        (rows.len() == 5).then_some(rows)
    });
    assert_rows_match(&rows, &server.entries(), server.port);
    wait_for("healthy again", LEDGER_TIMEOUT, || {
        (a.metric("tokentap_agent_ledger_healthy") == Some(1.0)).then_some(())
    });
    assert_eq!(a.metric("tokentap_agent_ledger_records_dropped_total"), Some(0.0));
    assert_eq!(a.log_lines("ledger: writing again"), 1);
    assert!(a.running());
    a.stop();
    assert_eq!(integrity(&ledger), "ok");
    drop(disk);
}

/// Starts an agent on a ledger path it cannot use: it must start, meter, report, change nothing.
fn refused(what: &str, dir: &std::path::Path, ledger: &std::path::Path, expected_log: &str) {
    let case = Case::new();
    let server = LlmServer::start(ServerOpts::default());
    let before = std::fs::read(ledger).ok();
    let mut a = OwnAgent::start(dir, ledger);
    case.curl_chat(&server, &[]);
    let recs = a.wait_records(server.port, 1);
    assert_eq!(
        recs[0]["output_tokens"].as_u64(),
        Some(exact(Expected::from_entry(&server.entries()[0], server.port).output_tokens))
    );
    wait_for(&format!("{what}: ledger unhealthy"), LEDGER_TIMEOUT, || {
        (a.metric("tokentap_agent_ledger_healthy") == Some(0.0)).then_some(())
    });
    assert!(
        a.log_lines(expected_log) >= 1,
        "{what}: the log names the problem ({expected_log:?}):\n{}",
        env::tail_lines(&a.stderr, 10)
    );
    assert!(a.running(), "{what}: the agent keeps running");
    a.stop();
    assert_eq!(std::fs::read(ledger).ok(), before, "{what}: the file is unchanged");
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = format!("{}{suffix}", ledger.display());
        assert!(!std::path::Path::new(&side).exists(), "{what}: {side} was created");
    }
}

#[test]
fn unwritable_paths_and_foreign_files_are_reported_and_left_untouched() {
    if !require_bpf() {
        return;
    }
    let _serial = serial();
    let dir = env::temp_subdir("ledger-refused");
    // Its directory is a regular file: the ledger cannot be created (even by root).
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, b"a file where the ledger's directory should be").unwrap();
    refused("unwritable path", &dir, &blocker.join("ledger.db"), "ledger cannot be opened");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"a file where the ledger's directory should be");

    let text = dir.join("text.db");
    std::fs::write(&text, b"some notes, certainly not SQLite\n".repeat(20)).unwrap();
    refused("text file", &dir, &text, "not a tokentap ledger");

    // Another program's SQLite database, in WAL mode (reading it with SQLite could checkpoint).
    let other = dir.join("other.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE accounts (id INTEGER, name TEXT); INSERT INTO accounts VALUES (1, 'x');").unwrap();
    drop(conn);
    refused("foreign SQLite database", &dir, &other, "not a tokentap ledger");
}
