//! Markdown code fences, read line by line.

/// An opening or closing code fence: three or more backticks or tildes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fence {
    /// `` ` `` or `~`.
    pub(super) ch: char,
    /// How many.
    pub(super) len: usize,
}

/// The fence `line` opens or closes, if any.
fn fence_marker(line: &str) -> Option<Fence> {
    let line = line.trim();
    let ch = line.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = line.chars().take_while(|c| *c == ch).count();
    let info = line.get(len..).unwrap_or_default();
    // A backtick fence's info string has no backticks (CommonMark).
    (len >= 3 && !(ch == '`' && info.contains('`'))).then_some(Fence { ch, len })
}

/// The fence state after a complete `line`.
pub(super) fn next_fence(open: Option<Fence>, line: &str) -> Option<Fence> {
    match (open, fence_marker(line)) {
        (None, marker) => marker,
        (Some(fence), Some(marker))
            if marker.ch == fence.ch
                && marker.len >= fence.len
                && line.trim().chars().all(|c| c == fence.ch) =>
        {
            None
        }
        (open, _) => open,
    }
}

/// A fence left open at the end of a text.
pub(super) struct OpenFence<'a> {
    /// Byte where the opening line starts.
    pub(super) start: usize,
    /// Byte after the opening line.
    pub(super) body: usize,
    /// The opening line, trimmed.
    pub(super) opener: &'a str,
    /// Its fence.
    pub(super) fence: Fence,
}

/// The fence still open after the complete lines of `text`, if any.
pub(super) fn open_fence(text: &str) -> Option<OpenFence<'_>> {
    let mut open: Option<OpenFence<'_>> = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break;
        }
        let was_open = open.as_ref().map(|o| o.fence);
        match (was_open, next_fence(was_open, line)) {
            (None, Some(fence)) => {
                open = Some(OpenFence {
                    start: at,
                    body: at + line.len(),
                    opener: line.trim(),
                    fence,
                });
            }
            (Some(_), None) => open = None,
            _ => {}
        }
        at += line.len();
    }
    open
}
