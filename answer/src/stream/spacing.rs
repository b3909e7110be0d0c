//! Spaces around removed markup, and the reply's leading whitespace.

use std::mem;

/// Spacing around removed markup: drops the reply's leading whitespace, and
/// the space before removed markup when punctuation, whitespace or the end
/// follows (`free [1].` → `free.`, `free [1] now` → `free now`).
#[derive(Debug, Default)]
pub(super) struct Spacing {
    /// Non-whitespace text has been emitted.
    pub(super) started: bool,
    /// A space is held back.
    space: bool,
    /// Markup was removed right after the held space.
    gap: bool,
    /// Markup was removed at the start of a line; a space after it goes.
    line_gap: bool,
    /// The last character emitted was a newline.
    after_newline: bool,
}

impl Spacing {
    /// Emits `c`, with or without the space held before it.
    pub(super) fn push(&mut self, c: char, out: &mut String) {
        let line_gap = mem::take(&mut self.line_gap);
        if !self.started {
            if c.is_whitespace() {
                return;
            }
            self.started = true;
        }
        if c == ' ' {
            if line_gap {
                return;
            }
            if self.space && !self.gap {
                out.push(' ');
            }
            self.space = true;
            self.gap = false;
            return;
        }
        if self.space {
            if !(self.gap && (c.is_whitespace() || closes(c))) {
                out.push(' ');
            }
            self.space = false;
            self.gap = false;
        }
        self.after_newline = c == '\n';
        out.push(c);
    }

    /// Notes that markup was removed here.
    pub(super) fn removed(&mut self) {
        if self.space {
            self.gap = true;
        } else if self.after_newline {
            self.line_gap = true;
        }
    }

    /// Ends the reply: a held space is emitted unless markup followed it.
    pub(super) fn finish(&mut self, out: &mut String) {
        if self.space && !self.gap {
            out.push(' ');
        }
        self.space = false;
        self.gap = false;
        self.line_gap = false;
    }
}

/// Characters that take no space before them.
fn closes(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | ';'
            | ':'
            | '!'
            | '?'
            | ')'
            | ']'
            | '}'
            | '"'
            | '\''
            | '*'
            | '_'
            | '…'
            | '»'
            | '”'
            | '’'
            | '。'
            | '、'
            | '，'
            | '！'
            | '？'
            | '：'
            | '；'
            | '）'
    )
}
