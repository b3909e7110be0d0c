//! Plain text: paragraphs split on blank lines, with a conservative guess at
//! headings and bulleted lists. Also home to [`decode`], the text-or-binary
//! gate every text-based format passes through.

use std::borrow::Cow;

use super::{BlockKind, BlockSink, ExtractError, Extracted, Format, Limits, Location};

/// Decodes a text file: UTF-8 (with or without a byte-order mark) or UTF-16
/// with a byte-order mark. Anything else, or text that looks binary (NUL
/// bytes, many control characters), is [`ExtractError::NotText`].
pub(super) fn decode<'a>(
    bytes: &'a [u8],
    expected: &'static str,
) -> Result<Cow<'a, str>, ExtractError> {
    let not_text = ExtractError::NotText { expected };
    let text = if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Cow::Borrowed(std::str::from_utf8(rest).map_err(|_| not_text)?)
    } else if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        decode_utf16(rest, encoding_rs::UTF_16LE).ok_or(not_text)?
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        decode_utf16(rest, encoding_rs::UTF_16BE).ok_or(not_text)?
    } else {
        Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| not_text)?)
    };
    if looks_binary(&text) {
        return Err(ExtractError::NotText { expected });
    }
    Ok(text)
}

fn decode_utf16<'a>(
    bytes: &[u8],
    encoding: &'static encoding_rs::Encoding,
) -> Option<Cow<'a, str>> {
    encoding
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|text| Cow::Owned(text.into_owned()))
}

/// True for decoded text that is really binary: any NUL, or more than one
/// control character (other than tab, newline, carriage return and form feed)
/// in a hundred.
pub(super) fn looks_binary(text: &str) -> bool {
    let mut chars = 0usize;
    let mut controls = 0usize;
    for c in text.chars() {
        if c == '\0' {
            return true;
        }
        chars += 1;
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c') {
            controls += 1;
        }
    }
    controls * 100 > chars
}

/// The 1-based line number at 0-based index `i`, saturating.
pub(super) fn line_number(i: usize) -> u32 {
    u32::try_from(i + 1).unwrap_or(u32::MAX)
}

pub(super) fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let text = decode(bytes, "text")?;
    let mut sink = BlockSink::new(limits);
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    let mut start = 0;
    while start < lines.len() {
        if lines[start].trim().is_empty() {
            start += 1;
            continue;
        }
        let end = (start..lines.len())
            .find(|&i| lines[i].trim().is_empty())
            .unwrap_or(lines.len());
        push_group(&mut sink, &lines[start..end], start)?;
        start = end;
    }
    sink.finish(Format::Text, None)
}

/// Pushes one run of non-blank lines, the first of which is line
/// `first + 1`.
fn push_group(sink: &mut BlockSink, group: &[&str], first: usize) -> Result<(), ExtractError> {
    let at = |i: usize| Location {
        page: None,
        line: Some(line_number(first + i)),
    };
    if let [text, underline] = group
        && let Some(level) = underline_level(underline)
    {
        return sink.push(BlockKind::Heading(level), text, at(0));
    }
    if let [line] = group
        && looks_like_caps_heading(line)
    {
        return sink.push(BlockKind::Heading(2), line, at(0));
    }
    if bullet_body(group[0]).is_some() {
        let mut item = String::new();
        let mut item_start = 0;
        for (i, line) in group.iter().enumerate() {
            if let Some(body) = bullet_body(line) {
                sink.push(BlockKind::ListItem, &item, at(item_start))?;
                item.clear();
                item.push_str(body);
                item_start = i;
            } else {
                item.push(' ');
                item.push_str(line);
            }
        }
        return sink.push(BlockKind::ListItem, &item, at(item_start));
    }
    sink.push(BlockKind::Paragraph, &group.join(" "), at(0))
}

/// `Some(1)` for a `===` underline, `Some(2)` for `---`.
fn underline_level(line: &str) -> Option<u8> {
    let line = line.trim();
    if line.len() < 3 {
        return None;
    }
    if line.chars().all(|c| c == '=') {
        Some(1)
    } else if line.chars().all(|c| c == '-') {
        Some(2)
    } else {
        None
    }
}

/// A short line in capitals ("OPENING HOURS"), not a sentence.
fn looks_like_caps_heading(line: &str) -> bool {
    let line = line.trim();
    let letters = line.chars().filter(|c| c.is_alphabetic()).count();
    line.chars().count() <= 60
        && letters >= 3
        && !line.chars().any(char::is_lowercase)
        && letters * 2 >= line.chars().filter(|c| !c.is_whitespace()).count()
        && !line.ends_with(['.', ',', ';'])
}

/// The text after a bullet or number marker (`- `, `* `, `• `, `1. `, `2) `).
fn bullet_body(line: &str) -> Option<&str> {
    let line = line.trim_start();
    for marker in ["- ", "* ", "+ ", "• ", "– "] {
        if let Some(body) = line.strip_prefix(marker) {
            return Some(body);
        }
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if (1..=3).contains(&digits) {
        let rest = &line[digits..];
        return rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") "));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{Block, Content};

    fn blocks(text: &str) -> (Option<String>, Vec<Block>) {
        let got = extract(text.as_bytes(), &Limits::default()).unwrap();
        let Content::Blocks(blocks) = got.content else {
            panic!("not blocks")
        };
        (got.title, blocks)
    }

    fn summary(blocks: &[Block]) -> Vec<(BlockKind, &str, Option<u32>)> {
        blocks
            .iter()
            .map(|b| (b.kind, b.text.as_str(), b.location.line))
            .collect()
    }

    #[test]
    fn paragraphs_headings_and_lists() {
        let text = "Opening hours\n=============\n\nWe open at nine\nand close   at five.\r\n\r\n\n\
                    CONTACT\n\n- phone us\n  any day\n- or write\n\n1. first\n2) second\n\n\
                    Details\n-------\n";
        let (title, got) = blocks(text);
        assert_eq!(title.as_deref(), Some("Opening hours"));
        assert_eq!(
            summary(&got),
            vec![
                (BlockKind::Heading(1), "Opening hours", Some(1)),
                (
                    BlockKind::Paragraph,
                    "We open at nine and close at five.",
                    Some(4)
                ),
                (BlockKind::Heading(2), "CONTACT", Some(8)),
                (BlockKind::ListItem, "phone us any day", Some(10)),
                (BlockKind::ListItem, "or write", Some(12)),
                (BlockKind::ListItem, "first", Some(14)),
                (BlockKind::ListItem, "second", Some(15)),
                (BlockKind::Heading(2), "Details", Some(17)),
            ]
        );
    }

    #[test]
    fn sentences_in_capitals_or_long_lines_stay_paragraphs() {
        let (_, got) = blocks("NOTE: CLOSED ON SUNDAY.\n\nA line\n===x\n");
        assert_eq!(got[0].kind, BlockKind::Paragraph);
        assert_eq!(got[1].kind, BlockKind::Paragraph);
        assert_eq!(got[1].text, "A line ===x");
    }

    #[test]
    fn accepts_bom_and_utf16() {
        let (_, got) = blocks("\u{feff}Grüße");
        assert_eq!(got[0].text, "Grüße");

        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend("Grüße\n\nzwei".encode_utf16().flat_map(u16::to_le_bytes));
        let got = extract(&utf16, &Limits::default()).unwrap();
        let Content::Blocks(b) = got.content else {
            panic!()
        };
        assert_eq!(b[1].text, "zwei");

        let mut utf16be = vec![0xFE, 0xFF];
        utf16be.extend("hi".encode_utf16().flat_map(u16::to_be_bytes));
        assert!(extract(&utf16be, &Limits::default()).is_ok());
    }

    #[test]
    fn refuses_binary_and_empty() {
        for bad in [&b"abc\0def"[..], b"\xff\xfe\xfd", b"\x01\x02\x03 hello"] {
            assert!(matches!(
                extract(bad, &Limits::default()),
                Err(ExtractError::NotText { expected: "text" })
            ));
        }
        assert!(matches!(
            extract(b" \n\n\t\n", &Limits::default()),
            Err(ExtractError::Empty)
        ));
    }
}
