//! Knowledge gaps for admins: what customers asked that the bot could not
//! answer, grouped by similarity ([`crate::gaps`]), and answering one,
//! which adds an FAQ document to the bot's knowledge.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::bots::workspace_bot;
use super::knowledge::document_json;
use super::{Change, Json, Origin, Page, Route, bad_request, not_found, record, text_field};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorKind};
use crate::http::AppState;
use store::models::gap::{Gap, GapStatus};
use store::models::knowledge::Document;
use store::models::user::Role;

/// Longest answer, in characters: an FAQ answer, not a manual.
pub const MAX_ANSWER_CHARS: usize = 4000;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/knowledge/gaps",
        role: Some(Role::Admin),
        summary: "Questions handed off because the bot did not know, grouped by similarity, the most asked first",
        body: &[],
        query: &[
            ("bot_id", "string"),
            ("status", "open | answered | all (default open)"),
            ("limit", "1-200 (default 50)"),
        ],
        ok: 200,
        mount: |r| r.to(list),
    },
    Route {
        method: "POST",
        path: "/knowledge/gaps/{id}/answer",
        role: Some(Role::Admin),
        summary: "Answer a gap: its questions and the answer become an FAQ document of the bot, searchable when this returns",
        body: &[("answer", "string", true)],
        query: &[],
        ok: 201,
        mount: |r| r.to(answer),
    },
];

/// A gap as the API shows it.
fn gap_json(gap: &Gap) -> Value {
    json!({
        "id": gap.id,
        "bot_id": gap.bot_id,
        "question": gap.question,
        "count": gap.count,
        "examples": gap.examples(),
        "first_seen": gap.first_seen,
        "last_seen": gap.last_seen,
        "answered_at": gap.answered_at,
        "document_id": gap.document_id,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    bot_id: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

async fn list(
    state: web::Data<AppState>,
    who: Principal,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let status = match query.status.as_deref().map(str::trim) {
        None | Some("open") => GapStatus::Open,
        Some("answered") => GapStatus::Answered,
        Some("all") => GapStatus::All,
        Some(other) => {
            return Err(bad_request(format!(
                "status must be open, answered or all, not `{other}`"
            )));
        }
    };
    let limit = Page {
        limit: query.limit,
        cursor: None,
    }
    .limit()?;
    if let Some(bot_id) = &query.bot_id {
        workspace_bot(&state, &who, bot_id).await?;
    }
    let mut conn = state.app.db.get().await?;
    let gaps = Gap::list(
        &mut conn,
        &who.workspace_id,
        query.bot_id.as_deref(),
        status,
        limit,
    )
    .await?;
    let items: Vec<Value> = gaps.iter().map(gap_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

#[derive(Deserialize)]
struct AnswerBody {
    answer: String,
}

/// The FAQ file of an answered gap: one entry per distinct question of the
/// group, all with the answer, so that each phrasing finds it.
fn faq_file(gap: &Gap, answer: &str) -> Vec<u8> {
    let mut questions = vec![gap.question.clone()];
    for example in gap.examples() {
        if !questions.contains(&example) {
            questions.push(example);
        }
    }
    let mut file = String::new();
    for question in questions {
        let entry =
            json!({ "id": format!("gap-{}", gap.id), "question": question, "answer": answer });
        file.push_str(&entry.to_string());
        file.push('\n');
    }
    file.into_bytes()
}

async fn answer(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    body: Json<AnswerBody>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let answer = text_field("answer", &body.answer, MAX_ANSWER_CHARS)?;
    let gap = {
        let mut conn = state.app.db.get().await?;
        Gap::find(&mut conn, &who.workspace_id, &id)
            .await?
            .ok_or_else(|| not_found("knowledge gap"))?
    };
    let bot = workspace_bot(&state, &who, &gap.bot_id).await?;
    // The same source every time: answering again replaces the entry.
    let source = format!("gap-answers/{}.jsonl", gap.id);
    let name = format!("gap-{}.jsonl", gap.id);
    state
        .app
        .knowledge
        .ingest_bytes(
            &state.app.db,
            &bot,
            &source,
            &name,
            faq_file(&gap, &answer),
            &crate::kb::Quiet,
        )
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorKind::Unavailable,
                format!("the answer was not stored: {e}"),
            )
        })?;
    let mut conn = state.app.db.get().await?;
    let document = Document::find(&mut conn, &bot.id, &source)
        .await?
        .ok_or_else(|| ApiError::new(ErrorKind::Internal, "the answer's document vanished"))?;
    Gap::mark_answered(&mut conn, &gap.id, who.user_id(), &document.id).await?;
    let gap = Gap::find(&mut conn, &who.workspace_id, &gap.id)
        .await?
        .ok_or_else(|| not_found("knowledge gap"))?;
    drop(conn);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "knowledge_gap.answer",
            target_kind: "knowledge_gap",
            target_id: Some(&gap.id),
            before: None,
            after: Some(json!({ "answer": answer, "document_id": document.id })),
        },
    )
    .await;
    Ok(HttpResponse::Created().json(json!({
        "gap": gap_json(&gap),
        "document": document_json(&document),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phrasing_of_a_gap_gets_an_entry_with_the_answer() {
        let at = chrono::NaiveDateTime::default();
        let gap = Gap {
            id: "g1".into(),
            workspace_id: "w".into(),
            bot_id: "b".into(),
            question: "Do you ship to Canada?".into(),
            model: "m".into(),
            vector: Vec::new(),
            examples: r#"["Do you ship to Canada?","Can I get it delivered in \"Canada\"?"]"#
                .into(),
            count: 3,
            first_seen: at,
            last_seen: at,
            answered_at: None,
            answered_by: None,
            document_id: None,
        };
        let file = String::from_utf8(faq_file(&gap, "Yes, in 5 days.")).expect("utf-8");
        let lines: Vec<Value> = file
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1]["question"],
            "Can I get it delivered in \"Canada\"?"
        );
        assert!(lines.iter().all(|l| l["answer"] == "Yes, in 5 days."));
    }
}
