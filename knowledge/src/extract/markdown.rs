//! Markdown (CommonMark with tables): headings, paragraphs, list items
//! (nested items are separate items), code blocks and table rows, each with
//! the line it starts on. Front matter is dropped; its `title:` titles the
//! document.

use pulldown_cmark::{Event, MetadataBlockKind, Options, Parser, Tag, TagEnd};

use super::text::{decode, line_number};
use super::{BlockKind, BlockSink, ExtractError, Extracted, Format, Limits, Location};

pub(super) fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let text = decode(bytes, "Markdown")?;
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let line_at = |offset: usize| line_number(line_starts.partition_point(|&s| s <= offset) - 1);

    let mut walker = Walker {
        sink: BlockSink::new(limits),
        stack: Vec::new(),
        buf: String::new(),
        line: None,
        cells: 0,
    };
    // Front matter, and the separator of its keys.
    let mut meta: Option<(String, char)> = None;
    let mut in_meta = false;
    let mut skip = 0usize;
    let mut images = 0usize;
    for (event, range) in Parser::new_ext(&text, options).into_offset_iter() {
        let line = line_at(range.start);
        match event {
            Event::Start(Tag::MetadataBlock(kind)) => {
                let sep = if kind == MetadataBlockKind::YamlStyle {
                    ':'
                } else {
                    '='
                };
                meta = Some((String::new(), sep));
                in_meta = true;
            }
            Event::End(TagEnd::MetadataBlock(_)) => in_meta = false,
            Event::Text(t) if in_meta => {
                if let Some((m, _)) = meta.as_mut() {
                    m.push_str(&t);
                }
            }
            Event::Start(Tag::HtmlBlock) => skip += 1,
            Event::End(TagEnd::HtmlBlock) => skip = skip.saturating_sub(1),
            _ if skip > 0 => {}
            Event::Start(tag @ Tag::Image { .. }) => {
                images += 1;
                walker.start(&tag, line)?;
            }
            Event::Start(tag) => walker.start(&tag, line)?,
            Event::End(tag) => walker.end(tag)?,
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                walker.text(&t, line);
            }
            Event::SoftBreak => walker.text(" ", line),
            Event::HardBreak => walker.text("\n", line),
            Event::Rule => walker.flush()?,
            Event::Html(_)
            | Event::InlineHtml(_)
            | Event::FootnoteReference(_)
            | Event::TaskListMarker(_) => {}
        }
    }
    walker.flush()?;
    if walker.sink.is_empty() && images > 0 {
        return Err(ExtractError::NoText(super::only_images(images)));
    }
    let title = meta.and_then(|(m, sep)| front_matter_title(&m, sep));
    walker.sink.finish(Format::Markdown, title)
}

/// The value of a `title` key in YAML (`title: X`) or TOML (`title = "X"`)
/// front matter, unquoted.
fn front_matter_title(meta: &str, sep: char) -> Option<String> {
    meta.lines().find_map(|line| {
        let (key, value) = line.split_once(sep)?;
        if key.trim() != "title" {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(value.to_owned())
    })
}

/// What text inside an open Markdown block becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Block(BlockKind),
    /// Lists, quotes, tables: loose text inside is a paragraph.
    Container,
}

struct Walker {
    sink: BlockSink,
    stack: Vec<Context>,
    buf: String,
    /// The line the text in `buf` starts on.
    line: Option<u32>,
    /// Cells seen in the current table row.
    cells: usize,
}

impl Walker {
    fn start(&mut self, tag: &Tag<'_>, line: u32) -> Result<(), ExtractError> {
        let context = match tag {
            Tag::Paragraph => match self.stack.last() {
                Some(Context::Block(BlockKind::ListItem)) => Context::Block(BlockKind::ListItem),
                _ => Context::Block(BlockKind::Paragraph),
            },
            Tag::Heading { level, .. } => Context::Block(BlockKind::Heading(*level as u8)),
            Tag::Item => Context::Block(BlockKind::ListItem),
            Tag::CodeBlock(_) => Context::Block(BlockKind::Code),
            Tag::TableHead | Tag::TableRow => {
                self.cells = 0;
                Context::Block(BlockKind::TableRow)
            }
            Tag::DefinitionListTitle | Tag::DefinitionListDefinition => {
                Context::Block(BlockKind::Paragraph)
            }
            Tag::BlockQuote(_)
            | Tag::List(_)
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::Table(_) => Context::Container,
            Tag::TableCell => {
                if self.cells > 0 {
                    self.buf.push_str(" | ");
                }
                self.cells += 1;
                return Ok(());
            }
            Tag::HtmlBlock
            | Tag::MetadataBlock(_)
            | Tag::Emphasis
            | Tag::Strong
            | Tag::Strikethrough
            | Tag::Superscript
            | Tag::Subscript
            | Tag::Link { .. }
            | Tag::Image { .. } => return Ok(()),
        };
        self.flush()?;
        self.line = Some(line);
        self.stack.push(context);
        Ok(())
    }

    fn end(&mut self, tag: TagEnd) -> Result<(), ExtractError> {
        match tag {
            TagEnd::Paragraph
            | TagEnd::Heading(_)
            | TagEnd::Item
            | TagEnd::CodeBlock
            | TagEnd::TableHead
            | TagEnd::TableRow
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::BlockQuote(_)
            | TagEnd::List(_)
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::Table => {
                self.flush()?;
                self.stack.pop();
            }
            _ => {}
        }
        Ok(())
    }

    fn text(&mut self, text: &str, line: u32) {
        if self.buf.is_empty() && self.line.is_none() {
            self.line = Some(line);
        }
        self.buf.push_str(text);
    }

    /// Emits the text gathered so far as a block of the innermost kind.
    fn flush(&mut self) -> Result<(), ExtractError> {
        let kind = match self.stack.last() {
            Some(Context::Block(kind)) => *kind,
            Some(Context::Container) | None => BlockKind::Paragraph,
        };
        let location = Location {
            page: None,
            line: self.line.take(),
        };
        let result = self.sink.push(kind, &self.buf, location);
        self.buf.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{Block, Content};

    type Summary = Vec<(BlockKind, String, Option<u32>)>;

    fn blocks(md: &str) -> (Option<String>, Summary) {
        let got = extract(md.as_bytes(), &Limits::default()).unwrap();
        let Content::Blocks(blocks) = got.content else {
            panic!("not blocks")
        };
        let summary = blocks
            .into_iter()
            .map(
                |Block {
                     kind,
                     text,
                     location,
                 }| (kind, text, location.line),
            )
            .collect();
        (got.title, summary)
    }

    #[test]
    fn structure_with_line_numbers() {
        let md = "# Help centre\n\nWe *answer*\nquickly.  \nReally.\n\n## Lists\n\n\
                  - one\n  - nested `two`\n- three\n\n1. loose\n\n   second para\n\n\
                  ```rust\nfn main() {\n    x();\n}\n```\n\n\
                  | Day | Hours |\n|-----|-------|\n| Mon | 9–5 |\n\n\
                  > quoted\n\n<div>html skipped</div>\n\n---\n\nEnd.\n";
        let (title, got) = blocks(md);
        assert_eq!(title.as_deref(), Some("Help centre"));
        let expected: Vec<(BlockKind, &str, Option<u32>)> = vec![
            (BlockKind::Heading(1), "Help centre", Some(1)),
            (BlockKind::Paragraph, "We answer quickly.\nReally.", Some(3)),
            (BlockKind::Heading(2), "Lists", Some(7)),
            (BlockKind::ListItem, "one", Some(9)),
            (BlockKind::ListItem, "nested two", Some(10)),
            (BlockKind::ListItem, "three", Some(11)),
            (BlockKind::ListItem, "loose", Some(13)),
            (BlockKind::ListItem, "second para", Some(15)),
            (BlockKind::Code, "fn main() {\n    x();\n}", Some(17)),
            (BlockKind::TableRow, "Day | Hours", Some(23)),
            (BlockKind::TableRow, "Mon | 9–5", Some(25)),
            (BlockKind::Paragraph, "quoted", Some(27)),
            (BlockKind::Paragraph, "End.", Some(33)),
        ];
        let got: Vec<(BlockKind, &str, Option<u32>)> =
            got.iter().map(|(k, t, l)| (*k, t.as_str(), *l)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn front_matter_is_dropped_and_titles() {
        let md =
            "---\ntitle: \"Returns policy\"\nlayout: page\n---\n\n# Returns\n\nWithin 30 days.\n";
        let (title, got) = blocks(md);
        assert_eq!(title.as_deref(), Some("Returns policy"));
        assert_eq!(
            got[0],
            (BlockKind::Heading(1), "Returns".to_owned(), Some(6))
        );
        assert_eq!(got.len(), 2);

        let (title, got) = blocks("---\nlayout: page\n---\nText.\n");
        assert_eq!(title, None);
        assert_eq!(
            got,
            vec![(BlockKind::Paragraph, "Text.".to_owned(), Some(4))]
        );
    }

    #[test]
    fn empty_and_binary() {
        assert!(matches!(
            extract(b"<!-- nothing -->\n\n---\n", &Limits::default()),
            Err(ExtractError::Empty)
        ));
        let err = extract(b"![](scan-1.png)\n\n![](scan-2.png)\n", &Limits::default())
            .expect_err("no text");
        assert!(err.to_string().contains("2 images and no text"), "{err}");
        assert!(matches!(
            extract(b"\x00\x01binary", &Limits::default()),
            Err(ExtractError::NotText {
                expected: "Markdown"
            })
        ));
    }
}
