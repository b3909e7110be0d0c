//! Markdown code in the emitted text, followed character by character.

use std::mem;

/// Markdown code in the emitted text, followed closely enough to leave
/// `items[1]` and fenced blocks alone. Inline code ends at a newline at the
/// latest, so a stray backtick cannot switch citation removal off for good.
#[derive(Debug, Default)]
pub(super) struct CodeSpans {
    /// Backticks of the open fence; 0 outside a fence.
    fence: usize,
    /// Backticks of the open inline span; 0 outside one.
    inline: usize,
    /// Backticks in the run being read.
    run: usize,
    /// Whether that run began a line (after indentation).
    run_starts_line: bool,
    /// Whether the current line has had a non-blank character.
    mid_line: bool,
}

impl CodeSpans {
    /// Whether the text is inside code now.
    pub(super) fn active(&self) -> bool {
        self.fence > 0 || self.inline > 0
    }

    /// Follows one emitted character.
    pub(super) fn note(&mut self, c: char) {
        if c == '`' {
            if self.run == 0 {
                self.run_starts_line = !self.mid_line;
            }
            self.run += 1;
            self.mid_line = true;
            return;
        }
        self.settle();
        match c {
            '\n' => {
                self.mid_line = false;
                self.inline = 0;
            }
            ' ' | '\t' | '\r' => {}
            _ => self.mid_line = true,
        }
    }

    /// Applies a finished run of backticks.
    pub(super) fn settle(&mut self) {
        let n = mem::take(&mut self.run);
        if n == 0 {
            return;
        }
        if self.fence > 0 {
            if n >= self.fence && self.run_starts_line {
                self.fence = 0;
            }
        } else if n >= 3 && self.run_starts_line {
            self.fence = n;
            self.inline = 0;
        } else if self.inline == 0 {
            self.inline = n;
        } else if self.inline == n {
            self.inline = 0;
        }
    }
}
