//! Server-Sent Events (the `text/event-stream` format), as the streaming LLM APIs send it.

/// One dispatched event. `data` joins multiple `data:` lines with `\n`, as the spec says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Splits a whole (de-chunked, decoded) event-stream body into events.
///
/// A final event that lacks its blank-line terminator is still returned: a stream cut by a
/// closed connection still carries usable usage frames. Events with no `data:` line are
/// dropped (the spec does not dispatch them). Invalid UTF-8 is replaced, never an error.
pub fn parse(body: &[u8]) -> Vec<SseEvent> {
    let text = String::from_utf8_lossy(body);
    let mut events = Vec::new();
    let mut event: Option<String> = None;
    let mut data: Option<String> = None;
    let mut dispatch = |event: &mut Option<String>, data: &mut Option<String>| {
        if let Some(d) = data.take() {
            events.push(SseEvent { event: event.take(), data: d });
        }
        *event = None;
    };
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            dispatch(&mut event, &mut data);
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    dispatch(&mut event, &mut data);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chunks_and_done() {
        let body = b"data: {\"a\":1}\n\ndata: [DONE]\n\n";
        let ev = parse(body);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "[DONE]");
        assert_eq!(ev[0].event, None);
    }

    #[test]
    fn named_events_crlf_comments_multiline() {
        let body = b": ping\r\nevent: message_start\r\ndata: x\r\ndata: y\r\n\r\nevent: ping\r\n\r\n";
        let ev = parse(body);
        assert_eq!(ev, vec![SseEvent { event: Some("message_start".into()), data: "x\ny".into() }]);
    }

    #[test]
    fn unterminated_tail_is_kept_and_garbage_never_panics() {
        assert_eq!(parse(b"data: tail").len(), 1);
        assert!(parse(b"").is_empty());
        assert!(parse(&[0xff, 0xfe, b'\n', b'\n']).is_empty());
    }
}
