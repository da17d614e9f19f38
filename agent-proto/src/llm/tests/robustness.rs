//! Garbage in: errors or records out, never a panic.

use super::*;

const FIXTURES: &[&[u8]] = &[
    include_bytes!("../fixtures/openai_chat.json"),
    include_bytes!("../fixtures/openai_chat_stream_usage.sse"),
    include_bytes!("../fixtures/openai_chat_stream_no_usage.sse"),
    include_bytes!("../fixtures/openai_chat_dashscope.json"),
    include_bytes!("../fixtures/openai_chat_stream_dashscope.sse"),
    include_bytes!("../fixtures/openai_chat_stream_done_only.sse"),
    include_bytes!("../fixtures/openai_responses.json"),
    include_bytes!("../fixtures/openai_responses_stream.sse"),
    include_bytes!("../fixtures/openai_embeddings.json"),
    include_bytes!("../fixtures/anthropic_messages.json"),
    include_bytes!("../fixtures/anthropic_stream.sse"),
    include_bytes!("../fixtures/anthropic_stream_cache_tools.sse"),
    include_bytes!("../fixtures/openai_error_401.json"),
    include_bytes!("../fixtures/anthropic_error_529.json"),
    include_bytes!("../fixtures/cohere_chat.json"),
    include_bytes!("../fixtures/cohere_chat_stream.sse"),
    include_bytes!("../fixtures/cohere_embed.json"),
];

const REQUESTS: &[&[u8]] = &[
    br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    br#"{"model":"gpt-5","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"instructions":"x"}"#,
    br#"{"model":"text-embedding-3-small","input":["a",[1,2],3]}"#,
    br#"{"model":"claude-sonnet-4-5","system":"s","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
    include_bytes!("../fixtures/openai_chat_request_cookbook.json"),
];

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every endpoint, content type, status and truncation flag; the result is discarded.
fn exercise(request: &[u8], response: &[u8]) {
    for ep in ALL {
        for ct in [None, Some("application/json"), Some("text/event-stream")] {
            for (status, truncated) in [(200, false), (200, true), (500, false)] {
                let ex = Exchange {
                    request_body: request,
                    request_truncated: truncated,
                    status,
                    response_content_type: ct,
                    response_body: response,
                    response_truncated: truncated,
                };
                let _ = extract(ep, &ex);
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    // Tokens that steer random input into the JSON and SSE paths.
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "data: ",
        "event: ",
        "\n\n",
        "\n",
        "null",
        "true",
        "1",
        "-1",
        "1e999",
        "\"usage\"",
        "\"choices\"",
        "\"delta\"",
        "\"content\"",
        "\"prompt_tokens\"",
        "\"input_tokens\"",
        "\"output_tokens\"",
        "\"type\"",
        "\"message_start\"",
        "\"message_delta\"",
        "\"response.completed\"",
        "\"error\"",
        "\"model\"",
        "\"messages\"",
        "\"text\"",
        "\"index\"",
        "18446744073709551615",
        "\u{00e9}",
        "\\u0000",
        "[DONE]",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..1500 {
        let len = rng.below(300);
        let mut body = Vec::with_capacity(len * 4);
        if rng.below(2) == 0 {
            for _ in 0..len {
                body.push(rng.next() as u8);
            }
        } else {
            for _ in 0..len {
                body.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
            }
        }
        let request = REQUESTS[rng.below(REQUESTS.len())];
        exercise(request, &body);
        exercise(&body, FIXTURES[rng.below(FIXTURES.len())]);
    }
}

#[test]
fn every_prefix_of_every_fixture() {
    for (i, fixture) in FIXTURES.iter().enumerate() {
        let request = REQUESTS[i % REQUESTS.len()];
        // Every cut in small fixtures; a stride through big ones (debug-build parse time).
        let stride = if fixture.len() > 2048 { 7 } else { 1 };
        for cut in (0..fixture.len()).step_by(stride) {
            let ex = Exchange { response_truncated: true, ..sse(request, &fixture[..cut]) };
            for ep in ALL {
                let _ = extract(ep, &ex);
            }
        }
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = Rng(42);
    for fixture in FIXTURES {
        for _ in 0..100 {
            let mut body = fixture.to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(body.len());
                match rng.below(3) {
                    0 => body[at] = rng.next() as u8,
                    1 => {
                        body.remove(at);
                    }
                    _ => body.insert(at, b"{}[]\":,0\n"[rng.below(9)]),
                }
            }
            exercise(REQUESTS[rng.below(REQUESTS.len())], &body);
        }
    }
}

#[test]
fn huge_numbers_and_deep_nesting() {
    let huge = br#"{"model":"claude-x","content":[],"usage":{"input_tokens":18446744073709551615,"cache_creation_input_tokens":18446744073709551615,"cache_read_input_tokens":1,"output_tokens":1e300}}"#;
    let call = extract(MESSAGES, &json(REQUESTS[3], huge)).unwrap();
    assert_eq!(call.input_tokens, u64::MAX);
    assert_eq!(call.output_tokens, 0);
    let deep = format!("{{\"usage\":{}{}", "[".repeat(10_000), "]".repeat(10_000));
    exercise(REQUESTS[0], deep.as_bytes());
    exercise(deep.as_bytes(), deep.as_bytes());
}
