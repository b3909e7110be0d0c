//! Guards that run before the PDF library touches a file: a decompression
//! bomb is refused before anything inflates it, and form drawings that the
//! library would render by unbounded recursion are refused before a stack
//! overflow (which `catch_unwind` cannot catch).

use pdf_extract::content::Content;
use pdf_extract::{Dictionary, Document, Object, ObjectId};

use super::super::ExtractError;

/// Deepest nesting of form drawings accepted.
const MAX_DRAWING_DEPTH: usize = 32;
/// Most form drawings (`Do` operations, counted along every path) in one
/// document: bounds a "billion laughs" of forms drawing forms.
const MAX_DRAWINGS: usize = 100_000;

/// Refuses a decompression bomb before the PDF library inflates it (it
/// inflates every stream without a limit): every `stream … endstream` in
/// the file is inflated as zlib through a counting reader, and the total may
/// not exceed `budget`. Streams that are not zlib are skipped (they are not
/// inflated by anyone).
pub(super) fn check_inflated_size(bytes: &[u8], budget: u64) -> Result<(), ExtractError> {
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

/// Walks the form XObjects each page draws, as `pdf-extract` will (same
/// resource lookup), and refuses cycles, deep nesting and fan-out.
pub(super) fn check_drawings(
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
