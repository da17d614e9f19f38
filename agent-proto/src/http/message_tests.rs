//! Tests for [`MessageParser`], from byte fixtures. Assertions only: payloads are never printed
//! (failure messages go through the redacting Debug impls).

use super::*;

pub(super) const CAP: usize = 1 << 20;

pub(super) const GET: &[u8] =
    b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-secret\r\n\r\n";

pub(super) const POST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: api.openai.com\r\n\
Content-Type: application/json\r\n\
Content-Length: 27\r\n\
\r\n\
{\"model\":\"m\",\"messages\":[]}";

pub(super) const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: Text/Event-Stream; charset=utf-8\r\n\
Transfer-Encoding: chunked\r\n\
Content-Length: 3\r\n\
\r\n\
7;ext=\"a b\"\r\ndata: a\r\n\
9\r\n\n\ndata: b\r\n\
2;x\r\n\n\n\r\n\
0;final\r\n\
X-Usage: 12\r\n\
Trailer-Two: v\r\n\
\r\n";

pub(super) const CONTINUE_THEN_OK: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Feeds `data` in pieces whose sizes come from `sizes`, then calls `finish` unless an error
/// occurred. Returns all events and the first error.
pub(super) fn run(
    role: Role,
    data: &[u8],
    methods: &[&str],
    sizes: &mut dyn FnMut() -> usize,
) -> (Vec<Event>, Result<(), HttpError>) {
    let mut p = MessageParser::new(role, CAP);
    for m in methods {
        p.push_request_method(m);
    }
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = sizes().clamp(1, rest.len());
        if let Err(e) = p.feed(&rest[..n], &mut out) {
            return (out, Err(e));
        }
        rest = &rest[n..];
    }
    let r = p.finish(&mut out);
    (out, r)
}

pub(super) fn whole(role: Role, data: &[u8], methods: &[&str]) -> (Vec<Event>, Result<(), HttpError>) {
    run(role, data, methods, &mut || usize::MAX)
}

pub(super) fn messages(events: &[Event]) -> Vec<&Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Complete(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// Whole, every two-piece split, and byte-at-a-time feeding must all give the same events.
fn assert_split_invariant(role: Role, data: &[u8], methods: &[&str]) -> Vec<Event> {
    let (expected, r) = whole(role, data, methods);
    for k in 1..data.len() {
        let mut p = MessageParser::new(role, CAP);
        methods.iter().for_each(|m| p.push_request_method(m));
        let mut out = Vec::new();
        let got = p.feed(&data[..k], &mut out).and_then(|_| p.feed(&data[k..], &mut out));
        let got = got.and_then(|_| p.finish(&mut out));
        assert_eq!(got, r, "split at {k}");
        assert_eq!(out, expected, "split at {k}");
    }
    let (bytewise, r1) = run(role, data, methods, &mut || 1);
    assert_eq!(r1, r);
    assert_eq!(bytewise, expected);
    expected
}

#[test]
fn get_without_body() {
    let (ev, r) = whole(Role::Request, GET, &[]);
    r.unwrap();
    assert_eq!(ev.len(), 2);
    let Event::HeadComplete(head) = &ev[0] else { panic!("expected head") };
    assert_eq!(head.start, Start::Request { method: "GET".into(), target: "/v1/models".into() });
    assert_eq!(head.version_minor, 1);
    assert_eq!(head.header("HOST"), Some(&b"api.openai.com"[..]));
    assert_eq!(head.header_str("authorization"), Some("Bearer sk-secret"));
    assert_eq!(head.header("content-length"), None);
    let m = messages(&ev)[0];
    assert_eq!((m.body.len(), m.body_len, m.truncated), (0, 0, false));
    assert_eq!(&m.head, head);
}

#[test]
fn post_with_content_length() {
    let ev = assert_split_invariant(Role::Request, POST, &[]);
    assert!(matches!(ev[0], Event::HeadComplete(_)));
    assert_eq!(ev[1], Event::FirstBodyByte);
    let m = messages(&ev)[0];
    assert_eq!(m.body, br#"{"model":"m","messages":[]}"#);
    assert_eq!(m.body_len, 27);
    assert_eq!(m.head.content_type(), Some("application/json"));
    assert_eq!(ev.len(), 3);
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let ev = assert_split_invariant(Role::Response, CHUNKED, &["POST"]);
    let m = messages(&ev)[0];
    // Chunked wins over the conflicting Content-Length.
    assert_eq!(m.body, b"data: a\n\ndata: b\n\n");
    assert_eq!(m.body_len, 18);
    assert!(!m.truncated);
    assert_eq!(m.head.start, Start::Response { status: 200 });
    assert_eq!(m.head.content_type(), Some("text/event-stream"));
    assert_eq!(m.head.header("x-usage"), None, "trailers are not headers");
    assert_eq!(ev.iter().filter(|e| **e == Event::FirstBodyByte).count(), 1);
}

#[test]
fn interim_responses_are_skipped() {
    let ev = assert_split_invariant(Role::Response, CONTINUE_THEN_OK, &["POST"]);
    assert_eq!(ev.len(), 3);
    let Event::HeadComplete(h) = &ev[0] else { panic!("expected head") };
    assert_eq!(h.start, Start::Response { status: 200 });
    assert_eq!(messages(&ev)[0].body, b"ok");

    let mut p = MessageParser::new(Role::Response, CAP);
    let mut out = Vec::new();
    p.feed(b"HTTP/1.1 100 Continue\r\n\r\n", &mut out).unwrap();
    assert!(out.is_empty());
    assert!(p.in_message(), "the final response is still owed");
    assert_eq!(p.finish(&mut out), Err(HttpError::Incomplete));
}

#[test]
fn responses_without_body() {
    let data = b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    let ev = assert_split_invariant(Role::Response, data, &["GET", "GET", "HEAD", "GET"]);
    let ms = messages(&ev);
    let statuses: Vec<_> = ms.iter().map(|m| m.head.start.clone()).collect();
    assert_eq!(statuses.len(), 4);
    assert!(ms[..3].iter().all(|m| m.body_len == 0 && m.body.is_empty()));
    assert_eq!(ms[3].body, b"hello");
    assert_eq!(ev.iter().filter(|e| **e == Event::FirstBodyByte).count(), 1);
}

#[test]
fn read_until_close_completed_by_finish() {
    let data = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\ndata: y\n\n";
    let ev = assert_split_invariant(Role::Response, data, &[]);
    let m = messages(&ev)[0];
    assert_eq!(m.body, b"data: x\n\ndata: y\n\n");
    assert_eq!(m.head.version_minor, 0);

    let mut p = MessageParser::new(Role::Response, CAP);
    let mut out = Vec::new();
    p.feed(data, &mut out).unwrap();
    assert!(messages(&out).is_empty());
    assert!(p.in_message());
    p.finish(&mut out).unwrap();
    assert_eq!(messages(&out).len(), 1);
    assert!(!p.in_message());
}

fn request(i: usize) -> Vec<u8> {
    match i % 3 {
        0 => format!("GET /r{i} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes(),
        1 => format!("POST /r{i} HTTP/1.1\r\nContent-Length: {}\r\n\r\nbody{i}", 4 + i.to_string().len()).into_bytes(),
        _ => format!("HEAD /r{i} HTTP/1.1\r\n\r\n").into_bytes(),
    }
}

fn response(i: usize) -> Vec<u8> {
    let body = format!("resp{i}");
    match i % 3 {
        0 => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes(),
        1 => format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
            .into_bytes(),
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec(),
    }
}

#[test]
fn keep_alive_twenty_pairs() {
    let requests: Vec<u8> = (0..20).flat_map(request).collect();
    let responses: Vec<u8> = (0..20).flat_map(response).collect();
    for piece in [usize::MAX, 1, 7, 64] {
        let (req_ev, r) = run(Role::Request, &requests, &[], &mut || piece);
        r.unwrap();
        let reqs = messages(&req_ev);
        assert_eq!(reqs.len(), 20);
        let methods: Vec<&str> = reqs
            .iter()
            .map(|m| match &m.head.start {
                Start::Request { method, .. } => method.as_str(),
                Start::Response { .. } => unreachable!(),
            })
            .collect();
        let (resp_ev, r) = run(Role::Response, &responses, &methods, &mut || piece);
        r.unwrap();
        let resps = messages(&resp_ev);
        assert_eq!(resps.len(), 20);
        for i in 0..20 {
            let want_req = if i % 3 == 1 { format!("body{i}").into_bytes() } else { Vec::new() };
            assert_eq!(reqs[i].body, want_req, "request {i}");
            let want_resp = if i % 3 == 2 { Vec::new() } else { format!("resp{i}").into_bytes() };
            assert_eq!(resps[i].body, want_resp, "response {i}");
        }
    }
}

#[test]
fn pipelined_and_stray_crlf_split_everywhere() {
    let mut data = POST.to_vec();
    data.extend_from_slice(b"\r\n");
    data.extend_from_slice(GET);
    data.extend_from_slice(b"POST /x HTTP/1.1\ntransfer-encoding: chunked\n\n3\nabc\n0\n\n");
    let ev = assert_split_invariant(Role::Request, &data, &[]);
    let ms = messages(&ev);
    assert_eq!(ms.len(), 3);
    assert_eq!(ms[2].body, b"abc");
}

#[test]
fn body_cap_truncates_with_exact_length() {
    let mut data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', 100));
    data.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n",
    );
    data.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
    for piece in [usize::MAX, 1, 5] {
        let mut p = MessageParser::new(Role::Response, 10);
        let mut out = Vec::new();
        for c in data.chunks(piece.min(data.len())) {
            p.feed(c, &mut out).unwrap();
        }
        let ms = messages(&out);
        assert_eq!(ms.len(), 3);
        assert_eq!((ms[0].body.len(), ms[0].body_len, ms[0].truncated), (10, 100, true));
        assert_eq!((ms[1].body.as_slice(), ms[1].body_len, ms[1].truncated), (&b"0123456789"[..], 16, true));
        assert_eq!((ms[2].body.as_slice(), ms[2].body_len, ms[2].truncated), (&b"abc"[..], 3, false));
    }
    let mut p = MessageParser::new(Role::Request, 0);
    let mut out = Vec::new();
    p.feed(POST, &mut out).unwrap();
    assert_eq!((messages(&out)[0].body.len(), messages(&out)[0].body_len), (0, 27));
}

#[test]
fn gap_inside_body_is_skipped() {
    let mut p = MessageParser::new(Role::Response, CAP);
    let mut out = Vec::new();
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", &mut out).unwrap();
    p.feed_gap(50, &mut out).unwrap();
    p.feed(&[b'z'; 40], &mut out).unwrap();
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nab", &mut out).unwrap();
    p.feed_gap(14, &mut out).unwrap();
    p.feed(b"\r\n2\r\ncd\r\n0\r\n\r\n", &mut out).unwrap();
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", &mut out).unwrap();
    // A gap that ends the body exactly completes the message.
    p.feed_gap(2, &mut out).unwrap();
    p.feed(b"HTTP/1.1 204 No Content\r\n\r\n", &mut out).unwrap();
    let ms = messages(&out);
    assert_eq!(ms.len(), 4);
    assert_eq!((ms[0].body.len(), ms[0].body_len, ms[0].truncated), (50, 100, true));
    assert_eq!(&ms[0].body[..10], b"0123456789");
    assert_eq!((ms[1].body.as_slice(), ms[1].body_len, ms[1].truncated), (&b"abcd"[..], 18, true));
    assert_eq!((ms[2].body_len, ms[2].truncated), (4, true));
    assert!(!ms[3].truncated);
    assert_eq!(out.iter().filter(|e| **e == Event::FirstBodyByte).count(), 3);
}

#[test]
fn upgrade_and_connect_end_http() {
    let mut p = MessageParser::new(Role::Response, CAP);
    p.push_request_method("GET");
    let mut out = Vec::new();
    p.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", &mut out).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(messages(&out)[0].head.start, Start::Response { status: 101 });
    assert!(!p.in_message());
    assert_eq!(p.feed(&[0x81, 0x05], &mut out), Err(HttpError::Upgraded));
    assert_eq!(HttpError::Upgraded.reason(), "upgraded");

    let mut p = MessageParser::new(Role::Response, CAP);
    p.push_request_method("CONNECT");
    p.push_request_method("GET");
    p.feed(b"HTTP/1.1 200 Connection Established\r\n\r\n", &mut out).unwrap();
    assert_eq!(p.finish(&mut out), Ok(()));
    assert_eq!(p.feed(b"\x16\x03\x01", &mut out), Err(HttpError::Upgraded));
}

#[test]
fn large_bodies_and_many_chunks_stream_linearly() {
    let mut data = b"POST /v1/messages HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    data.extend((0..1_048_576u32).map(|i| (i % 251) as u8));
    let (ev, r) = run(Role::Request, &data, &[], &mut || 16 * 1024);
    r.unwrap();
    assert_eq!(messages(&ev)[0].body_len, 1_048_576);
    assert_eq!(messages(&ev)[0].body[1000], (1000 % 251) as u8);

    let mut sse = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for i in 0..500 {
        let frame = format!("data: {{\"i\":{i}}}\n\n");
        sse.extend_from_slice(format!("{:x}\r\n{frame}\r\n", frame.len()).as_bytes());
    }
    sse.extend_from_slice(b"0\r\n\r\n");
    let (ev, r) = run(Role::Response, &sse, &["POST"], &mut || 1);
    r.unwrap();
    let body = &messages(&ev)[0].body;
    assert!(body.starts_with(b"data: {\"i\":0}\n\n") && body.ends_with(b"data: {\"i\":499}\n\n"));
}

#[test]
fn debug_output_is_redacted() {
    let data = b"POST /v1beta/models/g:generateContent?key=AIzaSECRETKEY HTTP/1.1\r\n\
Authorization: Bearer sk-secret\r\nContent-Length: 11\r\n\r\nhello world";
    let (ev, r) = whole(Role::Request, data, &[]);
    r.unwrap();
    let dbg = format!("{ev:?} {:?}", MessageParser::new(Role::Request, CAP));
    for secret in ["sk-secret", "AIzaSECRETKEY", "hello world", "Bearer"] {
        assert!(!dbg.contains(secret), "Debug leaks a payload");
    }
    assert!(dbg.contains("authorization") && dbg.contains("generateContent"));
    let reasons: Vec<_> = [HttpError::NotHttp, HttpError::BadContentLength, HttpError::HeadTooLarge]
        .iter()
        .map(HttpError::reason)
        .collect();
    assert_eq!(reasons, ["not_http", "bad_content_length", "head_too_large"]);
}

#[test]
fn head_accessors() {
    let head = Head {
        start: Start::Response { status: 200 },
        version_minor: 1,
        headers: vec![
            ("content-type".into(), b" APPLICATION/JSON ; charset=UTF-8".to_vec()),
            ("content-encoding".into(), b"gzip".to_vec()),
            ("x-bin".into(), vec![0xff, 0xfe]),
            ("x-dup".into(), b"first".to_vec()),
            ("x-dup".into(), b"second".to_vec()),
        ],
    };
    assert_eq!(head.content_type(), Some("application/json"));
    assert_eq!(head.content_encoding(), Some("gzip"));
    assert_eq!(head.header_str("x-bin"), None);
    assert_eq!(head.header("x-bin"), Some(&[0xff, 0xfe][..]));
    assert_eq!(head.header_str("X-Dup"), Some("first"));
}
