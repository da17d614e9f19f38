//! Error paths of [`MessageParser`]: refusal, malformed framing, gaps, cut-offs, and random
//! input. Assertions only; payloads are never printed.

use super::tests::{messages, run, whole, CAP, CHUNKED, CONTINUE_THEN_OK, GET, POST};
use super::*;

#[test]
fn gap_outside_body_fails() {
    let mut out = Vec::new();
    let mut p = MessageParser::new(Role::Request, CAP);
    p.feed(b"GET / HT", &mut out).unwrap();
    assert_eq!(p.feed_gap(10, &mut out), Err(HttpError::Gap));
    assert_eq!(p.feed(b"TP/1.1\r\n\r\n", &mut out), Err(HttpError::Gap), "errors are sticky");

    let mut p = MessageParser::new(Role::Request, CAP);
    assert_eq!(p.feed_gap(0, &mut out), Ok(()));
    assert_eq!(p.feed_gap(3, &mut out), Err(HttpError::Gap), "between messages");

    let mut p = MessageParser::new(Role::Request, CAP);
    p.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", &mut out).unwrap();
    assert_eq!(p.feed_gap(4, &mut out), Err(HttpError::Gap), "gap runs past the body");

    let mut p = MessageParser::new(Role::Response, CAP);
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5", &mut out).unwrap();
    assert_eq!(p.feed_gap(1, &mut out), Err(HttpError::Gap), "gap in a chunk-size line");
}

#[test]
fn not_http_decided_early() {
    let mut out = Vec::new();
    let cases: [(Role, &[u8], usize); 6] = [
        (Role::Request, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], 1),
        (Role::Response, &[0x16, 0x03, 0x03, 0x00, 0x7a], 1),
        (Role::Request, &[0x00, 0xff, 0x13, 0x37], 1),
        (Role::Request, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 12),
        (Role::Request, b"HTTP/1.1 200 OK\r\n\r\n", 5),
        (Role::Response, b"GET / HTTP/1.1\r\n\r\n", 1),
    ];
    for (role, data, decided_at) in cases {
        let mut p = MessageParser::new(role, CAP);
        assert_eq!(p.feed(&data[..decided_at - 1], &mut out), Ok(()));
        assert_eq!(p.feed(&data[decided_at - 1..decided_at], &mut out), Err(HttpError::NotHttp));
        assert_eq!(p.feed(&data[decided_at..], &mut out), Err(HttpError::NotHttp));
        assert!(!p.in_message());
    }
    assert!(out.is_empty());
    // Valid prefixes are never refused, whatever else could follow.
    for prefix in [&b"G"[..], b"GET", b"GET ", b"GET /", b"GET / HTTP/1", b"OPTIONS * HTTP/1.1\r"] {
        assert_eq!(MessageParser::new(Role::Request, CAP).feed(prefix, &mut out), Ok(()));
    }
    for prefix in [&b"H"[..], b"HTTP/1.", b"HTTP/1.1 2", b"HTTP/1.1 200", b"HTTP/1.1 200 \xe2\x9c\x93"] {
        assert_eq!(MessageParser::new(Role::Response, CAP).feed(prefix, &mut out), Ok(()));
    }
}

fn first_error(role: Role, data: &[u8]) -> HttpError {
    whole(role, data, &[]).1.unwrap_err()
}

#[test]
fn malformed_messages() {
    use HttpError::*;
    let req = Role::Request;
    let resp = Role::Response;
    let cases: [(Role, &[u8], HttpError); 15] = [
        (resp, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BadChunk),
        (resp, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd", BadChunk),
        (req, b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", BadContentLength),
        (req, b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", BadContentLength),
        (req, b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", BadContentLength),
        (req, b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", BadContentLength),
        (req, b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", BadContentLength),
        (req, b"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n", BadHeader),
        (req, b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", BadHeader),
        (req, b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", BadHeader),
        (req, b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", BadHeader),
        (req, b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", BadHeader),
        (req, b"GET / HTTP/1.1\r\n\r\nGET / HTTP/2.0\r\n\r\n", BadStartLine),
        (resp, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\x16\x03\x01", BadStartLine),
        (resp, b"HTTP/1.1 099 Odd\r\n\r\n", NotHttp),
    ];
    for (i, (role, data, want)) in cases.into_iter().enumerate() {
        assert_eq!(first_error(role, data), want, "case {i}");
        // Same outcome however the bytes arrive.
        assert_eq!(run(role, data, &[], &mut || 1).1, Err(want), "case {i} bytewise");
    }
    // Repeated identical lengths are allowed.
    let (ev, r) = whole(req, b"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2, 2\r\n\r\nab", &[]);
    r.unwrap();
    assert_eq!(messages(&ev)[0].body, b"ab");
}

#[test]
fn huge_head_is_refused() {
    let mut data = b"GET / HTTP/1.1\r\n".to_vec();
    while data.len() <= 70_000 {
        data.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(first_error(Role::Request, &data), HttpError::HeadTooLarge);
    let mut long_line = b"GET /".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 70_000));
    assert_eq!(run(Role::Request, &long_line, &[], &mut || 1000).1, Err(HttpError::HeadTooLarge));
}

#[test]
fn cut_off_messages_are_incomplete() {
    let cuts: [(Role, &[u8]); 5] = [
        (Role::Request, b"GET / HTTP/1.1\r\nHost: x\r\n"),
        (Role::Request, b"G"),
        (Role::Request, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
        (Role::Response, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
        (Role::Response, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: x\r\n"),
    ];
    for (i, (role, data)) in cuts.into_iter().enumerate() {
        let (_, r) = whole(role, data, &[]);
        assert_eq!(r, Err(HttpError::Incomplete), "case {i}");
    }
    let mut p = MessageParser::new(Role::Request, CAP);
    let mut out = Vec::new();
    assert!(!p.in_message());
    assert_eq!(p.finish(&mut out), Ok(()), "nothing seen");
    p.feed(GET, &mut out).unwrap();
    p.feed(b"\r\n", &mut out).unwrap();
    assert!(!p.in_message(), "stray CRLF does not start a message");
    assert_eq!(p.finish(&mut out), Ok(()));
    p.feed(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\na", &mut out).unwrap();
    assert!(p.in_message());
    assert_eq!(p.finish(&mut out), Err(HttpError::Incomplete));
    assert_eq!(p.finish(&mut out), Err(HttpError::Incomplete));
    assert_eq!(p.feed(b"b", &mut out), Err(HttpError::Incomplete));
}

/// Deterministic xorshift64, so failures reproduce without a new dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: [&[u8]; 5] = [GET, POST, CHUNKED, CONTINUE_THEN_OK, b"HTTP/1.1 200 OK\r\n\r\nabc"];
    for round in 0..3000 {
        let role = if round % 2 == 0 { Role::Request } else { Role::Response };
        let data: Vec<u8> = if round % 3 == 0 {
            let len = (rng.next() % 300) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            // Mutate a valid message, so the parser gets deep before meeting damage.
            let mut d = seeds[(rng.next() % seeds.len() as u64) as usize].to_vec();
            for _ in 0..(rng.next() % 4) {
                let i = (rng.next() % d.len() as u64) as usize;
                match rng.next() % 3 {
                    0 => d[i] = rng.next() as u8,
                    1 => d.insert(i, b"\r\n:;0 "[(rng.next() % 6) as usize]),
                    _ => {
                        d.remove(i);
                    }
                }
            }
            d
        };
        let mut p = MessageParser::new(role, (rng.next() % 64) as usize);
        p.push_request_method(if rng.next().is_multiple_of(4) { "HEAD" } else { "GET" });
        let mut out = Vec::new();
        let mut rest = &data[..];
        let mut failed = None;
        while !rest.is_empty() {
            let n = ((rng.next() % 40) as usize + 1).min(rest.len());
            let r = if rng.next().is_multiple_of(16) {
                p.feed_gap(rng.next() % 8, &mut out)
            } else {
                p.feed(&rest[..n], &mut out)
            };
            if let Some(prev) = &failed {
                assert_eq!(r.as_ref(), Err(prev), "errors stay sticky");
            } else if let Err(e) = r {
                failed = Some(e);
            }
            rest = &rest[n..];
        }
        let _ = p.finish(&mut out);
        let _ = p.in_message();
        for m in messages(&out) {
            assert!(m.body.len() as u64 <= m.body_len);
        }
    }
}

#[test]
fn partial_sse_body_is_available_after_an_incomplete_finish() {
    let mut p = MessageParser::new(Role::Response, 1 << 20);
    let mut out = Vec::new();
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", &mut out)
        .unwrap();
    p.feed(b"e\r\ndata: [DONE]\n\n\r\n", &mut out).unwrap();
    assert!(p.take_partial().is_none(), "nothing partial while the stream is alive");
    assert_eq!(p.finish(&mut out), Err(HttpError::Incomplete));
    let m = p.take_partial().expect("partial message");
    assert_eq!(m.body, b"data: [DONE]\n\n");
    assert!(p.take_partial().is_none());
    assert_eq!(p.feed(b"x", &mut out), Err(HttpError::Incomplete));
}
