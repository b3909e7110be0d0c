//! A question put to a bot's real answer pipeline with no customer on the
//! other end: `frontdesk ask` in the terminal and `POST /bots/{id}/ask` in
//! the console both run [`rehearse`]. Nothing is sent to any channel and
//! nothing is stored as a conversation; the paragraphs the customer would
//! have received are collected instead.

use serde_json::{Value, json};
use store::models::bot::Bot;
use tokio::sync::mpsc;

use crate::answerer::{Answer, Answerer, Question};
use crate::turn::{Replies, Reply};

/// What the bot would have done with a question.
#[derive(Debug, Clone)]
pub struct Rehearsal {
    /// The pipeline's answer: sources, confidence, handoff, choices.
    pub answer: Answer,
    /// The paragraphs the customer would have received, in order.
    pub paragraphs: Vec<String>,
}

/// Runs `question` through `bot`'s pipeline as a first message with no
/// history; `on_paragraph` sees each paragraph as it streams.
pub async fn rehearse(
    answerer: &Answerer,
    bot: &Bot,
    question: &str,
    mut on_paragraph: impl FnMut(&str),
) -> Rehearsal {
    let (tx, mut rx) = mpsc::channel::<Reply>(16);
    let collect = async move {
        let mut paragraphs = Vec::new();
        while let Some(reply) = rx.recv().await {
            on_paragraph(&reply.text);
            paragraphs.push(reply.text);
        }
        paragraphs
    };
    let ask = async {
        // `out` is moved in: the channel closes when answering ends.
        let out = Replies(tx);
        answerer
            .answer(
                Question {
                    bot,
                    text: question.to_owned(),
                    history: Vec::new(),
                    first_reply: false,
                },
                &out,
            )
            .await
    };
    let (answer, paragraphs) = tokio::join!(ask, collect);
    Rehearsal { answer, paragraphs }
}

impl Rehearsal {
    /// `answered`, `answered_low_confidence` (on_unknown = ai_generate),
    /// `offered_choices` ("did you mean…") or `handoff`.
    pub fn decision(&self) -> &'static str {
        let a = &self.answer;
        match (&a.handoff, a.low_confidence, &a.offer) {
            (Some(_), _, _) => "handoff",
            (None, _, Some(_)) => "offered_choices",
            (None, true, None) => "answered_low_confidence",
            (None, false, None) => "answered",
        }
    }

    /// The report as JSON: `answer` (the paragraphs joined by blank lines),
    /// `paragraphs`, `decision`, `confidence`, `sources`, `handoff`
    /// (`{reason, detail, triage}` or null), `choices` (labels or null),
    /// `draft`, `provider`, `retriever`, `first_paragraph_ms`.
    pub fn report(&self) -> Value {
        let a = &self.answer;
        json!({
            "question": a.question,
            "answer": self.paragraphs.join("\n\n"),
            "paragraphs": self.paragraphs,
            "provider": a.provider,
            "retriever": a.retriever,
            "confidence": a.confidence,
            "decision": self.decision(),
            "handoff": a.handoff.as_ref().map(|h| json!({
                "reason": h.reason,
                "detail": h.detail,
                "triage": h.triage,
            })),
            "draft": a.draft,
            "choices": a.offer.as_ref().map(|o| o.options.iter().map(|c| c.label.clone()).collect::<Vec<_>>()),
            "sources": a.sources,
            "first_paragraph_ms": a.first_paragraph.map(|d| d.as_millis() as u64),
        })
    }
}
