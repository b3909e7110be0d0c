//! The markup a model writes into its reply, and recognizing it in held-back
//! text: status tags, citations, reasoning tags and special tokens.

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

/// What the held text turned out to be, so far.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// Not markup: its first character is text.
    No,
    /// Still a prefix of markup.
    More,
    /// Markup ending at this byte; anything after it is fed again.
    Done(usize, Markup),
}

/// Markup recognized in the stream.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Markup {
    Status(InfoStatus),
    Citation(Vec<usize>),
    ThinkOpen,
    ThinkClose,
    Token,
}

/// `[[ANSWER]]`, `[[ no_info ]]`, `[NO-INFO]` and the like.
pub(super) fn scan_status(s: &str, at_end: bool) -> Scan {
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
pub(super) fn scan_citation(s: &str, at_end: bool) -> Scan {
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
pub(super) fn scan_angle(s: &str, tags: bool) -> Scan {
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
pub(super) fn droppable_at_end(held: &str) -> bool {
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
