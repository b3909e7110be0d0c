//! The embedded answerer: composes an answer from the best passages, with
//! no model and no network.
//!
//! An FAQ entry on top is answered with its answer. Otherwise the answer is
//! taken from the best passage: whole when short, else its paragraphs (or,
//! in one long paragraph, its sentences) that share the most words with the
//! question, in their original order, within [`MAX_CHARS`].

use super::phrases::fold;

/// Longest composed answer, in characters (an FAQ answer is given whole).
pub const MAX_CHARS: usize = 700;

/// A retrieved passage, best first.
#[derive(Debug, Clone, Copy)]
pub struct Passage<'a> {
    /// An FAQ entry (its body is the answer).
    pub faq: bool,
    /// The passage's text.
    pub body: &'a str,
}

/// A composed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// Paragraphs separated by blank lines.
    pub text: String,
    /// Which passages it was taken from (indices into the input).
    pub used: Vec<usize>,
}

/// Composes an answer to `question` from `passages` (best first); `None`
/// when there is nothing to say.
pub fn compose(question: &str, passages: &[Passage<'_>]) -> Option<Composed> {
    let top = passages.first()?;
    let body = top.body.trim();
    if body.is_empty() {
        return None;
    }
    if top.faq || body.chars().count() <= MAX_CHARS {
        return Some(Composed {
            text: tidy(skip_leading_fragment(body)),
            used: vec![0],
        });
    }
    let words = content_words(question);
    let body = skip_leading_fragment(body);
    let paragraphs: Vec<&str> = body
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    // One long paragraph: work with its sentences instead.
    let (units, joiner) = if paragraphs.len() > 1 {
        (paragraphs, "\n\n")
    } else {
        (sentences(body), " ")
    };
    let mut ranked: Vec<(usize, f32)> = units
        .iter()
        .enumerate()
        .map(|(i, unit)| (i, overlap(&words, unit) - i as f32 * 0.01))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut chosen = Vec::new();
    let mut length = 0;
    for (i, score) in ranked {
        let size = units[i].chars().count();
        if !chosen.is_empty() && (score <= 0.0 || length + size > MAX_CHARS) {
            continue;
        }
        chosen.push(i);
        length += size;
        // A chosen unit that introduces a list brings the list.
        if units[i].trim_end().ends_with(':') && i + 1 < units.len() && !chosen.contains(&(i + 1)) {
            chosen.push(i + 1);
            length += units[i + 1].chars().count();
        }
        if length >= MAX_CHARS {
            break;
        }
    }
    chosen.sort_unstable();
    chosen.dedup();
    let text: Vec<&str> = chosen.iter().map(|&i| units[i]).collect();
    Some(Composed {
        text: tidy(&text.join(joiner)),
        used: vec![0],
    })
}

/// A passage that starts with the overlap of the previous one may start
/// mid-sentence: that fragment is dropped when a whole sentence follows.
fn skip_leading_fragment(body: &str) -> &str {
    let starts_well = body
        .chars()
        .next()
        .is_some_and(|c| !c.is_lowercase() || !c.is_alphabetic());
    if starts_well {
        return body;
    }
    match sentence_end(body) {
        Some(end) if end < body.len() / 2 => body[end..].trim_start(),
        _ => body,
    }
}

/// The byte offset just past the first sentence end (`. ` `! ` `? ` or a newline).
fn sentence_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find_map(|i| {
        let end_mark = matches!(bytes[i], b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_some_and(u8::is_ascii_whitespace);
        if end_mark {
            Some(i + 2)
        } else if bytes[i] == b'\n' {
            Some(i + 1)
        } else {
            None
        }
    })
}

fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(end) = sentence_end(rest) {
        let (head, tail) = rest.split_at(end);
        if !head.trim().is_empty() {
            out.push(head.trim());
        }
        rest = tail;
    }
    if !rest.trim().is_empty() {
        out.push(rest.trim());
    }
    out
}

/// Words that carry meaning, crudely stemmed.
fn content_words(text: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "the", "and", "for", "are", "was", "were", "you", "your", "our", "can", "how", "what",
        "when", "where", "which", "who", "why", "does", "did", "have", "has", "with", "this",
        "that", "from", "into", "about", "there", "their", "will", "would", "could", "should",
        "any", "not", "but", "yes", "all", "get", "its", "it's", "may", "might", "much", "many",
        "les", "des", "une", "est", "pour", "que", "qui", "der", "die", "das", "und", "ist", "los",
        "las", "por", "con", "para",
    ];
    fold(text)
        .split(' ')
        .filter(|w| w.chars().count() >= 3 && !STOP.contains(w))
        .map(stem)
        .collect()
}

fn stem(word: &str) -> String {
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(base) = word.strip_suffix(suffix)
            && base.chars().count() >= 3
        {
            return base.to_owned();
        }
    }
    word.to_owned()
}

/// Share of the question's content words found in `unit`.
fn overlap(words: &[String], unit: &str) -> f32 {
    if words.is_empty() {
        return 0.0;
    }
    let have: Vec<String> = content_words(unit);
    let hits = words.iter().filter(|w| have.contains(w)).count();
    hits as f32 / words.len() as f32
}

/// Trims, and keeps at most one blank line between paragraphs.
fn tidy(text: &str) -> String {
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_faq_entry_is_answered_with_its_answer() {
        let composed = compose(
            "can I return my bike?",
            &[
                Passage {
                    faq: true,
                    body: "  Yes, within 30 days.  ",
                },
                Passage {
                    faq: false,
                    body: "Other text.",
                },
            ],
        )
        .expect("answer");
        assert_eq!(composed.text, "Yes, within 30 days.");
        assert_eq!(composed.used, vec![0]);
        assert!(compose("q", &[]).is_none());
        assert!(
            compose(
                "q",
                &[Passage {
                    faq: false,
                    body: " "
                }]
            )
            .is_none()
        );
    }

    #[test]
    fn a_long_passage_gives_its_most_relevant_paragraphs_in_order() {
        let filler = "Our shop opened in 1998 and has served riders ever since. ".repeat(6);
        let body = format!(
            "{filler}\n\nReturns are accepted within 30 days of delivery, unused and in the original box.\n\n\
             {filler}\n\nRefunds for returns reach your card within 5 business days.\n\n{filler}"
        );
        let composed = compose(
            "how long do refunds for returns take?",
            &[Passage {
                faq: false,
                body: &body,
            }],
        )
        .expect("answer");
        assert!(
            composed.text.starts_with("Returns are accepted"),
            "{}",
            composed.text
        );
        assert!(
            composed.text.ends_with("within 5 business days."),
            "{}",
            composed.text
        );
        assert!(!composed.text.contains("1998"));
        assert!(composed.text.chars().count() <= MAX_CHARS);
    }

    #[test]
    fn one_long_paragraph_gives_sentences_and_lists_come_whole() {
        let body = format!(
            "{} To book a repair, do this: \nBring the bike to the shop. {}",
            "Bikes are fun to ride on sunny days. ".repeat(12),
            "Weather varies a lot in spring. ".repeat(12)
        );
        let composed = compose(
            "how do I book a repair?",
            &[Passage {
                faq: false,
                body: &body,
            }],
        )
        .expect("answer");
        assert!(
            composed.text.contains("To book a repair, do this:"),
            "{}",
            composed.text
        );
        assert!(
            composed.text.contains("Bring the bike"),
            "{}",
            composed.text
        );
    }

    #[test]
    fn a_leading_overlap_fragment_is_dropped() {
        assert_eq!(
            skip_leading_fragment("of the frame. Frames carry a lifetime warranty."),
            "Frames carry a lifetime warranty."
        );
        assert_eq!(skip_leading_fragment("Whole sentence."), "Whole sentence.");
        assert_eq!(skip_leading_fragment("no end at all"), "no end at all");
    }
}
