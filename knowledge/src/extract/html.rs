//! HTML, parsed as browsers do (html5ever through `scraper`): headings,
//! paragraphs, list items, table rows and preformatted text, without the
//! page chrome (scripts, styles, navigation, page header and footer).
//!
//! The tree is walked iteratively: a hostile page nested a million deep must
//! not overflow the stack.

use std::borrow::Cow;

use ego_tree::iter::Edge;
use scraper::{Html, Node};

use super::text::looks_binary;
use super::{BlockKind, BlockSink, ExtractError, Extracted, Format, Limits, Location};

/// Elements whose content is never text for the reader.
const SKIPPED: &[&str] = &[
    "head", "script", "style", "nav", "noscript", "template", "svg", "math", "iframe", "object",
    "embed", "select", "textarea", "button", "canvas", "audio", "video",
];

/// Elements that end the text before them and start a new block.
const CONTAINERS: &[&str] = &[
    "html",
    "body",
    "div",
    "section",
    "article",
    "main",
    "aside",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "legend",
    "address",
    "details",
    "summary",
    "caption",
    "center",
    "hgroup",
    "dialog",
    "menu",
    "search",
    "header",
    "footer",
    "hr",
    "dd",
    "dt",
];

pub(super) fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let text = decode(bytes)?;
    let document = Html::parse_document(&text);
    let title = document
        .tree
        .root()
        .descendants()
        .find(|n| {
            n.value().as_element().is_some_and(|e| e.name() == "title")
                && n.parent()
                    .and_then(|p| p.value().as_element().map(|e| e.name() == "head"))
                    .unwrap_or(false)
        })
        .map(|n| {
            n.descendants()
                .filter_map(|d| d.value().as_text().map(|t| t.to_string()))
                .collect::<String>()
        });

    let mut walker = Walker {
        sink: BlockSink::new(limits),
        stack: Vec::new(),
        buf: String::new(),
        skip: 0,
        pre: 0,
        row: 0,
        cells: 0,
    };
    for edge in document.tree.root().traverse() {
        match edge {
            Edge::Open(node) => {
                if walker.skip > 0 {
                    walker.skip += 1;
                    continue;
                }
                match node.value() {
                    Node::Element(element) => {
                        let name = element.name();
                        let chrome = matches!(name, "header" | "footer")
                            && !node.ancestors().any(|a| {
                                a.value()
                                    .as_element()
                                    .is_some_and(|e| matches!(e.name(), "article" | "main"))
                            });
                        let hidden = element.attr("hidden").is_some()
                            || element.attr("aria-hidden") == Some("true")
                            || element.attr("role").is_some_and(|r| {
                                matches!(r, "navigation" | "banner" | "contentinfo")
                            });
                        if SKIPPED.contains(&name) || chrome || hidden {
                            walker.skip = 1;
                        } else {
                            walker.open(name)?;
                        }
                    }
                    Node::Text(text) => walker.text(text),
                    _ => {}
                }
            }
            Edge::Close(node) => {
                if walker.skip > 0 {
                    walker.skip -= 1;
                    continue;
                }
                if let Node::Element(element) = node.value() {
                    walker.close(element.name())?;
                }
            }
        }
    }
    walker.flush()?;
    if walker.sink.is_empty() {
        let count = |name: &str| {
            document
                .tree
                .root()
                .descendants()
                .filter(|n| n.value().as_element().is_some_and(|e| e.name() == name))
                .count()
        };
        if count("script") > 0 {
            return Err(ExtractError::NoText(
                "the page's text is written by scripts, which are not run; \
                 publish the text in the HTML, or export it to a file"
                    .to_owned(),
            ));
        }
        let images = count("img");
        if images > 0 {
            return Err(ExtractError::NoText(super::only_images(images)));
        }
    }
    walker.sink.finish(Format::Html, title)
}

/// Decodes an HTML file: a byte-order mark or valid UTF-8 wins; otherwise
/// the `charset` the page declares in its first kilobyte, else
/// windows-1252 (what browsers assume).
fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, ExtractError> {
    let not_text = ExtractError::NotText { expected: "HTML" };
    let (encoding, bom) = encoding_rs::Encoding::for_bom(bytes).unwrap_or((encoding_rs::UTF_8, 0));
    let body = &bytes[bom..];
    let text = if bom == 0 && std::str::from_utf8(body).is_err() {
        if body.contains(&0) {
            return Err(not_text);
        }
        let declared = declared_charset(body).unwrap_or(encoding_rs::WINDOWS_1252);
        declared.decode_without_bom_handling(body).0
    } else {
        encoding
            .decode_without_bom_handling_and_without_replacement(body)
            .ok_or(not_text)?
    };
    if looks_binary(&text) {
        return Err(ExtractError::NotText { expected: "HTML" });
    }
    Ok(text)
}

/// The encoding named by `charset=` in the first kilobyte.
fn declared_charset(bytes: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let head = &bytes[..bytes.len().min(1024)];
    let lower = head.to_ascii_lowercase();
    let at = lower.windows(8).position(|w| w == b"charset=")? + 8;
    let label: Vec<u8> = lower[at..]
        .iter()
        .copied()
        .skip_while(|&b| b == b'"' || b == b'\'')
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'))
        .collect();
    encoding_rs::Encoding::for_label(&label)
}

/// What text inside an open element becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Block(BlockKind),
    Container,
}

struct Walker {
    sink: BlockSink,
    stack: Vec<Context>,
    buf: String,
    /// Depth inside a skipped element (0: not skipping).
    skip: usize,
    /// Depth of `<pre>` elements: inside, text is kept verbatim.
    pre: usize,
    /// Depth of `<tr>` elements: inside, blocks are flattened into cells.
    row: usize,
    cells: usize,
}

impl Walker {
    fn open(&mut self, name: &str) -> Result<(), ExtractError> {
        if self.pre > 0 {
            if name == "pre" {
                self.pre += 1;
            } else if name == "br" {
                self.buf.push('\n');
            }
            return Ok(());
        }
        if self.row > 0 {
            match name {
                "tr" => self.row += 1,
                "td" | "th" if self.row == 1 => {
                    if self.cells > 0 {
                        self.buf.push_str(" | ");
                    }
                    self.cells += 1;
                }
                // Cells of a table nested in a cell.
                "td" | "th" => self.buf.push(' '),
                _ if is_block(name) || name == "br" => self.buf.push(' '),
                _ => {}
            }
            return Ok(());
        }
        let context = match name {
            "br" => {
                self.buf.push('\n');
                return Ok(());
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                let level = name[1..].parse().unwrap_or(6);
                Context::Block(BlockKind::Heading(level))
            }
            // `<li><p>…</p></li>` (a loose list) is still a list item.
            "p" => match self.stack.last() {
                Some(Context::Block(BlockKind::ListItem)) => Context::Block(BlockKind::ListItem),
                _ => Context::Block(BlockKind::Paragraph),
            },
            "li" => Context::Block(BlockKind::ListItem),
            "pre" | "listing" | "xmp" => {
                self.pre = 1;
                Context::Block(BlockKind::Code)
            }
            "tr" => {
                self.row = 1;
                self.cells = 0;
                Context::Block(BlockKind::TableRow)
            }
            _ if CONTAINERS.contains(&name) => Context::Container,
            // Inline elements (and unknown ones) just carry text.
            _ => return Ok(()),
        };
        self.flush()?;
        self.stack.push(context);
        Ok(())
    }

    fn close(&mut self, name: &str) -> Result<(), ExtractError> {
        if self.pre > 0 {
            if matches!(name, "pre" | "listing" | "xmp") {
                self.pre -= 1;
                if self.pre == 0 {
                    self.flush()?;
                    self.stack.pop();
                }
            }
            return Ok(());
        }
        if self.row > 0 {
            if name == "tr" {
                self.row -= 1;
                if self.row == 0 {
                    self.flush()?;
                    self.stack.pop();
                }
            } else if is_block(name) {
                self.buf.push(' ');
            }
            return Ok(());
        }
        if is_block(name) {
            self.flush()?;
            self.stack.pop();
        }
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if self.pre > 0 {
            self.buf.push_str(text);
        } else {
            // Source line breaks are spaces in HTML; `<br>` makes the real ones.
            self.buf.extend(
                text.chars()
                    .map(|c| if c.is_whitespace() { ' ' } else { c }),
            );
        }
    }

    fn flush(&mut self) -> Result<(), ExtractError> {
        let kind = match self.stack.last() {
            Some(Context::Block(kind)) => *kind,
            Some(Context::Container) | None => BlockKind::Paragraph,
        };
        let result = self.sink.push(kind, &self.buf, Location::default());
        self.buf.clear();
        result
    }
}

/// Elements that push a context when opened outside `<pre>` and rows
/// (everything [`Walker::open`] pushes for, except `br`).
fn is_block(name: &str) -> bool {
    matches!(
        name,
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "p" | "li" | "pre" | "listing" | "xmp" | "tr"
    ) || CONTAINERS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Content;

    fn blocks(html: &[u8]) -> (Option<String>, Vec<(BlockKind, String)>) {
        let got = extract(html, &Limits::default()).unwrap();
        let Content::Blocks(blocks) = got.content else {
            panic!("not blocks")
        };
        (
            got.title,
            blocks.into_iter().map(|b| (b.kind, b.text)).collect(),
        )
    }

    #[test]
    fn structure_without_chrome() {
        let html = br#"<!doctype html><html><head><title> Shop &amp; help </title>
            <style>p { color: red }</style><script>var x = "<p>no</p>";</script></head>
            <body><header><a href="/">Logo</a></header><nav><ul><li>Home</li></ul></nav>
            <main><article><header><h1>Returns</h1></header>
            <p>You can return
               items<br>within <b>30</b> days.</p>
            Loose text
            <div>In a <span>div</span></div>
            <ul><li>One<ul><li>Nested</li></ul></li><li>Two</li></ul>
            <table><tr><th>Day</th><th>Hours</th></tr><tr><td><p>Mon</p></td><td>9-5</td></tr></table>
            <pre>  line one
    line two</pre>
            <p hidden>secret</p><noscript>enable js</noscript>
            <div role="navigation">Previous | Next</div><span aria-hidden="true">icon</span>
            </article></main><footer>Copyright</footer></body></html>"#;
        let (title, got) = blocks(html);
        assert_eq!(title.as_deref(), Some("Shop & help"));
        let got: Vec<(BlockKind, &str)> = got.iter().map(|(k, t)| (*k, t.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (BlockKind::Heading(1), "Returns"),
                (
                    BlockKind::Paragraph,
                    "You can return items\nwithin 30 days."
                ),
                (BlockKind::Paragraph, "Loose text"),
                (BlockKind::Paragraph, "In a div"),
                (BlockKind::ListItem, "One"),
                (BlockKind::ListItem, "Nested"),
                (BlockKind::ListItem, "Two"),
                (BlockKind::TableRow, "Day | Hours"),
                (BlockKind::TableRow, "Mon | 9-5"),
                (BlockKind::Code, "  line one\n    line two"),
            ]
        );
    }

    #[test]
    fn title_falls_back_to_the_first_h1_and_charset_is_honoured() {
        let (title, got) = blocks(b"<h2>Sub</h2><h1>Main</h1><p>x</p>");
        assert_eq!(title.as_deref(), Some("Main"));
        assert_eq!(got.len(), 3);

        let latin1 = b"<meta charset=\"iso-8859-1\"><p>Gr\xfc\xdfe</p>";
        let (_, got) = blocks(latin1);
        assert_eq!(got[0].1, "Grüße");
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let html = format!("{}deep{}", "<div>".repeat(10_000), "</div>".repeat(10_000));
        let (_, got) = blocks(html.as_bytes());
        assert_eq!(got, vec![(BlockKind::Paragraph, "deep".to_owned())]);
    }

    #[test]
    fn empty_pages_and_binary() {
        let err = extract(
            b"<html><head><title>T</title></head><body><div id=app></div><script>x()</script></body></html>",
            &Limits::default(),
        )
        .expect_err("no text");
        assert!(err.to_string().contains("written by scripts"), "{err}");
        let err = extract(
            b"<body><img src=a.png><img src=b.png></body>",
            &Limits::default(),
        )
        .expect_err("no text");
        assert!(err.to_string().contains("2 images and no text"), "{err}");
        assert!(matches!(
            extract(b"<html><body><p> </p></body></html>", &Limits::default()),
            Err(ExtractError::Empty)
        ));
        assert!(matches!(
            extract(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe", &Limits::default()),
            Err(ExtractError::NotText { expected: "HTML" })
        ));
    }
}
