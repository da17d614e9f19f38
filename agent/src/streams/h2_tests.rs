//! The tracker on HTTP/2 connections: preface, multiplexing, joined-late, server side.
use tokentap_proto::http2::PREFACE;

use super::*;
use crate::capture::event::{ConnId, DataChunk, Direction, TlsLibrary};

fn tracker() -> Tracker {
    Tracker::new(TrackerConfig { call_cap: 1 << 20, body_cap: 1 << 20, extra_ai_hosts: Vec::new(), call_hooks: true })
}

fn chunk(conn: u64, direction: Direction, ts_ns: u64, data: &[u8]) -> DataChunk<'_> {
    super::tests::chunk_of(200, TlsLibrary::OpenSsl, conn, direction, ts_ns, data)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const HEADERS: u8 = 1;
const DATA: u8 = 0;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

/// A header block of never-indexed literals (decodable with no table history).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.extend([0x10, n.len() as u8]);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn request(id: u32, path: &str) -> Vec<u8> {
    let fields = [(":method", "POST"), (":scheme", "https"), (":authority", "api.openai.com"), (":path", path)];
    let mut f = frame(HEADERS, END_HEADERS, id, &block(&fields));
    f.extend(frame(DATA, END_STREAM, id, REQ.as_bytes()));
    f
}

fn response(id: u32) -> Vec<u8> {
    let mut f = frame(HEADERS, END_HEADERS, id, &block(&[(":status", "200"), ("content-type", "application/json")]));
    f.extend(frame(DATA, END_STREAM, id, RESP.as_bytes()));
    f
}

const REQ: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const RESP: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#;

#[test]
fn preface_connection_yields_one_exchange_per_stream_with_timings() {
    let mut t = tracker();
    let mut out = Output::default();
    let mut first = PREFACE.to_vec();
    first.extend(frame(4, 0, 0, &[]));
    t.on_chunk(&chunk(1, Direction::Egress, 5, &first), &mut out);
    t.on_chunk(
        &chunk(
            1,
            Direction::Egress,
            10,
            &[request(1, "/v1/chat/completions"), request(3, "/v1/chat/completions")].concat(),
        ),
        &mut out,
    );
    t.on_chunk(&chunk(1, Direction::Ingress, 40, &response(3)), &mut out);
    t.on_chunk(&chunk(1, Direction::Ingress, 60, &response(1)), &mut out);
    assert_eq!(out.verdicts, vec![(ConnId { tgid: 200, conn: 1 }, Verdict::Track)]);
    assert_eq!(out.exchanges.len(), 2);
    let e = &out.exchanges[0].exchange;
    assert_eq!((e.request_start_ns, e.response_first_body_ns, e.response_end_ns), (10, Some(40), 40));
    assert_eq!(e.request_head.header_str("host"), Some("api.openai.com"));
    assert_eq!(out.exchanges[1].exchange.response_end_ns, 60);
    assert!(out.failures.is_empty());
    t.on_close(ConnId { tgid: 200, conn: 1 }, 70, &mut out);
    assert!(out.failures.is_empty());
}

#[test]
fn non_ai_first_request_ignores_the_connection() {
    let mut t = tracker();
    let mut out = Output::default();
    let fields = [(":method", "GET"), (":authority", "example.com"), (":path", "/index.html")];
    let bytes = [PREFACE.as_slice(), &frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&fields))].concat();
    t.on_chunk(&chunk(2, Direction::Egress, 5, &bytes), &mut out);
    assert_eq!(out.verdicts, vec![(ConnId { tgid: 200, conn: 2 }, Verdict::Ignore)]);
}

#[test]
fn server_side_is_a_verdict_not_a_failure() {
    let mut t = tracker();
    let mut out = Output::default();
    t.on_chunk(&chunk(3, Direction::Ingress, 5, PREFACE), &mut out);
    // A server that speaks first: its SETTINGS, then the client's preface arrives.
    t.on_chunk(&chunk(4, Direction::Egress, 5, &frame(4, 0, 0, &[])), &mut out);
    t.on_chunk(&chunk(4, Direction::Ingress, 6, PREFACE), &mut out);
    let ignored: Vec<_> = out.verdicts.iter().map(|(id, v)| (id.conn, *v)).collect();
    assert_eq!(ignored, vec![(3, Verdict::Ignore), (4, Verdict::Ignore)]);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
}

#[test]
fn joined_late_counts_unknown_streams_and_meters_decodable_ones() {
    let mut t = tracker();
    let mut out = Output::default();
    // Stream 1 references dynamic-table entry 62, added before the agent started.
    let late = frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x83, 0xbe, 0x84]);
    t.on_chunk(&chunk(5, Direction::Egress, 5, &late), &mut out);
    t.on_chunk(&chunk(5, Direction::Ingress, 6, &response(1)), &mut out);
    assert!(out.failures.is_empty(), "deferred until the connection is classified");
    t.on_chunk(&chunk(5, Direction::Egress, 10, &request(3, "/v1/chat/completions")), &mut out);
    t.on_chunk(&chunk(5, Direction::Ingress, 20, &response(3)), &mut out);
    assert_eq!(out.failures, vec![("h2_unknown_headers", TlsLibrary::OpenSsl)]);
    assert_eq!(out.exchanges.len(), 1);
    assert_eq!(out.verdicts, vec![(ConnId { tgid: 200, conn: 5 }, Verdict::Track)]);
}

#[test]
fn joined_late_garbage_is_not_counted() {
    let mut t = tracker();
    let mut out = Output::default();
    // Looks like a SETTINGS frame header, then is not HTTP/2 at all.
    let bytes = [frame(4, 0, 0, &[]), vec![0xff; 20]].concat();
    t.on_chunk(&chunk(6, Direction::Egress, 5, &bytes), &mut out);
    assert_eq!(out.verdicts, vec![(ConnId { tgid: 200, conn: 6 }, Verdict::Ignore)]);
    assert!(out.failures.is_empty());
}

#[test]
fn unanswered_streams_count_at_close() {
    let mut t = tracker();
    let mut out = Output::default();
    let bytes = [PREFACE.as_slice(), &request(1, "/v1/chat/completions")].concat();
    t.on_chunk(&chunk(7, Direction::Egress, 5, &bytes), &mut out);
    t.on_close(ConnId { tgid: 200, conn: 7 }, 9, &mut out);
    assert_eq!(out.failures, vec![("no_response", TlsLibrary::OpenSsl)]);
}

#[test]
fn client_cancel_after_the_last_event_still_meters_the_stream() {
    let mut t = tracker();
    let mut out = Output::default();
    let bytes = [PREFACE.as_slice(), &request(1, "/v1/chat/completions")].concat();
    t.on_chunk(&chunk(8, Direction::Egress, 5, &bytes), &mut out);
    let head = frame(HEADERS, END_HEADERS, 1, &block(&[(":status", "200"), ("content-type", "application/json")]));
    t.on_chunk(&chunk(8, Direction::Ingress, 20, &[head, frame(DATA, 0, 1, RESP.as_bytes())].concat()), &mut out);
    t.on_chunk(&chunk(8, Direction::Egress, 30, &frame(3, 0, 1, &[0, 0, 0, 8])), &mut out);
    assert_eq!(out.exchanges.len(), 1);
    assert_eq!(out.exchanges[0].exchange.response_end_ns, 20, "ends with the last bytes read");
    assert_eq!(out.cut_responses, 1);
    assert!(out.failures.is_empty());
}

#[test]
fn streams_start_progress_and_end_under_their_stream_id() {
    let mut t = tracker();
    let mut out = Output::default();
    let body =
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}],"max_tokens":50,"stream":true}"#;
    let fields = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.openai.com"),
        (":path", "/v1/chat/completions"),
    ];
    let mut bytes = PREFACE.to_vec();
    // Stream 1: headers, then the body in two DATA frames; the request is whole at END_STREAM.
    bytes.extend(frame(HEADERS, END_HEADERS, 1, &block(&fields)));
    bytes.extend(frame(DATA, 0, 1, &body.as_bytes()[..20]));
    t.on_chunk(&chunk(9, Direction::Egress, 5, &bytes), &mut out);
    assert!(out.requests.is_empty(), "not whole yet");
    let rest = [frame(DATA, END_STREAM, 1, &body.as_bytes()[20..]), request(3, "/v1/chat/completions")].concat();
    t.on_chunk(&chunk(9, Direction::Egress, 6, &rest), &mut out);
    let key = |seq| CallKey { conn: ConnId { tgid: 200, conn: 9 }, seq };
    assert_eq!(out.requests.iter().map(|r| r.call).collect::<Vec<_>>(), vec![key(1), key(3)]);
    assert_eq!(out.requests[0].estimate, Estimate { input_tokens: 9, max_output_tokens: Some(50) });
    assert!(out.requests[0].streaming);

    let head = frame(HEADERS, END_HEADERS, 1, &block(&[(":status", "200"), ("content-type", "text/event-stream")]));
    t.on_chunk(&chunk(9, Direction::Ingress, 10, &head), &mut out);
    for i in 0..64u32 {
        let ev = format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" w{i}\"}}}}]}}\n\n");
        t.on_chunk(&chunk(9, Direction::Ingress, 11 + u64::from(i), &frame(DATA, 0, 1, ev.as_bytes())), &mut out);
    }
    let seen: Vec<u64> = out.progress.iter().map(|p| p.output_tokens_so_far).collect();
    assert!(out.progress.iter().all(|p| p.call == key(1)));
    assert!(seen.len() >= 4 && seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    // Stream 3 is reset by the server: it ends without an exchange; stream 1 completes.
    t.on_chunk(&chunk(9, Direction::Ingress, 90, &frame(3, 0, 3, &[0, 0, 0, 2])), &mut out);
    assert_eq!(out.ended, vec![key(3)]);
    t.on_chunk(&chunk(9, Direction::Ingress, 91, &frame(DATA, END_STREAM, 1, b"data: [DONE]\n\n")), &mut out);
    assert_eq!(out.exchanges.iter().map(|e| e.call).collect::<Vec<_>>(), vec![key(1)]);
    t.on_close(ConnId { tgid: 200, conn: 9 }, 99, &mut out);
    assert_eq!(out.ended, vec![key(3)], "nothing else was open");
}
