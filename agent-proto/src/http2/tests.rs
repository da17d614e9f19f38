//! Byte-fixture tests: frames built by a tiny encoder here, header blocks by `loona-hpack`'s
//! encoder (which indexes fields, so later requests reference its dynamic table).

use std::io::Write;

use super::frame::{flag, kind};
use super::*;
use crate::http::{decode_body, Role, Start};

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings() -> Vec<u8> {
    frame(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff])
}

fn encode(enc: &mut loona_hpack::Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
    enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

/// A block of literal fields that are never indexed: decodable without any table history.
fn literal_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0x10);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

const PATH: &str = "/v1/chat/completions";

fn request_fields() -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.openai.com"),
        (":path", PATH),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-test"),
        // Not in the static table: the encoder indexes it, later blocks reference it.
        ("x-stainless-lang", "python"),
    ]
}

struct Conn {
    p: H2Parser,
    events: Vec<H2Event>,
}

impl Conn {
    fn new(preface: bool) -> Self {
        Conn { p: H2Parser::new(1 << 20, preface), events: Vec::new() }
    }
    fn send(&mut self, b: &[u8]) -> Result<(), H2Error> {
        self.p.feed(Role::Request, b, &mut self.events)
    }
    fn recv(&mut self, b: &[u8]) -> Result<(), H2Error> {
        self.p.feed(Role::Response, b, &mut self.events)
    }
    fn completes(&self) -> Vec<(u32, &crate::http::Message, &crate::http::Message)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                H2Event::Complete { id, request, response, .. } => Some((*id, request, response)),
                _ => None,
            })
            .collect()
    }
    fn failures(&self) -> Vec<(u32, &'static str)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                H2Event::Failed { id, reason } => Some((*id, *reason)),
                _ => None,
            })
            .collect()
    }
}

/// Client bytes and server bytes of one complete exchange on stream 1.
fn one_exchange() -> (Vec<u8>, Vec<u8>) {
    let mut enc = loona_hpack::Encoder::new();
    let mut c = PREFACE.to_vec();
    c.extend(settings());
    c.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &encode(&mut enc, &request_fields())));
    c.extend(frame(kind::DATA, 0, 1, b"{\"model\":"));
    c.extend(frame(kind::DATA, flag::END_STREAM, 1, b"\"gpt\"}"));
    let mut senc = loona_hpack::Encoder::new();
    let mut s = settings();
    s.extend(frame(kind::SETTINGS, flag::ACK, 0, &[]));
    let block = encode(&mut senc, &[(":status", "200"), ("content-type", "application/json")]);
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &block));
    s.extend(frame(kind::DATA, 0, 1, b"{\"usage\":"));
    s.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
    s.extend(frame(kind::DATA, flag::END_STREAM, 1, b"{}}"));
    (c, s)
}

#[test]
fn one_exchange_becomes_http1_shaped_messages() {
    let (c, s) = one_exchange();
    let mut conn = Conn::new(true);
    conn.send(&c).unwrap();
    conn.recv(&s).unwrap();
    let done = conn.completes();
    assert_eq!(done.len(), 1);
    let (id, req, resp) = done[0];
    assert_eq!(id, 1);
    assert!(matches!(&req.head.start, Start::Request { method, target } if method == "POST" && target == PATH));
    assert_eq!(req.head.header_str("host"), Some("api.openai.com"));
    assert_eq!(req.head.content_type(), Some("application/json"));
    assert_eq!(req.body, b"{\"model\":\"gpt\"}");
    assert!(!req.truncated && !resp.truncated);
    assert!(matches!(resp.head.start, Start::Response { status: 200 }));
    assert_eq!(resp.body, b"{\"usage\":{}}");
    assert!(matches!(conn.events[0], H2Event::Request { id: 1, .. }));
    assert!(conn.events.iter().any(|e| matches!(e, H2Event::ResponseBody { id: 1 })));
    assert_eq!(conn.p.unanswered(), 0);
}

#[test]
fn any_split_gives_the_same_result() {
    let (c, s) = one_exchange();
    for step in [1, 2, 7, 9, 10, 33] {
        let mut conn = Conn::new(true);
        for piece in c.chunks(step) {
            conn.send(piece).unwrap();
        }
        for piece in s.chunks(step) {
            conn.recv(piece).unwrap();
        }
        let done = conn.completes();
        assert_eq!(done.len(), 1, "step {step}");
        assert_eq!(done[0].2.body, b"{\"usage\":{}}", "step {step}");
    }
}

#[test]
fn multiplexed_streams_answered_out_of_order() {
    let mut enc = loona_hpack::Encoder::new();
    let mut senc = loona_hpack::Encoder::new();
    let mut conn = Conn::new(true);
    let mut c = PREFACE.to_vec();
    for id in [1u32, 3, 5] {
        c.extend(frame(kind::HEADERS, flag::END_HEADERS, id, &encode(&mut enc, &request_fields())));
    }
    for id in [5u32, 1, 3] {
        c.extend(frame(kind::DATA, flag::END_STREAM, id, format!("req{id}").as_bytes()));
    }
    conn.send(&c).unwrap();
    let mut s = Vec::new();
    for id in [3u32, 5, 1] {
        s.extend(frame(kind::HEADERS, flag::END_HEADERS, id, &encode(&mut senc, &[(":status", "200")])));
        s.extend(frame(kind::DATA, 0, id, format!("resp{id}-").as_bytes()));
    }
    for id in [1u32, 5, 3] {
        s.extend(frame(kind::DATA, flag::END_STREAM, id, b"end"));
    }
    conn.recv(&s).unwrap();
    let done: Vec<_> = conn.completes().iter().map(|(id, q, r)| (*id, q.body.clone(), r.body.clone())).collect();
    let want: Vec<_> = [1u32, 5, 3]
        .iter()
        .map(|id| (*id, format!("req{id}").into_bytes(), format!("resp{id}-end").into_bytes()))
        .collect();
    assert_eq!(done, want);
}

#[test]
fn padding_priority_continuation_interim_and_trailers() {
    let mut enc = loona_hpack::Encoder::new();
    let block = encode(&mut enc, &request_fields());
    let (a, b) = block.split_at(block.len() / 2);
    // HEADERS with PADDED + PRIORITY, then CONTINUATION.
    let mut payload = vec![3u8, 0, 0, 0, 0, 16];
    payload.extend_from_slice(a);
    payload.extend_from_slice(&[0, 0, 0]);
    let mut c = PREFACE.to_vec();
    c.extend(frame(kind::HEADERS, flag::PADDED | flag::PRIORITY | flag::END_STREAM, 1, &payload));
    c.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, b));
    let mut senc = loona_hpack::Encoder::new();
    let mut s = frame(kind::HEADERS, flag::END_HEADERS, 1, &encode(&mut senc, &[(":status", "100")]));
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &encode(&mut senc, &[(":status", "200")])));
    // Padded DATA: pad length 4.
    let mut data = vec![4u8];
    data.extend_from_slice(b"body");
    data.extend_from_slice(&[0; 4]);
    s.extend(frame(kind::DATA, flag::PADDED, 1, &data));
    s.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &encode(&mut senc, &[("x-trailer", "1")])));
    let mut conn = Conn::new(true);
    conn.send(&c).unwrap();
    conn.recv(&s).unwrap();
    let done = conn.completes();
    assert_eq!(done.len(), 1);
    assert!(!done[0].1.truncated, "request ended with END_STREAM on HEADERS");
    assert!(matches!(done[0].2.head.start, Start::Response { status: 200 }));
    assert_eq!(done[0].2.body, b"body");
}

#[test]
fn gzip_and_sse_bodies_are_plain_messages() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"data: {\"a\":1}\n\ndata: [DONE]\n\n").unwrap();
    let body = gz.finish().unwrap();
    let mut enc = loona_hpack::Encoder::new();
    let mut senc = loona_hpack::Encoder::new();
    let mut c = PREFACE.to_vec();
    c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &encode(&mut enc, &request_fields())));
    let head = [(":status", "200"), ("content-type", "text/event-stream"), ("content-encoding", "gzip")];
    let mut s = frame(kind::HEADERS, flag::END_HEADERS, 1, &encode(&mut senc, &head));
    for piece in body.chunks(5) {
        s.extend(frame(kind::DATA, 0, 1, piece));
    }
    s.extend(frame(kind::DATA, flag::END_STREAM, 1, &[]));
    let mut conn = Conn::new(true);
    conn.send(&c).unwrap();
    conn.recv(&s).unwrap();
    let resp = conn.completes()[0].2;
    assert_eq!(resp.head.content_type(), Some("text/event-stream"));
    let plain = decode_body(resp.head.content_encoding(), &resp.body, 1 << 20).unwrap();
    assert_eq!(plain, b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
}

#[test]
fn joined_mid_way_meters_only_fully_decodable_streams() {
    // The client's encoder indexed everything on stream 1, before we joined.
    let mut enc = loona_hpack::Encoder::new();
    let _ = encode(&mut enc, &request_fields());
    let mut c = frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, &encode(&mut enc, &request_fields()));
    c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 5, &literal_block(&request_fields())));
    assert!(looks_like_frame(&c));
    let mut s = frame(kind::DATA, flag::END_STREAM, 1, b"tail of a response from before");
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 3, &literal_block(&[(":status", "200")])));
    s.extend(frame(kind::DATA, flag::END_STREAM, 3, b"three"));
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 5, &literal_block(&[(":status", "200")])));
    s.extend(frame(kind::DATA, flag::END_STREAM, 5, b"five"));
    let mut conn = Conn::new(false);
    conn.recv(&s[..9 + 30]).unwrap();
    assert!(!conn.p.verified());
    conn.send(&c).unwrap();
    conn.recv(&s[9 + 30..]).unwrap();
    assert!(conn.p.verified());
    assert_eq!(conn.failures(), vec![(1, "h2_unseen_request"), (3, "h2_unknown_headers")]);
    let done = conn.completes();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].0, done[0].2.body.as_slice()), (5, b"five".as_slice()));
    assert_eq!(conn.p.unanswered(), 0);
}

#[test]
fn content_length_completes_without_waiting_for_end_stream() {
    // curl stops reading once content-length bytes arrived; the server's separate empty
    // END_STREAM DATA frame may never be captured.
    let mut enc = loona_hpack::Encoder::new();
    let mut senc = loona_hpack::Encoder::new();
    let mut c = PREFACE.to_vec();
    c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &encode(&mut enc, &request_fields())));
    let head = [(":status", "200"), ("content-length", "5")];
    let mut s = frame(kind::HEADERS, flag::END_HEADERS, 1, &encode(&mut senc, &head));
    s.extend(frame(kind::DATA, 0, 1, b"hello"));
    let mut conn = Conn::new(true);
    conn.send(&c).unwrap();
    conn.recv(&s).unwrap();
    assert_eq!(conn.completes().len(), 1);
    conn.recv(&frame(kind::DATA, flag::END_STREAM, 1, &[])).unwrap();
    assert!(conn.failures().is_empty());
    assert_eq!(conn.p.unanswered(), 0);
}

#[test]
fn client_cancel_or_close_after_the_body_began_is_a_cut_response() {
    let mut enc = loona_hpack::Encoder::new();
    let mut senc = loona_hpack::Encoder::new();
    let mut c = PREFACE.to_vec();
    for id in [1u32, 3, 5] {
        c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, id, &encode(&mut enc, &request_fields())));
    }
    let sse = [(":status", "200"), ("content-type", "text/event-stream")];
    let mut s = Vec::new();
    for id in [1u32, 3, 5] {
        s.extend(frame(kind::HEADERS, flag::END_HEADERS, id, &encode(&mut senc, &sse)));
    }
    s.extend(frame(kind::DATA, 0, 1, b"data: [DONE]\n\n"));
    s.extend(frame(kind::DATA, 0, 5, b"data: {}\n\n"));
    let mut conn = Conn::new(true);
    conn.send(&c).unwrap();
    conn.recv(&s).unwrap();
    // The client cancels 1 (body began) and 3 (no body yet), then closes with 5 open.
    conn.send(&frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8])).unwrap();
    conn.send(&frame(kind::RST_STREAM, 0, 3, &[0, 0, 0, 8])).unwrap();
    conn.p.finish(&mut conn.events);
    let cut: Vec<_> = conn
        .events
        .iter()
        .filter_map(|e| match e {
            H2Event::Complete { id, response, cut, .. } => Some((*id, *cut, response.truncated)),
            _ => None,
        })
        .collect();
    assert_eq!(cut, vec![(1, true, false), (5, true, false)]);
    assert_eq!(conn.failures(), vec![(3, "h2_reset")]);
    assert_eq!(conn.p.unanswered(), 0);
}

#[test]
fn reset_and_goaway() {
    let mut enc = loona_hpack::Encoder::new();
    let mut c = PREFACE.to_vec();
    c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &encode(&mut enc, &request_fields())));
    c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, &encode(&mut enc, &request_fields())));
    let mut s = frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]);
    s.extend(frame(kind::GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
    s.extend(frame(kind::PING, 0, 0, &[0; 8]));
    let mut conn = Conn::new(true);
    conn.send(&c).unwrap();
    conn.recv(&s).unwrap();
    assert_eq!(conn.failures(), vec![(1, "h2_reset")]);
    assert_eq!(conn.p.unanswered(), 1, "stream 3 was never answered");
}

#[test]
fn request_gaps_truncate_and_header_gaps_fail() {
    let (c, s) = one_exchange();
    let mut conn = Conn::new(true);
    // The first request DATA frame's 9 data bytes lost: the frame header was seen.
    let data_start = c.len() - (9 + 9) - (9 + 6);
    conn.send(&c[..data_start + 9]).unwrap();
    conn.p.feed_gap(Role::Request, 9, &mut conn.events).unwrap();
    conn.send(&c[data_start + 18..]).unwrap();
    conn.recv(&s).unwrap();
    let done = conn.completes();
    assert!(done[0].1.truncated && done[0].1.body_len == 15);
    assert_eq!(conn.p.feed_gap(Role::Response, 1, &mut conn.events), Err(H2Error::Gap));
    assert_eq!(conn.send(b"x"), Err(H2Error::Gap), "errors are sticky");
}

#[test]
fn server_side_is_recognised() {
    let mut senc = loona_hpack::Encoder::new();
    let mut conn = Conn::new(false);
    let r = conn.send(&frame(kind::HEADERS, flag::END_HEADERS, 1, &encode(&mut senc, &[(":status", "200")])));
    assert_eq!(r, Err(H2Error::ServerSide));
    let mut enc = loona_hpack::Encoder::new();
    let mut conn = Conn::new(false);
    let r = conn.recv(&frame(kind::HEADERS, flag::END_HEADERS, 1, &encode(&mut enc, &request_fields())));
    assert_eq!(r, Err(H2Error::ServerSide));
    // Joined late with every field unknown: the peer opens stream 7, we answer on it.
    let mut conn = Conn::new(false);
    conn.recv(&frame(kind::HEADERS, flag::END_HEADERS, 7, b"\xbe")).unwrap();
    conn.recv(&frame(kind::DATA, flag::END_STREAM, 7, b"request body")).unwrap();
    let r = conn.send(&frame(kind::HEADERS, flag::END_HEADERS, 7, b"\xbf"));
    assert_eq!(r, Err(H2Error::ServerSide));
}

#[test]
fn malformed_input_is_a_typed_error() {
    let cases: Vec<(Vec<u8>, H2Error)> = vec![
        (b"PRI * HTTP/1.1\r\n".to_vec(), H2Error::BadPreface),
        ([PREFACE.as_slice(), &frame(kind::CONTINUATION, flag::END_HEADERS, 1, b"\x82")].concat(), H2Error::BadFrame),
        ([PREFACE.as_slice(), &frame(kind::DATA, flag::PADDED, 1, &[9, 1, 2])].concat(), H2Error::BadPadding),
        ([PREFACE.as_slice(), &frame(kind::DATA, flag::PADDED, 1, &[])].concat(), H2Error::BadPadding),
        (
            [PREFACE.as_slice(), &frame(kind::HEADERS, flag::PADDED | flag::END_HEADERS, 1, &[5, 0x82])].concat(),
            H2Error::BadPadding,
        ),
        (
            [PREFACE.as_slice(), &frame(kind::HEADERS, flag::PRIORITY | flag::END_HEADERS, 1, &[0, 0])].concat(),
            H2Error::BadFrame,
        ),
        ([PREFACE.as_slice(), &frame(kind::HEADERS, flag::END_HEADERS, 1, b"\x80")].concat(), H2Error::BadHpack),
        ([PREFACE.as_slice(), &frame(kind::HEADERS, flag::END_HEADERS, 0, b"\x82")].concat(), H2Error::BadFrame),
        ([PREFACE.as_slice(), &frame(kind::HEADERS, 0, 1, b"\x82"), &settings()].concat(), H2Error::BadFrame),
        ([PREFACE.as_slice(), &[0x20, 0, 0, kind::SETTINGS, 0, 0, 0, 0, 0]].concat(), H2Error::FrameTooLarge),
    ];
    for (i, (bytes, want)) in cases.into_iter().enumerate() {
        assert_eq!(Conn::new(true).send(&bytes), Err(want), "case {i}");
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A fixed xorshift sequence: reproducible, and varied enough to reach every frame type.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..2000 {
        let mut conn = Conn::new(round % 2 == 0);
        let mut bytes = if round % 2 == 0 { PREFACE.to_vec() } else { Vec::new() };
        for _ in 0..(round % 97) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x as u8;
            // Mostly small lengths and known types, so frames complete and get interpreted.
            bytes.push(match bytes.len() % 9 {
                0 | 1 => 0,
                3 => b % 10,
                _ => b,
            });
        }
        let _ = conn.send(&bytes);
        let _ = conn.recv(&bytes);
        let _ = conn.p.feed_gap(Role::Response, u64::from(x as u8), &mut conn.events);
    }
}

#[test]
fn sniffing() {
    assert!(starts_with_preface(PREFACE));
    assert!(starts_with_preface(b"PRI * HT"));
    assert!(!starts_with_preface(b"P"), "could be POST");
    assert!(!starts_with_preface(b"POST / HTTP/1.1\r\n"));
    assert!(!starts_with_preface(b""));
    assert!(looks_like_frame(&settings()));
    assert!(looks_like_frame(&frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0])));
    assert!(!looks_like_frame(&frame(kind::SETTINGS, 0, 1, &[])), "SETTINGS on a stream");
    assert!(!looks_like_frame(&frame(kind::DATA, 0, 0, b"x")), "DATA on stream 0");
    assert!(!looks_like_frame(&frame(kind::DATA, 0x40, 1, b"x")), "undefined flag");
    assert!(!looks_like_frame(&frame(kind::CONTINUATION, 4, 1, b"x")));
    assert!(!looks_like_frame(b"POST /v1/chat HTTP/1.1\r\n"));
    assert!(!looks_like_frame(b"HTTP/1.1 200 OK\r\n"));
    assert!(!looks_like_frame(&[0, 0]));
}

#[test]
fn debug_output_holds_no_payload() {
    let (c, s) = one_exchange();
    let mut conn = Conn::new(true);
    conn.send(&c[..c.len() - 5]).unwrap();
    let mut reader = frame::FrameReader::new(false);
    reader.feed(&c[PREFACE.len() + 15..PREFACE.len() + 40], &mut |_| Ok(())).unwrap();
    conn.send(&c[c.len() - 5..]).unwrap();
    conn.recv(&s).unwrap();
    let mut hp = hpack::HpackDecoder::new();
    let fields = hp.decode(&encode(&mut loona_hpack::Encoder::new(), &request_fields())).unwrap();
    let shown = format!("{:?} {:?} {:?} {:?}", conn.events, conn.p, reader, fields);
    for secret in ["sk-test", "gpt", "usage", "python"] {
        assert!(!shown.contains(secret), "{secret} leaked into Debug output");
    }
}
