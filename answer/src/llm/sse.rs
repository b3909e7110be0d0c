//! Reading a successful answer's body: how it is framed ([`body_kind`]), and
//! an incremental `text/event-stream` parser ([`SseParser`]) over raw bytes.
//!
//! Chunks may split lines and UTF-8 characters anywhere; lines and events
//! are bounded, and anything that is not an event stream is an error.

use reqwest::header::{CONTENT_TYPE, HeaderMap};

use super::report::SNIPPET_CHARS;

/// Longest line the event-stream parser buffers.
const MAX_LINE: usize = 1 << 20;
/// Longest `data` of one event.
const MAX_EVENT: usize = 1 << 20;

/// How a successful response's body is framed.
pub(super) enum BodyKind {
    /// An event stream (also what an unlabelled body is taken for).
    Sse,
    /// One JSON answer.
    Json,
    /// A web page: the wrong server.
    Html,
}

/// The framing of a body, from its `Content-Type`.
pub(super) fn body_kind(headers: &HeaderMap) -> BodyKind {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        BodyKind::Json
    } else if content_type.starts_with("text/html") {
        BodyKind::Html
    } else {
        BodyKind::Sse
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field, if any.
    pub event: Option<String>,
    /// The `data` lines, joined by `\n`.
    pub data: String,
}

/// An incremental `text/event-stream` parser over raw bytes.
///
/// Public so that the fuzz targets (`fuzz/`) can drive it without a
/// server; the client is its only user in the crate.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    started: bool,
}

impl SseParser {
    /// Takes the next bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.buf);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = start + pos;
            let terminator = match (buf[end], buf.get(end + 1)) {
                (b'\r', Some(b'\n')) => 2,
                // A CR at the very end may be the first half of a CRLF.
                (b'\r', None) => break,
                _ => 1,
            };
            self.line(&buf[start..end], &mut events)?;
            start = end + terminator;
        }
        self.buf = buf;
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err("a line of the event stream is longer than 1 MiB".into());
        }
        Ok(events)
    }

    /// The end of the body: the last line, and a pending unterminated event.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, String> {
        let mut buf = std::mem::take(&mut self.buf);
        let terminated = buf.last() == Some(&b'\r');
        if terminated {
            buf.pop();
        }
        let mut events = Vec::new();
        if terminated || !buf.is_empty() {
            self.line(&buf, &mut events)?;
        }
        if self.has_data {
            self.has_data = false;
            events.push(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        Ok(events.pop())
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), String> {
        let line = std::str::from_utf8(line)
            .map_err(|_| "the event stream is not valid UTF-8".to_owned())?;
        let line = if self.started {
            line
        } else {
            self.started = true;
            line.strip_prefix('\u{feff}').unwrap_or(line)
        };
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                events.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            } else {
                self.event = None;
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT {
                    return Err("an event of the stream is larger than 1 MiB".into());
                }
            }
            "event" => self.event = Some(value.to_owned()),
            "id" | "retry" => {}
            // Servers only send the fields above; anything else means the
            // body is not an event stream at all.
            _ => {
                let quote: String = line.chars().take(SNIPPET_CHARS).collect();
                return Err(format!("not an event stream: {quote}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parser_takes_bytes_one_at_a_time() {
        let text = "data: {\"a\":\"日本\"}\r\n\r\n: comment\revent: x\rdata:b\rdata: c\r\r\n";
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for b in text.as_bytes() {
            events.extend(parser.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(parser.finish().unwrap(), None);
        assert_eq!(
            events,
            [
                SseEvent {
                    event: None,
                    data: "{\"a\":\"日本\"}".into()
                },
                SseEvent {
                    event: Some("x".into()),
                    data: "b\nc".into()
                },
            ]
        );
        // A lone CR at the very end still ends its line and event.
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: z\r\r").unwrap().is_empty());
        assert_eq!(parser.finish().unwrap().unwrap().data, "z");
    }

    #[test]
    fn parser_rejects_invalid_utf8_and_foreign_lines() {
        assert!(SseParser::default().feed(b"data: \xff\xfe\n").is_err());
        assert!(SseParser::default().feed(b"<html>\n").is_err());
        assert!(
            SseParser::default()
                .feed(&vec![b'a'; MAX_LINE + 1])
                .is_err()
        );
        // A partial multi-byte character waits for the rest of its line.
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: \xe6\x97").unwrap().is_empty());
        assert_eq!(parser.feed(b"\xa5\n\n").unwrap()[0].data, "日");
    }
}
