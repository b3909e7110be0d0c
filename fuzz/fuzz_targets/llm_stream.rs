//! The model client's streamed answer: the body of an OpenAI-compatible
//! `text/event-stream` response through `SseParser`, as a streamed call
//! reads it, then each event's data as JSON the way the call reads a chunk.
//!
//! Input: byte 0 picks how the body is cut into network reads, the rest is
//! the body. Checks that the events (or the refusal) do not depend on how
//! the body was cut.

use answer::llm::{SseEvent, SseParser};
use frontdesk_fuzz::byte_chunks;

/// The events of `reads`, or the first error.
fn events(reads: &[&[u8]]) -> Result<Vec<SseEvent>, String> {
    let mut parser = SseParser::default();
    let mut out = Vec::new();
    for read in reads {
        out.extend(parser.feed(read)?);
    }
    out.extend(parser.finish()?);
    Ok(out)
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&seed, body)) = data.split_first() else {
            return;
        };
        let whole = events(&[body]);
        let cut = events(&byte_chunks(body, seed, 16));
        match (&whole, &cut) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "cutting the body changed its events"),
            (Err(_), Err(_)) => {}
            _ => panic!("cutting the body changed whether it parses: {whole:?} vs {cut:?}"),
        }
        for event in whole.into_iter().flatten() {
            let data = event.data.trim();
            if data == "[DONE]" {
                continue;
            }
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(data) {
                let choice = value.get("choices").and_then(|c| c.get(0));
                let _ = choice.and_then(|c| c.pointer("/delta/content"));
                let _ = choice.and_then(|c| c.get("finish_reason"));
            }
        }
    });
}
