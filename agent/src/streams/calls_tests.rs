//! Call hooks from byte fixtures: request starts with their estimate, stream progress, and the
//! calls that end without an exchange, each with the key its exchange carries.
use super::*;
use crate::capture::event::{ConnId, DataChunk, Direction, TlsLibrary};

fn tracker(call_hooks: bool) -> Tracker {
    Tracker::new(TrackerConfig { call_cap: 1 << 20, body_cap: 1 << 20, extra_ai_hosts: Vec::new(), call_hooks })
}

fn chunk(conn: u64, direction: Direction, ts_ns: u64, data: &[u8]) -> DataChunk<'_> {
    super::tests::chunk_of(300, TlsLibrary::OpenSsl, conn, direction, ts_ns, data)
}

fn key(conn: u64, seq: u64) -> CallKey {
    CallKey { conn: ConnId { tgid: 300, conn }, seq }
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-secret\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn json_response(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

fn chunked(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

/// One chat delta frame: " word" is one token in both encodings.
fn delta(word: &str) -> String {
    format!("data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" {word}\"}}}}]}}\n\n")
}

const REQ: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}],"max_completion_tokens":200}"#;
const RESP: &str = r#"{"object":"chat.completion","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#;

#[test]
fn json_calls_start_with_their_estimate_and_complete_under_the_same_key() {
    let mut t = tracker(true);
    let mut out = Output::default();
    for i in 0..3u64 {
        t.on_chunk(&chunk(1, Direction::Egress, 10 + i * 100, &post("/v1/chat/completions", REQ)), &mut out);
        assert_eq!(out.requests.len() as u64, i + 1, "reported as soon as the request is whole");
        assert_eq!(out.exchanges.len() as u64, i);
        t.on_chunk(&chunk(1, Direction::Ingress, 50 + i * 100, &json_response(RESP)), &mut out);
    }
    let start = &out.requests[0];
    assert_eq!(start.call, key(1, 1));
    assert_eq!((start.provider, start.api.operation.as_str()), ("openai", "chat"));
    assert_eq!(start.request_model.as_deref(), Some("gpt-4o"));
    assert!(!start.streaming);
    // 3 per message + "user" + "hello world" (2) + 3 priming, as the usage estimate counts.
    assert_eq!(start.estimate, Estimate { input_tokens: 9, max_output_tokens: Some(200) });
    assert_eq!((start.origin.id, start.origin.cgroup_id), (ConnId { tgid: 300, conn: 1 }, 5));
    let calls: Vec<CallKey> = out.exchanges.iter().map(|e| e.call).collect();
    assert_eq!(calls, vec![key(1, 1), key(1, 2), key(1, 3)]);
    assert_eq!(out.requests.iter().map(|r| r.call).collect::<Vec<_>>(), calls);
    t.on_close(ConnId { tgid: 300, conn: 1 }, 999, &mut out);
    assert!(out.ended.is_empty(), "every call completed");
    assert!(out.progress.is_empty(), "JSON responses are not followed");
}

#[test]
fn a_non_ai_request_on_an_ai_connection_counts_in_the_sequence_but_starts_no_call() {
    let mut t = tracker(true);
    let mut out = Output::default();
    t.on_chunk(&chunk(2, Direction::Egress, 1, &post("/v1/chat/completions", REQ)), &mut out);
    t.on_chunk(&chunk(2, Direction::Ingress, 2, &json_response(RESP)), &mut out);
    t.on_chunk(&chunk(2, Direction::Egress, 3, b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"), &mut out);
    t.on_chunk(&chunk(2, Direction::Ingress, 4, &json_response("{}")), &mut out);
    t.on_chunk(&chunk(2, Direction::Egress, 5, &post("/v1/chat/completions", REQ)), &mut out);
    assert_eq!(out.requests.iter().map(|r| r.call).collect::<Vec<_>>(), vec![key(2, 1), key(2, 3)]);
}

#[test]
fn sse_stream_reports_growing_progress_then_completes() {
    let mut t = tracker(true);
    let mut out = Output::default();
    let req = REQ.replace("\"max_completion_tokens\":200", "\"stream\":true");
    t.on_chunk(&chunk(3, Direction::Egress, 1, &post("/v1/chat/completions", &req)), &mut out);
    assert!(out.requests[0].streaming);
    assert_eq!(out.requests[0].estimate.max_output_tokens, None);
    t.on_chunk(&chunk(3, Direction::Ingress, 2, SSE_HEAD), &mut out);
    // 100 one-token deltas, in chunks of 5 frames.
    for batch in 0..20u64 {
        let frames: String = (0..5).map(|i| delta(&format!("w{}", batch * 5 + i))).collect();
        t.on_chunk(&chunk(3, Direction::Ingress, 3 + batch, &chunked(&frames)), &mut out);
    }
    let seen: Vec<u64> = out.progress.iter().map(|p| p.output_tokens_so_far).collect();
    assert!(out.progress.iter().all(|p| p.call == key(3, 1)));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "grows: {seen:?}");
    // Reported every few deltas, not on every chunk nor only at the end.
    assert!(seen.len() >= 5 && seen.len() <= 20, "{seen:?}");
    assert!(*seen.last().unwrap() >= 90, "{seen:?}");
    assert!(out.exchanges.is_empty());
    t.on_chunk(
        &chunk(3, Direction::Ingress, 40, &[chunked("data: [DONE]\n\n"), b"0\r\n\r\n".to_vec()].concat()),
        &mut out,
    );
    assert_eq!(out.exchanges.len(), 1);
    assert_eq!(out.exchanges[0].call, key(3, 1));
    t.on_close(ConnId { tgid: 300, conn: 3 }, 50, &mut out);
    assert!(out.ended.is_empty());
}

#[test]
fn responses_api_stream_progress_reaches_the_reported_count() {
    let sse = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent-proto/src/llm/fixtures/openai_responses_stream.sse"
    ))
    .unwrap();
    let mut t = tracker(true);
    let mut out = Output::default();
    let req = r#"{"model":"gpt-5-mini","instructions":"You are a terse assistant.","input":"Write a poem.","stream":true,"max_output_tokens":500}"#;
    t.on_chunk(&chunk(4, Direction::Egress, 1, &post("/v1/responses", req)), &mut out);
    assert_eq!(out.requests[0].api.operation.as_str(), "responses");
    assert_eq!(out.requests[0].estimate.max_output_tokens, Some(500));
    assert!(out.requests[0].estimate.input_tokens > 5);
    t.on_chunk(&chunk(4, Direction::Ingress, 2, SSE_HEAD), &mut out);
    for (i, piece) in sse.chunks(200).enumerate() {
        t.on_chunk(&chunk(4, Direction::Ingress, 3 + i as u64, &chunked(&String::from_utf8_lossy(piece))), &mut out);
    }
    // The completed snapshot reports 83 output tokens; the text deltas came before it.
    assert_eq!(out.progress.last().map(|p| p.output_tokens_so_far), Some(83));
    assert!(out.progress.iter().all(|p| p.call == key(4, 1)));
}

#[test]
fn calls_that_never_complete_end_on_close_exit_idle_and_failure() {
    let mut t = tracker(true);
    let mut out = Output::default();
    // Close with a request unanswered.
    t.on_chunk(&chunk(5, Direction::Egress, 1, &post("/v1/chat/completions", REQ)), &mut out);
    t.on_close(ConnId { tgid: 300, conn: 5 }, 2, &mut out);
    assert_eq!(out.ended, vec![key(5, 1)]);
    // Exit with two connections in flight.
    t.on_chunk(&chunk(6, Direction::Egress, 3, &post("/v1/chat/completions", REQ)), &mut out);
    t.on_chunk(&chunk(7, Direction::Egress, 3, &post("/v1/chat/completions", REQ)), &mut out);
    t.on_exit(300, 4, &mut out);
    assert_eq!(
        out.ended[1..].iter().copied().collect::<std::collections::BTreeSet<_>>(),
        [key(6, 1), key(7, 1)].into()
    );
    // Idle.
    out.ended.clear();
    t.on_chunk(&chunk(8, Direction::Egress, 10, &post("/v1/chat/completions", REQ)), &mut out);
    t.expire_idle(1_000, 100, &mut out);
    assert_eq!(out.ended, vec![key(8, 1)]);
    // A parse failure in the response.
    out.ended.clear();
    t.on_chunk(&chunk(9, Direction::Egress, 10, &post("/v1/chat/completions", REQ)), &mut out);
    t.on_chunk(
        &chunk(9, Direction::Ingress, 11, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        &mut out,
    );
    assert_eq!(out.ended, vec![key(9, 1)]);
    // A stream cut by the close completes (metered as cut): no end without an exchange.
    out.ended.clear();
    t.on_chunk(&chunk(10, Direction::Egress, 20, &post("/v1/chat/completions", REQ)), &mut out);
    t.on_chunk(&chunk(10, Direction::Ingress, 21, &[SSE_HEAD, &chunked(&delta("a"))].concat()), &mut out);
    t.on_close(ConnId { tgid: 300, conn: 10 }, 22, &mut out);
    assert!(out.ended.is_empty());
    assert_eq!(out.exchanges.last().map(|e| e.call), Some(key(10, 1)));
}

#[test]
fn without_call_hooks_nothing_is_counted_but_keys_remain() {
    let mut t = tracker(false);
    let mut out = Output::default();
    t.on_chunk(&chunk(11, Direction::Egress, 1, &post("/v1/chat/completions", REQ)), &mut out);
    t.on_chunk(&chunk(11, Direction::Ingress, 2, SSE_HEAD), &mut out);
    let frames: String = (0..40).map(|i| delta(&format!("w{i}"))).collect();
    t.on_chunk(&chunk(11, Direction::Ingress, 3, &chunked(&frames)), &mut out);
    t.on_chunk(&chunk(11, Direction::Ingress, 4, b"0\r\n\r\n"), &mut out);
    t.on_chunk(&chunk(11, Direction::Egress, 5, &post("/v1/chat/completions", REQ)), &mut out);
    t.on_close(ConnId { tgid: 300, conn: 11 }, 6, &mut out);
    assert!(out.requests.is_empty() && out.progress.is_empty() && out.ended.is_empty());
    assert_eq!(out.exchanges[0].call, key(11, 1));
}

#[test]
fn gzip_request_is_decoded_before_counting() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(REQ.as_bytes()).unwrap();
    let body = gz.finish().unwrap();
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend(body);
    let mut t = tracker(true);
    let mut out = Output::default();
    t.on_chunk(&chunk(12, Direction::Egress, 1, &req), &mut out);
    assert_eq!(out.requests[0].estimate, Estimate { input_tokens: 9, max_output_tokens: Some(200) });
}

/// The last progress of one long stream (400 deltas of ~100 bytes) read with `body_cap`.
fn long_stream(body_cap: usize) -> Vec<u64> {
    let mut t =
        Tracker::new(TrackerConfig { call_cap: 1 << 20, body_cap, extra_ai_hosts: Vec::new(), call_hooks: true });
    let mut out = Output::default();
    t.on_chunk(&chunk(13, Direction::Egress, 1, &post("/v1/chat/completions", REQ)), &mut out);
    t.on_chunk(&chunk(13, Direction::Ingress, 2, SSE_HEAD), &mut out);
    for batch in 0..40u64 {
        let frames: String = (0..10).map(|i| delta(&format!("w{}", batch * 10 + i))).collect();
        t.on_chunk(&chunk(13, Direction::Ingress, 3 + batch, &chunked(&frames)), &mut out);
    }
    out.progress.iter().map(|p| p.output_tokens_so_far).collect()
}

#[test]
fn a_stream_longer_than_the_body_cap_keeps_growing() {
    let whole = *long_stream(1 << 20).last().unwrap();
    // A tenth of the stream fits: the rest counts at the tokens per byte read so far.
    let capped = long_stream(4096);
    assert!(capped.windows(2).all(|w| w[0] < w[1]), "{capped:?}");
    let last = *capped.last().unwrap();
    assert!(last * 10 >= whole * 8 && last * 10 <= whole * 12, "{last} vs {whole} read whole");
}
