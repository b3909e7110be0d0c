//! Knowledge uploads: multipart files, each chunked, embedded and indexed
//! like `frontdesk kb ingest` does; progress goes to the workspace's agent
//! sockets as `knowledge.progress` events while it runs. Website crawls,
//! started here and run in the background with the same events. And the
//! question an admin tries on the bot, answered like `frontdesk ask` does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_multipart::Multipart;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::bots::workspace_bot;
use super::{Change, Json, Origin, bad_request, not_found, record, text_field};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorKind};
use crate::events::{self, Event};
use crate::http::AppState;
use crate::kb::{FileError, FileOutcome, Progress};
use store::models::knowledge::Document;
use store::models::user::Role;

/// A document as the API shows it.
pub fn document_json(doc: &Document) -> Value {
    json!({
        "id": doc.id,
        "source": doc.source,
        "doc_ref": doc.doc_ref,
        "format": doc.format,
        "title": doc.title,
        "size_bytes": doc.size_bytes,
        "chunk_count": doc.chunk_count,
        "page_count": doc.page_count,
        "pages_without_text": doc.pages_without_text,
        "status": doc.loss().unwrap_or_else(|| "ok".to_owned()),
        "created_at": doc.created_at,
        "updated_at": doc.updated_at,
    })
}

/// Progress, sent to a task that publishes it (the trait is synchronous).
struct Publish {
    tx: mpsc::UnboundedSender<Value>,
    embedded: Mutex<(usize, Instant)>,
}

impl Progress for Publish {
    fn file_started(&self, source: &str) {
        let _ = self
            .tx
            .send(json!({ "source": source, "stage": "reading" }));
    }
    fn chunked(&self, source: &str, chunks: usize, to_embed: usize) {
        let _ = self.tx.send(json!({
            "source": source, "stage": "embedding", "chunks": chunks, "to_embed": to_embed,
        }));
    }
    fn embedded(&self, n: usize) {
        let mut state = self.embedded.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += n;
        // At most twice a second.
        if state.1.elapsed() >= Duration::from_millis(500) {
            state.1 = Instant::now();
            let _ = self
                .tx
                .send(json!({ "stage": "embedding", "embedded": state.0 }));
        }
    }
    fn skipped(&self, path: &std::path::Path, reason: &str) {
        let _ = self.tx.send(json!({
            "source": path.display().to_string(), "stage": "skipped", "reason": reason,
        }));
    }
    fn file_done(&self, source: &str, result: &Result<FileOutcome, FileError>) {
        let _ = self.tx.send(match result {
            Ok(outcome) => {
                json!({ "source": source, "stage": "done", "outcome": outcome_json(outcome) })
            }
            Err(e) => json!({ "source": source, "stage": "failed", "error": e.to_string() }),
        });
    }
}

fn outcome_json(outcome: &FileOutcome) -> Value {
    match outcome {
        FileOutcome::Ingested {
            chunks,
            embedded,
            reused,
            pages,
        } => {
            json!({
                "status": "ingested", "chunks": chunks, "embedded": embedded, "reused": reused,
                "loss": pages.and_then(|p| p.loss()),
            })
        }
        FileOutcome::Unchanged => json!({ "status": "unchanged" }),
    }
}

/// A file name safe to store as a document's source: its last path
/// component, without control characters.
fn clean_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next()?.trim();
    let name: String = last.chars().filter(|c| !c.is_control()).collect();
    (!name.is_empty() && name != "." && name != ".." && name.len() <= 200).then_some(name)
}

/// `POST /bots/{id}/documents`.
pub(super) async fn upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    mut form: Multipart,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let bot = workspace_bot(&state, &who, &id).await?;
    let limit = state.app.settings.server.max_body_bytes;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut total = 0usize;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| bad_request(format!("malformed multipart body: {e}")))?;
        let Some(name) = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .and_then(clean_name)
        else {
            return Err(bad_request(
                "every part needs a file name (Content-Disposition: form-data; name=\"file\"; filename=\"…\")",
            ));
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| bad_request(format!("cannot read {name}: {e}")))?;
            total += chunk.len();
            if total > limit {
                return Err(ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("uploads are limited to {limit} bytes per request"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        files.push((name, bytes));
    }
    if files.is_empty() {
        return Err(bad_request("no file in the upload"));
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let publisher = {
        let app = state.app.clone();
        let workspace = who.workspace_id.clone();
        let bot_id = bot.id.clone();
        tokio::spawn(async move {
            while let Some(progress) = rx.recv().await {
                events::publish(
                    &app,
                    &workspace,
                    &Event::KnowledgeProgress {
                        bot_id: &bot_id,
                        progress: &progress,
                    },
                )
                .await;
            }
        })
    };
    let progress = Publish {
        tx,
        embedded: Mutex::new((0, Instant::now())),
    };
    let mut results = Vec::new();
    let mut ingested = 0;
    for (name, bytes) in files {
        let size = bytes.len();
        let result = state
            .app
            .knowledge
            .ingest_bytes(&state.app.db, &bot, &name, &name, bytes, &progress)
            .await;
        match &result {
            Ok(outcome) => {
                ingested += usize::from(matches!(outcome, FileOutcome::Ingested { .. }));
                results.push(
                    json!({ "source": name, "size_bytes": size, "result": outcome_json(outcome) }),
                );
            }
            Err(e) => {
                results.push(json!({ "source": name, "size_bytes": size, "error": e.to_string() }))
            }
        }
    }
    drop(progress);
    let _ = publisher.await;
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "knowledge.upload",
            target_kind: "bot",
            target_id: Some(&bot.id),
            before: None,
            after: Some(json!({ "files": results })),
        },
    )
    .await;
    let failed = results.iter().filter(|r| r.get("error").is_some()).count();
    let status = if failed == results.len() {
        actix_web::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        actix_web::http::StatusCode::CREATED
    };
    Ok(HttpResponse::build(status).json(json!({
        "ingested": ingested,
        "failed": failed,
        "files": results,
    })))
}

/// `DELETE /bots/{id}/documents/{document_id}`.
pub(super) async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let (bot_id, document_id) = path.into_inner();
    let bot = workspace_bot(&state, &who, &bot_id).await?;
    let mut conn = state.app.db.get().await?;
    let doc = Document::list(&mut conn, &bot.id)
        .await?
        .into_iter()
        .find(|d| d.id == document_id)
        .ok_or_else(|| not_found("document"))?;
    drop(conn);
    state
        .app
        .knowledge
        .delete(&state.app.db, &bot, &doc.source)
        .await
        .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
    // A knowledge gap's answer deleted: the gap is open again.
    let mut conn = state.app.db.get().await?;
    store::models::gap::Gap::reopen_answered_by(&mut conn, &doc.id).await?;
    drop(conn);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "knowledge.delete",
            target_kind: "document",
            target_id: Some(&doc.id),
            before: Some(document_json(&doc)),
            after: None,
        },
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Most pages one API crawl may fetch.
const MAX_CRAWL_PAGES: usize = 10_000;

/// The body of `POST /bots/{id}/knowledge/urls`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CrawlRequest {
    url: String,
    max_pages: Option<usize>,
}

/// `POST /bots/{id}/knowledge/urls`: starts crawling a website into the
/// bot's knowledge and answers 202; `knowledge.progress` events follow,
/// the last one with `"stage": "finished"` and the totals.
pub(super) async fn crawl(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    body: Json<CrawlRequest>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let bot = workspace_bot(&state, &who, &id).await?;
    let body = body.into_inner();
    let url = reqwest::Url::parse(body.url.trim())
        .map_err(|e| bad_request(format!("url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(bad_request("url must be an http:// or https:// URL"));
    }
    let max_pages = body.max_pages.unwrap_or(200);
    if !(1..=MAX_CRAWL_PAGES).contains(&max_pages) {
        return Err(bad_request(format!(
            "max_pages must be between 1 and {MAX_CRAWL_PAGES}"
        )));
    }
    let public_only = !state.app.settings.knowledge.allow_private_urls;
    if public_only {
        crate::kb::check_public(&url)
            .await
            .map_err(|why| ApiError::new(ErrorKind::Forbidden, format!("url refused: {why}")))?;
    }
    let options = crate::kb::CrawlOptions {
        max_pages,
        public_only,
        ..crate::kb::CrawlOptions::default()
    };
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "knowledge.crawl",
            target_kind: "bot",
            target_id: Some(&bot.id),
            before: None,
            after: Some(json!({ "url": url.as_str(), "max_pages": max_pages })),
        },
    )
    .await;
    let app = state.app.clone();
    let workspace = who.workspace_id.clone();
    let start = url.to_string();
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        let publisher = {
            let app = app.clone();
            let bot_id = bot.id.clone();
            tokio::spawn(async move {
                while let Some(progress) = rx.recv().await {
                    events::publish(
                        &app,
                        &workspace,
                        &Event::KnowledgeProgress {
                            bot_id: &bot_id,
                            progress: &progress,
                        },
                    )
                    .await;
                }
            })
        };
        let progress = Publish {
            tx: tx.clone(),
            embedded: Mutex::new((0, Instant::now())),
        };
        let result = app
            .knowledge
            .ingest_urls(
                &app.db,
                &bot,
                std::slice::from_ref(&start),
                options,
                &progress,
            )
            .await;
        let last = match result {
            Ok(r) => json!({
                "url": start, "stage": "finished", "ingested": r.ingested,
                "unchanged": r.unchanged, "failed": r.failed.len(), "skipped": r.skipped,
                "removed": r.removed, "chunks": r.chunks,
            }),
            Err(e) => {
                tracing::error!(url = %start, error = %e, "website crawl failed");
                json!({ "url": start, "stage": "failed", "error": e.to_string() })
            }
        };
        let _ = tx.send(last);
        drop(progress);
        drop(tx);
        let _ = publisher.await;
    });
    Ok(HttpResponse::Accepted().json(json!({
        "url": url.as_str(),
        "max_pages": max_pages,
        "status": "started",
    })))
}

/// The longest question the console may try.
const MAX_TRIAL_QUESTION_CHARS: usize = 2000;

/// The body of `POST /bots/{id}/ask`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrialQuestion {
    question: String,
}

/// `POST /bots/{id}/ask`: the bot's real pipeline on one question, as
/// `frontdesk ask --json` prints it. No customer, no conversation: nothing
/// is sent and nothing is stored.
pub(super) async fn ask(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
    body: Json<TrialQuestion>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let bot = workspace_bot(&state, &who, &id).await?;
    let question = text_field("question", &body.question, MAX_TRIAL_QUESTION_CHARS)?;
    let rehearsal = crate::rehearsal::rehearse(&state.answerer, &bot, &question, |_| {}).await;
    Ok(HttpResponse::Ok().json(rehearsal.report()))
}
