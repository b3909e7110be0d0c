//! What the bot learns from its handoffs. Each handoff's question is
//! embedded once, when it is handed off:
//! - questions handed off because the bot did not know (low confidence, or
//!   the model said the knowledge has nothing) are grouped by similarity
//!   into knowledge gaps, which the business answers with an FAQ entry;
//! - an escalation shows the earlier resolved conversations of the same bot
//!   whose question is close, with the reply an agent gave.
//!
//! Explicit requests for a person are not gaps: the bot may well know.

use std::sync::Arc;

use answer::handoff::Reason;
use knowledge::embed::{Embedder, dot};
use knowledge::models::EmbeddingModel;
use serde::Serialize;
use store::db::DbError;
use store::models::bot::Bot;
use store::models::gap::{Gap, HandoffVector, agent_reply_after};
use store::models::handoff::Handoff;

use crate::context::App;

/// Open gaps a new question is compared with (the most recent ones).
const GAPS_COMPARED: i64 = 1000;
/// Resolved cases a handoff is compared with (the most recent ones).
const CASES_COMPARED: i64 = 2000;
/// Similar cases shown with an escalation.
pub const MAX_SIMILAR: usize = 3;

/// Gap grouping is a read-then-write: one at a time in this process, so
/// two handoffs of the same question at once make one gap.
static GROUPING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether a handoff for `reason` is a knowledge gap.
pub fn is_gap(reason: &str) -> bool {
    Reason::parse(reason)
        .is_some_and(|r| matches!(r, Reason::LowConfidence | Reason::NoInformation))
}

/// Embeds and remembers `handoff`'s question, and counts it in a
/// knowledge gap when it is one. Best effort: a failure is logged, the
/// handoff stands.
pub async fn remember(app: &App, bot_id: &str, handoff: &Handoff) {
    if handoff.question.trim().is_empty() {
        return;
    }
    if let Err(error) = try_remember(app, bot_id, handoff).await {
        tracing::warn!(handoff = %handoff.id, %error, "handoff question not remembered");
    }
}

/// Gaps of questions remembered without a vector (no embedding model was
/// installed) carry this model name and group by their words alone.
const WORDS_ONLY: &str = "";

async fn try_remember(app: &App, bot_id: &str, handoff: &Handoff) -> anyhow::Result<()> {
    let question = handoff.question.trim();
    let embedded = match embedder_of(app, bot_id).await? {
        Some((model, embedder)) => Some((model, embed(embedder, question).await?)),
        None => None,
    };
    let mut conn = app.db.get().await?;
    if let Some((model, vector)) = &embedded {
        HandoffVector::insert(&mut conn, &handoff.id, bot_id, model.id, vector).await?;
    }
    if !is_gap(&handoff.reason) {
        return Ok(());
    }
    let _one_at_a_time = GROUPING.lock().await;
    let (model_id, vector) = match &embedded {
        Some((model, vector)) => (model.id, Some((vector.as_slice(), model.same_question))),
        None => (WORDS_ONLY, None),
    };
    let open = Gap::open_of_bot(&mut conn, bot_id, model_id, GAPS_COMPARED).await?;
    match closest_gap(&open, question, vector) {
        Some(gap) => gap.add(&mut conn, question).await?,
        None => {
            let vector = vector.map(|(v, _)| v).unwrap_or_default();
            Gap::open(
                &mut conn,
                &handoff.workspace_id,
                bot_id,
                question,
                model_id,
                vector,
            )
            .await?;
        }
    }
    Ok(())
}

/// The open gap `question` belongs to: with a vector, the closest one at
/// or above the model's bar; without, one that was asked in the same
/// words (case, spacing and end punctuation aside).
fn closest_gap<'a>(
    open: &'a [Gap],
    question: &str,
    vector: Option<(&[f32], f32)>,
) -> Option<&'a Gap> {
    match vector {
        Some((vector, bar)) => open
            .iter()
            .filter_map(|gap| Some((gap, dot(&gap.vector()?, vector))))
            .filter(|(_, score)| *score >= bar)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(gap, _)| gap),
        None => {
            let words = same_words(question);
            open.iter()
                .find(|gap| gap.examples().iter().any(|e| same_words(e) == words))
        }
    }
}

/// `text` lowercased, its words single-spaced, end punctuation dropped.
fn same_words(text: &str) -> String {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    words
        .join(" ")
        .trim_end_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
        .to_owned()
}

/// The embedding model and embedder of `bot_id`, `None` when it has no
/// working embedder (search is then full-text only, and so is this).
async fn embedder_of(
    app: &App,
    bot_id: &str,
) -> Result<Option<(&'static EmbeddingModel, Arc<Embedder>)>, DbError> {
    let bot = {
        let mut conn = app.db.get().await?;
        Bot::find_by_id(&mut conn, bot_id).await?
    };
    let Some(bot) = bot else { return Ok(None) };
    let model = app.knowledge.model_for(&bot);
    Ok(app.knowledge.embedder(model).await.ok().map(|e| (model, e)))
}

async fn embed(embedder: Arc<Embedder>, text: &str) -> anyhow::Result<Vec<f32>> {
    let text = text.to_owned();
    Ok(tokio::task::spawn_blocking(move || embedder.embed_query(&text)).await??)
}

/// An earlier resolved conversation whose question is close.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Similar {
    /// The conversation.
    pub conversation_id: String,
    /// Its customer's question.
    pub question: String,
    /// The first reply an agent gave after its handoff.
    pub reply: String,
    /// Cosine similarity of the two questions.
    pub score: f32,
}

/// Up to [`MAX_SIMILAR`] earlier resolved conversations of `bot_id` whose
/// handoff question is close to `handoff`'s and that an agent answered,
/// closest first.
pub async fn similar(app: &App, bot_id: &str, handoff: &Handoff) -> Result<Vec<Similar>, DbError> {
    let mut conn = app.db.get().await?;
    let Some((model_id, vector)) = HandoffVector::of(&mut conn, &handoff.id).await? else {
        return Ok(Vec::new());
    };
    let Some(model) = knowledge::models::embedding_model(&model_id) else {
        return Ok(Vec::new());
    };
    let cases = HandoffVector::resolved_cases(
        &mut conn,
        bot_id,
        &model_id,
        &handoff.conversation_id,
        CASES_COMPARED,
    )
    .await?;
    let mut scored: Vec<(f32, _)> = cases
        .into_iter()
        .filter(|c| c.handed_off_at <= handoff.created_at)
        .map(|c| (dot(&c.vector, &vector), c))
        .filter(|(score, _)| *score >= model.similar_case)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut found: Vec<Similar> = Vec::new();
    for (score, case) in scored {
        if found.len() == MAX_SIMILAR {
            break;
        }
        if found
            .iter()
            .any(|f| f.conversation_id == case.conversation_id)
        {
            continue;
        }
        let Some(reply) =
            agent_reply_after(&mut conn, &case.conversation_id, case.handed_off_at).await?
        else {
            continue;
        };
        found.push(Similar {
            conversation_id: case.conversation_id,
            question: case.question,
            reply,
            score,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(question: &str, vector: &[f32]) -> Gap {
        let at = chrono::NaiveDateTime::default();
        Gap {
            id: question.into(),
            workspace_id: "w".into(),
            bot_id: "b".into(),
            question: question.into(),
            model: "m".into(),
            vector: store::models::knowledge::pack_vectors(&[vector.to_vec()]),
            examples: serde_json::json!([question]).to_string(),
            count: 1,
            first_seen: at,
            last_seen: at,
            answered_at: None,
            answered_by: None,
            document_id: None,
        }
    }

    #[test]
    fn a_question_joins_the_closest_gap_over_the_bar_or_its_own_words() {
        let open = [
            gap("Do you ship to Canada?", &[1.0, 0.0]),
            gap("Can I pay by invoice?", &[0.6, 0.8]),
        ];
        let joined =
            |v: &[f32]| closest_gap(&open, "q", Some((v, 0.8))).map(|g| g.question.as_str());
        assert_eq!(joined(&[0.95, 0.31]), Some("Do you ship to Canada?"));
        assert_eq!(joined(&[0.6, 0.8]), Some("Can I pay by invoice?"));
        assert_eq!(
            joined(&[0.0, -1.0]),
            None,
            "nothing close: a gap of its own"
        );
        // Without vectors, only the same words meet.
        assert_eq!(
            closest_gap(&open, "  do you SHIP to canada ", None).map(|g| g.id.as_str()),
            Some("Do you ship to Canada?")
        );
        assert!(closest_gap(&open, "Do you ship to Mexico?", None).is_none());
        assert!(is_gap("low_confidence") && is_gap("no_information"));
        assert!(!is_gap("customer_asked") && !is_gap("requested"));
    }
}
