//! From streamed model tokens to chat messages.
//!
//! The model's reply arrives in chunks of any size. [`MarkupFilter`] removes
//! what the customer must not see — the status tag, citation markers,
//! reasoning blocks, special tokens leaked by the server — as the text
//! streams, holding back only what might still turn into markup.
//! [`ParagraphBuffer`] then cuts the clean text into paragraphs, each sent as
//! one chat message.
//!
//! Both are pure and synchronous, and both work one character at a time, so
//! their output never depends on how the input was chunked.

use std::iter::repeat_n;
use std::mem;

/// Most characters held back while waiting to see whether `[` or `<` starts
/// markup; beyond it the bracket is plain text. Fits
/// `[Source 1, Source 2, Source 3]` and the longest common special tokens.
const MAX_HELD: usize = 32;

/// Widest citation range expanded (`[1-3]`); wider ones are plain text.
const MAX_RANGE: usize = 20;

/// Status words, normalized: upper case, without spaces, `_` and `-`.
const STATUS_WORDS: [&str; 2] = ["ANSWER", "NOINFO"];

/// Words that may precede a citation number (`[Source 2]`), in lower case.
const CITATION_LABELS: [&str; 7] = [
    "source", "sources", "src", "ref", "refs", "passage", "passages",
];

/// Names of reasoning blocks (`<think>…</think>`), in lower case.
const THINK_TAGS: [&str; 2] = ["think", "thinking"];

/// What the model declared about the reference material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InfoStatus {
    /// `[[ANSWER]]`: the reference material contains the answer.
    Enough,
    /// `[[NO_INFO]]`: it does not.
    Lacking,
}

/// Cleans model output as it streams.
///
/// Removes, wherever they appear and however the chunks split them:
///
/// - status tags `[[ANSWER]]` and `[[NO_INFO]]` (any case, inner spaces, `_`
///   or `-` optional, single brackets accepted), recorded in [`status`];
/// - citations `[1]`, `[1, 3]`, `[1-3]`, `[Source 2]`, `[source: 2]`, with one
///   space before them (`free [1].` → `free.`, `free [1] now` → `free now`),
///   recorded in [`citations`];
/// - reasoning blocks `<think>…</think>` and `<thinking>…</thinking>` with
///   their content (an unclosed one runs to the end), and stray closing tags;
/// - special tokens: `<|…|>`, `<｜…｜>`, `<s>`, `</s>`.
///
/// Other bracketed text (`[see below]`, a Markdown link `[1](…)`) passes
/// through, and so does everything inside backtick code (`` `items[1]` ``,
/// fenced blocks) except special tokens. Leading whitespace of the reply is
/// dropped.
///
/// [`status`]: MarkupFilter::status
/// [`citations`]: MarkupFilter::citations
#[derive(Debug, Default)]
pub struct MarkupFilter {
    /// Inside a reasoning block or not.
    mode: Mode,
    /// Text that may still turn into markup; starts with `[` or `<`.
    held: String,
    /// Characters in `held`.
    held_chars: usize,
    status: Option<InfoStatus>,
    citations: Vec<usize>,
    code: CodeSpans,
    spacing: Spacing,
}

impl MarkupFilter {
    /// A filter at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next chunk and returns the clean text that is now certain.
    pub fn push(&mut self, chunk: &str) -> String {
        let mut out = String::new();
        self.feed(chunk, &mut out);
        out
    }

    /// Ends the reply and returns what was held back.
    ///
    /// An unfinished construct that can only be markup (`[[ANSW`, `[2`,
    /// `<|eot`, `</thi`) is dropped; one that may be text (`[`, `[so`) is
    /// emitted. An unclosed reasoning block is dropped.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        while !self.held.is_empty() {
            if self.mode == Mode::Think {
                self.clear_held();
                break;
            }
            let scan = match self.scan(true) {
                Scan::More if droppable_at_end(&self.held) => {
                    self.clear_held();
                    continue;
                }
                Scan::More => Scan::No,
                other => other,
            };
            self.resolve(scan, &mut out);
        }
        self.spacing.finish(&mut out);
        self.mode = Mode::Text;
        self.code = CodeSpans::default();
        out
    }

    /// The status the model declared; [`InfoStatus::Lacking`] wins over
    /// [`InfoStatus::Enough`] when both appear.
    pub fn status(&self) -> Option<InfoStatus> {
        self.status
    }

    /// The cited passage numbers, in first-seen order, without repeats.
    pub fn citations(&self) -> Vec<usize> {
        self.citations.clone()
    }

    /// Whether any non-whitespace text has been emitted.
    pub fn saw_output(&self) -> bool {
        self.spacing.started
    }

    fn feed(&mut self, text: &str, out: &mut String) {
        for c in text.chars() {
            self.step(c, out);
        }
    }

    fn step(&mut self, c: char, out: &mut String) {
        if self.held.is_empty() {
            match self.mode {
                Mode::Think => {
                    if c == '<' {
                        self.hold(c);
                    }
                }
                Mode::Text => {
                    if c != '`' {
                        self.code.settle();
                    }
                    if c == '<' || (c == '[' && !self.code.active()) {
                        self.hold(c);
                    } else {
                        self.emit(c, out);
                    }
                }
            }
            return;
        }
        self.held.push(c);
        self.held_chars += 1;
        let scan = if self.held_chars > MAX_HELD {
            Scan::No
        } else {
            self.scan(false)
        };
        self.resolve(scan, out);
    }

    fn hold(&mut self, c: char) {
        self.held.push(c);
        self.held_chars = 1;
    }

    fn clear_held(&mut self) {
        self.held.clear();
        self.held_chars = 0;
    }

    fn scan(&self, at_end: bool) -> Scan {
        let held = self.held.as_str();
        match self.mode {
            Mode::Think => scan_angle(held, true),
            Mode::Text if held.starts_with('[') => {
                match (scan_status(held, at_end), scan_citation(held, at_end)) {
                    (done @ Scan::Done(..), _) | (_, done @ Scan::Done(..)) => done,
                    (Scan::More, _) | (_, Scan::More) => Scan::More,
                    _ => Scan::No,
                }
            }
            Mode::Text => scan_angle(held, !self.code.active()),
        }
    }

    fn resolve(&mut self, scan: Scan, out: &mut String) {
        match scan {
            Scan::More => {}
            Scan::Done(end, markup) => {
                let rest = self.held.get(end..).unwrap_or_default().to_owned();
                self.clear_held();
                self.apply(markup);
                self.feed(&rest, out);
            }
            Scan::No => {
                // The opening character is text (or reasoning); what follows
                // it may still open markup, so it goes through again.
                let held = mem::take(&mut self.held);
                self.held_chars = 0;
                let mut chars = held.chars();
                if let Some(first) = chars.next()
                    && self.mode == Mode::Text
                {
                    self.emit(first, out);
                }
                self.feed(chars.as_str(), out);
            }
        }
    }

    fn apply(&mut self, markup: Markup) {
        if self.mode == Mode::Think {
            if markup == Markup::ThinkClose {
                self.mode = Mode::Text;
            }
            return;
        }
        self.spacing.removed();
        match markup {
            Markup::Status(status) => {
                self.status = match (self.status, status) {
                    (Some(InfoStatus::Lacking), _) | (_, InfoStatus::Lacking) => {
                        Some(InfoStatus::Lacking)
                    }
                    _ => Some(InfoStatus::Enough),
                };
            }
            Markup::Citation(numbers) => {
                for n in numbers {
                    if !self.citations.contains(&n) {
                        self.citations.push(n);
                    }
                }
            }
            Markup::ThinkOpen => self.mode = Mode::Think,
            Markup::ThinkClose | Markup::Token => {}
        }
    }

    fn emit(&mut self, c: char, out: &mut String) {
        self.code.note(c);
        self.spacing.push(c, out);
    }
}

/// Whether the filter is inside a reasoning block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Text,
    Think,
}

/// What the held text turned out to be, so far.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Not markup: its first character is text.
    No,
    /// Still a prefix of markup.
    More,
    /// Markup ending at this byte; anything after it is fed again.
    Done(usize, Markup),
}

/// Markup recognized in the stream.
#[derive(Debug, PartialEq, Eq)]
enum Markup {
    Status(InfoStatus),
    Citation(Vec<usize>),
    ThinkOpen,
    ThinkClose,
    Token,
}

/// `[[ANSWER]]`, `[[ no_info ]]`, `[NO-INFO]` and the like.
fn scan_status(s: &str, at_end: bool) -> Scan {
    let mut chars = s.char_indices().peekable();
    if chars.next().map(|(_, c)| c) != Some('[') {
        return Scan::No;
    }
    chars.next_if(|&(_, c)| c == '[');
    let mut word = String::new();
    while let Some((_, c)) = chars.next() {
        match c {
            ']' => {
                let status = match word.as_str() {
                    "ANSWER" => InfoStatus::Enough,
                    "NOINFO" => InfoStatus::Lacking,
                    _ => return Scan::No,
                };
                return after_close(chars.next(), s.len(), at_end, Markup::Status(status));
            }
            ' ' | '\t' | '_' | '-' => {}
            c if c.is_ascii_alphabetic() => {
                word.push(c.to_ascii_uppercase());
                if !STATUS_WORDS.iter().any(|w| w.starts_with(word.as_str())) {
                    return Scan::No;
                }
            }
            _ => return Scan::No,
        }
    }
    Scan::More
}

/// `[1]`, `[1, 3]`, `[1-3]`, `[Source 2]`, `[source: 2; 4]`, `[[1]]`.
fn scan_citation(s: &str, at_end: bool) -> Scan {
    /// Where in a citation the scanner is.
    #[derive(Clone, Copy)]
    enum At {
        Item,
        Label,
        AfterLabel,
        Number,
        AfterNumber,
        Dash,
        RangeEnd,
        AfterRange,
    }
    let mut chars = s.char_indices().peekable();
    if chars.next().map(|(_, c)| c) != Some('[') {
        return Scan::No;
    }
    chars.next_if(|&(_, c)| c == '[');
    let mut at = At::Item;
    let mut label = String::new();
    let mut numbers = Vec::new();
    let mut range_start = None;
    let (mut value, mut digits) = (0_usize, 0_usize);
    while let Some((_, c)) = chars.next() {
        let digit = c.to_digit(10).and_then(|d| usize::try_from(d).ok());
        let blank = c == ' ' || c == '\t';
        let separator = c == ',' || c == ';';
        let dash = c == '-' || c == '–';
        at = match at {
            At::Item if blank => At::Item,
            At::Item if c == '#' => At::AfterLabel,
            At::Item | At::Label if c.is_ascii_alphabetic() => {
                label.push(c.to_ascii_lowercase());
                if !CITATION_LABELS
                    .iter()
                    .any(|l| l.starts_with(label.as_str()))
                {
                    return Scan::No;
                }
                At::Label
            }
            At::Label if !CITATION_LABELS.contains(&label.as_str()) => return Scan::No,
            At::Label | At::AfterLabel if blank || c == ':' || c == '#' => {
                label.clear();
                At::AfterLabel
            }
            At::Item | At::Label | At::AfterLabel | At::Dash if digit.is_some() => {
                let range = matches!(at, At::Dash);
                label.clear();
                range_start = range.then_some(value);
                value = digit.unwrap_or_default();
                digits = 1;
                if range { At::RangeEnd } else { At::Number }
            }
            At::Dash if blank => At::Dash,
            At::Number | At::RangeEnd if digit.is_some() => {
                digits += 1;
                if digits > 3 {
                    return Scan::No;
                }
                value = value * 10 + digit.unwrap_or_default();
                at
            }
            At::Number | At::AfterNumber if dash => At::Dash,
            At::Number | At::AfterNumber if blank => At::AfterNumber,
            At::RangeEnd | At::AfterRange if blank => At::AfterRange,
            At::Number | At::AfterNumber | At::RangeEnd | At::AfterRange
                if separator || c == ']' =>
            {
                let from = range_start.unwrap_or(value);
                if from > value || value - from > MAX_RANGE {
                    return Scan::No;
                }
                numbers.extend(from..=value);
                if c == ']' {
                    let next = chars.next();
                    if matches!(next, Some((_, '('))) {
                        // A Markdown link `[1](https://…)`.
                        return Scan::No;
                    }
                    return after_close(next, s.len(), at_end, Markup::Citation(numbers));
                }
                At::Item
            }
            _ => return Scan::No,
        };
    }
    Scan::More
}

/// Ends bracketed markup after its `]`, swallowing a doubled `]`; `next` is
/// the character after the `]`, if it has arrived.
fn after_close(next: Option<(usize, char)>, len: usize, at_end: bool, markup: Markup) -> Scan {
    match next {
        None if at_end => Scan::Done(len, markup),
        None => Scan::More,
        Some((i, ']')) => Scan::Done(i + 1, markup),
        Some((i, _)) => Scan::Done(i, markup),
    }
}

/// Special tokens (`<|eot_id|>`, `<｜end▁of▁sentence｜>`, `<s>`, `</s>`)
/// and, when `tags`, reasoning tags (`<think>`, `</thinking >`).
fn scan_angle(s: &str, tags: bool) -> Scan {
    let mut chars = s.char_indices();
    if chars.next().map(|(_, c)| c) != Some('<') {
        return Scan::No;
    }
    let Some((_, second)) = chars.next() else {
        return Scan::More;
    };
    if second == '|' || second == '｜' {
        let mut after_bar = false;
        for (i, c) in chars {
            if after_bar {
                return if c == '>' {
                    Scan::Done(i + 1, Markup::Token)
                } else {
                    Scan::No
                };
            }
            if c == '|' || c == '｜' {
                after_bar = true;
            } else if !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '▁')) {
                return Scan::No;
            }
        }
        return Scan::More;
    }
    if !tags {
        return Scan::No;
    }
    let closing = second == '/';
    let mut name = String::new();
    let is_prefix =
        |name: &str| "s".starts_with(name) || THINK_TAGS.iter().any(|t| t.starts_with(name));
    if !closing {
        name.push(second.to_ascii_lowercase());
        if !second.is_ascii_alphabetic() || !is_prefix(&name) {
            return Scan::No;
        }
    }
    let mut name_done = false;
    for (i, c) in chars {
        if c == '>' {
            return match name.as_str() {
                "s" => Scan::Done(i + 1, Markup::Token),
                n if THINK_TAGS.contains(&n) && closing => Scan::Done(i + 1, Markup::ThinkClose),
                n if THINK_TAGS.contains(&n) => Scan::Done(i + 1, Markup::ThinkOpen),
                _ => Scan::No,
            };
        }
        if c == ' ' || c == '\t' {
            if name.is_empty() {
                return Scan::No;
            }
            name_done = true;
            continue;
        }
        if name_done || !c.is_ascii_alphabetic() {
            return Scan::No;
        }
        name.push(c.to_ascii_lowercase());
        if !is_prefix(&name) {
            return Scan::No;
        }
    }
    Scan::More
}

/// Whether unfinished markup at the end of the reply is dropped rather than
/// shown: when it can hardly be anything but markup.
fn droppable_at_end(held: &str) -> bool {
    if ["[[", "<|", "<｜", "</"]
        .iter()
        .any(|p| held.starts_with(p))
    {
        return true;
    }
    if held.starts_with('[') && held.chars().any(|c| c.is_ascii_digit()) {
        return true;
    }
    let letters = held.chars().filter(char::is_ascii_alphabetic).count();
    letters >= 2 && (held.starts_with('<') || scan_status(held, false) == Scan::More)
}

/// Markdown code in the emitted text, followed closely enough to leave
/// `items[1]` and fenced blocks alone. Inline code ends at a newline at the
/// latest, so a stray backtick cannot switch citation removal off for good.
#[derive(Debug, Default)]
struct CodeSpans {
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
    fn active(&self) -> bool {
        self.fence > 0 || self.inline > 0
    }

    fn note(&mut self, c: char) {
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
    fn settle(&mut self) {
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

/// Spacing around removed markup: drops the reply's leading whitespace, and
/// the space before removed markup when punctuation, whitespace or the end
/// follows (`free [1].` → `free.`, `free [1] now` → `free now`).
#[derive(Debug, Default)]
struct Spacing {
    /// Non-whitespace text has been emitted.
    started: bool,
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
    fn push(&mut self, c: char, out: &mut String) {
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

    fn removed(&mut self) {
        if self.space {
            self.gap = true;
        } else if self.after_newline {
            self.line_gap = true;
        }
    }

    fn finish(&mut self, out: &mut String) {
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

/// Cuts clean text into paragraphs, one chat message each.
///
/// A paragraph ends at a blank line (a line of only whitespace), except
/// inside a fenced code block. Line endings become `\n`; single newlines
/// stay. A heading alone (`# …`, a whole-line `**…**`) or a paragraph ending
/// with `:` is not sent alone but joined, with a newline, to the next one.
///
/// No paragraph exceeds `max_chars` characters: a longer one is cut at the
/// last sentence end or newline before the limit, else at the last
/// whitespace, else at the limit. A code block cut this way is closed at the
/// end of one part and reopened with its opening line at the start of the
/// next.
#[derive(Debug)]
pub struct ParagraphBuffer {
    max_chars: usize,
    /// A held lead-in (a heading or `…:` line, then `\n`) and the current
    /// paragraph; never starts with whitespace.
    text: String,
    /// Characters in `text`.
    chars: usize,
    /// Byte where the current paragraph starts, after any lead-in.
    para_start: usize,
    /// Byte where the current line starts.
    line_start: usize,
    /// The code fence open in the stream.
    fence: Option<Fence>,
    /// The last character was `\r`, so a `\n` right after it is its pair.
    after_cr: bool,
}

impl ParagraphBuffer {
    /// A buffer for paragraphs of at most `max_chars` characters (at least 1).
    pub fn new(max_chars: usize) -> Self {
        ParagraphBuffer {
            max_chars: max_chars.max(1),
            text: String::new(),
            chars: 0,
            para_start: 0,
            line_start: 0,
            fence: None,
            after_cr: false,
        }
    }

    /// Takes clean text and returns the paragraphs it completes.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for c in text.chars() {
            self.step(c, &mut out);
        }
        out
    }

    /// Ends the text and returns what is left, trimmed; `None` if blank.
    pub fn finish(&mut self) -> Option<String> {
        let text = mem::take(&mut self.text);
        self.chars = 0;
        self.para_start = 0;
        self.line_start = 0;
        self.fence = None;
        self.after_cr = false;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    fn step(&mut self, c: char, out: &mut Vec<String>) {
        let c = match c {
            '\r' => {
                self.after_cr = true;
                '\n'
            }
            '\n' if self.after_cr => {
                self.after_cr = false;
                return;
            }
            c => {
                self.after_cr = false;
                c
            }
        };
        if self.text.len() == self.para_start && c.is_whitespace() {
            return;
        }
        if c == '\n' {
            let line = self.text.get(self.line_start..).unwrap_or_default();
            if self.fence.is_none() && line.trim().is_empty() {
                self.end_paragraph(out);
                return;
            }
            self.fence = next_fence(self.fence, line);
            self.text.push('\n');
            self.line_start = self.text.len();
        } else {
            self.text.push(c);
        }
        self.chars += 1;
        if self.chars > self.max_chars {
            self.split(out);
        }
    }

    fn end_paragraph(&mut self, out: &mut Vec<String>) {
        let para = self.text.get(self.para_start..).unwrap_or_default().trim();
        if para.is_empty() {
            return;
        }
        if is_lead_in(para) {
            let keep = self.text.trim_end().len();
            self.chars -= self.text.get(keep..).unwrap_or_default().chars().count();
            self.text.truncate(keep);
            self.text.push('\n');
            self.chars += 1;
            self.para_start = self.text.len();
            self.line_start = self.text.len();
        } else {
            let whole = mem::take(&mut self.text);
            self.chars = 0;
            self.para_start = 0;
            self.line_start = 0;
            push_trimmed(out, &whole);
        }
    }

    /// Sends the first part of an over-long paragraph.
    fn split(&mut self, out: &mut Vec<String>) {
        let (piece, rest) = self.fence_cut().unwrap_or_else(|| self.plain_cut());
        push_trimmed(out, &piece);
        let rest = rest.trim_start();
        self.chars = rest.chars().count();
        self.para_start = 0;
        self.line_start = rest.rfind('\n').map_or(0, |i| i + 1);
        rest.clone_into(&mut self.text);
    }

    /// The cut for prose: last sentence end or newline, else last
    /// whitespace, else the limit.
    fn plain_cut(&self) -> (String, String) {
        let chars: Vec<(usize, char)> = self.text.char_indices().collect();
        let end = chars.len().min(self.max_chars.saturating_add(1));
        let (mut sentence, mut space) = (None, None);
        for pair in chars.get(..end).unwrap_or_default().windows(2) {
            let &[(_, before), (at, c)] = pair else {
                continue;
            };
            let ends_sentence = c == '\n'
                || matches!(before, '。' | '！' | '？')
                || (c.is_whitespace() && matches!(before, '.' | '!' | '?'));
            if ends_sentence {
                sentence = Some(at);
            }
            if c.is_whitespace() {
                space = Some(at);
            }
        }
        let at = sentence.or(space).unwrap_or_else(|| {
            chars
                .get(self.max_chars)
                .map_or(self.text.len(), |&(at, _)| at)
        });
        split_at(&self.text, at)
    }

    /// The cut inside an open code fence: at the last line end that fits,
    /// closing the fence there and reopening it in the rest. `None` when no
    /// fence is open or the limit is too small to repeat the fence lines.
    fn fence_cut(&self) -> Option<(String, String)> {
        let open = open_fence(&self.text)?;
        let opener_chars = open.opener.chars().count();
        if (opener_chars + open.fence.len + 2).saturating_mul(2) > self.max_chars {
            return None;
        }
        // The part keeps room for "\n```" after it.
        let limit = self.max_chars - 1 - open.fence.len;
        let mut last_line_end = None;
        let mut has_code = false;
        for (k, (at, c)) in self.text.char_indices().enumerate() {
            if k > limit {
                break;
            }
            if at < open.body {
                continue;
            }
            if c == '\n' {
                if has_code {
                    last_line_end = Some(at);
                }
            } else if !c.is_whitespace() {
                has_code = true;
            }
        }
        let (end, resume) = match last_line_end {
            Some(at) => (at, at + 1),
            // Text before the fence goes first; the block starts the next part.
            None if open.start > 0 => return Some(split_at(&self.text, open.start)),
            None => {
                let (at, _) = self.text.char_indices().nth(limit)?;
                if at <= open.body {
                    return None;
                }
                (at, at)
            }
        };
        let marker: String = repeat_n(open.fence.ch, open.fence.len).collect();
        let head = self.text.get(..end).unwrap_or_default();
        let tail = self.text.get(resume..).unwrap_or_default();
        Some((
            format!("{head}\n{marker}"),
            format!("{}\n{tail}", open.opener),
        ))
    }
}

/// `text` cut in two at byte `at` (a character boundary).
fn split_at(text: &str, at: usize) -> (String, String) {
    match text.split_at_checked(at) {
        Some((head, tail)) => (head.to_owned(), tail.to_owned()),
        None => (text.to_owned(), String::new()),
    }
}

fn push_trimmed(out: &mut Vec<String>, text: &str) {
    let text = text.trim();
    if !text.is_empty() {
        out.push(text.to_owned());
    }
}

/// A paragraph that introduces the next one: only headings, or ending with
/// a colon.
fn is_lead_in(para: &str) -> bool {
    let para = para.trim();
    if para.ends_with(':') || para.ends_with('：') {
        return true;
    }
    para.lines().all(|line| {
        let line = line.trim();
        let bold = |mark: &str| {
            line.len() > 2 * mark.len()
                && line
                    .strip_prefix(mark)
                    .and_then(|l| l.strip_suffix(mark))
                    .is_some_and(|inner| !inner.contains(mark))
        };
        line.starts_with('#') || bold("**") || bold("__")
    })
}

/// An opening or closing code fence: three or more backticks or tildes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fence {
    ch: char,
    len: usize,
}

fn fence_marker(line: &str) -> Option<Fence> {
    let line = line.trim();
    let ch = line.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = line.chars().take_while(|c| *c == ch).count();
    let info = line.get(len..).unwrap_or_default();
    // A backtick fence's info string has no backticks (CommonMark).
    (len >= 3 && !(ch == '`' && info.contains('`'))).then_some(Fence { ch, len })
}

/// The fence state after a complete `line`.
fn next_fence(open: Option<Fence>, line: &str) -> Option<Fence> {
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
struct OpenFence<'a> {
    /// Byte where the opening line starts.
    start: usize,
    /// Byte after the opening line.
    body: usize,
    /// The opening line, trimmed.
    opener: &'a str,
    fence: Fence,
}

fn open_fence(text: &str) -> Option<OpenFence<'_>> {
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

/// The paragraphs of a whole text: [`ParagraphBuffer::push`] then
/// [`ParagraphBuffer::finish`].
pub fn paragraphs_of(text: &str, max_chars: usize) -> Vec<String> {
    let mut buffer = ParagraphBuffer::new(max_chars);
    let mut out = buffer.push(text);
    out.extend(buffer.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n.max(1) as u64).unwrap()
        }
    }

    /// `text` cut into pieces of 1 to `max` characters.
    fn random_chunks(text: &str, seed: u64, max: usize) -> Vec<&str> {
        let mut rng = Rng(seed.max(1));
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let mut chunks = Vec::new();
        let mut k = 0;
        while k + 1 < bounds.len() {
            let next = (k + 1 + rng.below(max)).min(bounds.len() - 1);
            chunks.push(&text[bounds[k]..bounds[next]]);
            k = next;
        }
        chunks
    }

    fn char_chunks(text: &str) -> Vec<&str> {
        text.char_indices()
            .map(|(i, c)| &text[i..i + c.len_utf8()])
            .collect()
    }

    /// Output, status, citations and `saw_output` of a filtered stream.
    fn filter_chunks(chunks: &[&str]) -> (String, Option<InfoStatus>, Vec<usize>, bool) {
        let mut filter = MarkupFilter::new();
        let mut out = String::new();
        for chunk in chunks {
            out.push_str(&filter.push(chunk));
        }
        out.push_str(&filter.finish());
        (
            out,
            filter.status(),
            filter.citations(),
            filter.saw_output(),
        )
    }

    fn clean(text: &str) -> String {
        filter_chunks(&[text]).0
    }

    /// Checks the filter gives the same result however `text` is chunked,
    /// and returns the clean text.
    fn clean_any_chunking(text: &str) -> String {
        let whole = filter_chunks(&[text]);
        assert_eq!(
            filter_chunks(&char_chunks(text)),
            whole,
            "char by char: {text:?}"
        );
        for (i, _) in text.char_indices().skip(1) {
            let split = filter_chunks(&[&text[..i], &text[i..]]);
            assert_eq!(split, whole, "split at {i}: {text:?}");
        }
        for seed in 1..20 {
            let chunks = random_chunks(text, seed, 7);
            assert_eq!(filter_chunks(&chunks), whole, "chunks {chunks:?}");
        }
        whole.0
    }

    fn status_of(text: &str) -> Option<InfoStatus> {
        filter_chunks(&[text]).1
    }

    fn citations_of(text: &str) -> Vec<usize> {
        filter_chunks(&[text]).2
    }

    // ---- MarkupFilter: status tags ----

    #[test]
    fn answer_tag_is_removed_and_leading_whitespace_trimmed() {
        assert_eq!(
            clean_any_chunking("[[ANSWER]] Shipping is free."),
            "Shipping is free."
        );
        assert_eq!(
            clean_any_chunking("[[ANSWER]]\n\nShipping is free."),
            "Shipping is free."
        );
        assert_eq!(clean_any_chunking("  \n[[ANSWER]]  Hi"), "Hi");
        assert_eq!(status_of("[[ANSWER]] Hi"), Some(InfoStatus::Enough));
    }

    #[test]
    fn no_info_tag_variants() {
        for tag in [
            "[[NO_INFO]]",
            "[[no_info]]",
            "[[ no_info ]]",
            "[[NOINFO]]",
            "[[NO-INFO]]",
            "[[No Info]]",
            "[NO_INFO]",
            "[[NO_INFO]",
        ] {
            let text = format!("{tag} Sorry, I do not know.");
            assert_eq!(clean_any_chunking(&text), "Sorry, I do not know.", "{tag}");
            assert_eq!(status_of(&text), Some(InfoStatus::Lacking), "{tag}");
        }
        for tag in ["[[answer]]", "[[ Answer ]]", "[ANSWER]"] {
            assert_eq!(clean(&format!("{tag} Yes.")), "Yes.", "{tag}");
            assert_eq!(status_of(tag), Some(InfoStatus::Enough), "{tag}");
        }
    }

    #[test]
    fn tags_anywhere_are_removed_and_lacking_wins() {
        assert_eq!(
            clean_any_chunking("Sorry. [[NO_INFO]] I cannot say."),
            "Sorry. I cannot say."
        );
        assert_eq!(clean_any_chunking("It is free.[[ANSWER]]"), "It is free.");
        assert_eq!(clean_any_chunking("It is free. [[ANSWER]]"), "It is free.");
        assert_eq!(
            status_of("[[ANSWER]] Well. [[NO_INFO]]"),
            Some(InfoStatus::Lacking)
        );
        assert_eq!(
            status_of("[[NO_INFO]] Well. [[ANSWER]]"),
            Some(InfoStatus::Lacking)
        );
        assert_eq!(status_of("No tag here."), None);
    }

    #[test]
    fn tags_split_at_every_position() {
        for text in [
            "[[ANSWER]] Hello",
            "[[ no_info ]] Hello",
            "Hello [[NO-INFO]]",
            "x<think>plan</think>y",
            "a<|eot_id|>",
            "free [Source 12].",
        ] {
            let whole = clean(text);
            for (i, _) in text.char_indices() {
                let mut filter = MarkupFilter::new();
                let mut out = filter.push(&text[..i]);
                out.push_str(&filter.push(&text[i..]));
                out.push_str(&filter.finish());
                assert_eq!(out, whole, "{text:?} split at {i}");
                assert!(!out.contains("[[") && !out.contains('<'), "{out:?}");
            }
        }
    }

    #[test]
    fn nothing_of_a_tag_is_released_early() {
        let mut filter = MarkupFilter::new();
        for c in char_chunks("[[NO_INFO]") {
            assert_eq!(filter.push(c), "");
        }
        assert_eq!(filter.push("] Sorry"), "Sorry");
        assert_eq!(filter.status(), Some(InfoStatus::Lacking));
    }

    #[test]
    fn partial_tag_at_the_end_is_dropped() {
        for text in [
            "Done. [[ANSW",
            "Done. [[",
            "Done. [ANSWE",
            "Done. [[NO_INFO",
            "Done. [[ANSWER]",
        ] {
            assert_eq!(clean(text).trim_end(), "Done.", "{text:?}");
        }
        assert_eq!(status_of("Done. [[ANSWER]"), Some(InfoStatus::Enough));
        assert_eq!(status_of("Done. [[ANSW"), None);
    }

    // ---- MarkupFilter: citations ----

    #[test]
    fn citations_are_removed_with_the_space_before() {
        let cases = [
            ("Shipping is free [1].", "Shipping is free."),
            ("Shipping is free [1, 3].", "Shipping is free."),
            ("Shipping is free [1][2].", "Shipping is free."),
            ("Shipping is free [1] [2].", "Shipping is free."),
            ("Shipping is free [Source 2].", "Shipping is free."),
            (
                "Shipping is free [source: 2], always.",
                "Shipping is free, always.",
            ),
            (
                "Shipping is free [1] on orders.",
                "Shipping is free on orders.",
            ),
            (
                "Shipping is free[1] on orders.",
                "Shipping is free on orders.",
            ),
            ("Shipping is free [1]", "Shipping is free"),
            ("Free [1]\nNext", "Free\nNext"),
            ("Free [2-4] now", "Free now"),
            ("Free [[3]] now", "Free now"),
            ("**Free [1]**", "**Free**"),
            ("送料は無料です[1]。", "送料は無料です。"),
            ("List:\n[1] First\n[2] Second", "List:\nFirst\nSecond"),
            ("[1] Starts here.", "Starts here."),
        ];
        for (text, want) in cases {
            assert_eq!(clean_any_chunking(text), want, "{text:?}");
        }
    }

    #[test]
    fn citations_are_recorded_in_order_without_repeats() {
        assert_eq!(
            citations_of("a [3] b [1, 3] c [Source 2][1] d [source: 7]"),
            vec![3, 1, 2, 7]
        );
        assert_eq!(citations_of("a [2-4]"), vec![2, 3, 4]);
        assert_eq!(citations_of("a [Sources 1; 2]"), vec![1, 2]);
        assert_eq!(citations_of("a [ref #5]"), vec![5]);
        assert_eq!(
            citations_of("no citations [see below]"),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn other_brackets_pass_through() {
        for text in [
            "See [see below] for more.",
            "Option [a] or [b].",
            "Press [Enter] then [Esc].",
            "A [link](https://example.com) and [1](https://example.com).",
            "Footnote[^1] here.",
            "Array [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14] is long.",
            "Year [2024] is four digits.",
            "Range [5-1] is backwards.",
            "Empty [] and [ ] and [1,] stay.",
            "Nested [[see]] stays.",
            "Maybe [no] or [answers] here.",
            "Lone [ bracket and lone ] bracket.",
            "Maths: a < b, b > c, <3, <b>bold</b>, a<-b.",
        ] {
            assert_eq!(clean_any_chunking(text), text, "{text:?}");
        }
    }

    #[test]
    fn code_is_left_alone() {
        for text in [
            "Use `items[1]` here.",
            "Use ``a ` [1] b`` here.",
            "```python\nx = items[1]\ny = [[ANSWER]]\nprint('<s>')\n```",
        ] {
            assert_eq!(clean_any_chunking(text), text, "{text:?}");
        }
        assert_eq!(
            clean_any_chunking("```\nx = a[1]\n```\nFree [1]."),
            "```\nx = a[1]\n```\nFree."
        );
        // An unclosed inline span ends with its line.
        assert_eq!(
            clean_any_chunking("A stray ` here\nFree [1]."),
            "A stray ` here\nFree."
        );
        assert_eq!(clean_any_chunking("`x`<|eot_id|>"), "`x`");
    }

    #[test]
    fn bracket_held_back_is_capped() {
        let long = format!("[1, {}", "2, ".repeat(20));
        let mut filter = MarkupFilter::new();
        let out = filter.push(&long);
        assert!(out.starts_with("[1, 2"), "{out:?}");
        assert_eq!(clean_any_chunking(&format!("{long}]")), format!("{long}]"));
    }

    #[test]
    fn lone_bracket_at_the_end_is_text() {
        assert_eq!(clean("Press [ then go"), "Press [ then go");
        assert_eq!(clean("Press ["), "Press [");
        assert_eq!(clean("Press [so"), "Press [so");
        assert_eq!(clean("Press <"), "Press <");
        assert_eq!(clean("Free [2").trim_end(), "Free");
    }

    // ---- MarkupFilter: reasoning blocks and special tokens ----

    #[test]
    fn think_blocks_are_dropped() {
        let cases = [
            (
                "<think>The user wants [1] x</think>\n\nShipping is free.",
                "Shipping is free.",
            ),
            ("<thinking>hmm</thinking>Yes.", "Yes."),
            ("<THINK >hmm</Think>Yes.", "Yes."),
            ("Yes <think>hmm</think>, indeed.", "Yes, indeed."),
            ("Yes <think>a < b </thin </think> indeed.", "Yes indeed."),
            ("Yes.<think>never closed [[ANSWER]] <|eot_id|>", "Yes."),
            ("Yes.<think>never closed </thi", "Yes."),
            ("Yes.</think> Stray close.", "Yes. Stray close."),
            ("<think><think>nested</think>after", "after"),
        ];
        for (text, want) in cases {
            assert_eq!(clean_any_chunking(text), want, "{text:?}");
        }
        assert_eq!(
            status_of("<think>[[NO_INFO]]</think>[[ANSWER]] x"),
            Some(InfoStatus::Enough)
        );
        assert!(citations_of("<think>[1]</think>x").is_empty());
    }

    #[test]
    fn think_block_across_many_chunks() {
        let mut filter = MarkupFilter::new();
        let mut out = String::new();
        for chunk in [
            "<th",
            "ink>Let me",
            " think about [",
            "2]...</",
            "think",
            ">",
            "[[ANS",
            "WER]] It",
            " is free.",
        ] {
            out.push_str(&filter.push(chunk));
        }
        out.push_str(&filter.finish());
        assert_eq!(out, "It is free.");
        assert!(filter.citations().is_empty());
        assert_eq!(filter.status(), Some(InfoStatus::Enough));
    }

    #[test]
    fn special_tokens_are_removed() {
        for token in [
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<|endoftext|>",
            "</s>",
            "<s>",
            "<|start_header_id|>",
            "<｜end▁of▁sentence｜>",
        ] {
            assert_eq!(
                clean_any_chunking(&format!("Done.{token}")),
                "Done.",
                "{token}"
            );
            assert_eq!(
                clean_any_chunking(&format!("{token}Done.")),
                "Done.",
                "{token}"
            );
        }
        assert_eq!(clean("Done.<|eot"), "Done.");
        assert_eq!(clean_any_chunking("<|not a token|>"), "<|not a token|>");
    }

    #[test]
    fn saw_output_counts_only_visible_text() {
        for (text, want) in [
            ("[[NO_INFO]]", false),
            ("[[NO_INFO]]  \n ", false),
            ("<think>lots</think>", false),
            ("[[ANSWER]] x", true),
            ("[1]", false),
            ("[", true),
        ] {
            assert_eq!(filter_chunks(&[text]).3, want, "{text:?}");
        }
        let mut filter = MarkupFilter::new();
        assert!(!filter.saw_output());
        filter.push("[[ANSWER]]  ");
        assert!(!filter.saw_output());
        filter.push("Hi");
        assert!(filter.saw_output());
    }

    #[test]
    fn filter_does_not_depend_on_chunking() {
        let text = "<think>The customer asks about [shipping]. Passage [2] says free.</think>\n\n\
            [[ANSWER]] Shipping is free on orders over $50 [2]. Returns take 5–7 days [1, 3].\n\n\
            ## Details\n\nSee [see below] and `cfg[1]`:\n\n```sh\ncurl x[1]\n```\n\n\
            日本への配送は無料です[Source 4]。🎉 Done [[NO_INFO]]<|eot_id|>";
        let whole = filter_chunks(&[text]);
        assert_eq!(
            whole.0,
            "Shipping is free on orders over $50. Returns take 5–7 days.\n\n\
            ## Details\n\nSee [see below] and `cfg[1]`:\n\n```sh\ncurl x[1]\n```\n\n\
            日本への配送は無料です。🎉 Done"
        );
        assert_eq!(whole.1, Some(InfoStatus::Lacking));
        assert_eq!(whole.2, vec![2, 1, 3, 4]);
        clean_any_chunking(text);
        for seed in 1..200 {
            let chunks = random_chunks(text, seed, 1 + usize::try_from(seed % 40).unwrap());
            assert_eq!(filter_chunks(&chunks), whole, "seed {seed}");
        }
    }

    #[test]
    fn adversarial_input_does_not_panic() {
        let mut inputs: Vec<String> = vec![
            "[".repeat(10_000),
            "<".repeat(10_000),
            "[[".repeat(5_000),
            "]]".repeat(5_000),
            "</think>".repeat(1_000),
            "<think>".repeat(1_000),
            "<|".repeat(5_000),
            "[1".repeat(5_000),
            "[Source ".repeat(2_000),
            "`".repeat(1_000),
            "[[ANSWER]".repeat(1_000),
            "é[日<🎉|".repeat(2_000),
            "x".repeat(200_000),
            String::new(),
        ];
        let pieces = [
            "[", "]", "[[", "]]", "<", ">", "<think>", "</think>", "<|", "|>", "ANSWER", "NO_INFO",
            "1", ", ", " ", "\n", "`", "```", "Source", ":", "é", "日本", "🎉", "a", ".", "-", "#",
            "**", "\r\n", "s", "/",
        ];
        let mut rng = Rng(42);
        for _ in 0..300 {
            let n = rng.below(60);
            inputs.push((0..n).map(|_| pieces[rng.below(pieces.len())]).collect());
        }
        for (k, text) in inputs.iter().enumerate() {
            let whole = filter_chunks(&[text.as_str()]);
            let chunks = random_chunks(text, k as u64 + 1, 5);
            assert_eq!(filter_chunks(&chunks), whole, "{text:?}");
            if text.len() < 1_000 {
                assert_eq!(filter_chunks(&char_chunks(text)), whole, "{text:?}");
            }
            let paragraphs = paragraphs_of(&whole.0, 50);
            assert!(
                paragraphs
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().count() <= 50)
            );
        }
    }

    // ---- ParagraphBuffer ----

    /// Paragraphs of `text`, checked to be the same however it is chunked.
    fn paragraphs_any_chunking(text: &str, max: usize) -> Vec<String> {
        let whole = paragraphs_of(text, max);
        let feed = |chunks: &[&str]| {
            let mut buffer = ParagraphBuffer::new(max);
            let mut out = Vec::new();
            for chunk in chunks {
                out.extend(buffer.push(chunk));
            }
            out.extend(buffer.finish());
            out
        };
        assert_eq!(feed(&char_chunks(text)), whole, "char by char: {text:?}");
        for seed in 1..30 {
            let chunks = random_chunks(text, seed, 9);
            assert_eq!(feed(&chunks), whole, "chunks {chunks:?}");
        }
        for p in &whole {
            assert!(!p.is_empty(), "empty paragraph in {whole:?}");
            assert_eq!(p.trim(), p, "untrimmed paragraph {p:?}");
            assert!(p.chars().count() <= max.max(1), "{p:?} exceeds {max}");
        }
        whole
    }

    #[test]
    fn blank_lines_end_paragraphs() {
        assert_eq!(
            paragraphs_any_chunking("One.\n\nTwo.\n\n\n\nThree.", 100),
            ["One.", "Two.", "Three."]
        );
        assert_eq!(
            paragraphs_any_chunking("One.\r\n\r\nTwo.\r\nStill two.", 100),
            ["One.", "Two.\nStill two."]
        );
        assert_eq!(
            paragraphs_any_chunking("One.\n \nTwo.\n\t \nThree.", 100),
            ["One.", "Two.", "Three."]
        );
        assert_eq!(
            paragraphs_any_chunking("One.\r\rTwo.", 100),
            ["One.", "Two."]
        );
        assert_eq!(
            paragraphs_any_chunking("\n\n  Lead spaces.  \n\n\n  \n", 100),
            ["Lead spaces."]
        );
        assert_eq!(
            paragraphs_any_chunking("Steps\n- one\n- two\n\nEnd.", 100),
            ["Steps\n- one\n- two", "End."]
        );
        assert!(paragraphs_any_chunking("  \n\n \r\n ", 100).is_empty());
        assert!(paragraphs_of("", 100).is_empty());
    }

    #[test]
    fn push_returns_paragraphs_as_they_complete() {
        let mut buffer = ParagraphBuffer::new(100);
        assert!(buffer.push("First para").is_empty());
        assert!(buffer.push("graph.\n").is_empty());
        assert_eq!(buffer.push("\nSecond"), ["First paragraph."]);
        assert_eq!(
            buffer.push(" one.\n\n\n\nThird.\n\n"),
            ["Second one.", "Third."]
        );
        assert_eq!(buffer.finish(), None);
        assert!(buffer.push("Again").is_empty());
        assert_eq!(buffer.finish().as_deref(), Some("Again"));
    }

    #[test]
    fn code_fences_keep_blank_lines() {
        let text = "Run this\n\n```sh\nmake\n\nmake install\n```\n\nDone.\n\n~~~\na\n\nb\n~~~";
        assert_eq!(
            paragraphs_any_chunking(text, 200),
            [
                "Run this",
                "```sh\nmake\n\nmake install\n```",
                "Done.",
                "~~~\na\n\nb\n~~~"
            ]
        );
        // A shorter marker or one with text after it does not close the fence.
        let text = "````\na\n\n```\n\nb\n```` x\n\nc\n````\n\nAfter.";
        assert_eq!(
            paragraphs_any_chunking(text, 200),
            ["````\na\n\n```\n\nb\n```` x\n\nc\n````", "After."]
        );
    }

    #[test]
    fn headings_and_intros_join_the_next_paragraph() {
        assert_eq!(
            paragraphs_any_chunking("# Shipping\n\nIt is free.\n\nNext.", 200),
            ["# Shipping\nIt is free.", "Next."]
        );
        assert_eq!(
            paragraphs_any_chunking("**Returns**\n\nWithin 30 days.", 200),
            ["**Returns**\nWithin 30 days."]
        );
        assert_eq!(
            paragraphs_any_chunking(
                "## Returns\n\nHere is how:\n\n1. Pack\n2. Ship\n\nThanks.",
                200
            ),
            ["## Returns\nHere is how:\n1. Pack\n2. Ship", "Thanks."]
        );
        assert_eq!(
            paragraphs_any_chunking("手順：\n\n1. 梱包", 200),
            ["手順：\n1. 梱包"]
        );
        // Bold inside a sentence is not a heading.
        assert_eq!(
            paragraphs_any_chunking("**Free** shipping.\n\n**a** and **b**\n\nEnd.", 200),
            ["**Free** shipping.", "**a** and **b**", "End."]
        );
        // A heading left at the end is still sent.
        assert_eq!(
            paragraphs_any_chunking("Body.\n\n# Trailing", 200),
            ["Body.", "# Trailing"]
        );
    }

    #[test]
    fn long_paragraphs_split_at_sentence_ends() {
        let text =
            "This is the first sentence. This is the second one! Is this the third? Yes it is.";
        let parts = paragraphs_any_chunking(text, 40);
        assert_eq!(
            parts,
            [
                "This is the first sentence.",
                "This is the second one!",
                "Is this the third? Yes it is."
            ]
        );
        let parts = paragraphs_any_chunking("Line one\nline two\nline three is here", 20);
        assert_eq!(parts, ["Line one\nline two", "line three is here"]);
    }

    #[test]
    fn long_paragraphs_split_at_whitespace_then_hard() {
        let parts = paragraphs_any_chunking("alpha beta gamma delta epsilon zeta eta theta", 16);
        assert_eq!(
            parts,
            ["alpha beta gamma", "delta epsilon", "zeta eta theta"]
        );
        let parts = paragraphs_any_chunking(&"a".repeat(100), 30);
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            [30, 30, 30, 10]
        );
        // Exactly at the limit: not split.
        assert_eq!(
            paragraphs_any_chunking("abcde fghij.\n\nNext", 12),
            ["abcde fghij.", "Next"]
        );
    }

    #[test]
    fn multibyte_text_is_counted_in_characters() {
        let text = "これはテストです。".repeat(6);
        let parts = paragraphs_any_chunking(&text, 20);
        assert_eq!(parts.len(), 3);
        assert!(
            parts
                .iter()
                .all(|p| p.ends_with('。') && p.chars().count() == 18)
        );
        let emoji = "🎉".repeat(50);
        let parts = paragraphs_any_chunking(&emoji, 7);
        assert_eq!(parts.concat(), emoji);
        assert!(parts.iter().all(|p| p.chars().count() <= 7));
        let mixed = "Ça coûte 5 €. Très bien ! Ünïcödé ñ 日本語 🎉🎉 done.".repeat(5);
        let parts = paragraphs_any_chunking(&mixed, 13);
        let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        assert_eq!(squash(&parts.concat()), squash(&mixed));
    }

    #[test]
    fn long_code_block_is_closed_and_reopened() {
        let code = (0..40)
            .map(|i| format!("let x{i} = {i};\n"))
            .collect::<Vec<_>>()
            .concat();
        let text = format!("Example:\n\n```rust\n{code}```\n\nDone.");
        let parts = paragraphs_any_chunking(&text, 120);
        assert!(parts.len() > 3, "{parts:?}");
        assert_eq!(parts.last().map(String::as_str), Some("Done."));
        for part in &parts[..parts.len() - 1] {
            assert!(part.contains("```rust\n"), "{part:?}");
            assert!(part.ends_with("\n```"), "{part:?}");
        }
        assert!(parts[0].starts_with("Example:\n```rust\nlet x0 = 0;"));
        let lines: Vec<&str> = parts
            .iter()
            .flat_map(|p| p.lines())
            .filter(|l| l.starts_with("let"))
            .collect();
        assert_eq!(lines, code.lines().collect::<Vec<_>>());
        // One long code line is cut hard, still inside fences.
        let text = format!("```\n{}\n```", "x".repeat(100));
        let parts = paragraphs_any_chunking(&text, 30);
        assert!(
            parts
                .iter()
                .all(|p| p.starts_with("```\n") && p.ends_with("\n```")),
            "{parts:?}"
        );
        // Prose before a block shares a part with the code that fits...
        let text = format!("Intro text here\n```\n{code}```");
        let parts = paragraphs_any_chunking(&text, 60);
        assert!(
            parts[0].starts_with("Intro text here\n```\nlet x0"),
            "{parts:?}"
        );
        assert!(parts[0].ends_with("\n```"), "{parts:?}");
        // ...and goes alone when no code line fits.
        let text = format!("Intro text here\n```\n{}\n```", "y".repeat(100));
        let parts = paragraphs_any_chunking(&text, 60);
        assert_eq!(parts[0], "Intro text here");
        assert!(
            parts[1..]
                .iter()
                .all(|p| p.starts_with("```\n") && p.ends_with("\n```")),
            "{parts:?}"
        );
    }

    #[test]
    fn tiny_limits_do_not_panic() {
        for max in [0, 1, 2, 3, 5] {
            for text in [
                "Hello there. How are you?",
                "```\ncode\n\nmore\n```",
                "# H\n\n:\n\n日本🎉",
            ] {
                let parts = paragraphs_any_chunking(text, max);
                assert!(!parts.is_empty());
            }
        }
        assert_eq!(paragraphs_of("ab", 0), ["a", "b"]);
        assert_eq!(paragraphs_of("a b", usize::MAX), ["a b"]);
    }

    #[test]
    fn paragraphs_do_not_depend_on_chunking() {
        let pieces = [
            "Hello",
            " ",
            "world",
            ".",
            "\n",
            "\n\n",
            "\r\n",
            " \n",
            "# Title",
            "**Bold**",
            ":",
            "```",
            "~~~",
            "日本語",
            "。",
            "🎉",
            "- item",
            "!",
            "?",
            "\t",
        ];
        let mut rng = Rng(7);
        for round in 0..300 {
            let n = rng.below(80);
            let text: String = (0..n).map(|_| pieces[rng.below(pieces.len())]).collect();
            let max = 5 + rng.below(60);
            let parts = paragraphs_any_chunking(&text, max);
            if !text.contains("```") && !text.contains("~~~") {
                let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
                assert_eq!(
                    squash(&parts.concat()),
                    squash(&text),
                    "round {round}: {text:?}"
                );
            }
        }
    }

    #[test]
    fn filter_then_paragraphs() {
        let reply = "<think>ok</think>[[ANSWER]] ## Shipping\n\nOrders over $50 ship free [1].\n\n\
            To return an item:\n\n1. Pack it [2].\n2. Send it.\n\nAnything else?<|eot_id|>";
        let run = |chunks: &[&str]| {
            let mut filter = MarkupFilter::new();
            let mut buffer = ParagraphBuffer::new(500);
            let mut out = Vec::new();
            for chunk in chunks {
                out.extend(buffer.push(&filter.push(chunk)));
            }
            out.extend(buffer.push(&filter.finish()));
            out.extend(buffer.finish());
            (out, filter.citations())
        };
        let whole = run(&[reply]);
        assert_eq!(
            whole.0,
            [
                "## Shipping\nOrders over $50 ship free.",
                "To return an item:\n1. Pack it.\n2. Send it.",
                "Anything else?"
            ]
        );
        assert_eq!(whole.1, [1, 2]);
        for seed in 1..50 {
            assert_eq!(run(&random_chunks(reply, seed, 6)), whole);
        }
    }
}
