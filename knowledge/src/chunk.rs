//! Structure-aware chunking.
//!
//! A document's blocks are grouped into chunks that follow its sections: a
//! heading always starts a new chunk, paragraphs and list items are added
//! whole while they fit, and only a block larger than a chunk is split (at
//! sentences, then words). Sizes are counted in the embedding model's tokens.
//! When a section overflows into a second chunk, the next chunk repeats the
//! last sentences of the previous one (the overlap), so an answer that spans
//! the cut is still found whole in one of them. Every chunk carries its
//! heading path (`Returns › Refunds`) and where it starts in the file.
//!
//! An FAQ entry is always exactly one chunk titled by its question.

use crate::embed::TokenCounter;
use crate::extract::{Block, BlockKind, Content, Extracted, Location};

/// Chunk sizes, in tokens.
#[derive(Debug, Clone, Copy)]
pub struct ChunkSizes {
    /// Largest chunk body (the model reads 256 tokens; the heading path and
    /// title take the rest).
    pub max_tokens: usize,
    /// Tokens repeated from the end of the previous chunk of the same section.
    pub overlap_tokens: usize,
}

impl Default for ChunkSizes {
    fn default() -> Self {
        ChunkSizes {
            max_tokens: 200,
            overlap_tokens: 40,
        }
    }
}

/// Headings longer than this are treated as paragraphs.
const MAX_HEADING_TOKENS: usize = 32;

/// Whether a chunk is an FAQ entry (question + answer) or a passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    Faq,
    Passage,
}

impl ChunkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkKind::Faq => "faq",
            ChunkKind::Passage => "passage",
        }
    }
}

/// One chunk, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub kind: ChunkKind,
    /// For FAQ entries, the question.
    pub title: Option<String>,
    /// Headings above the chunk, outermost first.
    pub heading_path: Vec<String>,
    pub text: String,
    pub location: Location,
    /// The FAQ entry's own id, when it has one.
    pub entry_id: Option<String>,
    pub tokens: usize,
}

impl Chunk {
    /// The heading path joined for display: `Returns › Refunds`.
    pub fn heading_label(&self) -> String {
        self.heading_path.join(" › ")
    }

    /// What the full-text title field holds: the question, else the headings.
    pub fn search_title(&self) -> String {
        match &self.title {
            Some(t) => t.clone(),
            None => self.heading_label(),
        }
    }

    /// The text embedded for this chunk: headings (or question) and body, so
    /// a passage is found by what its section is about.
    pub fn embedding_text(&self) -> String {
        let title = self.search_title();
        if title.is_empty() {
            self.text.clone()
        } else {
            format!("{title}\n{}", self.text)
        }
    }

    /// A stable hash of everything in the chunk that determines its vectors:
    /// unchanged chunks are never embedded twice. Stored vectors are looked
    /// up by this hash and their model.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        // A fixed salt (the first model's name), kept so that the hashes
        // stored before there were several models stay valid.
        h.update(b"all-MiniLM-L6-v2-int8");
        h.update([0]);
        h.update(self.kind.as_str().as_bytes());
        h.update([0]);
        h.update(self.search_title().as_bytes());
        h.update([0]);
        h.update(self.text.as_bytes());
        hex::encode(h.finalize())
    }
}

/// Splits one extracted document into chunks.
pub fn chunk(doc: &Extracted, counter: &TokenCounter, sizes: ChunkSizes) -> Vec<Chunk> {
    match &doc.content {
        Content::Faq(entries) => entries
            .iter()
            .map(|e| {
                let tokens = counter.count(&e.answer)
                    + e.question.as_deref().map_or(0, |q| counter.count(q));
                Chunk {
                    kind: ChunkKind::Faq,
                    title: e.question.clone(),
                    heading_path: Vec::new(),
                    text: e.answer.clone(),
                    location: e.location,
                    entry_id: e.id.clone(),
                    tokens,
                }
            })
            .collect(),
        Content::Blocks(blocks) => Chunker::new(counter, sizes, doc.title.clone()).run(blocks),
    }
}

struct Piece {
    text: String,
    tokens: usize,
    location: Location,
    /// Starts a new line in the chunk (list items, table rows) rather than a
    /// new paragraph.
    tight: bool,
}

struct Chunker<'a> {
    counter: &'a TokenCounter,
    sizes: ChunkSizes,
    /// (level, text) of the open headings.
    headings: Vec<(u8, String)>,
    doc_title: Option<String>,
    current: Vec<Piece>,
    current_tokens: usize,
    /// `current` holds only the overlap carried from the previous chunk.
    only_overlap: bool,
    out: Vec<Chunk>,
}

impl<'a> Chunker<'a> {
    fn new(counter: &'a TokenCounter, sizes: ChunkSizes, doc_title: Option<String>) -> Self {
        Chunker {
            counter,
            sizes,
            headings: Vec::new(),
            doc_title,
            current: Vec::new(),
            current_tokens: 0,
            only_overlap: false,
            out: Vec::new(),
        }
    }

    fn run(mut self, blocks: &[Block]) -> Vec<Chunk> {
        for block in blocks {
            match block.kind {
                // A "heading" longer than a heading can be (a paragraph
                // styled as one) would be copied into every chunk below it.
                BlockKind::Heading(_) if self.counter.count(&block.text) > MAX_HEADING_TOKENS => {
                    self.push_block(&block.text, block.location, false);
                }
                BlockKind::Heading(level) => {
                    self.flush(false);
                    self.headings.retain(|(l, _)| *l < level);
                    self.headings.push((level, block.text.clone()));
                }
                kind => {
                    let tight = matches!(kind, BlockKind::ListItem | BlockKind::TableRow);
                    self.push_block(&block.text, block.location, tight);
                }
            }
        }
        self.flush(false);
        self.out
    }

    /// Adds a block's text, split at sentences (then words) when it is
    /// larger than a chunk.
    fn push_block(&mut self, text: &str, location: Location, tight: bool) {
        // A chunk stays on one page, so that it cites the page its text is
        // on (and every page with text is found by its own chunks).
        let page_turned = self
            .current
            .last()
            .is_some_and(|last| last.location.page != location.page);
        if page_turned {
            if self.only_overlap {
                self.current.clear();
                self.current_tokens = 0;
                self.only_overlap = false;
            } else {
                self.flush(false);
            }
        }
        let tokens = self.counter.count(text);
        if tokens <= self.sizes.max_tokens {
            self.push(Piece {
                text: text.to_owned(),
                tokens,
                location,
                tight,
            });
            return;
        }
        for part in self.split_long(text) {
            let tokens = self.counter.count(&part);
            self.push(Piece {
                text: part,
                tokens,
                location,
                tight: false,
            });
        }
    }

    fn push(&mut self, piece: Piece) {
        if !self.current.is_empty() && self.current_tokens + piece.tokens > self.sizes.max_tokens {
            if !self.only_overlap {
                self.flush(true);
            }
            if self.only_overlap && self.current_tokens + piece.tokens > self.sizes.max_tokens {
                // No room for the overlap beside this piece: drop it.
                self.current.clear();
                self.current_tokens = 0;
            }
        }
        self.only_overlap = false;
        self.current_tokens += piece.tokens;
        self.current.push(piece);
    }

    /// Closes the current chunk. `overflow`: the section goes on, so the next
    /// chunk starts with the overlap.
    fn flush(&mut self, overflow: bool) {
        if self.current.is_empty() || self.only_overlap {
            return;
        }
        let mut text = String::new();
        for (i, piece) in self.current.iter().enumerate() {
            if i > 0 {
                text.push_str(if piece.tight && self.current[i - 1].tight {
                    "\n"
                } else {
                    "\n\n"
                });
            }
            text.push_str(&piece.text);
        }
        let mut heading_path: Vec<String> = self.headings.iter().map(|(_, h)| h.clone()).collect();
        if heading_path.is_empty()
            && let Some(title) = &self.doc_title
        {
            heading_path.push(title.clone());
        }
        self.out.push(Chunk {
            kind: ChunkKind::Passage,
            title: None,
            heading_path,
            location: self.current[0].location,
            text,
            entry_id: None,
            tokens: self.current_tokens,
        });
        let previous = std::mem::take(&mut self.current);
        self.current_tokens = 0;
        if overflow && self.sizes.overlap_tokens > 0 {
            // Carry the last sentences (up to the overlap) of the previous chunk.
            let Some(last) = previous.last() else { return };
            let mut carried: Vec<String> = Vec::new();
            let mut tokens = 0;
            for sentence in sentences(&last.text).into_iter().rev() {
                let n = self.counter.count(sentence);
                if tokens + n > self.sizes.overlap_tokens {
                    break;
                }
                tokens += n;
                carried.push(sentence.to_owned());
            }
            if !carried.is_empty() && tokens < last.tokens {
                carried.reverse();
                self.current.push(Piece {
                    text: carried.join(" "),
                    tokens,
                    location: last.location,
                    tight: last.tight,
                });
                self.current_tokens = tokens;
                self.only_overlap = true;
            }
        }
    }

    /// Splits a block larger than a chunk at sentence ends, then at words.
    fn split_long(&self, text: &str) -> Vec<String> {
        // Leave room for the overlap the next chunk starts with.
        let max = self
            .sizes
            .max_tokens
            .saturating_sub(self.sizes.overlap_tokens)
            .max(1);
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut current_tokens = 0;
        for sentence in sentences(text) {
            let n = self.counter.count(sentence);
            if n > max {
                if !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                    current_tokens = 0;
                }
                parts.extend(self.split_words(sentence));
                continue;
            }
            if current_tokens + n > max && !current.is_empty() {
                parts.push(std::mem::take(&mut current));
                current_tokens = 0;
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(sentence);
            current_tokens += n;
        }
        if !current.is_empty() {
            parts.push(current);
        }
        parts
    }

    fn split_words(&self, text: &str) -> Vec<String> {
        let max = self.sizes.max_tokens;
        let mut parts = Vec::new();
        let mut current: Vec<&str> = Vec::new();
        let mut tokens = 0;
        for word in text.split_whitespace() {
            // Words of one token or more; a pathological "word" (a URL, a
            // base64 blob) is cut by characters.
            let n = self.counter.count(word).max(1);
            if tokens + n > max && !current.is_empty() {
                parts.push(current.join(" "));
                current.clear();
                tokens = 0;
            }
            if n > max {
                let chars: Vec<char> = word.chars().collect();
                let per = (chars.len() * max / n).max(1);
                parts.extend(chars.chunks(per).map(|c| c.iter().collect::<String>()));
                continue;
            }
            current.push(word);
            tokens += n;
        }
        if !current.is_empty() {
            parts.push(current.join(" "));
        }
        parts
    }
}

/// Sentences of `text`: cut after `.`, `!`, `?` (and their CJK forms) followed
/// by whitespace, and at newlines. Abbreviations may cut early; that only
/// moves a chunk boundary.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        let cut = match c {
            '\n' => true,
            '.' | '!' | '?' | ';' => chars.peek().is_none_or(|(_, n)| n.is_whitespace()),
            '。' | '！' | '？' => true,
            _ => false,
        };
        if cut {
            let s = text[start..end].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = end;
        }
    }
    let s = text[start..].trim();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{FaqEntry, Format};

    fn block(kind: BlockKind, text: &str, line: u32) -> Block {
        Block {
            kind,
            text: text.to_owned(),
            location: Location {
                page: None,
                line: Some(line),
            },
        }
    }

    fn doc(blocks: Vec<Block>) -> Extracted {
        Extracted {
            format: Format::Markdown,
            title: None,
            content: Content::Blocks(blocks),
            pages: None,
        }
    }

    #[test]
    fn a_chunk_stays_on_its_page() {
        let on = |page: u32, text: &str| Block {
            kind: BlockKind::Paragraph,
            text: text.to_owned(),
            location: Location {
                page: Some(page),
                line: None,
            },
        };
        let d = doc(vec![
            on(1, "Lockers open at seven."),
            on(1, "They close at ten."),
            on(2, "Badges are at the desk."),
            on(3, "Parking is free."),
        ]);
        let chunks = chunk(&d, &TokenCounter::Estimate, ChunkSizes::default());
        let got: Vec<(Option<u32>, &str)> = chunks
            .iter()
            .map(|c| (c.location.page, c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some(1), "Lockers open at seven.\n\nThey close at ten."),
                (Some(2), "Badges are at the desk."),
                (Some(3), "Parking is free."),
            ]
        );
    }

    #[test]
    fn headings_start_chunks_and_are_carried_as_a_path() {
        let d = doc(vec![
            block(BlockKind::Heading(1), "Returns", 1),
            block(
                BlockKind::Paragraph,
                "You can return anything within 30 days.",
                3,
            ),
            block(BlockKind::Heading(2), "Refunds", 5),
            block(BlockKind::Paragraph, "Refunds take five days.", 7),
            block(BlockKind::ListItem, "Card: 3 days", 8),
            block(BlockKind::ListItem, "Bank: 5 days", 9),
            block(BlockKind::Heading(1), "Shipping", 11),
            block(BlockKind::Paragraph, "We ship worldwide.", 13),
        ]);
        let chunks = chunk(&d, &TokenCounter::Estimate, ChunkSizes::default());
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].heading_path, ["Returns"]);
        assert_eq!(chunks[1].heading_label(), "Returns › Refunds");
        assert_eq!(
            chunks[1].text,
            "Refunds take five days.\n\nCard: 3 days\nBank: 5 days"
        );
        assert_eq!(chunks[1].location.line, Some(7));
        assert_eq!(chunks[2].heading_path, ["Shipping"]);
        assert!(
            chunks[1]
                .embedding_text()
                .starts_with("Returns › Refunds\n")
        );
    }

    #[test]
    fn long_sections_split_within_the_budget_with_overlap() {
        let sentences: Vec<String> = (0..60)
            .map(|i| format!("Sentence number {i} explains one more detail of the policy."))
            .collect();
        let d = doc(vec![
            block(BlockKind::Heading(1), "Policy", 1),
            block(BlockKind::Paragraph, &sentences[..30].join(" "), 2),
            block(BlockKind::Paragraph, &sentences[30..].join(" "), 3),
        ]);
        let sizes = ChunkSizes {
            max_tokens: 60,
            overlap_tokens: 15,
        };
        let chunks = chunk(&d, &TokenCounter::Estimate, sizes);
        assert!(chunks.len() > 5, "{}", chunks.len());
        for c in &chunks {
            assert!(
                c.tokens <= sizes.max_tokens,
                "{} tokens: {}",
                c.tokens,
                c.text
            );
            assert_eq!(c.heading_path, ["Policy"]);
        }
        // Every sentence survives, and consecutive chunks share an overlap.
        let all: String = chunks
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        for s in &sentences {
            assert!(all.contains(s.as_str()), "lost: {s}");
        }
        let last_of_first = super::sentences(&chunks[0].text)
            .last()
            .copied()
            .unwrap_or_default()
            .to_owned();
        assert!(
            chunks[1].text.starts_with(&last_of_first),
            "no overlap: {:?} / {:?}",
            chunks[0].text,
            chunks[1].text
        );
    }

    #[test]
    fn an_overlong_heading_is_a_paragraph_not_a_path() {
        let long = "This paragraph was styled as a heading by mistake and goes on and on about returns, refunds, parcels and the many conditions that apply to them, which nobody reads, and which a heading should never contain at all";
        let d = doc(vec![
            block(BlockKind::Heading(2), long, 1),
            block(BlockKind::Paragraph, "Refunds take five days.", 2),
        ]);
        let chunks = chunk(&d, &TokenCounter::Estimate, ChunkSizes::default());
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].heading_path.is_empty());
        assert!(chunks[0].text.starts_with("This paragraph"));
    }

    #[test]
    fn a_giant_word_is_cut_by_characters() {
        let blob = "x".repeat(5000);
        let d = doc(vec![block(
            BlockKind::Paragraph,
            &format!("See {blob} here."),
            1,
        )]);
        let chunks = chunk(
            &d,
            &TokenCounter::Estimate,
            ChunkSizes {
                max_tokens: 50,
                overlap_tokens: 0,
            },
        );
        assert!(!chunks.is_empty());
        let total: usize = chunks.iter().map(|c| c.text.matches('x').count()).sum();
        assert_eq!(total, 5000);
    }

    #[test]
    fn faq_entries_are_one_chunk_each() {
        let d = Extracted {
            format: Format::FaqJsonl,
            title: None,
            content: Content::Faq(vec![FaqEntry {
                id: Some("faq1".into()),
                question: Some("How long do refunds take?".into()),
                answer: "Five days. ".repeat(400),
                location: Location {
                    page: None,
                    line: Some(1),
                },
            }]),
            pages: None,
        };
        let chunks = chunk(&d, &TokenCounter::Estimate, ChunkSizes::default());
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].kind, ChunkKind::Faq);
        assert_eq!(
            chunks[0].title.as_deref(),
            Some("How long do refunds take?")
        );
        assert_eq!(chunks[0].entry_id.as_deref(), Some("faq1"));
    }

    #[test]
    fn sentences_cut_at_ends_and_newlines() {
        assert_eq!(
            sentences("One. Two? Three!\nFour 3.5 five"),
            ["One.", "Two?", "Three!", "Four 3.5 five"]
        );
    }
}
