//! Output tokens of a streaming response while it streams: each event-stream frame is read once,
//! as it arrives, and only its new text is counted. Enforcement uses the running count to cut a
//! stream that takes a workload past its limit, so it must be cheap per chunk and never rescan.

use serde_json::Value;

use super::{anthropic, cohere, openai_chat, openai_responses, Endpoint, Event, Observed, Operation};
use crate::tokens::{self, Encoding};

/// Longest event-stream line kept while waiting for its end; a longer one is skipped (counted as
/// nothing) rather than buffered without bound.
const MAX_LINE: usize = 1 << 20;

/// Incremental reader of one response's event stream. Holds at most one unfinished line and one
/// unfinished event of plaintext, only in memory.
pub struct OutputProgress {
    operation: Operation,
    encoding: Encoding,
    line: Vec<u8>,
    /// The current line grew past [`MAX_LINE`]: drop bytes until its end.
    skipping: bool,
    event: Option<String>,
    data: Option<String>,
    estimated: u64,
    reported: u64,
    deltas: u64,
}

impl OutputProgress {
    /// `model`: the request's model, which picks the tokenizer (as the usage estimate does).
    pub fn new(endpoint: Endpoint, model: Option<&str>) -> Self {
        OutputProgress {
            operation: endpoint.operation,
            encoding: tokens::encoding_for_model(model.unwrap_or("")),
            line: Vec::new(),
            skipping: false,
            event: None,
            data: None,
            estimated: 0,
            reported: 0,
            deltas: 0,
        }
    }

    /// Output tokens so far: the text's count, or a larger cumulative count the stream reported.
    pub fn tokens(&self) -> u64 {
        self.estimated.max(self.reported)
    }

    /// Frames that carried generated text (or a reported output count) so far.
    pub fn deltas(&self) -> u64 {
        self.deltas
    }

    /// The next de-chunked, un-encoded bytes of the body.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                Some(i) => {
                    self.push_line_part(&bytes[..i]);
                    let line = std::mem::take(&mut self.line);
                    if !std::mem::take(&mut self.skipping) {
                        self.on_line(&line);
                    }
                    self.line = line;
                    self.line.clear();
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.push_line_part(bytes);
                    bytes = &[];
                }
            }
        }
    }

    fn push_line_part(&mut self, part: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE {
            self.skipping = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(part);
    }

    /// One line, as `sse::parse` reads them.
    fn on_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(b":") {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) if d.len() + value.len() < MAX_LINE => {
                    d.push('\n');
                    d.push_str(value);
                }
                Some(_) => {}
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let name = self.event.take();
        let Some(data) = self.data.take() else { return };
        let Ok(value) = serde_json::from_str::<Value>(data.trim()) else { return };
        if !value.is_object() {
            return;
        }
        let event = Event { name: name.as_deref(), value };
        // Whole-response snapshots repeat text the deltas already brought.
        if self.operation == Operation::Responses
            && event.kind().starts_with("response.")
            && event.value.get("response").is_some()
        {
            self.note_reported(&event);
            return;
        }
        let mut obs = Observed::default();
        let one = std::slice::from_ref(&event);
        match self.operation {
            Operation::Chat => openai_chat::observe_stream(one, &mut obs),
            Operation::Responses => openai_responses::observe_stream(one, &mut obs),
            Operation::Messages => anthropic::observe_stream(one, &mut obs),
            Operation::CohereChat => cohere::observe_chat_stream(one, &mut obs),
            Operation::Embeddings | Operation::CohereEmbed => return,
        }
        let text = obs.outputs.count(self.encoding).saturating_add(obs.reasoning.count(self.encoding));
        let reported = obs.usage.map(|u| u.output).filter(|n| *n > self.reported);
        if text > 0 || reported.is_some() {
            self.deltas += 1;
        }
        self.estimated = self.estimated.saturating_add(text);
        if let Some(n) = reported {
            self.reported = n;
        }
    }

    /// A Responses snapshot's usage (the final `response.completed`) is the true count.
    fn note_reported(&mut self, event: &Event) {
        let mut obs = Observed::default();
        openai_responses::observe_stream(std::slice::from_ref(event), &mut obs);
        if let Some(u) = obs.usage.filter(|u| u.output > self.reported) {
            self.reported = u.output;
            self.deltas += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{extract, Exchange, Provider};

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/src/llm/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// Feeds `body` in pieces of `step` bytes; returns the count after each piece.
    fn run(endpoint: Endpoint, model: &str, body: &[u8], step: usize) -> (OutputProgress, Vec<u64>) {
        let mut p = OutputProgress::new(endpoint, Some(model));
        let mut seen = Vec::new();
        for piece in body.chunks(step) {
            p.feed(piece);
            seen.push(p.tokens());
        }
        (p, seen)
    }

    fn estimated_whole(endpoint: Endpoint, request: &[u8], body: &[u8]) -> u64 {
        let ex = Exchange {
            request_body: request,
            request_truncated: false,
            status: 200,
            response_content_type: Some("text/event-stream"),
            response_body: body,
            response_truncated: false,
        };
        extract(endpoint, &ex).unwrap().output_tokens
    }

    #[test]
    fn chat_stream_counts_grow_and_match_the_final_estimate() {
        let chat = Endpoint { provider: Provider::OpenAi, operation: Operation::Chat };
        let body = fixture("openai_chat_stream_no_usage.sse");
        let request = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let whole = estimated_whole(chat, request, &body);
        let (all_at_once, _) = run(chat, "gpt-4o-mini", &body, body.len());
        // Counting each delta on its own can only split tokens the whole text merges: a little
        // above the final estimate, never below it.
        assert!(all_at_once.tokens() >= whole && all_at_once.tokens() <= whole + whole / 10 + 1, "{whole}");
        for step in [1, 7, 64] {
            let (p, seen) = run(chat, "gpt-4o-mini", &body, step);
            assert!(seen.windows(2).all(|w| w[0] <= w[1]), "never decreases");
            assert_eq!(p.tokens(), all_at_once.tokens(), "step {step}: the split does not matter");
            assert!(p.deltas() > 1);
        }
    }

    #[test]
    fn reported_counts_win_when_larger() {
        let chat = Endpoint { provider: Provider::OpenAi, operation: Operation::Chat };
        let (p, _) = run(chat, "gpt-4o", &fixture("openai_chat_stream_usage.sse"), 5);
        let reported = {
            let ex = fixture("openai_chat_stream_usage.sse");
            let r = br#"{"model":"gpt-4o","messages":[],"stream":true}"#;
            let e = Exchange {
                request_body: r,
                request_truncated: false,
                status: 200,
                response_content_type: Some("text/event-stream"),
                response_body: &ex,
                response_truncated: false,
            };
            extract(chat, &e).unwrap().output_tokens
        };
        assert_eq!(p.tokens(), p.estimated.max(reported));

        let responses = Endpoint { provider: Provider::OpenAi, operation: Operation::Responses };
        let (p, seen) = run(responses, "gpt-5-mini", &fixture("openai_responses_stream.sse"), 33);
        // The completed snapshot reports 83 output tokens (64 of them reasoning, never streamed).
        assert_eq!(p.tokens(), 83);
        assert!(seen.iter().any(|n| *n > 0 && *n < 83), "text deltas counted before the end: {seen:?}");

        let messages = Endpoint { provider: Provider::Anthropic, operation: Operation::Messages };
        let (p, _) = run(messages, "claude-3-5-haiku", &fixture("anthropic_stream.sse"), 11);
        assert!(p.tokens() > 0);
    }

    #[test]
    fn garbage_and_huge_lines_are_bounded() {
        let chat = Endpoint { provider: Provider::OpenAi, operation: Operation::Chat };
        let mut p = OutputProgress::new(chat, None);
        p.feed(b"data: not json\n\n: comment\nevent: x\ndata: [DONE]\n\n");
        p.feed(&vec![b'a'; MAX_LINE + 10]);
        p.feed(b"\ndata: {\"choices\":[{\"delta\":{\"content\":\"hello world\"}}]}\n\n");
        assert_eq!(p.tokens(), 2);
        assert!(p.line.capacity() <= 2 * MAX_LINE);
    }
}
