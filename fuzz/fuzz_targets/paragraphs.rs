//! The answer stream: model output through `MarkupFilter` (status tags,
//! citations, reasoning blocks, leaked special tokens) and `ParagraphBuffer`
//! (one chat message per paragraph), as the pipeline runs them.
//!
//! Input: byte 0 picks the paragraph limit, byte 1 how the text is chunked,
//! the rest is the model's text (lossy UTF-8). Checks the documented
//! properties: the output does not depend on the chunking, and every
//! paragraph is non-empty, trimmed and within the limit.

use answer::stream::{MarkupFilter, ParagraphBuffer, paragraphs_of};
use frontdesk_fuzz::str_chunks;

/// Paragraphs, citations and status of the text fed in `chunks`.
fn run(chunks: &[&str], max_chars: usize) -> (Vec<String>, Vec<usize>, String) {
    let mut filter = MarkupFilter::new();
    let mut buffer = ParagraphBuffer::new(max_chars);
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(buffer.push(&filter.push(chunk)));
    }
    out.extend(buffer.push(&filter.finish()));
    out.extend(buffer.finish());
    (out, filter.citations(), format!("{:?}", filter.status()))
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let [limit, seed, rest @ ..] = data else {
            return;
        };
        // Mostly short limits, where cutting happens; sometimes the real ones.
        let max_chars = match limit {
            0..=199 => usize::from(*limit % 100) + 1,
            200..=227 => 2000,
            _ => 4096,
        };
        let text = String::from_utf8_lossy(rest);
        let whole = run(&[&text], max_chars);
        let chunked = run(&str_chunks(&text, *seed, 7), max_chars);
        assert_eq!(whole, chunked, "chunking changed the output");
        for paragraph in &whole.0 {
            assert!(!paragraph.is_empty(), "empty paragraph");
            assert_eq!(paragraph.trim(), paragraph, "untrimmed paragraph");
            assert!(
                paragraph.chars().count() <= max_chars,
                "paragraph of {} characters over {max_chars}",
                paragraph.chars().count()
            );
        }
        // The buffer alone, on text the filter did not clean.
        for paragraph in paragraphs_of(&text, max_chars) {
            assert!(!paragraph.is_empty() && paragraph.chars().count() <= max_chars);
        }
    });
}
