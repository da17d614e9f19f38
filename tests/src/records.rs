//! Reading the agent's usage log, waiting for records, privacy assertions.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::agent;

/// Default time to wait for records.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(30);
/// After the expected count is reached, wait this long for extra
/// (duplicate/spurious) records before returning.
pub const SETTLE: Duration = Duration::from_millis(1000);

/// Complete JSON lines of `path` starting at byte `offset`, plus the number
/// of complete lines that were not JSON objects. A trailing partial line is
/// ignored (the agent may be mid-write).
pub fn read_records_from(path: &Path, offset: u64) -> (Vec<Value>, usize) {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    let data = &bytes[start..];
    let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut records = Vec::new();
    let mut malformed = 0;
    for line in data[..end].split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v) if v.is_object() => records.push(v),
            _ => malformed += 1,
        }
    }
    (records, malformed)
}

/// Current size of the usage log (offset for "records from now on").
pub fn usage_log_len() -> u64 {
    std::fs::metadata(&agent().usage_log).map_or(0, |m| m.len())
}

fn for_port(records: Vec<Value>, port: u16) -> Vec<Value> {
    records.into_iter().filter(|r| r.get("server_port").and_then(Value::as_u64) == Some(port as u64)).collect()
}

/// Waits until the usage log holds at least `n` records with
/// `server_port == port` (whole log), then settles and returns all of them.
pub fn wait_records(port: u16, n: usize, timeout: Duration) -> Vec<Value> {
    wait_records_since(0, port, n, timeout, &[])
}

/// Like [`wait_records`], counting only records written after byte `offset`;
/// `secrets` are redacted from the diagnostics.
pub fn wait_records_since(offset: u64, port: u16, n: usize, timeout: Duration, secrets: &[String]) -> Vec<Value> {
    let a = agent();
    let deadline = Instant::now() + timeout;
    loop {
        // Status first: records written before an exit are still counted.
        let status = a.status();
        let (all, malformed) = read_records_from(&a.usage_log, offset);
        let total = all.len();
        let mine = for_port(all, port);
        if mine.len() >= n {
            std::thread::sleep(SETTLE);
            return for_port(read_records_from(&a.usage_log, offset).0, port);
        }
        if Instant::now() >= deadline || status != "running" {
            panic!(
                "expected {n} usage record(s) with server_port {port} within {}s, found {} \
                 ({total} new record(s) in the log for any port, {malformed} malformed line(s)); \
                 agent {}; agent stderr tail:\n{}",
                timeout.as_secs(),
                mine.len(),
                status,
                a.stderr_tail(30, secrets)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// All records (whole log) whose `pid` is `pid`.
pub fn records_with_pid(pid: u32) -> Vec<Value> {
    read_records_from(&agent().usage_log, 0)
        .0
        .into_iter()
        .filter(|r| r.get("pid").and_then(Value::as_u64) == Some(pid as u64))
        .collect()
}

/// Asserts no secret occurs in anything the agent wrote (usage log, stdout,
/// stderr). Never prints the secrets: only their index, length and where.
pub fn assert_private(secrets: &[&str]) {
    let a = agent();
    let mut leaks = Vec::new();
    for path in a.outputs() {
        let data = std::fs::read(path).unwrap_or_default();
        for (i, s) in secrets.iter().enumerate() {
            if s.is_empty() {
                continue;
            }
            let hits = count_occurrences(&data, s.as_bytes());
            if hits > 0 {
                leaks.push(format!(
                    "secret #{i} ({} bytes) found {hits}x in {}",
                    s.len(),
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "PRIVACY VIOLATION: agent output contains payload/secret data:\n  {}",
        leaks.join("\n  ")
    );
}

fn count_occurrences(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}
