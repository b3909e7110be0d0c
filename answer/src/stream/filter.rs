//! [`MarkupFilter`]: model output cleaned as it streams.

use std::mem;

use super::code_spans::CodeSpans;
use super::markup::{
    InfoStatus, Markup, Scan, droppable_at_end, scan_angle, scan_citation, scan_status,
};
use super::spacing::Spacing;

/// Most characters held back while waiting to see whether `[` or `<` starts
/// markup; beyond it the bracket is plain text. Fits
/// `[Source 1, Source 2, Source 3]` and the longest common special tokens.
const MAX_HELD: usize = 32;

/// Cleans model output as it streams.
///
/// Removes, wherever they appear and however the chunks split them:
///
/// - status tags `[[ANSWER]]` and `[[NO_INFO]]` (any case, inner spaces, `_`
///   or `-` optional, single brackets accepted), recorded in [`status`];
/// - citations `[1]`, `[1, 3]`, `[1-3]`, `[Source 2]`, `[source: 2]`, with one
///   space before them (`free [1].` → `free.`, `free [1] now` → `free now`),
///   recorded in [`citations`];
/// - reasoning blocks `<think>…</think>` and `<thinking>…</thinking>` with
///   their content (an unclosed one runs to the end), and stray closing tags;
/// - special tokens: `<|…|>`, `<｜…｜>`, `<s>`, `</s>`.
///
/// Other bracketed text (`[see below]`, a Markdown link `[1](…)`) passes
/// through, and so does everything inside backtick code (`` `items[1]` ``,
/// fenced blocks) except special tokens. Leading whitespace of the reply is
/// dropped.
///
/// [`status`]: MarkupFilter::status
/// [`citations`]: MarkupFilter::citations
#[derive(Debug, Default)]
pub struct MarkupFilter {
    /// Inside a reasoning block or not.
    mode: Mode,
    /// Text that may still turn into markup; starts with `[` or `<`.
    held: String,
    /// Characters in `held`.
    held_chars: usize,
    status: Option<InfoStatus>,
    citations: Vec<usize>,
    code: CodeSpans,
    spacing: Spacing,
}

impl MarkupFilter {
    /// A filter at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next chunk and returns the clean text that is now certain.
    pub fn push(&mut self, chunk: &str) -> String {
        let mut out = String::new();
        self.feed(chunk, &mut out);
        out
    }

    /// Ends the reply and returns what was held back.
    ///
    /// An unfinished construct that can only be markup (`[[ANSW`, `[2`,
    /// `<|eot`, `</thi`) is dropped; one that may be text (`[`, `[so`) is
    /// emitted. An unclosed reasoning block is dropped.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        while !self.held.is_empty() {
            if self.mode == Mode::Think {
                self.clear_held();
                break;
            }
            let scan = match self.scan(true) {
                Scan::More if droppable_at_end(&self.held) => {
                    self.clear_held();
                    continue;
                }
                Scan::More => Scan::No,
                other => other,
            };
            self.resolve(scan, &mut out);
        }
        self.spacing.finish(&mut out);
        self.mode = Mode::Text;
        self.code = CodeSpans::default();
        out
    }

    /// The status the model declared; [`InfoStatus::Lacking`] wins over
    /// [`InfoStatus::Enough`] when both appear.
    pub fn status(&self) -> Option<InfoStatus> {
        self.status
    }

    /// The cited passage numbers, in first-seen order, without repeats.
    pub fn citations(&self) -> Vec<usize> {
        self.citations.clone()
    }

    /// Whether any non-whitespace text has been emitted.
    pub fn saw_output(&self) -> bool {
        self.spacing.started
    }

    fn feed(&mut self, text: &str, out: &mut String) {
        for c in text.chars() {
            self.step(c, out);
        }
    }

    fn step(&mut self, c: char, out: &mut String) {
        if self.held.is_empty() {
            match self.mode {
                Mode::Think => {
                    if c == '<' {
                        self.hold(c);
                    }
                }
                Mode::Text => {
                    if c != '`' {
                        self.code.settle();
                    }
                    if c == '<' || (c == '[' && !self.code.active()) {
                        self.hold(c);
                    } else {
                        self.emit(c, out);
                    }
                }
            }
            return;
        }
        self.held.push(c);
        self.held_chars += 1;
        let scan = if self.held_chars > MAX_HELD {
            Scan::No
        } else {
            self.scan(false)
        };
        self.resolve(scan, out);
    }

    fn hold(&mut self, c: char) {
        self.held.push(c);
        self.held_chars = 1;
    }

    fn clear_held(&mut self) {
        self.held.clear();
        self.held_chars = 0;
    }

    fn scan(&self, at_end: bool) -> Scan {
        let held = self.held.as_str();
        match self.mode {
            Mode::Think => scan_angle(held, true),
            Mode::Text if held.starts_with('[') => {
                match (scan_status(held, at_end), scan_citation(held, at_end)) {
                    (done @ Scan::Done(..), _) | (_, done @ Scan::Done(..)) => done,
                    (Scan::More, _) | (_, Scan::More) => Scan::More,
                    _ => Scan::No,
                }
            }
            Mode::Text => scan_angle(held, !self.code.active()),
        }
    }

    fn resolve(&mut self, scan: Scan, out: &mut String) {
        match scan {
            Scan::More => {}
            Scan::Done(end, markup) => {
                let rest = self.held.get(end..).unwrap_or_default().to_owned();
                self.clear_held();
                self.apply(markup);
                self.feed(&rest, out);
            }
            Scan::No => {
                // The opening character is text (or reasoning); what follows
                // it may still open markup, so it goes through again.
                let held = mem::take(&mut self.held);
                self.held_chars = 0;
                let mut chars = held.chars();
                if let Some(first) = chars.next()
                    && self.mode == Mode::Text
                {
                    self.emit(first, out);
                }
                self.feed(chars.as_str(), out);
            }
        }
    }

    fn apply(&mut self, markup: Markup) {
        if self.mode == Mode::Think {
            if markup == Markup::ThinkClose {
                self.mode = Mode::Text;
            }
            return;
        }
        self.spacing.removed();
        match markup {
            Markup::Status(status) => {
                self.status = match (self.status, status) {
                    (Some(InfoStatus::Lacking), _) | (_, InfoStatus::Lacking) => {
                        Some(InfoStatus::Lacking)
                    }
                    _ => Some(InfoStatus::Enough),
                };
            }
            Markup::Citation(numbers) => {
                for n in numbers {
                    if !self.citations.contains(&n) {
                        self.citations.push(n);
                    }
                }
            }
            Markup::ThinkOpen => self.mode = Mode::Think,
            Markup::ThinkClose | Markup::Token => {}
        }
    }

    fn emit(&mut self, c: char, out: &mut String) {
        self.code.note(c);
        self.spacing.push(c, out);
    }
}

/// Whether the filter is inside a reasoning block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Text,
    Think,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::{char_chunks, filter_chunks, random_chunks};

    fn clean(text: &str) -> String {
        filter_chunks(&[text]).0
    }

    /// Checks the filter gives the same result however `text` is chunked,
    /// and returns the clean text.
    fn clean_any_chunking(text: &str) -> String {
        let whole = filter_chunks(&[text]);
        assert_eq!(
            filter_chunks(&char_chunks(text)),
            whole,
            "char by char: {text:?}"
        );
        for (i, _) in text.char_indices().skip(1) {
            let split = filter_chunks(&[&text[..i], &text[i..]]);
            assert_eq!(split, whole, "split at {i}: {text:?}");
        }
        for seed in 1..20 {
            let chunks = random_chunks(text, seed, 7);
            assert_eq!(filter_chunks(&chunks), whole, "chunks {chunks:?}");
        }
        whole.0
    }

    fn status_of(text: &str) -> Option<InfoStatus> {
        filter_chunks(&[text]).1
    }

    fn citations_of(text: &str) -> Vec<usize> {
        filter_chunks(&[text]).2
    }

    // ---- MarkupFilter: status tags ----

    #[test]
    fn answer_tag_is_removed_and_leading_whitespace_trimmed() {
        assert_eq!(
            clean_any_chunking("[[ANSWER]] Shipping is free."),
            "Shipping is free."
        );
        assert_eq!(
            clean_any_chunking("[[ANSWER]]\n\nShipping is free."),
            "Shipping is free."
        );
        assert_eq!(clean_any_chunking("  \n[[ANSWER]]  Hi"), "Hi");
        assert_eq!(status_of("[[ANSWER]] Hi"), Some(InfoStatus::Enough));
    }

    #[test]
    fn no_info_tag_variants() {
        for tag in [
            "[[NO_INFO]]",
            "[[no_info]]",
            "[[ no_info ]]",
            "[[NOINFO]]",
            "[[NO-INFO]]",
            "[[No Info]]",
            "[NO_INFO]",
            "[[NO_INFO]",
        ] {
            let text = format!("{tag} Sorry, I do not know.");
            assert_eq!(clean_any_chunking(&text), "Sorry, I do not know.", "{tag}");
            assert_eq!(status_of(&text), Some(InfoStatus::Lacking), "{tag}");
        }
        for tag in ["[[answer]]", "[[ Answer ]]", "[ANSWER]"] {
            assert_eq!(clean(&format!("{tag} Yes.")), "Yes.", "{tag}");
            assert_eq!(status_of(tag), Some(InfoStatus::Enough), "{tag}");
        }
    }

    #[test]
    fn tags_anywhere_are_removed_and_lacking_wins() {
        assert_eq!(
            clean_any_chunking("Sorry. [[NO_INFO]] I cannot say."),
            "Sorry. I cannot say."
        );
        assert_eq!(clean_any_chunking("It is free.[[ANSWER]]"), "It is free.");
        assert_eq!(clean_any_chunking("It is free. [[ANSWER]]"), "It is free.");
        assert_eq!(
            status_of("[[ANSWER]] Well. [[NO_INFO]]"),
            Some(InfoStatus::Lacking)
        );
        assert_eq!(
            status_of("[[NO_INFO]] Well. [[ANSWER]]"),
            Some(InfoStatus::Lacking)
        );
        assert_eq!(status_of("No tag here."), None);
    }

    #[test]
    fn tags_split_at_every_position() {
        for text in [
            "[[ANSWER]] Hello",
            "[[ no_info ]] Hello",
            "Hello [[NO-INFO]]",
            "x<think>plan</think>y",
            "a<|eot_id|>",
            "free [Source 12].",
        ] {
            let whole = clean(text);
            for (i, _) in text.char_indices() {
                let mut filter = MarkupFilter::new();
                let mut out = filter.push(&text[..i]);
                out.push_str(&filter.push(&text[i..]));
                out.push_str(&filter.finish());
                assert_eq!(out, whole, "{text:?} split at {i}");
                assert!(!out.contains("[[") && !out.contains('<'), "{out:?}");
            }
        }
    }

    #[test]
    fn nothing_of_a_tag_is_released_early() {
        let mut filter = MarkupFilter::new();
        for c in char_chunks("[[NO_INFO]") {
            assert_eq!(filter.push(c), "");
        }
        assert_eq!(filter.push("] Sorry"), "Sorry");
        assert_eq!(filter.status(), Some(InfoStatus::Lacking));
    }

    #[test]
    fn partial_tag_at_the_end_is_dropped() {
        for text in [
            "Done. [[ANSW",
            "Done. [[",
            "Done. [ANSWE",
            "Done. [[NO_INFO",
            "Done. [[ANSWER]",
        ] {
            assert_eq!(clean(text).trim_end(), "Done.", "{text:?}");
        }
        assert_eq!(status_of("Done. [[ANSWER]"), Some(InfoStatus::Enough));
        assert_eq!(status_of("Done. [[ANSW"), None);
    }

    // ---- MarkupFilter: citations ----

    #[test]
    fn citations_are_removed_with_the_space_before() {
        let cases = [
            ("Shipping is free [1].", "Shipping is free."),
            ("Shipping is free [1, 3].", "Shipping is free."),
            ("Shipping is free [1][2].", "Shipping is free."),
            ("Shipping is free [1] [2].", "Shipping is free."),
            ("Shipping is free [Source 2].", "Shipping is free."),
            (
                "Shipping is free [source: 2], always.",
                "Shipping is free, always.",
            ),
            (
                "Shipping is free [1] on orders.",
                "Shipping is free on orders.",
            ),
            (
                "Shipping is free[1] on orders.",
                "Shipping is free on orders.",
            ),
            ("Shipping is free [1]", "Shipping is free"),
            ("Free [1]\nNext", "Free\nNext"),
            ("Free [2-4] now", "Free now"),
            ("Free [[3]] now", "Free now"),
            ("**Free [1]**", "**Free**"),
            ("送料は無料です[1]。", "送料は無料です。"),
            ("List:\n[1] First\n[2] Second", "List:\nFirst\nSecond"),
            ("[1] Starts here.", "Starts here."),
        ];
        for (text, want) in cases {
            assert_eq!(clean_any_chunking(text), want, "{text:?}");
        }
    }

    #[test]
    fn citations_are_recorded_in_order_without_repeats() {
        assert_eq!(
            citations_of("a [3] b [1, 3] c [Source 2][1] d [source: 7]"),
            vec![3, 1, 2, 7]
        );
        assert_eq!(citations_of("a [2-4]"), vec![2, 3, 4]);
        assert_eq!(citations_of("a [Sources 1; 2]"), vec![1, 2]);
        assert_eq!(citations_of("a [ref #5]"), vec![5]);
        assert_eq!(
            citations_of("no citations [see below]"),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn other_brackets_pass_through() {
        for text in [
            "See [see below] for more.",
            "Option [a] or [b].",
            "Press [Enter] then [Esc].",
            "A [link](https://example.com) and [1](https://example.com).",
            "Footnote[^1] here.",
            "Array [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14] is long.",
            "Year [2024] is four digits.",
            "Range [5-1] is backwards.",
            "Empty [] and [ ] and [1,] stay.",
            "Nested [[see]] stays.",
            "Maybe [no] or [answers] here.",
            "Lone [ bracket and lone ] bracket.",
            "Maths: a < b, b > c, <3, <b>bold</b>, a<-b.",
        ] {
            assert_eq!(clean_any_chunking(text), text, "{text:?}");
        }
    }

    #[test]
    fn code_is_left_alone() {
        for text in [
            "Use `items[1]` here.",
            "Use ``a ` [1] b`` here.",
            "```python\nx = items[1]\ny = [[ANSWER]]\nprint('<s>')\n```",
        ] {
            assert_eq!(clean_any_chunking(text), text, "{text:?}");
        }
        assert_eq!(
            clean_any_chunking("```\nx = a[1]\n```\nFree [1]."),
            "```\nx = a[1]\n```\nFree."
        );
        // An unclosed inline span ends with its line.
        assert_eq!(
            clean_any_chunking("A stray ` here\nFree [1]."),
            "A stray ` here\nFree."
        );
        assert_eq!(clean_any_chunking("`x`<|eot_id|>"), "`x`");
    }

    #[test]
    fn bracket_held_back_is_capped() {
        let long = format!("[1, {}", "2, ".repeat(20));
        let mut filter = MarkupFilter::new();
        let out = filter.push(&long);
        assert!(out.starts_with("[1, 2"), "{out:?}");
        assert_eq!(clean_any_chunking(&format!("{long}]")), format!("{long}]"));
    }

    #[test]
    fn lone_bracket_at_the_end_is_text() {
        assert_eq!(clean("Press [ then go"), "Press [ then go");
        assert_eq!(clean("Press ["), "Press [");
        assert_eq!(clean("Press [so"), "Press [so");
        assert_eq!(clean("Press <"), "Press <");
        assert_eq!(clean("Free [2").trim_end(), "Free");
    }

    // ---- MarkupFilter: reasoning blocks and special tokens ----

    #[test]
    fn think_blocks_are_dropped() {
        let cases = [
            (
                "<think>The user wants [1] x</think>\n\nShipping is free.",
                "Shipping is free.",
            ),
            ("<thinking>hmm</thinking>Yes.", "Yes."),
            ("<THINK >hmm</Think>Yes.", "Yes."),
            ("Yes <think>hmm</think>, indeed.", "Yes, indeed."),
            ("Yes <think>a < b </thin </think> indeed.", "Yes indeed."),
            ("Yes.<think>never closed [[ANSWER]] <|eot_id|>", "Yes."),
            ("Yes.<think>never closed </thi", "Yes."),
            ("Yes.</think> Stray close.", "Yes. Stray close."),
            ("<think><think>nested</think>after", "after"),
        ];
        for (text, want) in cases {
            assert_eq!(clean_any_chunking(text), want, "{text:?}");
        }
        assert_eq!(
            status_of("<think>[[NO_INFO]]</think>[[ANSWER]] x"),
            Some(InfoStatus::Enough)
        );
        assert!(citations_of("<think>[1]</think>x").is_empty());
    }

    #[test]
    fn think_block_across_many_chunks() {
        let mut filter = MarkupFilter::new();
        let mut out = String::new();
        for chunk in [
            "<th",
            "ink>Let me",
            " think about [",
            "2]...</",
            "think",
            ">",
            "[[ANS",
            "WER]] It",
            " is free.",
        ] {
            out.push_str(&filter.push(chunk));
        }
        out.push_str(&filter.finish());
        assert_eq!(out, "It is free.");
        assert!(filter.citations().is_empty());
        assert_eq!(filter.status(), Some(InfoStatus::Enough));
    }

    #[test]
    fn special_tokens_are_removed() {
        for token in [
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<|endoftext|>",
            "</s>",
            "<s>",
            "<|start_header_id|>",
            "<｜end▁of▁sentence｜>",
        ] {
            assert_eq!(
                clean_any_chunking(&format!("Done.{token}")),
                "Done.",
                "{token}"
            );
            assert_eq!(
                clean_any_chunking(&format!("{token}Done.")),
                "Done.",
                "{token}"
            );
        }
        assert_eq!(clean("Done.<|eot"), "Done.");
        assert_eq!(clean_any_chunking("<|not a token|>"), "<|not a token|>");
    }

    #[test]
    fn saw_output_counts_only_visible_text() {
        for (text, want) in [
            ("[[NO_INFO]]", false),
            ("[[NO_INFO]]  \n ", false),
            ("<think>lots</think>", false),
            ("[[ANSWER]] x", true),
            ("[1]", false),
            ("[", true),
        ] {
            assert_eq!(filter_chunks(&[text]).3, want, "{text:?}");
        }
        let mut filter = MarkupFilter::new();
        assert!(!filter.saw_output());
        filter.push("[[ANSWER]]  ");
        assert!(!filter.saw_output());
        filter.push("Hi");
        assert!(filter.saw_output());
    }

    #[test]
    fn filter_does_not_depend_on_chunking() {
        let text = "<think>The customer asks about [shipping]. Passage [2] says free.</think>\n\n\
            [[ANSWER]] Shipping is free on orders over $50 [2]. Returns take 5–7 days [1, 3].\n\n\
            ## Details\n\nSee [see below] and `cfg[1]`:\n\n```sh\ncurl x[1]\n```\n\n\
            日本への配送は無料です[Source 4]。🎉 Done [[NO_INFO]]<|eot_id|>";
        let whole = filter_chunks(&[text]);
        assert_eq!(
            whole.0,
            "Shipping is free on orders over $50. Returns take 5–7 days.\n\n\
            ## Details\n\nSee [see below] and `cfg[1]`:\n\n```sh\ncurl x[1]\n```\n\n\
            日本への配送は無料です。🎉 Done"
        );
        assert_eq!(whole.1, Some(InfoStatus::Lacking));
        assert_eq!(whole.2, vec![2, 1, 3, 4]);
        clean_any_chunking(text);
        for seed in 1..200 {
            let chunks = random_chunks(text, seed, 1 + usize::try_from(seed % 40).unwrap());
            assert_eq!(filter_chunks(&chunks), whole, "seed {seed}");
        }
    }
}
