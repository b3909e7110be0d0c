//! Every text-showing operator, before `pdf-extract` reads a page.
//!
//! PDF 32000-1 §9.4.3 has four operators that show text: `Tj`, `TJ`, `'`
//! and `"`. `pdf-extract` 0.12 knows the first two and silently skips the
//! others, so a document whose generator writes its body lines with `'`
//! loses them. The standard defines the two by the others:
//!
//! - `string '` is `T* string Tj` (next line, then show);
//! - `aw ac string "` is `aw Tw ac Tc string '` (set word and character
//!   spacing, then as `'`).
//!
//! [`normalize`] rewrites every page's content (and every form XObject's)
//! into that equivalent form, so the library's font handling (encodings,
//! `ToUnicode` maps, CID fonts) reads all of it, in the order it is drawn.
//! Operations the library would panic on (a `Tj` without a string, a `TJ`
//! without an operand) are dropped on the way: one bad operation costs its
//! own text, not the page's. A content stream that does not parse at all
//! costs its page, which is reported as a page without text.
//!
//! Content is only rewritten when it needs to be; the decompressed sizes it
//! works on are bounded by the inflate guard that runs before loading.

use std::collections::BTreeMap;

use pdf_extract::content::{Content, Operation};
use pdf_extract::{Dictionary, Document, Object, ObjectId, Stream};

/// What the rewrite learned about one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageInfo {
    /// The page paints something: text, an image, a form, a path or a
    /// shading. A page that paints and yields no text has lost its text
    /// (scanned, or drawn in a font that cannot be decoded).
    pub paints: bool,
    /// The page's content does not parse; it was emptied.
    pub unreadable: bool,
}

/// Operators that put marks on the page.
const PAINTING: &[&str] = &[
    "Tj", "TJ", "'", "\"", "Do", "BI", "sh", "S", "s", "f", "F", "f*", "B", "B*", "b", "b*",
];

/// Rewrites `'` and `"` into `T*`/`Tw`/`Tc`/`Tj` in every form XObject and
/// every page of `document`, and says of each page (by number) whether it
/// paints.
pub(super) fn normalize(
    document: &mut Document,
    pages: &BTreeMap<u32, ObjectId>,
) -> BTreeMap<u32, PageInfo> {
    for object in document.objects.values_mut() {
        let Object::Stream(stream) = object else {
            continue;
        };
        let is_form = stream.dict.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Form");
        if !is_form {
            continue;
        }
        let data = stream
            .decompressed_content()
            .unwrap_or_else(|_| stream.content.clone());
        match Content::decode(&data) {
            Ok(content) => {
                if let Some(bytes) = rewrite(&content.operations) {
                    stream.set_plain_content(bytes);
                }
            }
            // The library would panic on it; an empty form draws nothing.
            Err(_) => stream.set_plain_content(Vec::new()),
        }
    }
    let mut info = BTreeMap::new();
    for (&number, &page) in pages {
        let Ok(data) = document.get_page_content(page) else {
            info.insert(
                number,
                PageInfo {
                    paints: false,
                    unreadable: false,
                },
            );
            continue;
        };
        let (page_info, replacement) = match Content::decode(&data) {
            Ok(content) => {
                let paints = content
                    .operations
                    .iter()
                    .any(|o| PAINTING.contains(&o.operator.as_str()));
                let page_info = PageInfo {
                    paints,
                    unreadable: false,
                };
                (page_info, rewrite(&content.operations))
            }
            Err(_) => {
                let page_info = PageInfo {
                    paints: true,
                    unreadable: true,
                };
                (page_info, Some(Vec::new()))
            }
        };
        if let Some(bytes) = replacement {
            replace_page_content(document, page, bytes);
        }
        info.insert(number, page_info);
    }
    info
}

/// The operations re-encoded with `'` and `"` spelled out, or `None` when
/// nothing needs to change.
fn rewrite(operations: &[Operation]) -> Option<Vec<u8>> {
    if !operations.iter().any(needs_rewrite) {
        return None;
    }
    let mut out: Vec<Operation> = Vec::with_capacity(operations.len() + operations.len() / 2);
    for operation in operations {
        match operation.operator.as_str() {
            "'" => {
                if let [text @ Object::String(..)] = operation.operands.as_slice() {
                    out.push(Operation::new("T*", Vec::new()));
                    out.push(Operation::new("Tj", vec![text.clone()]));
                }
            }
            "\"" => {
                if let [word, character, text @ Object::String(..)] = operation.operands.as_slice()
                {
                    if is_number(word) && is_number(character) {
                        out.push(Operation::new("Tw", vec![word.clone()]));
                        out.push(Operation::new("Tc", vec![character.clone()]));
                    }
                    out.push(Operation::new("T*", Vec::new()));
                    out.push(Operation::new("Tj", vec![text.clone()]));
                }
            }
            "Tj" if !matches!(operation.operands.as_slice(), [Object::String(..)]) => {}
            "TJ" if operation.operands.is_empty() => {}
            // An inline image does not re-encode as it was read, and holds
            // no text.
            "BI" => {}
            _ => out.push(operation.clone()),
        }
    }
    Content { operations: out }.encode().ok()
}

fn needs_rewrite(operation: &Operation) -> bool {
    match operation.operator.as_str() {
        "'" | "\"" => true,
        "Tj" => !matches!(operation.operands.as_slice(), [Object::String(..)]),
        "TJ" => operation.operands.is_empty(),
        _ => false,
    }
}

fn is_number(object: &Object) -> bool {
    matches!(object, Object::Integer(_) | Object::Real(_))
}

/// Points the page's `/Contents` at one new, uncompressed stream.
fn replace_page_content(document: &mut Document, page: ObjectId, bytes: Vec<u8>) {
    let stream = document.add_object(Stream::new(Dictionary::new(), bytes));
    if let Ok(dict) = document.get_dictionary_mut(page) {
        dict.set("Contents", Object::Reference(stream));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(content: &str) -> Vec<Operation> {
        Content::decode(content.as_bytes())
            .expect("content parses")
            .operations
    }

    fn operators(bytes: &[u8]) -> Vec<String> {
        Content::decode(bytes)
            .expect("rewritten content parses")
            .operations
            .into_iter()
            .map(|o| o.operator)
            .collect()
    }

    #[test]
    fn quotes_are_spelled_out_as_the_standard_defines_them() {
        let got =
            rewrite(&ops("BT (a) Tj (b) ' 2 0.5 (c) \" [(d) -20 (e)] TJ ET")).expect("rewritten");
        assert_eq!(
            operators(&got),
            ["BT", "Tj", "T*", "Tj", "Tw", "Tc", "T*", "Tj", "TJ", "ET"]
        );
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("2 Tw") && text.contains("0.5 Tc"), "{text}");
    }

    #[test]
    fn content_without_quotes_is_left_alone() {
        assert_eq!(rewrite(&ops("BT (a) Tj [(b)] TJ ET")), None);
    }

    #[test]
    fn operations_the_reader_would_panic_on_are_dropped() {
        let got = rewrite(&ops("BT 5 Tj TJ (ok) ' /N ' ET")).expect("rewritten");
        assert_eq!(operators(&got), ["BT", "T*", "Tj", "ET"]);
    }
}
