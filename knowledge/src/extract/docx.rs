//! Word documents (`.docx`): the body of `word/document.xml`, with heading
//! and list styles resolved through `word/styles.xml` and the title from
//! `docProps/core.xml`.
//!
//! A DOCX is a zip, so it can be a zip bomb: every part read is checked
//! against what is left of [`Limits::max_unzipped_bytes`] twice, once by its
//! declared size and once while inflating (through `Read::take`), so a header
//! that lies cannot make us allocate more than the limit.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use zip::ZipArchive;
use zip::result::ZipError;

use super::{BlockKind, BlockSink, ExtractError, Extracted, Format, Limits, Location};

fn corrupt(reason: impl Into<String>) -> ExtractError {
    ExtractError::Corrupt {
        format: "docx",
        reason: reason.into(),
    }
}

pub(super) fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
        if bytes.starts_with(b"\xD0\xCF\x11\xE0") {
            corrupt("not a zip archive (a password-protected document or an old .doc file?)")
        } else if bytes.starts_with(b"PK") {
            corrupt(format!("unreadable zip archive: {e}"))
        } else {
            corrupt("not a zip archive")
        }
    })?;
    let mut parts = Parts {
        zip,
        used: 0,
        limit: limits.max_unzipped_bytes,
    };
    let document = parts
        .read("word/document.xml")?
        .ok_or_else(|| corrupt("no word/document.xml: not a Word document"))?;
    // Styles and metadata are optional and parsed leniently: a malformed one
    // costs headings or the title, not the document (but still counts
    // against the unzipped budget).
    let styles = parts
        .read("word/styles.xml")?
        .map(|s| parse_styles(&s))
        .unwrap_or_default();
    let title = parts
        .read("docProps/core.xml")?
        .and_then(|c| core_title(&c));

    let mut sink = BlockSink::new(limits);
    parse_document(&document, &styles, &mut sink)?;
    if sink.is_empty() {
        let images = parts
            .zip
            .file_names()
            .filter(|n| n.as_ref().is_ok_and(|n| n.starts_with("word/media/")))
            .count();
        if images > 0 {
            return Err(ExtractError::NoText(super::only_images(images)));
        }
    }
    sink.finish(Format::Docx, title)
}

/// Reads parts of the archive within the unzipped-size budget.
struct Parts<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    used: u64,
    limit: u64,
}

impl Parts<'_> {
    fn read(&mut self, name: &str) -> Result<Option<String>, ExtractError> {
        let file = match self.zip.by_name(name) {
            Ok(file) => file,
            Err(ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(corrupt(format!("{name}: {e}"))),
        };
        let declared = file.size();
        let left = self.limit - self.used;
        if declared > left {
            return Err(ExtractError::TooLarge {
                size: self.used.saturating_add(declared),
                limit: self.limit,
            });
        }
        // The declared size is only a claim; never trust it for more than a
        // first allocation, and never read past the budget.
        let mut buf = Vec::with_capacity(usize::try_from(declared.min(1 << 24)).unwrap_or(0));
        file.take(left + 1)
            .read_to_end(&mut buf)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        let read = buf.len() as u64;
        if read > left {
            return Err(corrupt(format!(
                "{name} unpacks to more than its zip header declares ({declared} bytes); \
                 refusing a possible zip bomb"
            )));
        }
        self.used += read;
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| corrupt(format!("{name} is not UTF-8 XML")))
    }
}

/// What a paragraph style makes of a paragraph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StyleInfo {
    heading: Option<u8>,
    list: bool,
}

/// Heading and list styles by style id, from `word/styles.xml`. Style ids
/// are localized (`berschrift1` in German Word), so the style's name and
/// outline level decide, not its id.
fn parse_styles(xml: &str) -> HashMap<String, StyleInfo> {
    let mut styles = HashMap::new();
    let mut reader = Reader::from_str(xml);
    let mut current: Option<(String, StyleInfo)> = None;
    loop {
        let event = match reader.read_event() {
            Ok(Event::Eof) | Err(_) => break,
            Ok(event) => event,
        };
        match event {
            Event::Start(e) if e.name().as_ref() == "w:style" => {
                current = attr(&e, "w:styleId").map(|id| (id, StyleInfo::default()));
            }
            Event::End(e) if e.name().as_ref() == "w:style" => {
                if let Some((id, info)) = current.take()
                    && info != StyleInfo::default()
                {
                    styles.insert(id, info);
                }
            }
            Event::Start(e) | Event::Empty(e) => {
                let Some((_, info)) = current.as_mut() else {
                    continue;
                };
                match e.name().as_ref() {
                    "w:name" => {
                        let name = attr(&e, "w:val").unwrap_or_default().to_ascii_lowercase();
                        if name == "title" {
                            info.heading = Some(1);
                        } else if let Some(n) = name.strip_prefix("heading ") {
                            info.heading = n.parse().ok().filter(|n| (1..=6).contains(n));
                        } else if name.starts_with("list") {
                            info.list = true;
                        }
                    }
                    "w:outlineLvl" if info.heading.is_none() => info.heading = outline_level(&e),
                    "w:numPr" => info.list = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    styles
}

/// Heading level 1–6 from a `w:outlineLvl` (0-based; 9 is body text).
fn outline_level(e: &BytesStart<'_>) -> Option<u8> {
    let level: u8 = attr(e, "w:val")?.parse().ok()?;
    (level < 6).then_some(level + 1)
}

/// The unescaped value of attribute `name`.
fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    let a = e.try_get_attribute(name).ok()??;
    let value = a
        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
        .ok()?;
    Some(value.into_owned())
}

/// Appends the character an entity reference stands for.
pub(crate) fn push_reference(out: &mut String, reference: &str) {
    if let Some(code) = reference.strip_prefix('#') {
        let code = match code.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => code.parse().ok(),
        };
        out.extend(code.and_then(char::from_u32));
    } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(reference) {
        out.push_str(s);
    }
}

/// `dc:title` from `docProps/core.xml`.
fn core_title(xml: &str) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut inside = false;
    let mut title = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.name().as_ref() == "dc:title" => inside = true,
            Event::End(e) if e.name().as_ref() == "dc:title" => return Some(title),
            Event::Text(t) if inside => title.push_str(&t.xml10_content()),
            Event::CData(t) if inside => title.push_str(&t),
            Event::GeneralRef(r) if inside => push_reference(&mut title, &r),
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// A paragraph being read.
#[derive(Debug, Default)]
struct Paragraph {
    text: String,
    style: Option<String>,
    outline: Option<u8>,
    numbered: bool,
}

fn parse_document(
    xml: &str,
    styles: &HashMap<String, StyleInfo>,
    sink: &mut BlockSink,
) -> Result<(), ExtractError> {
    let mut reader = Reader::from_str(xml);
    // Paragraphs nest (a text box's paragraphs sit inside a run of another).
    let mut paragraphs: Vec<Paragraph> = Vec::new();
    // Open table rows, innermost last, each a list of cell texts.
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut in_text = false;
    let mut in_properties = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| corrupt(format!("word/document.xml: {e}")))?;
        match event {
            Event::Eof => break,
            Event::Start(e) => match e.name().as_ref() {
                "w:p" => paragraphs.push(Paragraph::default()),
                "w:pPr" => in_properties += 1,
                "w:t" => in_text = true,
                "w:tr" => rows.push(Vec::new()),
                "w:tc" => {
                    if let Some(row) = rows.last_mut() {
                        row.push(String::new());
                    }
                }
                // Alternate renderings of content already read from
                // `mc:Choice`.
                "mc:Fallback" => {
                    let end = e.to_end().into_owned();
                    reader
                        .read_to_end(end.name())
                        .map_err(|e| corrupt(format!("word/document.xml: {e}")))?;
                }
                _ => empty_element(&e, in_properties > 0, paragraphs.last_mut()),
            },
            Event::Empty(e) => empty_element(&e, in_properties > 0, paragraphs.last_mut()),
            Event::End(e) => match e.name().as_ref() {
                "w:pPr" => in_properties = in_properties.saturating_sub(1),
                "w:t" => in_text = false,
                "w:p" => {
                    let Some(paragraph) = paragraphs.pop() else {
                        continue;
                    };
                    if let Some(cell) = rows.last_mut().and_then(|r| r.last_mut()) {
                        if !cell.is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(&paragraph.text);
                    } else {
                        let kind = paragraph_kind(&paragraph, styles);
                        sink.push(kind, &paragraph.text, Location::default())?;
                    }
                }
                "w:tr" => {
                    if let Some(row) = rows.pop() {
                        let cells: Vec<String> =
                            row.iter().map(|c| super::normalize_line(c)).collect();
                        if cells.iter().any(|c| !c.is_empty()) {
                            sink.push(
                                BlockKind::TableRow,
                                &cells.join(" | "),
                                Location::default(),
                            )?;
                        }
                    }
                }
                _ => {}
            },
            Event::Text(t) if in_text => {
                if let Some(p) = paragraphs.last_mut() {
                    p.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) if in_text => {
                if let Some(p) = paragraphs.last_mut() {
                    push_reference(&mut p.text, &r);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Handles the elements that matter by themselves, whether written empty
/// (`<w:tab/>`) or not: run content (tabs, breaks) and paragraph properties.
fn empty_element(e: &BytesStart<'_>, in_properties: bool, paragraph: Option<&mut Paragraph>) {
    let Some(p) = paragraph else {
        return;
    };
    match e.name().as_ref() {
        "w:pStyle" if in_properties => p.style = attr(e, "w:val"),
        "w:outlineLvl" if in_properties => p.outline = outline_level(e),
        "w:numPr" if in_properties => p.numbered = true,
        // `numId` 0 switches numbering off.
        "w:numId" if in_properties => p.numbered = attr(e, "w:val").as_deref() != Some("0"),
        // Tab stops in the properties are not tabs in the text.
        "w:tab" | "w:ptab" if !in_properties => p.text.push(' '),
        "w:br" | "w:cr" => p.text.push('\n'),
        "w:noBreakHyphen" => p.text.push('-'),
        _ => {}
    }
}

fn paragraph_kind(p: &Paragraph, styles: &HashMap<String, StyleInfo>) -> BlockKind {
    let style = p.style.as_deref().unwrap_or_default();
    let info = styles.get(style).copied().unwrap_or_default();
    let heading = p.outline.or(info.heading).or_else(|| {
        let lower = style.to_ascii_lowercase();
        if lower == "title" {
            return Some(1);
        }
        let n: u8 = lower.strip_prefix("heading")?.trim().parse().ok()?;
        (1..=6).contains(&n).then_some(n)
    });
    if let Some(level) = heading {
        BlockKind::Heading(level)
    } else if p.numbered || info.list || style.starts_with("List") {
        BlockKind::ListItem
    } else {
        BlockKind::Paragraph
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};

    use super::*;
    use crate::extract::{Block, Content};

    fn docx(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        for (name, body) in parts {
            zip.start_file(*name, options).unwrap();
            zip.write_all(body.as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn body(inner: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"
  xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"><w:body>{inner}</w:body></w:document>"#
        )
    }

    fn blocks(got: Extracted) -> Vec<(BlockKind, String)> {
        let Content::Blocks(blocks) = got.content else {
            panic!("not blocks")
        };
        blocks
            .into_iter()
            .map(|Block { kind, text, .. }| (kind, text))
            .collect()
    }

    #[test]
    fn paragraphs_headings_lists_tables() {
        let document = body(
            r#"<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Staff</w:t></w:r><w:r><w:t xml:space="preserve"> handbook</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="berschrift2"/><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr><w:r><w:t>Hours</w:t></w:r></w:p>
<w:p><w:r><w:t>Open</w:t></w:r><w:r><w:tab/><w:t>9&amp;5</w:t><w:br/><w:t>daily &#x263A;</w:t></w:r></w:p>
<w:p><w:pPr><w:numPr><w:ilvl w:val="0"/><w:numId w:val="3"/></w:numPr></w:pPr><w:r><w:t>First item</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Heading3"/></w:pPr><w:r><w:t>Prices</w:t></w:r></w:p>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Item</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Cost</w:t></w:r></w:p><w:p><w:r><w:t>(EUR)</w:t></w:r></w:p></w:tc></w:tr>
<w:tr><w:tc><w:p/></w:tc><w:tc><w:p/></w:tc></w:tr></w:tbl>
<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><w:txbxContent><w:p><w:r><w:t>Boxed</w:t></w:r></w:p></w:txbxContent></w:drawing></mc:Choice><mc:Fallback><w:pict><w:p><w:r><w:t>Boxed</w:t></w:r></w:p></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>
<w:p><w:r><w:delText>deleted</w:delText><w:instrText>PAGE</w:instrText></w:r></w:p>"#,
        );
        let styles = r#"<?xml version="1.0"?><w:styles xmlns:w="x">
<w:style w:type="paragraph" w:styleId="berschrift2"><w:name w:val="heading 2"/></w:style>
<w:style w:type="paragraph" w:styleId="Normal"><w:name w:val="Normal"/></w:style></w:styles>"#;
        let bytes = docx(&[
            ("word/document.xml", &document),
            ("word/styles.xml", styles),
        ]);
        let got = extract(&bytes, &Limits::default()).unwrap();
        assert_eq!(got.title.as_deref(), Some("Staff handbook"));
        let got = blocks(got);
        let got: Vec<(BlockKind, &str)> = got.iter().map(|(k, t)| (*k, t.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (BlockKind::Heading(1), "Staff handbook"),
                (BlockKind::Heading(2), "Hours"),
                (BlockKind::Paragraph, "Open 9&5\ndaily ☺"),
                (BlockKind::ListItem, "First item"),
                (BlockKind::Heading(3), "Prices"),
                (BlockKind::TableRow, "Item | Cost (EUR)"),
                (BlockKind::Paragraph, "Boxed"),
            ]
        );
    }

    #[test]
    fn title_from_core_properties() {
        let core = r#"<?xml version="1.0"?><cp:coreProperties xmlns:cp="c" xmlns:dc="d"><dc:title>Q&amp;A  guide</dc:title></cp:coreProperties>"#;
        let document = body("<w:p><w:r><w:t>Text</w:t></w:r></w:p>");
        let bytes = docx(&[
            ("word/document.xml", &document),
            ("docProps/core.xml", core),
        ]);
        let got = extract(&bytes, &Limits::default()).unwrap();
        assert_eq!(got.title.as_deref(), Some("Q&A guide"));
    }

    #[test]
    fn not_a_zip_or_not_a_word_document() {
        let err = extract(b"just text", &Limits::default()).unwrap_err();
        assert!(
            matches!(err, ExtractError::Corrupt { format: "docx", ref reason } if reason == "not a zip archive"),
            "{err:?}"
        );
        let bytes = docx(&[("hello.txt", "hi")]);
        assert!(matches!(
            extract(&bytes, &Limits::default()),
            Err(ExtractError::Corrupt { format: "docx", .. })
        ));
        let bytes = docx(&[("word/document.xml", "<w:document><w:body><w:p></w:body>")]);
        assert!(matches!(
            extract(&bytes, &Limits::default()),
            Err(ExtractError::Corrupt { format: "docx", .. })
        ));
        let bytes = docx(&[(
            "word/document.xml",
            &body("<w:p/><w:p><w:r><w:t> </w:t></w:r></w:p>"),
        )]);
        assert!(matches!(
            extract(&bytes, &Limits::default()),
            Err(ExtractError::Empty)
        ));
        let bytes = docx(&[
            (
                "word/document.xml",
                &body("<w:p><w:r><w:drawing/></w:r></w:p>"),
            ),
            ("word/media/image1.png", "\u{89}PNG"),
        ]);
        let err = extract(&bytes, &Limits::default()).expect_err("no text");
        assert_eq!(
            err.to_string(),
            "no text found in the file: it holds 1 image and no text: scanned? needs OCR"
        );
    }

    const BOMB_BYTES: usize = 32 << 20;

    /// A DOCX whose `word/document.xml` inflates to 32 MiB of zeros, written
    /// a chunk at a time so the test never holds it.
    fn zip_bomb() -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(9));
        zip.start_file("word/document.xml", options).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..BOMB_BYTES / chunk.len() {
            zip.write_all(&chunk).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn small_limits() -> Limits {
        Limits {
            max_unzipped_bytes: 1 << 20,
            ..Limits::default()
        }
    }

    #[test]
    fn zip_bomb_is_refused_by_its_declared_size() {
        let bytes = zip_bomb();
        assert!(bytes.len() < 200 << 10, "{} bytes", bytes.len());
        let err = extract(&bytes, &small_limits()).unwrap_err();
        assert!(
            matches!(err, ExtractError::TooLarge { size, limit } if size == BOMB_BYTES as u64 && limit == 1 << 20),
            "{err:?}"
        );
    }

    #[test]
    fn zip_bomb_with_a_lying_header_is_refused_while_inflating() {
        let mut bytes = zip_bomb();
        // Claim 1 KiB uncompressed in the local header and the central
        // directory (the size field sits 22 and 24 bytes in, respectively).
        let claimed = 1024u32.to_le_bytes();
        let mut patched = 0;
        for (signature, offset) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
            let at = bytes
                .windows(4)
                .position(|w| w == signature)
                .expect("zip signature");
            bytes[at + offset..at + offset + 4].copy_from_slice(&claimed);
            patched += 1;
        }
        assert_eq!(patched, 2);
        let err = extract(&bytes, &small_limits()).unwrap_err();
        assert!(
            matches!(err, ExtractError::Corrupt { format: "docx", .. }),
            "{err:?}"
        );
    }
}
