//! Cutting a long reply into messages a platform accepts.

/// Splits `text` into parts of at most `max_chars` characters (Unicode
/// scalar values), preferring paragraph boundaries, then sentence ends, then
/// spaces; a single over-long word is cut where it must be. Parts are
/// trimmed; empty input gives no parts. Joining the parts loses only the
/// whitespace at the cuts.
pub fn split_text(text: &str, max_chars: usize) -> Vec<String> {
    let max = max_chars.max(1);
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    if text.chars().count() <= max {
        return vec![text.to_owned()];
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        for piece in fit(paragraph, max, &SENTENCE_THEN_WORD) {
            push(&mut parts, &mut current, &piece, "\n\n", max);
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// Appends `piece` to `current` with `sep` if it fits, else starts a new part.
fn push(parts: &mut Vec<String>, current: &mut String, piece: &str, sep: &str, max: usize) {
    if current.is_empty() {
        current.push_str(piece);
    } else if current.chars().count() + sep.chars().count() + piece.chars().count() <= max {
        current.push_str(sep);
        current.push_str(piece);
    } else {
        parts.push(std::mem::take(current));
        current.push_str(piece);
    }
}

type Splitter = fn(&str) -> Vec<&str>;
const SENTENCE_THEN_WORD: [Splitter; 2] = [sentences, words];

/// Breaks `text` into pieces of at most `max` characters using the first
/// splitter that applies, recursing with the finer ones.
fn fit(text: &str, max: usize, splitters: &[Splitter]) -> Vec<String> {
    if text.chars().count() <= max {
        return vec![text.to_owned()];
    }
    let Some((split, finer)) = splitters.split_first() else {
        return hard_cut(text, max);
    };
    let mut out = Vec::new();
    let mut current = String::new();
    for unit in split(text) {
        for piece in fit(unit, max, finer) {
            push(&mut out, &mut current, &piece, " ", max);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Where the sentences of `text` end: the byte offset just after each
/// sentence's closing mark, in increasing order.
///
/// A sentence ends after `.`, `!`, `?` or `…` followed by whitespace (a
/// newline included) or by the end of the text, and right after a CJK `。`,
/// `！` or `？` whatever follows. Nothing else ends one: a newline alone, a
/// decimal point (`3.5`) or a mark followed by a quote or bracket (`"Hi."`)
/// does not. Every offset is a character boundary of `text`, never 0.
///
/// One rule for the whole gateway: [`split_text`] cuts a long paragraph at
/// these offsets, and the answer stream cuts a long streamed paragraph at
/// the last of them that fits.
pub fn sentence_ends(text: &str) -> impl Iterator<Item = usize> {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some((i, c)) = chars.next() {
            let cjk = matches!(c, '。' | '！' | '？');
            let terminal = cjk || matches!(c, '.' | '!' | '?' | '…');
            if cjk || (terminal && chars.peek().is_none_or(|(_, n)| n.is_whitespace())) {
                return Some(i + c.len_utf8());
            }
        }
        None
    })
}

/// Sentences: `text` cut at each of [`sentence_ends`], trimmed, empty ones
/// dropped.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in sentence_ends(text) {
        out.push(text[start..end].trim());
        start = end;
    }
    out.push(text[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

fn hard_cut(text: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(max).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_end_after_marks_before_space_and_after_cjk_marks() {
        let text = "Hi. Costs 3.5 euros! Really?\nYes… “Quoted.” 好。了";
        let ends: Vec<usize> = sentence_ends(text).collect();
        let cut: Vec<&str> = ends.iter().map(|&e| &text[..e]).collect();
        assert!(cut[0].ends_with("Hi."));
        assert!(cut[1].ends_with("euros!"));
        assert!(cut[2].ends_with("Really?"));
        assert!(cut[3].ends_with("Yes…"));
        assert!(cut[4].ends_with("好。"));
        assert_eq!(ends.len(), 5, "no cut in 3.5 nor inside the quote: {cut:?}");
        assert_eq!(sentence_ends("").count(), 0);
        assert_eq!(sentence_ends("end.").collect::<Vec<_>>(), vec![4]);
    }

    fn check(parts: &[String], max: usize) {
        for p in parts {
            assert!(!p.is_empty());
            assert!(
                p.chars().count() <= max,
                "{} > {max}: {p:?}",
                p.chars().count()
            );
            assert_eq!(p, p.trim());
        }
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_text("  hello  ", 10), vec!["hello"]);
        assert!(split_text(" \n ", 10).is_empty());
    }

    #[test]
    fn paragraphs_are_packed_and_kept_whole() {
        let text = "First paragraph here.\n\nSecond one.\n\nThird paragraph is here.";
        let parts = split_text(text, 40);
        check(&parts, 40);
        assert_eq!(
            parts,
            vec![
                "First paragraph here.\n\nSecond one.",
                "Third paragraph is here."
            ]
        );
    }

    #[test]
    fn long_paragraph_splits_at_sentences_then_words() {
        let text = "One two three. Four five six! Seven eight nine? Ten.";
        let parts = split_text(text, 20);
        check(&parts, 20);
        assert_eq!(
            parts,
            vec![
                "One two three.",
                "Four five six!",
                "Seven eight nine?",
                "Ten."
            ]
        );
        let parts = split_text("alpha beta gamma delta epsilon", 11);
        check(&parts, 11);
        assert_eq!(parts, vec!["alpha beta", "gamma delta", "epsilon"]);
    }

    #[test]
    fn unbreakable_words_are_cut_on_char_boundaries() {
        let text = "ééééééééééééééé";
        let parts = split_text(text, 4);
        check(&parts, 4);
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn telegram_sized_text_keeps_every_word() {
        let sentence = "Our shop ships every order placed before two o'clock on the same day. ";
        let text: String = sentence.repeat(150);
        let parts = split_text(&text, 4096);
        check(&parts, 4096);
        assert!(parts.len() >= 3);
        let words: Vec<&str> = text.split_whitespace().collect();
        let rejoined: Vec<String> = parts
            .iter()
            .flat_map(|p| p.split_whitespace().map(str::to_owned))
            .collect();
        assert_eq!(rejoined, words);
        assert!(
            parts.iter().all(|p| p.ends_with('.')),
            "cuts land on sentence ends"
        );
    }
}
