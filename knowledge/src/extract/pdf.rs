//! PDF: the text of each page (through `pdf-extract`, on `lopdf`), split into
//! paragraphs at blank lines, hard-wrapped lines joined and words hyphenated
//! across a line break mended. Every block carries its page.
//!
//! PDF parsers panic on hostile input; [`super::extract`] runs every reader
//! under `catch_unwind` and makes a panic a corrupt file. (The panic message
//! still reaches the process's panic hook: a library must not replace it.)
//! A stack overflow cannot be caught, though, so the form drawings that
//! `pdf-extract` renders by unbounded recursion are checked first
//! ([`check_drawings`]).

use pdf_extract::content::Content;
use pdf_extract::{Dictionary, Document, Object, ObjectId, PlainTextOutput, output_doc_page};

use super::{BlockKind, BlockSink, ExtractError, Extracted, Format, Limits, Location};

fn corrupt(reason: impl Into<String>) -> ExtractError {
    ExtractError::Corrupt {
        format: "pdf",
        reason: reason.into(),
    }
}

pub(super) fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ExtractError::Empty);
    }
    let head = &bytes[..bytes.len().min(1024)];
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Err(corrupt("no %PDF header: not a PDF file"));
    }
    check_inflated_size(bytes, limits.max_unzipped_bytes)?;
    let document = Document::load_mem(bytes).map_err(|e| match e {
        pdf_extract::Error::Decryption(_) | pdf_extract::Error::InvalidPassword => {
            ExtractError::Encrypted
        }
        e => corrupt(e.to_string()),
    })?;
    // Documents whose user password is empty are decrypted while loading;
    // the rest keep their `/Encrypt` entry.
    if document.is_encrypted() {
        return Err(ExtractError::Encrypted);
    }
    let title = info_title(&document);
    let pages = document.get_pages();
    check_drawings(&document, pages.values().copied()).map_err(corrupt)?;
    let mut sink = BlockSink::new(limits);
    let mut failure = None;
    let mut read_any = false;
    for &number in pages.keys() {
        let mut text = String::new();
        let result = output_doc_page(&document, &mut PlainTextOutput::new(&mut text), number);
        if let Err(e) = result {
            tracing::debug!(page = number, error = %e, "unreadable PDF page skipped");
            failure.get_or_insert(e.to_string());
            continue;
        }
        read_any = true;
        for paragraph in paragraphs(&text) {
            let location = Location {
                page: Some(number),
                line: None,
            };
            sink.push(BlockKind::Paragraph, &paragraph, location)?;
        }
    }
    if let (false, Some(reason)) = (read_any, failure) {
        return Err(corrupt(format!("no page could be read: {reason}")));
    }
    sink.finish(Format::Pdf, title)
}

/// Deepest nesting of form drawings accepted.
const MAX_DRAWING_DEPTH: usize = 32;
/// Most form drawings (`Do` operations, counted along every path) in one
/// document: bounds a "billion laughs" of forms drawing forms.
const MAX_DRAWINGS: usize = 100_000;

/// Walks the form XObjects each page draws, as `pdf-extract` will (same
/// resource lookup), and refuses cycles, deep nesting and fan-out.
/// Refuses a decompression bomb before the PDF library inflates it (it
/// inflates every stream without a limit): every `stream … endstream` in
/// the file is inflated as zlib through a counting reader, and the total may
/// not exceed `budget`. Streams that are not zlib are skipped (they are not
/// inflated by anyone).
fn check_inflated_size(bytes: &[u8], budget: u64) -> Result<(), ExtractError> {
    use std::io::Read;
    let mut total: u64 = 0;
    let mut at = 0;
    while let Some(found) = find(&bytes[at..], b"stream") {
        let mut start = at + found + b"stream".len();
        at = start;
        // `endstream` contains `stream`: skip it, and require the line end.
        if bytes[..start - 6].ends_with(b"end") {
            continue;
        }
        match bytes.get(start..start + 2) {
            Some(b"\r\n") => start += 2,
            Some([b'\n', _]) | Some([b'\r', _]) => start += 1,
            _ => continue,
        }
        let end = find(&bytes[start..], b"endstream").map_or(bytes.len(), |e| start + e);
        let remaining = budget.saturating_sub(total);
        let mut decoder = flate2::read::ZlibDecoder::new(&bytes[start..end]).take(remaining + 1);
        let inflated = std::io::copy(&mut decoder, &mut std::io::sink()).unwrap_or(0);
        total += inflated;
        if total > budget {
            return Err(ExtractError::TooLarge {
                size: total,
                limit: budget,
            });
        }
        at = end;
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn check_drawings(
    document: &Document,
    pages: impl Iterator<Item = ObjectId>,
) -> Result<(), &'static str> {
    let mut budget = MAX_DRAWINGS;
    for page in pages {
        let Some(resources) = page_resources(document, page) else {
            continue;
        };
        let Ok(content) = document.get_page_content(page) else {
            continue;
        };
        check_stream(document, &content, resources, &mut Vec::new(), &mut budget)?;
    }
    Ok(())
}

fn check_stream(
    document: &Document,
    content: &[u8],
    resources: &Dictionary,
    path: &mut Vec<ObjectId>,
    budget: &mut usize,
) -> Result<(), &'static str> {
    let Ok(content) = Content::decode(content) else {
        return Ok(());
    };
    for operation in content.operations.iter().filter(|o| o.operator == "Do") {
        *budget = budget
            .checked_sub(1)
            .ok_or("too many nested drawings (a decompression bomb?)")?;
        let Some(name) = operation.operands.first().and_then(|o| o.as_name().ok()) else {
            continue;
        };
        let Some(id) = resolve(document, resources.get(b"XObject").ok())
            .and_then(|x| x.as_dict().ok())
            .and_then(|x| x.get(name).ok())
            .and_then(|x| x.as_reference().ok())
        else {
            continue;
        };
        if path.contains(&id) {
            return Err("a drawing draws itself");
        }
        if path.len() >= MAX_DRAWING_DEPTH {
            return Err("drawings nested too deep");
        }
        let Ok(stream) = document.get_object(id).and_then(Object::as_stream) else {
            continue;
        };
        if stream.dict.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Image") {
            continue;
        }
        let inner = resolve(document, stream.dict.get(b"Resources").ok())
            .and_then(|r| r.as_dict().ok())
            .unwrap_or(resources);
        let data = stream
            .decompressed_content()
            .unwrap_or_else(|_| stream.content.clone());
        path.push(id);
        check_stream(document, &data, inner, path, budget)?;
        path.pop();
    }
    Ok(())
}

/// A page's `/Resources`, inherited from its ancestors if need be.
fn page_resources(document: &Document, page: ObjectId) -> Option<&Dictionary> {
    let mut node = document.get_dictionary(page).ok()?;
    for _ in 0..MAX_DRAWING_DEPTH {
        if let Some(resources) = resolve(document, node.get(b"Resources").ok()) {
            return resources.as_dict().ok();
        }
        let parent = node.get(b"Parent").and_then(Object::as_reference).ok()?;
        node = document.get_dictionary(parent).ok()?;
    }
    None
}

/// Follows a reference, if `object` is one.
fn resolve<'a>(document: &'a Document, object: Option<&'a Object>) -> Option<&'a Object> {
    document.dereference(object?).ok().map(|(_, o)| o)
}

/// `/Title` from the document information dictionary.
fn info_title(document: &Document) -> Option<String> {
    let info = document.trailer.get(b"Info").ok()?;
    let (_, info) = document.dereference(info).ok()?;
    let title = info.as_dict().ok()?.get(b"Title").ok()?;
    let (_, title) = document.dereference(title).ok()?;
    pdf_extract::decode_text_string(title).ok()
}

/// Splits a page's text at blank lines; joins the lines of each paragraph,
/// mending "exam-" + "ple" into "example".
fn paragraphs(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in page.lines().map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        let hyphenated = current
            .strip_suffix('-')
            .and_then(|rest| rest.chars().next_back())
            .is_some_and(char::is_alphabetic);
        if hyphenated && line.starts_with(char::is_lowercase) {
            current.pop();
        } else if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Content;

    /// Through the public entry point, which catches panics.
    fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
        crate::extract::extract("test.pdf", bytes, limits)
    }

    /// A PDF from object bodies (numbered from 1, the first being the
    /// catalog), with a correct cross-reference table.
    fn pdf(objects: &[String], trailer_extra: &str) -> Vec<u8> {
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, body) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).bytes());
        }
        let xref = out.len();
        out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
        for offset in offsets {
            out.extend(format!("{offset:010} 00000 n \n").bytes());
        }
        out.extend(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R {trailer_extra} >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .bytes(),
        );
        out
    }

    fn stream(content: &str) -> String {
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        )
    }

    /// Two pages of Helvetica text; object 7 is the info dictionary.
    fn two_pages(page1: &str, page2: &str, trailer_extra: &str) -> Vec<u8> {
        let page = |contents: u32| {
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {contents} 0 R \
                 /Resources << /Font << /F1 6 0 R >> >> >>"
            )
        };
        pdf(
            &[
                "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
                "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>".to_owned(),
                page(5),
                page(8),
                stream(page1),
                "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
                "<< /Title (Opening hours) /Producer (hand) >>".to_owned(),
                stream(page2),
            ],
            trailer_extra,
        )
    }

    fn lines(lines: &[&str]) -> String {
        let mut content = String::from("BT /F1 12 Tf 14 TL 72 720 Td");
        for line in lines {
            if line.is_empty() {
                content.push_str(" T*");
            } else {
                content.push_str(&format!(" ({line}) Tj T*"));
            }
        }
        content.push_str(" ET");
        content
    }

    #[test]
    fn pages_paragraphs_and_title() {
        let bytes = two_pages(
            &lines(&[
                "We open at nine and close",
                "at five. This is an exam-",
                "ple of wrapping.",
                "",
                "Second paragraph.",
            ]),
            &lines(&["Page two."]),
            "/Info 7 0 R",
        );
        let got = extract(&bytes, &Limits::default()).unwrap();
        assert_eq!(got.title.as_deref(), Some("Opening hours"));
        let Content::Blocks(blocks) = got.content else {
            panic!("not blocks")
        };
        let got: Vec<(&str, Option<u32>)> = blocks
            .iter()
            .map(|b| (b.text.as_str(), b.location.page))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "We open at nine and close at five. This is an example of wrapping.",
                    Some(1)
                ),
                ("Second paragraph.", Some(1)),
                ("Page two.", Some(2)),
            ]
        );
        assert!(blocks.iter().all(|b| b.kind == BlockKind::Paragraph));
    }

    #[test]
    fn paragraphs_join_and_dehyphenate() {
        assert_eq!(
            paragraphs("a exam-\nple\nwell-\nKnown 3-\n4\n\n\n  b  \n"),
            vec!["a example well- Known 3- 4", "b"]
        );
    }

    #[test]
    fn pages_without_text_are_empty() {
        let bytes = two_pages("", "BT ET", "");
        assert!(matches!(
            extract(&bytes, &Limits::default()),
            Err(ExtractError::Empty)
        ));
    }

    #[test]
    fn encrypted_documents_are_refused() {
        // An /Encrypt dictionary whose user password is not empty (made-up
        // /O and /U keys).
        let key = "8f".repeat(32);
        let encrypt = format!("<< /Filter /Standard /V 1 /R 2 /O <{key}> /U <{key}> /P -4 >>");
        let objects: Vec<String> = vec![
            "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_owned(),
            stream("garbled"),
            encrypt,
        ];
        let id = "0123456789abcdef0123456789abcdef";
        let bytes = pdf(&objects, &format!("/Encrypt 5 0 R /ID [<{id}> <{id}>]"));
        let err = extract(&bytes, &Limits::default()).unwrap_err();
        assert!(matches!(err, ExtractError::Encrypted), "{err:?}");
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_inflating() {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![b'0'; 4 << 20]).expect("deflate");
        let stream = z.finish().expect("finish");
        let mut pdf = format!(
            "%PDF-1.4\n1 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n",
            stream.len()
        )
        .into_bytes();
        pdf.extend_from_slice(&stream);
        pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
        let limits = Limits {
            max_unzipped_bytes: 1 << 20,
            ..Limits::default()
        };
        let err = extract(&pdf, &limits).expect_err("bomb");
        assert!(
            matches!(err, ExtractError::TooLarge { limit, .. } if limit == 1 << 20),
            "{err:?}"
        );
        assert!(matches!(
            super::extract(b"", &Limits::default()),
            Err(ExtractError::Empty)
        ));
    }

    #[test]
    fn corrupt_and_foreign_files() {
        for bytes in [
            &b"hello, not a pdf"[..],
            b"%PDF-1.7\nthis is not a real pdf body at all",
            b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF",
        ] {
            let err = extract(bytes, &Limits::default()).unwrap_err();
            assert!(matches!(err, ExtractError::Corrupt { format: "pdf", .. } | ExtractError::Empty), "{err:?}");
        }
        let err = extract(b"no pdf here", &Limits::default()).unwrap_err();
        assert!(matches!(err, ExtractError::Corrupt { format: "pdf", .. }));
    }

    #[test]
    fn leading_junk_before_the_header_is_tolerated() {
        let mut bytes = b"\r\n\r\n".to_vec();
        bytes.extend(two_pages(&lines(&["Hello."]), "", ""));
        // Offsets in the xref are now off by four; readers recover.
        let got = extract(&bytes, &Limits::default());
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn a_form_that_draws_itself_is_refused_not_a_stack_overflow() {
        let bytes = pdf(
            &[
                "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
                "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
                 /Resources << /XObject << /X1 5 0 R >> >> >>"
                    .to_owned(),
                stream("/X1 Do"),
                "<< /Type /XObject /Subtype /Form /BBox [0 0 10 10] /Length 6 >>\nstream\n/X1 Do\nendstream"
                    .to_owned(),
            ],
            "",
        );
        let err = extract(&bytes, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, ExtractError::Corrupt { format: "pdf", ref reason } if reason.contains("draws itself")),
            "{err:?}"
        );
    }

    #[test]
    fn a_page_without_a_media_box_does_not_panic_out() {
        // pdf-extract `expect`s a MediaBox; the panic must become an error.
        let bytes = pdf(
            &[
                "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
                "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
                "<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>".to_owned(),
                stream("BT (x) Tj ET"),
            ],
            "",
        );
        let err = extract(&bytes, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, ExtractError::Corrupt { format: "pdf", .. }),
            "{err:?}"
        );
    }
}
