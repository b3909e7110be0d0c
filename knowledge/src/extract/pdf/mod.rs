//! PDF: the text of each page (through `pdf-extract`, on `lopdf`), split into
//! paragraphs at blank lines, hard-wrapped lines joined and words hyphenated
//! across a line break mended. Every block carries its page.
//!
//! Before the library reads a page, its content is rewritten so that all
//! four text-showing operators reach it (`operators.rs`: the library knows
//! `Tj` and `TJ` only). A page that paints but yields no text is counted
//! ([`PageCount`]): it was scanned, or drawn in a font whose text cannot be
//! decoded, and the ingest says so.
//!
//! PDF parsers panic on hostile input; each page is read under
//! `catch_unwind` (a panic costs that page), and [`super::extract`] runs the
//! whole reader under it too. (The panic message still reaches the
//! process's panic hook: a library must not replace it.) A stack overflow
//! cannot be caught, though, and the library inflates streams without a
//! limit, so `guards.rs` checks both before the library loads the file.

mod guards;
mod operators;

use pdf_extract::{Document, PlainTextOutput, output_doc_page};

use super::{BlockKind, BlockSink, ExtractError, Extracted, Format, Limits, Location, PageCount};
use guards::{check_drawings, check_inflated_size};

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
    let mut document = Document::load_mem(bytes).map_err(|e| match e {
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
    let painted = operators::normalize(&mut document, &pages);
    let mut sink = BlockSink::new(limits);
    let mut failure = None;
    let mut read_any = false;
    let mut count = PageCount {
        total: u32::try_from(pages.len()).unwrap_or(u32::MAX),
        without_text: 0,
    };
    for &number in pages.keys() {
        let info = painted.get(&number).copied();
        let mut text = String::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            output_doc_page(&document, &mut PlainTextOutput::new(&mut text), number)
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|_| Err("the reader failed on this page".to_owned()));
        if let Err(e) = result {
            tracing::debug!(page = number, error = %e, "unreadable PDF page skipped");
            failure.get_or_insert(e);
            count.without_text += 1;
            continue;
        }
        read_any = true;
        let before = sink.len();
        for paragraph in paragraphs(&text) {
            let location = Location {
                page: Some(number),
                line: None,
            };
            sink.push(BlockKind::Paragraph, &paragraph, location)?;
        }
        let lost = info.is_some_and(|i| i.paints || i.unreadable);
        if sink.len() == before && lost {
            count.without_text += 1;
        }
    }
    if let (false, Some(reason)) = (read_any, failure) {
        return Err(corrupt(format!("no page could be read: {reason}")));
    }
    if sink.is_empty()
        && let Some(loss) = count.loss()
    {
        return Err(ExtractError::NoText(loss));
    }
    let mut extracted = sink.finish(Format::Pdf, title)?;
    extracted.pages = Some(count);
    Ok(extracted)
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

    /// One page of a PDF built with lopdf: its operations, and whether it
    /// draws the image `/Im0` (a scanned page).
    fn op(operator: &str, operands: Vec<pdf_extract::Object>) -> pdf_extract::content::Operation {
        pdf_extract::content::Operation::new(operator, operands)
    }

    fn text(s: &str) -> pdf_extract::Object {
        pdf_extract::Object::string_literal(s)
    }

    /// A PDF built with lopdf, one page per list of operations; every page
    /// has Helvetica as `/F1` and an image as `/Im0`. Streams compressed.
    fn built(pages: &[Vec<pdf_extract::content::Operation>]) -> Vec<u8> {
        use pdf_extract::{Object, Stream, dictionary};
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        });
        let image = doc.add_object(Stream::new(
            dictionary! {
                "Type" => "XObject", "Subtype" => "Image", "Width" => 2, "Height" => 2,
                "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8,
            },
            vec![0, 255, 255, 0],
        ));
        let resources = doc.add_object(dictionary! {
            "Font" => dictionary! { "F1" => font },
            "XObject" => dictionary! { "Im0" => image },
        });
        let mut kids: Vec<Object> = Vec::new();
        for operations in pages {
            let content = pdf_extract::content::Content {
                operations: operations.clone(),
            };
            let stream = doc.add_object(Stream::new(
                dictionary! {},
                content.encode().expect("encode"),
            ));
            let page = doc.add_object(dictionary! {
                "Type" => "Page", "Parent" => pages_id, "Contents" => stream,
            });
            kids.push(page.into());
        }
        let count = i64::try_from(kids.len()).expect("count");
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages", "Kids" => kids, "Count" => count,
                "Resources" => resources,
                "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
            }),
        );
        let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog);
        doc.compress();
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("save");
        out
    }

    /// A page: a heading shown with `Tj`, then body lines shown with `'`
    /// (and one with `"`), a blank line between paragraphs.
    fn quoted_page(n: usize) -> Vec<pdf_extract::content::Operation> {
        vec![
            op("BT", vec![]),
            op("Tf", vec!["F1".into(), 12.into()]),
            op("TL", vec![14.into()]),
            op("Td", vec![72.into(), 720.into()]),
            op("Tj", vec![text(&format!("Section {n}"))]),
            op("T*", vec![]),
            op(
                "'",
                vec![text(&format!("Parcel lockers on floor {n} open"))],
            ),
            op("'", vec![text("at seven and close at ten.")]),
            op("T*", vec![]),
            op(
                "\"",
                vec![0.into(), 0.into(), text(&format!("Ask for badge {n}."))],
            ),
            op("ET", vec![]),
        ]
    }

    fn blocks_of(got: &Extracted) -> Vec<(String, Option<u32>)> {
        let Content::Blocks(blocks) = &got.content else {
            panic!("not blocks")
        };
        blocks
            .iter()
            .map(|b| (b.text.clone(), b.location.page))
            .collect()
    }

    #[test]
    fn text_shown_with_quote_operators_is_read_in_order_with_its_page() {
        let pages: Vec<_> = (1..=3).map(quoted_page).collect();
        let got = extract(&built(&pages), &Limits::default()).expect("extracts");
        let mut want = Vec::new();
        for n in 1..=3 {
            // `'` moves to the next line itself: after the heading's `T*`,
            // the first body line is a paragraph of its own.
            want.push((format!("Section {n}"), Some(n)));
            want.push((
                format!("Parcel lockers on floor {n} open at seven and close at ten."),
                Some(n),
            ));
            want.push((format!("Ask for badge {n}."), Some(n)));
        }
        assert_eq!(blocks_of(&got), want);
        assert_eq!(
            got.pages,
            Some(PageCount {
                total: 3,
                without_text: 0
            })
        );
    }

    #[test]
    fn text_shown_with_tj_and_tj_arrays_still_reads() {
        let page = vec![
            op("BT", vec![]),
            op("Tf", vec!["F1".into(), 12.into()]),
            op("Td", vec![72.into(), 720.into()]),
            op("Tj", vec![text("Refunds take")]),
            op(
                "TJ",
                vec![pdf_extract::Object::Array(vec![
                    text(" five"),
                    (-250).into(),
                    text("days."),
                ])],
            ),
            op("ET", vec![]),
        ];
        let got = extract(&built(&[page]), &Limits::default()).expect("extracts");
        assert_eq!(
            blocks_of(&got),
            vec![("Refunds take five days.".to_owned(), Some(1))]
        );
    }

    #[test]
    fn pages_that_paint_without_text_are_counted() {
        let scanned = vec![
            op("q", vec![]),
            op("cm", [612, 0, 0, 792, 0, 0].map(Into::into).to_vec()),
            op("Do", vec!["Im0".into()]),
            op("Q", vec![]),
        ];
        // A font the page does not have: the reader panics on this page
        // alone.
        let broken = vec![
            op("BT", vec![]),
            op("Tf", vec!["F9".into(), 12.into()]),
            op("Tj", vec![text("lost")]),
            op("ET", vec![]),
        ];
        let blank = vec![op("BT", vec![]), op("ET", vec![])];
        let pages = [
            quoted_page(1),
            scanned.clone(),
            broken,
            blank,
            quoted_page(5),
        ];
        let got = extract(&built(&pages), &Limits::default()).expect("extracts");
        let count = got.pages.expect("paged");
        assert_eq!(
            count,
            PageCount {
                total: 5,
                without_text: 2
            }
        );
        assert_eq!(
            count.loss().as_deref(),
            Some("2 of 5 pages without text: scanned? needs OCR")
        );
        let pages_read: Vec<Option<u32>> = blocks_of(&got).iter().map(|b| b.1).collect();
        assert_eq!(
            pages_read,
            [Some(1), Some(1), Some(1), Some(5), Some(5), Some(5)]
        );

        let err = extract(&built(&[scanned.clone(), scanned]), &Limits::default())
            .expect_err("no text at all");
        assert_eq!(
            err.to_string(),
            "no text found in the file: 2 of 2 pages without text: scanned? needs OCR"
        );
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
