//! Text extraction: one file in, structured text out.
//!
//! [`extract`] turns the bytes of one file into an [`Extracted`] document:
//! either a sequence of [`Block`]s (headings, paragraphs, list items, …) that
//! the chunker splits along their structure, or a list of [`FaqEntry`]s, each
//! of which becomes exactly one chunk titled by its question.
//!
//! Every failure is a typed [`ExtractError`] naming what is wrong with *this*
//! file; nothing here panics on hostile input (parsers that may panic run
//! under `catch_unwind`), and limits bound memory (see [`Limits`]).
//!
//! One file per format sits beside this one (`pdf.rs`, `docx.rs`, `html.rs`,
//! `markdown.rs`, `text.rs`, `faq.rs`); each turns bytes into blocks through
//! the `BlockSink` here, which normalizes whitespace, drops empty blocks,
//! enforces [`Limits::max_text_bytes`] and picks the fallback title.

mod docx;
pub(crate) use docx::push_reference;
pub(crate) mod faq;
mod html;
mod markdown;
mod pdf;
mod text;

/// A file format Frontdesk can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Pdf,
    Docx,
    Html,
    Markdown,
    Text,
    /// CSV with question/answer columns.
    FaqCsv,
    /// JSON Lines with `_id`/`id`, `title`/`question`, `text`/`answer`.
    FaqJsonl,
}

impl Format {
    /// Short lowercase name, for listings and errors (`pdf`, `docx`, …).
    pub fn name(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Html => "html",
            Format::Markdown => "markdown",
            Format::Text => "text",
            Format::FaqCsv => "faq-csv",
            Format::FaqJsonl => "faq-jsonl",
        }
    }

    /// The format a file name's extension announces (case-insensitive), or
    /// `None` for extensions Frontdesk does not read.
    pub fn from_file_name(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            "html" | "htm" | "xhtml" => Format::Html,
            "md" | "markdown" | "mdown" => Format::Markdown,
            "txt" | "text" => Format::Text,
            "csv" => Format::FaqCsv,
            "jsonl" | "ndjson" => Format::FaqJsonl,
            _ => return None,
        })
    }
}

/// Where a piece of text came from inside its file, for citations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based page (PDF).
    pub page: Option<u32>,
    /// 1-based line (text, Markdown, JSONL) or row (CSV, header is row 1).
    pub line: Option<u32>,
}

/// What kind of block a piece of text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// A heading of level 1 (top) to 6.
    Heading(u8),
    Paragraph,
    /// One item of a bulleted or numbered list.
    ListItem,
    /// One row of a table, cells joined with ` | `.
    TableRow,
    /// Preformatted text or code.
    Code,
}

/// A unit of a document's structure, with its text (whitespace-normalized,
/// never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub kind: BlockKind,
    pub text: String,
    pub location: Location,
}

/// One question and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaqEntry {
    /// The entry's own id (`_id` or `id` field / column), when it has one.
    pub id: Option<String>,
    /// The question (`title`/`question`); may be absent in passage corpora.
    pub question: Option<String>,
    /// The answer (`text`/`answer`), never empty.
    pub answer: String,
    pub location: Location,
}

/// The content of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Blocks(Vec<Block>),
    Faq(Vec<FaqEntry>),
}

/// One extracted file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub format: Format,
    /// The document's own title (HTML `<title>`, DOCX/PDF metadata, first
    /// level-1 heading), when it has one.
    pub title: Option<String>,
    pub content: Content,
    /// Of a paged document (PDF): its pages, and how many of them gave no
    /// text.
    pub pages: Option<PageCount>,
}

/// A paged document's pages, and those of them that paint something but
/// gave no text (scanned pages, or text in a font that cannot be decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageCount {
    pub total: u32,
    pub without_text: u32,
}

impl PageCount {
    /// What was lost, said for the business (`12 of 40 pages without text:
    /// scanned? needs OCR`); `None` when nothing was.
    pub fn loss(&self) -> Option<String> {
        (self.without_text > 0).then(|| loss_line(self.without_text, self.total))
    }
}

/// `12 of 40 pages without text: scanned? needs OCR`, the one phrasing of a
/// text loss (the store and the API say it from stored counts).
pub fn loss_line(without_text: u32, total: u32) -> String {
    let noun = if total == 1 { "page" } else { "pages" };
    format!("{without_text} of {total} {noun} without text: scanned? needs OCR")
}

/// Bounds on what one file may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest input file accepted, in bytes.
    pub max_file_bytes: u64,
    /// Largest total uncompressed size of the parts read from a DOCX (zip).
    pub max_unzipped_bytes: u64,
    /// Most extracted text kept from one file, in bytes; more is an error.
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 64 * 1024 * 1024,
            max_unzipped_bytes: 256 * 1024 * 1024,
            max_text_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Why a file could not be read. The message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsupported file type (readable: .pdf .docx .html .htm .md .txt .csv .jsonl)")]
    Unsupported,
    #[error("the file is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("no text found in the file")]
    Empty,
    /// No text, though the file has content: what it holds instead.
    #[error("no text found in the file: {0}")]
    NoText(String),
    #[error("the PDF is encrypted; export an unencrypted copy")]
    Encrypted,
    #[error("the file looks binary, not {expected}")]
    NotText { expected: &'static str },
    #[error("corrupt {format}: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Extracts one file, choosing the format from `file_name`'s extension.
pub fn extract(file_name: &str, bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let format = Format::from_file_name(file_name).ok_or(ExtractError::Unsupported)?;
    extract_as(format, bytes, limits)
}

/// Extracts one file of a known format (a web page's, from its
/// `Content-Type`).
pub fn extract_as(
    format: Format,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ExtractError::TooLarge {
            size: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    // Parsers of hostile input may panic (PDF ones do); a panic is a
    // corrupt file, not a crashed worker.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match format {
        Format::Pdf => pdf::extract(bytes, limits),
        Format::Docx => docx::extract(bytes, limits),
        Format::Html => html::extract(bytes, limits),
        Format::Markdown => markdown::extract(bytes, limits),
        Format::Text => text::extract(bytes, limits),
        Format::FaqCsv => faq::extract_csv(bytes, limits),
        Format::FaqJsonl => faq::extract_jsonl(bytes, limits),
    }))
    .unwrap_or_else(|_| {
        Err(ExtractError::Corrupt {
            format: format.name(),
            reason: "the reader failed on this file".to_owned(),
        })
    })
}

/// Why a file with images and no text gave nothing (`NoText`'s reason).
fn only_images(images: usize) -> String {
    let noun = if images == 1 { "image" } else { "images" };
    format!("it holds {images} {noun} and no text: scanned? needs OCR")
}

/// The error for a file whose extracted text is over
/// [`Limits::max_text_bytes`].
fn text_too_large(limit: usize) -> ExtractError {
    ExtractError::Invalid(format!(
        "the file holds more than {limit} bytes of text, over the limit; split it into smaller files"
    ))
}

/// Normalizes the whitespace of one block's text.
///
/// Outside [`BlockKind::Code`], runs of spaces and tabs become one space,
/// lines are trimmed, and empty lines are dropped: a newline survives only
/// where the source had an explicit line break (`<br>`, `w:br`, a Markdown
/// hard break), because extractors turn soft wraps into spaces before this.
/// Code keeps its lines and indentation, loses trailing spaces, and has runs
/// of blank lines collapsed to one. Control characters are dropped everywhere
/// (tabs survive in code).
fn normalize(kind: BlockKind, raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    if kind == BlockKind::Code {
        let mut blank_run = false;
        for line in raw.split('\n') {
            let line: String = line.chars().filter(|&c| c == '\t' || !is_junk(c)).collect();
            let line = line.trim_end();
            if line.is_empty() {
                blank_run = !out.is_empty();
                continue;
            }
            if !out.is_empty() {
                out.push('\n');
                if blank_run {
                    out.push('\n');
                }
            }
            blank_run = false;
            out.push_str(line);
        }
        return out;
    }
    for line in raw.split('\n') {
        let mut words = line
            .split(|c: char| c.is_whitespace() || is_junk(c))
            .filter(|w| !w.is_empty())
            .peekable();
        if words.peek().is_none() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        for (i, word) in words.enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

/// Normalizes text that must stay on one line (titles, questions).
fn normalize_line(raw: &str) -> String {
    normalize(BlockKind::Paragraph, raw).replace('\n', " ")
}

/// Characters that carry no text: controls, byte-order marks, zero-width
/// spaces, and the private-use area (icon-font glyphs such as a heading's
/// link icon). `\n` is handled by the callers.
fn is_junk(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{feff}' | '\u{200b}' | '\u{e000}'..='\u{f8ff}')
}

/// Collects a document's blocks: normalizes them, drops empty ones and keeps
/// the total text under [`Limits::max_text_bytes`].
#[derive(Debug)]
struct BlockSink {
    blocks: Vec<Block>,
    text_bytes: usize,
    max_text_bytes: usize,
}

impl BlockSink {
    fn new(limits: &Limits) -> Self {
        BlockSink {
            blocks: Vec::new(),
            text_bytes: 0,
            max_text_bytes: limits.max_text_bytes,
        }
    }

    fn len(&self) -> usize {
        self.blocks.len()
    }

    fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    fn push(&mut self, kind: BlockKind, raw: &str, location: Location) -> Result<(), ExtractError> {
        let text = normalize(kind, raw);
        if text.is_empty() {
            return Ok(());
        }
        self.text_bytes += text.len();
        if self.text_bytes > self.max_text_bytes {
            return Err(text_too_large(self.max_text_bytes));
        }
        self.blocks.push(Block {
            kind,
            text,
            location,
        });
        Ok(())
    }

    /// The document, titled by `title` or else by its first level-1 heading;
    /// [`ExtractError::Empty`] when no block has text.
    fn finish(self, format: Format, title: Option<String>) -> Result<Extracted, ExtractError> {
        if self.blocks.is_empty() {
            return Err(ExtractError::Empty);
        }
        let title = title
            .map(|t| normalize_line(&t))
            .filter(|t| !t.is_empty())
            .or_else(|| {
                self.blocks
                    .iter()
                    .find(|b| b.kind == BlockKind::Heading(1))
                    .map(|b| normalize_line(&b.text))
            });
        Ok(Extracted {
            format,
            title,
            content: Content::Blocks(self.blocks),
            pages: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatches_on_the_extension() {
        let got = extract("notes.TXT", b"Hello there.", &Limits::default()).unwrap();
        assert_eq!(got.format, Format::Text);
        assert!(matches!(
            extract("image.png", b"x", &Limits::default()),
            Err(ExtractError::Unsupported)
        ));
    }

    #[test]
    fn refuses_files_over_the_size_limit() {
        let limits = Limits {
            max_file_bytes: 4,
            ..Limits::default()
        };
        assert!(matches!(
            extract("a.txt", b"hello", &limits),
            Err(ExtractError::TooLarge { size: 5, limit: 4 })
        ));
    }

    #[test]
    fn binary_bytes_behind_a_text_extension_are_not_text() {
        let binary: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
        for name in ["a.md", "a.txt", "a.html", "a.csv", "a.jsonl"] {
            let err = extract(name, &binary, &Limits::default()).unwrap_err();
            assert!(
                matches!(err, ExtractError::NotText { .. }),
                "{name}: {err:?}"
            );
        }
        // A PNG signature and header: valid enough to fool nobody.
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10";
        assert!(matches!(
            extract("a.md", png, &Limits::default()),
            Err(ExtractError::NotText { .. })
        ));
    }

    #[test]
    fn extracted_text_over_the_limit_is_refused() {
        let limits = Limits {
            max_text_bytes: 10,
            ..Limits::default()
        };
        let err = extract("a.txt", b"one two three four five", &limits).unwrap_err();
        assert!(
            matches!(err, ExtractError::Invalid(ref m) if m.contains("limit")),
            "{err:?}"
        );
    }

    #[test]
    fn normalize_collapses_whitespace_but_keeps_code_lines() {
        assert_eq!(
            normalize(BlockKind::Paragraph, "  a \t b\u{0}  \n\n  c "),
            "a b\nc"
        );
        assert_eq!(
            normalize(BlockKind::Code, "\n  fn x() {\t \n\n\n    y\n}\n\n"),
            "  fn x() {\n\n    y\n}"
        );
        assert_eq!(normalize_line("a\nb"), "a b");
        assert_eq!(normalize_line("Intro\u{f0c1}"), "Intro");
    }
}
