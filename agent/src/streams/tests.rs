//! The tracker from synthetic capture chunks: pairing, verdicts, gaps, closes, exits.
use super::tracker::DATA_LOST;
use super::*;
use crate::capture::event::{ConnId, DataChunk, Direction, TlsLibrary};

const CAP: u64 = 1024;

fn tracker() -> Tracker {
    Tracker::new(TrackerConfig {
        call_cap: CAP,
        body_cap: 1 << 20,
        extra_ai_hosts: vec!["gw.internal".into()],
        call_hooks: true,
    })
}

fn chunk(conn: u64, direction: Direction, ts_ns: u64, data: &[u8]) -> DataChunk<'_> {
    chunk_of(100, TlsLibrary::OpenSsl, conn, direction, ts_ns, data)
}

/// One whole call's chunk from process `tgid` (thread `tgid + 1`): the fixture every tracker
/// test module builds from.
pub(super) fn chunk_of(
    tgid: u32,
    library: TlsLibrary,
    conn: u64,
    direction: Direction,
    ts_ns: u64,
    data: &[u8],
) -> DataChunk<'_> {
    DataChunk {
        id: ConnId { tgid, conn },
        tid: tgid + 1,
        cgroup_id: 5,
        ts_ns,
        direction,
        library,
        call_len: data.len() as u64,
        offset: 0,
        truncated: false,
        lost_before: false,
        data,
    }
}

fn chat_request(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-secret\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes()
}

fn json_response(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}", body.len(), body)
        .into_bytes()
}

const REQ: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const RESP: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#;

#[test]
fn keep_alive_pairs_in_order_with_timings() {
    let mut t = tracker();
    let mut out = Output::default();
    for i in 0..20u64 {
        let base = i * 1000;
        t.on_chunk(&chunk(1, Direction::Egress, base + 10, &chat_request(REQ)), &mut out);
        t.on_chunk(&chunk(1, Direction::Ingress, base + 50, &json_response(RESP)), &mut out);
    }
    assert_eq!(out.exchanges.len(), 20);
    assert_eq!(out.verdicts, vec![(ConnId { tgid: 100, conn: 1 }, Verdict::Track)]);
    let first = &out.exchanges[0].exchange;
    assert_eq!(first.request_start_ns, 10);
    assert_eq!(first.response_end_ns, 50);
    assert_eq!(out.exchanges[19].exchange.request_start_ns, 19_010);
    assert!(out.failures.is_empty());
}

#[test]
fn server_side_and_non_ai_connections_are_ignored() {
    let mut t = tracker();
    let mut out = Output::default();
    // A server reads a request first: not a response, so the connection is not a client's.
    t.on_chunk(&chunk(2, Direction::Ingress, 1, &chat_request(REQ)), &mut out);
    // A server writes a response: not a request.
    t.on_chunk(&chunk(3, Direction::Egress, 1, &json_response(RESP)), &mut out);
    // A client fetching a web page from an unknown host.
    t.on_chunk(&chunk(4, Direction::Egress, 1, b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n"), &mut out);
    // The server end of an HTTP/2 connection: the client preface arrives.
    t.on_chunk(&chunk(5, Direction::Ingress, 1, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), &mut out);
    let ignored: Vec<u64> = out.verdicts.iter().filter(|(_, v)| *v == Verdict::Ignore).map(|(id, _)| id.conn).collect();
    assert_eq!(ignored, vec![2, 3, 4, 5]);
    assert!(out.failures.is_empty(), "ignoring is not a parse failure");
    // Chunks still in flight for an ignored connection are dropped quietly.
    t.on_chunk(&chunk(4, Direction::Ingress, 2, &json_response(RESP)), &mut out);
    assert!(out.exchanges.is_empty());
    assert_eq!(t.live_connections(), 0);
}

#[test]
fn gateway_host_from_config_is_tracked() {
    let mut t = tracker();
    let mut out = Output::default();
    t.on_chunk(&chunk(6, Direction::Egress, 1, b"GET /models HTTP/1.1\r\nHost: gw.internal:8443\r\n\r\n"), &mut out);
    assert_eq!(out.verdicts, vec![(ConnId { tgid: 100, conn: 6 }, Verdict::Track)]);
}

#[test]
fn truncated_request_call_is_skipped_as_a_gap() {
    let mut t = tracker();
    let mut out = Output::default();
    let body = format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(3000));
    let req = chat_request(&body);
    let mut c = chunk(7, Direction::Egress, 1, &req[..CAP as usize]);
    c.call_len = req.len() as u64;
    c.truncated = true;
    t.on_chunk(&c, &mut out);
    t.on_chunk(&chunk(7, Direction::Ingress, 9, &json_response(RESP)), &mut out);
    assert_eq!(out.exchanges.len(), 1);
    let request = out.exchanges[0].exchange.request.as_ref().expect("request completed through the gap");
    assert!(request.truncated);
    assert_eq!(request.body_len, body.len() as u64);
}

#[test]
fn close_completes_read_until_close_and_exit_forgets() {
    let mut t = tracker();
    let mut out = Output::default();
    t.on_chunk(&chunk(8, Direction::Egress, 1, &chat_request(REQ)), &mut out);
    let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{RESP}");
    t.on_chunk(&chunk(8, Direction::Ingress, 2, resp.as_bytes()), &mut out);
    assert!(out.exchanges.is_empty());
    t.on_close(ConnId { tgid: 100, conn: 8 }, 3, &mut out);
    assert_eq!(out.exchanges.len(), 1);
    assert_eq!(out.exchanges[0].exchange.response_end_ns, 2, "the last byte read");

    t.on_chunk(&chunk(9, Direction::Egress, 4, &chat_request(REQ)), &mut out);
    t.on_exit(100, 5, &mut out);
    assert_eq!(out.forget, vec![ConnId { tgid: 100, conn: 9 }]);
    assert_eq!(out.failures, vec![("no_response", TlsLibrary::OpenSsl)]);
}

#[test]
fn garbage_after_a_good_start_is_a_counted_failure() {
    let mut t = tracker();
    let mut out = Output::default();
    t.on_chunk(&chunk(10, Direction::Egress, 1, &chat_request(REQ)), &mut out);
    t.on_chunk(
        &chunk(10, Direction::Ingress, 2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        &mut out,
    );
    assert_eq!(out.failures.len(), 1);
    assert_eq!(t.live_connections(), 0);
}

#[test]
fn stream_closed_before_the_chunked_terminator_still_completes() {
    let mut t = tracker();
    let mut out = Output::default();
    t.on_chunk(&chunk(11, Direction::Egress, 1, &chat_request(REQ)), &mut out);
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    t.on_chunk(&chunk(11, Direction::Ingress, 2, head), &mut out);
    t.on_chunk(&chunk(11, Direction::Ingress, 3, b"e\r\ndata: [DONE]\n\n\r\n"), &mut out);
    t.on_close(ConnId { tgid: 100, conn: 11 }, 9, &mut out);
    assert_eq!(out.exchanges.len(), 1);
    assert_eq!(out.exchanges[0].exchange.response_end_ns, 3, "ends at the last byte read, not the close");
    assert_eq!(out.cut_responses, 1);
    assert!(out.failures.is_empty());
}

#[test]
fn configured_path_prefixes_and_hosts_mark_ai_connections() {
    use super::conn::is_ai_connection;
    let extra = vec!["gw.internal".to_string(), "/llm/".to_string()];
    assert!(is_ai_connection(false, "10.0.0.5", "/llm/generate", &extra));
    assert!(is_ai_connection(false, "gw.internal", "/health", &extra));
    assert!(!is_ai_connection(false, "10.0.0.5", "/health", &extra));
    // A host entry is never taken for a path, nor a path entry for a host.
    assert!(!is_ai_connection(false, "/llm/", "/x", &extra));
    assert!(is_ai_connection(false, "10.0.0.5", "/v1/models", &[]));
}

/// A stream whose middle reads vanished in the kernel (no chunk of them arrived): the next
/// shipped read says so, and the call is counted unparseable, never stitched together.
#[test]
fn read_after_an_untraced_loss_fails_the_connection() {
    let mut t = tracker();
    let mut out = Output::default();
    t.on_chunk(&chunk(12, Direction::Egress, 1, &chat_request(REQ)), &mut out);
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    t.on_chunk(&chunk(12, Direction::Ingress, 2, head), &mut out);
    t.on_chunk(&chunk(12, Direction::Ingress, 3, b"e\r\ndata: {\"a\":1}\n\r\n"), &mut out);
    // Reads in between were lost; this one is framed well and would parse.
    let mut after = chunk(12, Direction::Ingress, 5, b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n");
    after.lost_before = true;
    t.on_chunk(&after, &mut out);
    assert!(out.exchanges.is_empty(), "no record from a response with a hole");
    assert_eq!(out.failures, vec![(DATA_LOST, TlsLibrary::OpenSsl)]);
    assert_eq!(out.verdicts.last(), Some(&(ConnId { tgid: 100, conn: 12 }, Verdict::Ignore)));
    assert_eq!(t.live_connections(), 0);
}

/// The lost read was the last one (its process then exited or closed): the kernel's mark,
/// looked up when the connection ends, keeps the partial response from being completed.
#[test]
fn end_of_a_connection_with_a_trailing_loss_is_no_cut_response() {
    let mut t = tracker();
    let mut out = Output::default();
    t.on_chunk(&chunk(13, Direction::Egress, 1, &chat_request(REQ)), &mut out);
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    t.on_chunk(&chunk(13, Direction::Ingress, 2, head), &mut out);
    t.on_chunk(&chunk(13, Direction::Ingress, 3, b"e\r\ndata: {\"a\":1}\n\r\n"), &mut out);
    assert_eq!(t.connections_of(100), vec![ConnId { tgid: 100, conn: 13 }]);
    t.mark_lost(ConnId { tgid: 100, conn: 13 });
    t.on_exit(100, 9, &mut out);
    assert!(out.exchanges.is_empty());
    assert_eq!(out.cut_responses, 0);
    assert_eq!(out.failures, vec![(DATA_LOST, TlsLibrary::OpenSsl)]);
    assert_eq!(out.forget, vec![ConnId { tgid: 100, conn: 13 }]);

    // Without the mark the same bytes end as a (counted) cut response: the mark decides.
    let mut t = tracker();
    let mut out = Output::default();
    t.on_chunk(&chunk(14, Direction::Egress, 1, &chat_request(REQ)), &mut out);
    t.on_chunk(&chunk(14, Direction::Ingress, 2, head), &mut out);
    t.on_chunk(&chunk(14, Direction::Ingress, 3, b"e\r\ndata: {\"a\":1}\n\r\n"), &mut out);
    assert!(t.idle_connections(10, 100).is_empty());
    assert_eq!(t.idle_connections(1_000, 100), vec![ConnId { tgid: 100, conn: 14 }]);
    t.on_exit(100, 9, &mut out);
    assert_eq!(out.cut_responses, 1);
}
