//! What the answering core is given: the bot as it answers, the passages
//! retrieval found, and the process's answering options. Plain types: the
//! gateway fills them from its database and its settings.

use std::time::Duration;

/// What writes the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    /// Composes answers from the best passages, offline.
    Extractive,
    /// An OpenAI-compatible `/v1/chat/completions` server.
    Model,
}

impl Generator {
    /// The provider's configured name (`extractive` or `openai`).
    pub fn as_str(self) -> &'static str {
        match self {
            Generator::Extractive => "extractive",
            Generator::Model => "openai",
        }
    }
}

/// What the bot does when it does not know enough to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnknown {
    /// Send the bot's fallback message, then hand off.
    FallbackMessage,
    /// Answer anyway, flagged low-confidence.
    AiGenerate,
    /// Send nothing, hand off.
    SilentHandoff,
}

/// A bot as it answers: its own settings with the process's defaults
/// already filled in.
#[derive(Debug, Clone)]
pub struct BotProfile {
    /// For logs.
    pub name: String,
    /// The business's instructions.
    pub system_prompt: String,
    /// Below this retrieval confidence the bot does not answer on its own.
    pub min_confidence: f64,
    /// What to do below it.
    pub on_unknown: OnUnknown,
    /// Said before a handoff for lack of knowledge (empty: the general
    /// handoff message).
    pub fallback_message: String,
    /// The bot's own disclosure (empty: none); `None`: [`Options::disclosure`].
    pub disclosure: Option<String>,
    /// Who writes answers.
    pub generator: Generator,
    /// The model's name, for [`Generator::Model`].
    pub model: Option<String>,
    /// Sampling temperature.
    pub temperature: f32,
    /// Longest answer, in tokens.
    pub max_tokens: u32,
}

/// A retrieved passage of the bot's knowledge.
#[derive(Debug, Clone, Default)]
pub struct Passage {
    /// The chunk's id.
    pub chunk_id: String,
    /// Its document (file name, or an FAQ entry's id).
    pub doc_ref: String,
    /// An FAQ entry (its `title` is the question).
    pub faq: bool,
    /// The FAQ question or the document's title.
    pub title: Option<String>,
    /// Section headings, joined with `›`.
    pub heading_path: String,
    /// The text.
    pub body: String,
    /// Search score.
    pub score: f32,
    /// How likely this passage is the one that answers the question, 0–1
    /// (calibrated; see [`decision`](crate::decision)).
    pub probability: f32,
}

impl Passage {
    /// Where the passage comes from, for people: the FAQ question, else the
    /// section headings, else the document.
    pub fn label(&self) -> String {
        match (&self.title, self.heading_path.trim()) {
            (Some(question), _) if self.faq && !question.trim().is_empty() => question.clone(),
            (_, headings) if !headings.is_empty() => headings.to_owned(),
            _ => self.doc_ref.clone(),
        }
    }

    /// What a "did you mean…" option says: the FAQ question, else the
    /// section headings, else the passage's first words (a file name says
    /// nothing to a customer).
    pub fn choice_label(&self) -> String {
        match (&self.title, self.heading_path.trim()) {
            (Some(question), _) if self.faq && !question.trim().is_empty() => question.clone(),
            (_, headings) if !headings.is_empty() => headings
                .rsplit('›')
                .next()
                .map_or(headings, str::trim)
                .to_owned(),
            _ => first_words(&self.body, 12),
        }
    }
}

/// FAQ entries that give the same answer as a better-ranked entry are one
/// candidate (one question asked several ways, as an answered knowledge
/// gap is stored): the later ones are dropped and their probability added
/// to the kept one, at most 1. Offering two choices that lead to one
/// answer would only make the customer pick.
pub fn merge_same_answers(passages: Vec<Passage>) -> Vec<Passage> {
    let mut kept: Vec<Passage> = Vec::with_capacity(passages.len());
    for passage in passages {
        let same = kept
            .iter_mut()
            .find(|k| passage.faq && k.faq && k.body.trim() == passage.body.trim());
        match same {
            Some(same) => same.probability = (same.probability + passage.probability).min(1.0),
            None => kept.push(passage),
        }
    }
    kept
}

/// The first `n` words of `text` (its first sentence if shorter), with an
/// ellipsis when cut.
fn first_words(text: &str, n: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    for w in words.iter().take(n) {
        out.push(*w);
        if out.len() >= 4 && w.ends_with(['.', '?', '!']) {
            return out.join(" ");
        }
    }
    let joined = out.join(" ");
    if words.len() > n {
        format!("{}…", joined.trim_end_matches([',', ';', ':', '.']))
    } else {
        joined
    }
}

/// What retrieval found for a question.
#[derive(Debug, Clone, Default)]
pub struct Retrieval {
    /// Passages, best first.
    pub passages: Vec<Passage>,
    /// Confidence, 0 to 1: the best passage's probability.
    pub confidence: f32,
    /// `hybrid`, `bm25_only`, `none` or `failed`.
    pub retriever: String,
    /// Whether the customer asked, or picked from offered choices.
    pub choice: Choice,
}

/// How the question came: asked, or answered from an offer of choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Choice {
    /// A question: the decision is retrieval's.
    #[default]
    Asked,
    /// The customer picked the first passage from offered choices: answer
    /// from it, whatever its score.
    Picked,
    /// The customer said none of the offered answers fits: hand off (the
    /// passages are the offered ones, for the agent's draft).
    NoneFit,
}

/// The process's answering options (`[answer]`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Opens the first bot reply of a conversation (empty: none).
    pub disclosure: String,
    /// Tells the customer a person will follow.
    pub handoff_message: String,
    /// Longest paragraph sent as one message, in characters.
    pub max_paragraph_chars: usize,
    /// How long triage waits for the model before the rules decide.
    pub triage_timeout: Duration,
    /// Asks which of the offered answers the customer means.
    pub choices_message: String,
    /// The option that hands off when none of the others fits.
    pub none_of_these: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, faq: bool, body: &str, probability: f32) -> Passage {
        Passage {
            chunk_id: id.into(),
            doc_ref: id.into(),
            faq,
            title: Some(format!("question {id}")),
            heading_path: String::new(),
            body: body.into(),
            score: probability,
            probability,
        }
    }

    #[test]
    fn faq_entries_with_one_answer_are_one_candidate() {
        let merged = merge_same_answers(vec![
            entry("a", true, "Yes, on Saturdays.", 0.5),
            entry("b", true, "No.", 0.3),
            entry("c", true, " Yes, on Saturdays. ", 0.45),
            entry("d", false, "Yes, on Saturdays.", 0.2),
            entry("e", true, "Yes, on Saturdays.", 0.4),
        ]);
        let ids: Vec<&str> = merged.iter().map(|p| p.chunk_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d"], "passages are never merged");
        assert!((merged[0].probability - 1.0).abs() < 1e-6, "capped at 1");
        assert!((merged[1].probability - 0.3).abs() < 1e-6);
    }
}
