//! An incremental Server-Sent Events reader for the side path: the relay
//! forwards every upstream chunk untouched and feeds a copy here, which reports
//! each completed event (name and data). Lines may end in `\n`, `\r\n` or `\r`
//! and may be split anywhere across chunks, including inside a UTF-8 character.

/// One completed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub name: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: Vec<u8>,
}

/// Incremental reader with a cap on the size of one buffered event.
#[derive(Debug)]
pub struct SseReader {
    line: Vec<u8>,
    name: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    skip_lf: bool,
    max_event_bytes: usize,
    overflowed: bool,
    overflow_count: u64,
}

impl SseReader {
    pub fn new(max_event_bytes: usize) -> Self {
        SseReader {
            line: Vec::new(),
            name: None,
            data: Vec::new(),
            has_data: false,
            skip_lf: false,
            max_event_bytes,
            overflowed: false,
            overflow_count: 0,
        }
    }

    /// How many events were dropped for exceeding the size cap.
    pub fn overflow_count(&self) -> u64 {
        self.overflow_count
    }

    /// Whether a partial event is buffered (bytes after the last blank line).
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.name.is_some()
    }

    /// Feeds a chunk, calling `on_event` for every event it completes.
    pub fn feed(&mut self, mut chunk: &[u8], on_event: &mut impl FnMut(SseEvent)) {
        if self.skip_lf {
            self.skip_lf = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        while !chunk.is_empty() {
            match chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
                None => {
                    self.push_partial(chunk);
                    return;
                }
                Some(end) => {
                    let terminator = chunk[end];
                    if self.line.is_empty() {
                        self.process_line_slice(&chunk[..end], on_event);
                    } else {
                        self.push_partial(&chunk[..end]);
                        let line = std::mem::take(&mut self.line);
                        self.process_line_slice(&line, on_event);
                        self.line = line;
                        self.line.clear();
                    }
                    chunk = &chunk[end + 1..];
                    if terminator == b'\r' {
                        match chunk.first() {
                            Some(b'\n') => chunk = &chunk[1..],
                            None => self.skip_lf = true,
                            Some(_) => {}
                        }
                    }
                }
            }
        }
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > self.max_event_bytes {
            self.overflowed = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn process_line_slice(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                if self.data.len() + value.len() > self.max_event_bytes {
                    self.overflowed = true;
                } else {
                    self.data.extend_from_slice(value);
                }
                self.has_data = true;
            }
            b"event" => self.name = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent)) {
        let had_anything = self.has_data || self.name.is_some();
        let name = self.name.take();
        let data = std::mem::take(&mut self.data);
        let overflowed = std::mem::replace(&mut self.overflowed, false);
        self.has_data = false;
        if overflowed {
            self.overflow_count += 1;
            return;
        }
        if had_anything {
            on_event(SseEvent { name, data });
        }
    }
}

/// Reads the top-level `type` of an event cheaply: the `event:` name when the
/// upstream sent one, else a minimal parse of the data.
pub fn event_type(event: &SseEvent) -> Option<String> {
    if let Some(name) = &event.name
        && !name.is_empty()
    {
        return Some(name.clone());
    }
    #[derive(serde::Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_slice::<TypeOnly>(&event.data)
        .ok()
        .and_then(|t| t.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut reader = SseReader::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            reader.feed(c, &mut |e| out.push(e));
        }
        out
    }

    const STREAM: &[u8] = "event: response.created\ndata: {\"type\":\"response.created\"}\n\n: keep-alive\n\nevent: response.output_text.delta\r\ndata: {\"delta\":\"caf\u{e9} \u{1f600}\"}\r\n\r\ndata: line1\rdata: line2\r\r".as_bytes();

    #[test]
    fn parses_events_with_every_line_ending() {
        let events = collect(&[STREAM]);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].name.as_deref(), Some("response.created"));
        assert_eq!(
            events[1].data,
            "{\"delta\":\"caf\u{e9} \u{1f600}\"}".as_bytes()
        );
        assert_eq!(events[2].data, b"line1\nline2");
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_events() {
        let whole = collect(&[STREAM]);
        for cut in 0..=STREAM.len() {
            assert_eq!(
                collect(&[&STREAM[..cut], &STREAM[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(collect(&bytes), whole);
    }

    #[test]
    fn oversized_events_are_dropped_and_counted() {
        let mut reader = SseReader::new(8);
        let mut out = Vec::new();
        reader.feed(b"data: 0123456789abcdef\n\ndata: ok\n\n", &mut |e| {
            out.push(e)
        });
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, b"ok");
        assert_eq!(reader.overflow_count(), 1);
    }

    #[test]
    fn event_type_prefers_the_event_name() {
        let e = SseEvent {
            name: None,
            data: br#"{"type":"response.completed","response":{}}"#.to_vec(),
        };
        assert_eq!(event_type(&e).as_deref(), Some("response.completed"));
        let named = SseEvent {
            name: Some("error".into()),
            data: b"{}".to_vec(),
        };
        assert_eq!(event_type(&named).as_deref(), Some("error"));
    }
}
