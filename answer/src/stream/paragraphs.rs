//! [`ParagraphBuffer`]: clean text cut into paragraphs, one chat message each.

use std::iter::repeat_n;
use std::mem;

use channels::sentence_ends;

use super::fence::{Fence, next_fence, open_fence};

/// Cuts clean text into paragraphs, one chat message each.
///
/// A paragraph ends at a blank line (a line of only whitespace), except
/// inside a fenced code block. Line endings become `\n`; single newlines
/// stay. A heading alone (`# …`, a whole-line `**…**`) or a paragraph ending
/// with `:` is not sent alone but joined, with a newline, to the next one.
///
/// No paragraph exceeds `max_chars` characters: a longer one is cut at the
/// last sentence end ([`channels::sentence_ends`]) or newline before the
/// limit, else at the last whitespace, else at the limit. A code block cut
/// this way is closed at the end of one part and reopened with its opening
/// line at the start of the next.
#[derive(Debug)]
pub struct ParagraphBuffer {
    max_chars: usize,
    /// A held lead-in (a heading or `…:` line, then `\n`) and the current
    /// paragraph; never starts with whitespace.
    text: String,
    /// Characters in `text`.
    chars: usize,
    /// Byte where the current paragraph starts, after any lead-in.
    para_start: usize,
    /// Byte where the current line starts.
    line_start: usize,
    /// The code fence open in the stream.
    fence: Option<Fence>,
    /// The last character was `\r`, so a `\n` right after it is its pair.
    after_cr: bool,
}

impl ParagraphBuffer {
    /// A buffer for paragraphs of at most `max_chars` characters (at least 1).
    pub fn new(max_chars: usize) -> Self {
        ParagraphBuffer {
            max_chars: max_chars.max(1),
            text: String::new(),
            chars: 0,
            para_start: 0,
            line_start: 0,
            fence: None,
            after_cr: false,
        }
    }

    /// Takes clean text and returns the paragraphs it completes.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for c in text.chars() {
            self.step(c, &mut out);
        }
        out
    }

    /// Ends the text and returns what is left, trimmed; `None` if blank.
    pub fn finish(&mut self) -> Option<String> {
        let text = mem::take(&mut self.text);
        self.chars = 0;
        self.para_start = 0;
        self.line_start = 0;
        self.fence = None;
        self.after_cr = false;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    fn step(&mut self, c: char, out: &mut Vec<String>) {
        let c = match c {
            '\r' => {
                self.after_cr = true;
                '\n'
            }
            '\n' if self.after_cr => {
                self.after_cr = false;
                return;
            }
            c => {
                self.after_cr = false;
                c
            }
        };
        if self.text.len() == self.para_start && c.is_whitespace() {
            return;
        }
        if c == '\n' {
            let line = self.text.get(self.line_start..).unwrap_or_default();
            if self.fence.is_none() && line.trim().is_empty() {
                self.end_paragraph(out);
                return;
            }
            self.fence = next_fence(self.fence, line);
            self.text.push('\n');
            self.line_start = self.text.len();
        } else {
            self.text.push(c);
        }
        self.chars += 1;
        if self.chars > self.max_chars {
            self.split(out);
        }
    }

    fn end_paragraph(&mut self, out: &mut Vec<String>) {
        let para = self.text.get(self.para_start..).unwrap_or_default().trim();
        if para.is_empty() {
            return;
        }
        if is_lead_in(para) {
            let keep = self.text.trim_end().len();
            self.chars -= self.text.get(keep..).unwrap_or_default().chars().count();
            self.text.truncate(keep);
            self.text.push('\n');
            self.chars += 1;
            self.para_start = self.text.len();
            self.line_start = self.text.len();
        } else {
            let whole = mem::take(&mut self.text);
            self.chars = 0;
            self.para_start = 0;
            self.line_start = 0;
            push_trimmed(out, &whole);
        }
    }

    /// Sends the first part of an over-long paragraph.
    fn split(&mut self, out: &mut Vec<String>) {
        let (piece, rest) = self.fence_cut().unwrap_or_else(|| self.plain_cut());
        push_trimmed(out, &piece);
        let rest = rest.trim_start();
        self.chars = rest.chars().count();
        self.para_start = 0;
        self.line_start = rest.rfind('\n').map_or(0, |i| i + 1);
        rest.clone_into(&mut self.text);
    }

    /// The cut for prose: last sentence end ([`sentence_ends`]) or newline,
    /// else last whitespace, else the limit.
    fn plain_cut(&self) -> (String, String) {
        let chars: Vec<(usize, char)> = self.text.char_indices().collect();
        let end = chars.len().min(self.max_chars.saturating_add(1));
        // A cut falls before one of these characters, so the part before it
        // keeps at most `max_chars` characters and is never empty.
        let before = chars.get(1..end).unwrap_or_default();
        let last = before.last().map(|&(at, _)| at);
        let sentence = last.and_then(|last| {
            sentence_ends(&self.text)
                .take_while(|&at| at <= last)
                .last()
        });
        let before_last = |pick: fn(char) -> bool| {
            before
                .iter()
                .rev()
                .find(|&&(_, c)| pick(c))
                .map(|&(at, _)| at)
        };
        let newline = before_last(|c| c == '\n');
        let space = before_last(char::is_whitespace);
        let at = sentence.max(newline).or(space).unwrap_or_else(|| {
            chars
                .get(self.max_chars)
                .map_or(self.text.len(), |&(at, _)| at)
        });
        split_at(&self.text, at)
    }

    /// The cut inside an open code fence: at the last line end that fits,
    /// closing the fence there and reopening it in the rest. `None` when no
    /// fence is open or the limit is too small to repeat the fence lines.
    fn fence_cut(&self) -> Option<(String, String)> {
        let open = open_fence(&self.text)?;
        let opener_chars = open.opener.chars().count();
        if (opener_chars + open.fence.len + 2).saturating_mul(2) > self.max_chars {
            return None;
        }
        // The part keeps room for "\n```" after it.
        let limit = self.max_chars - 1 - open.fence.len;
        let mut last_line_end = None;
        let mut has_code = false;
        for (k, (at, c)) in self.text.char_indices().enumerate() {
            if k > limit {
                break;
            }
            if at < open.body {
                continue;
            }
            if c == '\n' {
                if has_code {
                    last_line_end = Some(at);
                }
            } else if !c.is_whitespace() {
                has_code = true;
            }
        }
        let (end, resume) = match last_line_end {
            Some(at) => (at, at + 1),
            // Text before the fence goes first; the block starts the next part.
            None if open.start > 0 => return Some(split_at(&self.text, open.start)),
            None => {
                let (at, _) = self.text.char_indices().nth(limit)?;
                if at <= open.body {
                    return None;
                }
                (at, at)
            }
        };
        let marker: String = repeat_n(open.fence.ch, open.fence.len).collect();
        let head = self.text.get(..end).unwrap_or_default();
        let tail = self.text.get(resume..).unwrap_or_default();
        Some((
            format!("{head}\n{marker}"),
            format!("{}\n{tail}", open.opener),
        ))
    }
}

/// `text` cut in two at byte `at` (a character boundary).
fn split_at(text: &str, at: usize) -> (String, String) {
    match text.split_at_checked(at) {
        Some((head, tail)) => (head.to_owned(), tail.to_owned()),
        None => (text.to_owned(), String::new()),
    }
}

fn push_trimmed(out: &mut Vec<String>, text: &str) {
    let text = text.trim();
    if !text.is_empty() {
        out.push(text.to_owned());
    }
}

/// A paragraph that introduces the next one: only headings, or ending with
/// a colon.
fn is_lead_in(para: &str) -> bool {
    let para = para.trim();
    if para.ends_with(':') || para.ends_with('：') {
        return true;
    }
    para.lines().all(|line| {
        let line = line.trim();
        let bold = |mark: &str| {
            line.len() > 2 * mark.len()
                && line
                    .strip_prefix(mark)
                    .and_then(|l| l.strip_suffix(mark))
                    .is_some_and(|inner| !inner.contains(mark))
        };
        line.starts_with('#') || bold("**") || bold("__")
    })
}

/// The paragraphs of a whole text: [`ParagraphBuffer::push`] then
/// [`ParagraphBuffer::finish`].
pub fn paragraphs_of(text: &str, max_chars: usize) -> Vec<String> {
    let mut buffer = ParagraphBuffer::new(max_chars);
    let mut out = buffer.push(text);
    out.extend(buffer.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::{Rng, char_chunks, random_chunks};

    /// Paragraphs of `text`, checked to be the same however it is chunked.
    fn paragraphs_any_chunking(text: &str, max: usize) -> Vec<String> {
        let whole = paragraphs_of(text, max);
        let feed = |chunks: &[&str]| {
            let mut buffer = ParagraphBuffer::new(max);
            let mut out = Vec::new();
            for chunk in chunks {
                out.extend(buffer.push(chunk));
            }
            out.extend(buffer.finish());
            out
        };
        assert_eq!(feed(&char_chunks(text)), whole, "char by char: {text:?}");
        for seed in 1..30 {
            let chunks = random_chunks(text, seed, 9);
            assert_eq!(feed(&chunks), whole, "chunks {chunks:?}");
        }
        for p in &whole {
            assert!(!p.is_empty(), "empty paragraph in {whole:?}");
            assert_eq!(p.trim(), p, "untrimmed paragraph {p:?}");
            assert!(p.chars().count() <= max.max(1), "{p:?} exceeds {max}");
        }
        whole
    }

    #[test]
    fn blank_lines_end_paragraphs() {
        assert_eq!(
            paragraphs_any_chunking("One.\n\nTwo.\n\n\n\nThree.", 100),
            ["One.", "Two.", "Three."]
        );
        assert_eq!(
            paragraphs_any_chunking("One.\r\n\r\nTwo.\r\nStill two.", 100),
            ["One.", "Two.\nStill two."]
        );
        assert_eq!(
            paragraphs_any_chunking("One.\n \nTwo.\n\t \nThree.", 100),
            ["One.", "Two.", "Three."]
        );
        assert_eq!(
            paragraphs_any_chunking("One.\r\rTwo.", 100),
            ["One.", "Two."]
        );
        assert_eq!(
            paragraphs_any_chunking("\n\n  Lead spaces.  \n\n\n  \n", 100),
            ["Lead spaces."]
        );
        assert_eq!(
            paragraphs_any_chunking("Steps\n- one\n- two\n\nEnd.", 100),
            ["Steps\n- one\n- two", "End."]
        );
        assert!(paragraphs_any_chunking("  \n\n \r\n ", 100).is_empty());
        assert!(paragraphs_of("", 100).is_empty());
    }

    #[test]
    fn push_returns_paragraphs_as_they_complete() {
        let mut buffer = ParagraphBuffer::new(100);
        assert!(buffer.push("First para").is_empty());
        assert!(buffer.push("graph.\n").is_empty());
        assert_eq!(buffer.push("\nSecond"), ["First paragraph."]);
        assert_eq!(
            buffer.push(" one.\n\n\n\nThird.\n\n"),
            ["Second one.", "Third."]
        );
        assert_eq!(buffer.finish(), None);
        assert!(buffer.push("Again").is_empty());
        assert_eq!(buffer.finish().as_deref(), Some("Again"));
    }

    #[test]
    fn code_fences_keep_blank_lines() {
        let text = "Run this\n\n```sh\nmake\n\nmake install\n```\n\nDone.\n\n~~~\na\n\nb\n~~~";
        assert_eq!(
            paragraphs_any_chunking(text, 200),
            [
                "Run this",
                "```sh\nmake\n\nmake install\n```",
                "Done.",
                "~~~\na\n\nb\n~~~"
            ]
        );
        // A shorter marker or one with text after it does not close the fence.
        let text = "````\na\n\n```\n\nb\n```` x\n\nc\n````\n\nAfter.";
        assert_eq!(
            paragraphs_any_chunking(text, 200),
            ["````\na\n\n```\n\nb\n```` x\n\nc\n````", "After."]
        );
    }

    #[test]
    fn headings_and_intros_join_the_next_paragraph() {
        assert_eq!(
            paragraphs_any_chunking("# Shipping\n\nIt is free.\n\nNext.", 200),
            ["# Shipping\nIt is free.", "Next."]
        );
        assert_eq!(
            paragraphs_any_chunking("**Returns**\n\nWithin 30 days.", 200),
            ["**Returns**\nWithin 30 days."]
        );
        assert_eq!(
            paragraphs_any_chunking(
                "## Returns\n\nHere is how:\n\n1. Pack\n2. Ship\n\nThanks.",
                200
            ),
            ["## Returns\nHere is how:\n1. Pack\n2. Ship", "Thanks."]
        );
        assert_eq!(
            paragraphs_any_chunking("手順：\n\n1. 梱包", 200),
            ["手順：\n1. 梱包"]
        );
        // Bold inside a sentence is not a heading.
        assert_eq!(
            paragraphs_any_chunking("**Free** shipping.\n\n**a** and **b**\n\nEnd.", 200),
            ["**Free** shipping.", "**a** and **b**", "End."]
        );
        // A heading left at the end is still sent.
        assert_eq!(
            paragraphs_any_chunking("Body.\n\n# Trailing", 200),
            ["Body.", "# Trailing"]
        );
    }

    #[test]
    fn long_paragraphs_split_at_sentence_ends() {
        let text =
            "This is the first sentence. This is the second one! Is this the third? Yes it is.";
        let parts = paragraphs_any_chunking(text, 40);
        assert_eq!(
            parts,
            [
                "This is the first sentence.",
                "This is the second one!",
                "Is this the third? Yes it is."
            ]
        );
        let parts = paragraphs_any_chunking("Line one\nline two\nline three is here", 20);
        assert_eq!(parts, ["Line one\nline two", "line three is here"]);
    }

    #[test]
    fn long_paragraphs_split_at_whitespace_then_hard() {
        let parts = paragraphs_any_chunking("alpha beta gamma delta epsilon zeta eta theta", 16);
        assert_eq!(
            parts,
            ["alpha beta gamma", "delta epsilon", "zeta eta theta"]
        );
        let parts = paragraphs_any_chunking(&"a".repeat(100), 30);
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            [30, 30, 30, 10]
        );
        // Exactly at the limit: not split.
        assert_eq!(
            paragraphs_any_chunking("abcde fghij.\n\nNext", 12),
            ["abcde fghij.", "Next"]
        );
    }

    #[test]
    fn multibyte_text_is_counted_in_characters() {
        let text = "これはテストです。".repeat(6);
        let parts = paragraphs_any_chunking(&text, 20);
        assert_eq!(parts.len(), 3);
        assert!(
            parts
                .iter()
                .all(|p| p.ends_with('。') && p.chars().count() == 18)
        );
        let emoji = "🎉".repeat(50);
        let parts = paragraphs_any_chunking(&emoji, 7);
        assert_eq!(parts.concat(), emoji);
        assert!(parts.iter().all(|p| p.chars().count() <= 7));
        let mixed = "Ça coûte 5 €. Très bien ! Ünïcödé ñ 日本語 🎉🎉 done.".repeat(5);
        let parts = paragraphs_any_chunking(&mixed, 13);
        let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        assert_eq!(squash(&parts.concat()), squash(&mixed));
    }

    #[test]
    fn long_code_block_is_closed_and_reopened() {
        let code = (0..40)
            .map(|i| format!("let x{i} = {i};\n"))
            .collect::<Vec<_>>()
            .concat();
        let text = format!("Example:\n\n```rust\n{code}```\n\nDone.");
        let parts = paragraphs_any_chunking(&text, 120);
        assert!(parts.len() > 3, "{parts:?}");
        assert_eq!(parts.last().map(String::as_str), Some("Done."));
        for part in &parts[..parts.len() - 1] {
            assert!(part.contains("```rust\n"), "{part:?}");
            assert!(part.ends_with("\n```"), "{part:?}");
        }
        assert!(parts[0].starts_with("Example:\n```rust\nlet x0 = 0;"));
        let lines: Vec<&str> = parts
            .iter()
            .flat_map(|p| p.lines())
            .filter(|l| l.starts_with("let"))
            .collect();
        assert_eq!(lines, code.lines().collect::<Vec<_>>());
        // One long code line is cut hard, still inside fences.
        let text = format!("```\n{}\n```", "x".repeat(100));
        let parts = paragraphs_any_chunking(&text, 30);
        assert!(
            parts
                .iter()
                .all(|p| p.starts_with("```\n") && p.ends_with("\n```")),
            "{parts:?}"
        );
        // Prose before a block shares a part with the code that fits...
        let text = format!("Intro text here\n```\n{code}```");
        let parts = paragraphs_any_chunking(&text, 60);
        assert!(
            parts[0].starts_with("Intro text here\n```\nlet x0"),
            "{parts:?}"
        );
        assert!(parts[0].ends_with("\n```"), "{parts:?}");
        // ...and goes alone when no code line fits.
        let text = format!("Intro text here\n```\n{}\n```", "y".repeat(100));
        let parts = paragraphs_any_chunking(&text, 60);
        assert_eq!(parts[0], "Intro text here");
        assert!(
            parts[1..]
                .iter()
                .all(|p| p.starts_with("```\n") && p.ends_with("\n```")),
            "{parts:?}"
        );
    }

    #[test]
    fn tiny_limits_do_not_panic() {
        for max in [0, 1, 2, 3, 5] {
            for text in [
                "Hello there. How are you?",
                "```\ncode\n\nmore\n```",
                "# H\n\n:\n\n日本🎉",
            ] {
                let parts = paragraphs_any_chunking(text, max);
                assert!(!parts.is_empty());
            }
        }
        assert_eq!(paragraphs_of("ab", 0), ["a", "b"]);
        assert_eq!(paragraphs_of("a b", usize::MAX), ["a b"]);
    }

    #[test]
    fn paragraphs_do_not_depend_on_chunking() {
        let pieces = [
            "Hello",
            " ",
            "world",
            ".",
            "\n",
            "\n\n",
            "\r\n",
            " \n",
            "# Title",
            "**Bold**",
            ":",
            "```",
            "~~~",
            "日本語",
            "。",
            "🎉",
            "- item",
            "!",
            "?",
            "\t",
        ];
        let mut rng = Rng(7);
        for round in 0..300 {
            let n = rng.below(80);
            let text: String = (0..n).map(|_| pieces[rng.below(pieces.len())]).collect();
            let max = 5 + rng.below(60);
            let parts = paragraphs_any_chunking(&text, max);
            if !text.contains("```") && !text.contains("~~~") {
                let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
                assert_eq!(
                    squash(&parts.concat()),
                    squash(&text),
                    "round {round}: {text:?}"
                );
            }
        }
    }
}
