//! From streamed model tokens to chat messages.
//!
//! The model's reply arrives in chunks of any size. [`MarkupFilter`] removes
//! what the customer must not see — the status tag, citation markers,
//! reasoning blocks, special tokens leaked by the server — as the text
//! streams, holding back only what might still turn into markup.
//! [`ParagraphBuffer`] then cuts the clean text into paragraphs, each sent as
//! one chat message.
//!
//! Both are pure and synchronous, and both work one character at a time, so
//! their output never depends on how the input was chunked.
//!
//! # Layout
//!
//! Each file uses only files listed after it.
//!
//! - `filter.rs`: [`MarkupFilter`], a state machine over characters that
//!   holds back what may still be markup.
//! - `markup.rs`: what markup looks like: [`InfoStatus`], and the scanners
//!   that tell whether held-back text is markup.
//! - `code_spans.rs`: Markdown code in the emitted text, left alone.
//! - `spacing.rs`: spaces around removed markup.
//! - `paragraphs.rs`: [`ParagraphBuffer`] and [`paragraphs_of`]; a long
//!   paragraph is cut at a sentence end ([`channels::sentence_ends`]).
//! - `fence.rs`: Markdown code fences, read line by line.

mod code_spans;
mod fence;
mod filter;
mod markup;
mod paragraphs;
mod spacing;

pub use filter::MarkupFilter;
pub use markup::InfoStatus;
pub use paragraphs::{ParagraphBuffer, paragraphs_of};

#[cfg(test)]
mod tests {
    //! Helpers for the tests of every file, and the tests of the filter and
    //! the paragraph buffer together.

    use super::*;

    /// Deterministic pseudo-random numbers (xorshift64).
    pub(super) struct Rng(pub(super) u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub(super) fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n.max(1) as u64).unwrap()
        }
    }

    /// `text` cut into pieces of 1 to `max` characters.
    pub(super) fn random_chunks(text: &str, seed: u64, max: usize) -> Vec<&str> {
        let mut rng = Rng(seed.max(1));
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let mut chunks = Vec::new();
        let mut k = 0;
        while k + 1 < bounds.len() {
            let next = (k + 1 + rng.below(max)).min(bounds.len() - 1);
            chunks.push(&text[bounds[k]..bounds[next]]);
            k = next;
        }
        chunks
    }

    pub(super) fn char_chunks(text: &str) -> Vec<&str> {
        text.char_indices()
            .map(|(i, c)| &text[i..i + c.len_utf8()])
            .collect()
    }

    /// Output, status, citations and `saw_output` of a filtered stream.
    pub(super) fn filter_chunks(chunks: &[&str]) -> (String, Option<InfoStatus>, Vec<usize>, bool) {
        let mut filter = MarkupFilter::new();
        let mut out = String::new();
        for chunk in chunks {
            out.push_str(&filter.push(chunk));
        }
        out.push_str(&filter.finish());
        (
            out,
            filter.status(),
            filter.citations(),
            filter.saw_output(),
        )
    }

    #[test]
    fn adversarial_input_does_not_panic() {
        let mut inputs: Vec<String> = vec![
            "[".repeat(10_000),
            "<".repeat(10_000),
            "[[".repeat(5_000),
            "]]".repeat(5_000),
            "</think>".repeat(1_000),
            "<think>".repeat(1_000),
            "<|".repeat(5_000),
            "[1".repeat(5_000),
            "[Source ".repeat(2_000),
            "`".repeat(1_000),
            "[[ANSWER]".repeat(1_000),
            "é[日<🎉|".repeat(2_000),
            "x".repeat(200_000),
            String::new(),
        ];
        let pieces = [
            "[", "]", "[[", "]]", "<", ">", "<think>", "</think>", "<|", "|>", "ANSWER", "NO_INFO",
            "1", ", ", " ", "\n", "`", "```", "Source", ":", "é", "日本", "🎉", "a", ".", "-", "#",
            "**", "\r\n", "s", "/",
        ];
        let mut rng = Rng(42);
        for _ in 0..300 {
            let n = rng.below(60);
            inputs.push((0..n).map(|_| pieces[rng.below(pieces.len())]).collect());
        }
        for (k, text) in inputs.iter().enumerate() {
            let whole = filter_chunks(&[text.as_str()]);
            let chunks = random_chunks(text, k as u64 + 1, 5);
            assert_eq!(filter_chunks(&chunks), whole, "{text:?}");
            if text.len() < 1_000 {
                assert_eq!(filter_chunks(&char_chunks(text)), whole, "{text:?}");
            }
            let paragraphs = paragraphs_of(&whole.0, 50);
            assert!(
                paragraphs
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().count() <= 50)
            );
        }
    }

    #[test]
    fn filter_then_paragraphs() {
        let reply = "<think>ok</think>[[ANSWER]] ## Shipping\n\nOrders over $50 ship free [1].\n\n\
            To return an item:\n\n1. Pack it [2].\n2. Send it.\n\nAnything else?<|eot_id|>";
        let run = |chunks: &[&str]| {
            let mut filter = MarkupFilter::new();
            let mut buffer = ParagraphBuffer::new(500);
            let mut out = Vec::new();
            for chunk in chunks {
                out.extend(buffer.push(&filter.push(chunk)));
            }
            out.extend(buffer.push(&filter.finish()));
            out.extend(buffer.finish());
            (out, filter.citations())
        };
        let whole = run(&[reply]);
        assert_eq!(
            whole.0,
            [
                "## Shipping\nOrders over $50 ship free.",
                "To return an item:\n1. Pack it.\n2. Send it.",
                "Anything else?"
            ]
        );
        assert_eq!(whole.1, [1, 2]);
        for seed in 1..50 {
            assert_eq!(run(&random_chunks(reply, seed, 6)), whole);
        }
    }
}
