//! Parsing-pipeline benchmark: synthetic capture chunks through `streams::Tracker` and
//! `usage::build`, the path every captured TLS call takes in the agent (no kernel, no root).
//!
//! Each scenario also runs with the enforcement call hooks on (`+hooks`: the request's input
//! tokens counted when it is whole, a streamed response's output counted as it arrives), to show
//! what enforcement adds to the path.
//!
//! Run by `cargo xtask bench` (release build). Prints a Markdown table on stdout and progress on
//! stderr; never a byte of the synthetic payloads. Scenarios are interleaved (a, b, c, a, b, c,
//! …) so that the machine's noise spreads over all of them; each reported figure is the median
//! over the repetitions.
//!
//! `cargo run --release -p tokentap --example pipeline_bench -- [--reps N] [--rep-ms MS]`
use std::time::{Duration, Instant};

use tokentap::{
    attribution::Mapping,
    capture::{ConnId, DataChunk, Direction, TlsLibrary},
    clock::Clock,
    identity::model::Workload,
    streams::{Output, Tracker, TrackerConfig},
    usage::{self, Attributed},
};

/// The agent's defaults (`capture.call_cap_bytes`, `capture.max_body_bytes`).
const CALL_CAP: u64 = 4 * 1024 * 1024;
const BODY_CAP: usize = 16 * 1024 * 1024;
/// The kernel ships a call's plaintext in chunks of at most this many bytes.
const KERNEL_CHUNK: usize = 16 * 1024;

/// One library call (one `SSL_write` or `SSL_read`) as the kernel ships it.
struct Call {
    direction: Direction,
    bytes: Vec<u8>,
}

/// What a scenario's record must say (checked once per call, outside the timed sections).
struct Expect {
    input_tokens: u64,
    output_tokens: u64,
    streaming: bool,
}

struct Scenario {
    name: String,
    what: &'static str,
    calls: Vec<Call>,
    expect: Expect,
    tracker: Tracker,
    conn: u64,
    ts_ns: u64,
    /// Exchanges per repetition, calibrated so that one repetition takes about `--rep-ms`.
    per_rep: usize,
    /// Per-exchange nanoseconds of each repetition: reassembly + HTTP, and record building.
    feed_ns: Vec<f64>,
    build_ns: Vec<f64>,
    total_ns: Vec<f64>,
}

impl Scenario {
    fn new(name: &'static str, what: &'static str, calls: Vec<Call>, expect: Expect, conn: u64) -> Self {
        Scenario {
            name: name.to_string(),
            what,
            calls,
            expect,
            tracker: Tracker::new(TrackerConfig {
                call_cap: CALL_CAP,
                body_cap: BODY_CAP,
                extra_ai_hosts: vec![],
                call_hooks: false,
            }),
            conn,
            ts_ns: 1_000_000,
            per_rep: 1,
            feed_ns: Vec::new(),
            build_ns: Vec::new(),
            total_ns: Vec::new(),
        }
    }

    /// The same scenario with the enforcement call hooks on.
    fn with_hooks(self) -> Self {
        Scenario {
            name: format!("{}+hooks", self.name),
            tracker: Tracker::new(TrackerConfig {
                call_cap: CALL_CAP,
                body_cap: BODY_CAP,
                extra_ai_hosts: vec![],
                call_hooks: true,
            }),
            conn: self.conn + 100,
            ..self
        }
    }

    fn hooks(&self) -> bool {
        self.name.ends_with("+hooks")
    }

    fn bytes_per_exchange(&self) -> usize {
        self.calls.iter().map(|c| c.bytes.len()).sum()
    }

    fn chunks_per_exchange(&self) -> usize {
        self.calls.iter().map(|c| c.bytes.len().div_ceil(KERNEL_CHUNK).max(1)).sum()
    }

    /// One exchange on the scenario's keep-alive connection; returns (feed, build) durations.
    fn exchange(&mut self, who: &Attributed<'_>, clock: &Clock) -> (Duration, Duration) {
        let mut out = Output::default();
        let id = ConnId { tgid: 4242, conn: self.conn };
        let started = Instant::now();
        for call in &self.calls {
            self.ts_ns += 1_000;
            let call_len = call.bytes.len() as u64;
            for (i, data) in call.bytes.chunks(KERNEL_CHUNK).enumerate() {
                let chunk = DataChunk {
                    id,
                    tid: 4243,
                    cgroup_id: 1,
                    ts_ns: self.ts_ns,
                    direction: call.direction,
                    library: TlsLibrary::OpenSsl,
                    call_len,
                    offset: (i * KERNEL_CHUNK) as u64,
                    truncated: false,
                    lost_before: false,
                    data,
                };
                self.tracker.on_chunk(&chunk, &mut out);
            }
        }
        let fed = Instant::now();
        let records: Vec<_> = out.exchanges.iter().map(|t| usage::build(t, who, clock, BODY_CAP)).collect();
        let built = Instant::now();
        // Checked outside the timed sections; a wrong pipeline must not produce a number.
        assert!(out.failures.is_empty(), "{}: parse failures {:?}", self.name, out.failures);
        assert_eq!(records.len(), 1, "{}: expected one exchange per call", self.name);
        let starts = if self.hooks() { 1 } else { 0 };
        assert_eq!(out.requests.len(), starts, "{}: request starts", self.name);
        if self.hooks() && self.expect.streaming {
            assert!(!out.progress.is_empty(), "{}: no stream progress", self.name);
        }
        match &records[0] {
            Ok(r) => {
                let e = &self.expect;
                assert_eq!(
                    (r.input_tokens, r.output_tokens, r.streaming, r.usage_source),
                    (e.input_tokens, e.output_tokens, e.streaming, "reported"),
                    "{}: wrong record",
                    self.name
                );
            }
            Err(e) => panic!("{}: no record: {}", self.name, e.reason()),
        }
        drop(out);
        (fed - started, built - fed)
    }

    fn rep(&mut self, who: &Attributed<'_>, clock: &Clock) {
        let (mut feed, mut build) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..self.per_rep {
            let (f, b) = self.exchange(who, clock);
            feed += f;
            build += b;
        }
        let n = self.per_rep as f64;
        self.feed_ns.push(feed.as_nanos() as f64 / n);
        self.build_ns.push(build.as_nanos() as f64 / n);
        self.total_ns.push((feed + build).as_nanos() as f64 / n);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

// ----------------------------------------------------------------------------- payloads

const WORDS: &[&str] = &[
    "token",
    "stream",
    "latency",
    "throughput",
    "kernel",
    "probe",
    "cache",
    "model",
    "reply",
    "metric",
    "budget",
    "signal",
    "vector",
    "cluster",
    "window",
    "buffer",
    "quota",
    "naïve",
    "café",
];

/// Deterministic filler text of about `len` bytes (JSON-safe: no quotes or backslashes).
fn text(len: usize, seed: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    let mut i = seed;
    while s.len() < len {
        s.push_str(WORDS[i % WORDS.len()]);
        s.push(' ');
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    s
}

fn request(body: &str) -> Call {
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAccept-Encoding: gzip, deflate\r\n\
         Accept: application/json\r\nContent-Type: application/json\r\nUser-Agent: OpenAI/Python 1.99.9\r\n\
         Authorization: Bearer sk-bench-0000000000000000000000000000000000000000\r\nConnection: keep-alive\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    // One SSL_write: clients send head and body together.
    Call { direction: Direction::Egress, bytes: format!("{head}{body}").into_bytes() }
}

fn response_head(extra: &str) -> Call {
    let head = format!(
        "HTTP/1.1 200 OK\r\nDate: Sun, 22 Nov 2026 22:49:05 GMT\r\n{extra}Connection: keep-alive\r\n\
         openai-organization: user-bench\r\nopenai-processing-ms: 412\r\nopenai-version: 2020-10-01\r\n\
         x-ratelimit-limit-requests: 10000\r\nx-ratelimit-remaining-requests: 9999\r\n\
         x-request-id: req_0123456789abcdef0123456789abcdef\r\ncf-cache-status: DYNAMIC\r\nServer: cloudflare\r\n\r\n"
    );
    Call { direction: Direction::Ingress, bytes: head.into_bytes() }
}

fn usage_json(input: u64, output: u64) -> String {
    format!(
        r#"{{"prompt_tokens":{input},"completion_tokens":{output},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":256,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#,
        input + output
    )
}

fn chat_body(messages: &[String], stream: bool) -> String {
    let msgs: Vec<String> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| format!(r#"{{"role":"{}","content":"{m}"}}"#, if i % 2 == 0 { "user" } else { "assistant" }))
        .collect();
    let stream = if stream { r#","stream":true,"stream_options":{"include_usage":true}"# } else { "" };
    format!(r#"{{"messages":[{}],"model":"gpt-4o-mini","temperature":0.2{stream}}}"#, msgs.join(","))
}

fn completion_json(content: &str, input: u64, output: u64) -> String {
    format!(
        r#"{{"id":"chatcmpl-Bench0123456789abcdefghijklm","object":"chat.completion","created":1795000000,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}","refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{},"service_tier":"default","system_fingerprint":"fp_0123456789"}}"#,
        usage_json(input, output)
    )
}

/// (a) A plain chat completion, one of many on a keep-alive connection.
fn plain_chat() -> Scenario {
    let body = chat_body(&[text(600, 1)], false);
    let json = completion_json(&text(400, 2), 1083, 53);
    let calls = vec![
        request(&body),
        response_head(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", json.len())),
        Call { direction: Direction::Ingress, bytes: json.into_bytes() },
    ];
    Scenario::new(
        "chat",
        "plain chat completion, keep-alive",
        calls,
        Expect { input_tokens: 1083, output_tokens: 53, streaming: false },
        1,
    )
}

/// (b) A streaming chat: one SSE event per chunk of chunked encoding, one read each.
fn streaming_chat(events: usize) -> Scenario {
    let body = chat_body(&[text(600, 3)], true);
    let mut calls = vec![
        request(&body),
        response_head("Content-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n"),
    ];
    let frame = |data: String| {
        let event = format!("data: {data}\n\n");
        Call { direction: Direction::Ingress, bytes: format!("{:x}\r\n{event}\r\n", event.len()).into_bytes() }
    };
    let chunk = |delta: &str, finish: &str| {
        format!(
            r#"{{"id":"chatcmpl-Bench0123456789abcdefghijklm","object":"chat.completion.chunk","created":1795000000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0123456789","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}],"usage":null,"obfuscation":"x1y2z3"}}"#
        )
    };
    calls.push(frame(chunk(r#"{"role":"assistant","content":"","refusal":null}"#, "null")));
    for i in 0..events {
        calls.push(frame(chunk(&format!(r#"{{"content":"{}"}}"#, text(6, i).trim_end()), "null")));
    }
    calls.push(frame(chunk("{}", r#""stop""#)));
    calls.push(frame(format!(
        r#"{{"id":"chatcmpl-Bench0123456789abcdefghijklm","object":"chat.completion.chunk","created":1795000000,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{}}}"#,
        usage_json(1200, events as u64)
    )));
    calls.push(frame("[DONE]".into()));
    calls.push(Call { direction: Direction::Ingress, bytes: b"0\r\n\r\n".to_vec() });
    Scenario::new(
        "stream",
        "streaming chat, SSE events each in its own read",
        calls,
        Expect { input_tokens: 1200, output_tokens: events as u64, streaming: true },
        2,
    )
}

/// (c) A 1 MiB request body (a long conversation), shipped as 16 KiB chunks of one write.
fn large_request(target: usize) -> Scenario {
    let per_message = 16 * 1024;
    let messages: Vec<String> = (0..target / per_message).map(|i| text(per_message - 40, 100 + i)).collect();
    let body = chat_body(&messages, false);
    let json = completion_json(&text(400, 5), 250_000, 80);
    let calls = vec![
        request(&body),
        response_head(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", json.len())),
        Call { direction: Direction::Ingress, bytes: json.into_bytes() },
    ];
    Scenario::new(
        "1mib",
        "1 MiB request body (64 kernel chunks)",
        calls,
        Expect { input_tokens: 250_000, output_tokens: 80, streaming: false },
        3,
    )
}

// ----------------------------------------------------------------------------- main

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("pipeline_bench: {name} needs a number");
            std::process::exit(2)
        }),
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps = arg(&args, "--reps", 15).max(1) as usize;
    let rep_ms = arg(&args, "--rep-ms", 40).max(1);

    let workload = Workload { pid: 4242, comm: "bench".into(), exe: "/usr/bin/bench".into(), ..Default::default() };
    let attribution = Mapping::empty().attribute(&workload, &|_| None);
    let who = Attributed { workload: &workload, attribution: &attribution, node: None };
    let clock = Clock::new();

    let mut scenarios = vec![
        plain_chat(),
        streaming_chat(200),
        large_request(1 << 20),
        plain_chat().with_hooks(),
        streaming_chat(200).with_hooks(),
        large_request(1 << 20).with_hooks(),
    ];

    // Warm up (caches, allocator, the connection's parser state) and calibrate: enough
    // exchanges per repetition that one repetition takes about `rep_ms`.
    for s in &mut scenarios {
        // Untimed: the first exchange builds what is built once (a tokenizer, with the hooks).
        s.exchange(&who, &clock);
        let started = Instant::now();
        let mut n = 0u32;
        while n < 3 || started.elapsed() < Duration::from_millis(rep_ms / 2) {
            s.exchange(&who, &clock);
            n += 1;
        }
        let per = started.elapsed() / n;
        s.per_rep = ((Duration::from_millis(rep_ms).as_nanos() / per.as_nanos().max(1)) as usize).clamp(3, 100_000);
    }
    eprintln!(
        "pipeline_bench: {reps} interleaved repetitions of {}",
        scenarios.iter().map(|s| format!("{} ({} exchanges)", s.name, s.per_rep)).collect::<Vec<_>>().join(", ")
    );
    for _ in 0..reps {
        for s in &mut scenarios {
            s.rep(&who, &clock);
        }
    }

    println!("| scenario | plaintext / exchange | kernel chunks | exchanges × reps | median µs / exchange (min–max) | of which reassembly + HTTP | of which record | MB/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in &scenarios {
        let total = median(&s.total_ns);
        let (lo, hi) = s.total_ns.iter().fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let bytes = s.bytes_per_exchange();
        println!(
            "| {} — {} | {} | {} | {} × {} | {:.1} ({:.1}–{:.1}) | {:.1} | {:.1} | {:.0} |",
            s.name,
            s.what,
            human_bytes(bytes),
            s.chunks_per_exchange(),
            s.per_rep,
            reps,
            total / 1e3,
            lo / 1e3,
            hi / 1e3,
            median(&s.feed_ns) / 1e3,
            median(&s.build_ns) / 1e3,
            bytes as f64 / total * 1e3, // bytes per ns × 1e3 = MB/s
        );
    }
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}
