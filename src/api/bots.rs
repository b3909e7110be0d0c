//! Bots and their knowledge documents (their channel accounts are in
//! [`super::channels`]). Agents may read bots; admins configure them. Bots declared by a bot file are changed in the
//! file (the API answers 409 for them), so the file stays the truth.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Change, Json, Origin, Route, bad_request, conflict, not_found, record, text_field};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::AppState;
use store::models::bot::{
    Bot, BotLlm, BotSpec, HandoffPolicy, KnowledgePaths, Upserted, WidgetOrigins,
};
use store::models::knowledge::Document;
use store::models::user::Role;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/bots",
        role: Some(Role::Agent),
        summary: "The workspace's bots",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(list_bots),
    },
    Route {
        method: "POST",
        path: "/bots",
        role: Some(Role::Admin),
        summary: "Create a bot",
        body: BOT_FIELDS,
        query: &[],
        ok: 201,
        mount: |r| r.to(create_bot),
    },
    Route {
        method: "GET",
        path: "/bots/{id}",
        role: Some(Role::Agent),
        summary: "A bot",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(get_bot),
    },
    Route {
        method: "PATCH",
        path: "/bots/{id}",
        role: Some(Role::Admin),
        summary: "Change a bot: prompt, language, handoff policy, model settings",
        body: BOT_FIELDS,
        query: &[],
        ok: 200,
        mount: |r| r.to(update_bot),
    },
    Route {
        method: "GET",
        path: "/bots/{id}/documents",
        role: Some(Role::Admin),
        summary: "The bot's knowledge documents",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(list_documents),
    },
    Route {
        method: "POST",
        path: "/bots/{id}/documents",
        role: Some(Role::Admin),
        summary: "Upload documents (multipart/form-data, one file per part); each is chunked, embedded and indexed",
        body: &[("file", "binary", true)],
        query: &[],
        ok: 201,
        mount: |r| r.to(super::knowledge::upload),
    },
    Route {
        method: "POST",
        path: "/bots/{id}/knowledge/urls",
        role: Some(Role::Admin),
        summary: "Crawl a website into the bot's knowledge (a sitemap, or a page and its site's pages it links to); answers at once, progress comes as knowledge.progress events. Loopback, link-local and private addresses are refused unless knowledge.allow_private_urls",
        body: &[
            ("url", "string (http or https)", true),
            ("max_pages", "integer (1-10000, default 200)", false),
        ],
        query: &[],
        ok: 202,
        mount: |r| r.to(super::knowledge::crawl),
    },
    Route {
        method: "POST",
        path: "/bots/{id}/ask",
        role: Some(Role::Admin),
        summary: "Try a question on the bot's real pipeline: the answer, sources with scores, confidence and decision; nothing is sent or stored",
        body: &[("question", "string (1-2000 characters)", true)],
        query: &[],
        ok: 200,
        mount: |r| r.to(super::knowledge::ask),
    },
    Route {
        method: "DELETE",
        path: "/bots/{id}/documents/{document_id}",
        role: Some(Role::Admin),
        summary: "Remove a document from the bot's knowledge",
        body: &[],
        query: &[],
        ok: 204,
        mount: |r| r.to(super::knowledge::delete),
    },
];

const BOT_FIELDS: &[(&str, &str, bool)] = &[
    ("name", "string", true),
    ("system_prompt", "string", false),
    ("language", "string", false),
    (
        "handoff",
        "object {min_confidence, on_unknown, fallback_message}",
        false,
    ),
    (
        "llm",
        "object {provider, model, temperature, max_tokens}",
        false,
    ),
    ("widget_origins", "array of origins", false),
    (
        "disclosure",
        "string (empty: none) or null (the server's answer.disclosure)",
        false,
    ),
];

/// A bot as the API shows it.
pub fn bot_json(bot: &Bot) -> Value {
    json!({
        "id": bot.id,
        "name": bot.name,
        "system_prompt": bot.system_prompt,
        "language": bot.language.code(),
        "handoff": {
            "min_confidence": bot.min_confidence,
            "on_unknown": bot.handoff_policy,
            "fallback_message": bot.fallback_message,
        },
        "disclosure": bot.disclosure,
        "llm": bot.llm_settings,
        "widget_origins": bot.widget_origins,
        "managed_by_file": bot.source_file,
        "created_at": bot.created_at,
        "updated_at": bot.updated_at,
    })
}

/// The bot `id` of the caller's workspace; 404 for any other.
pub async fn workspace_bot(state: &AppState, who: &Principal, id: &str) -> Result<Bot, ApiError> {
    let mut conn = state.app.db.get().await?;
    Bot::find_by_id(&mut conn, id)
        .await?
        .filter(|b| b.workspace_id == who.workspace_id)
        .ok_or_else(|| not_found("bot"))
}

async fn list_bots(state: web::Data<AppState>, who: Principal) -> Result<HttpResponse, ApiError> {
    who.require(Role::Agent)?;
    let mut conn = state.app.db.get().await?;
    let items: Vec<Value> = Bot::in_workspace(&mut conn, &who.workspace_id)
        .await?
        .iter()
        .map(bot_json)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": null })))
}

async fn get_bot(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Agent)?;
    let bot = workspace_bot(&state, &who, &id).await?;
    Ok(HttpResponse::Ok().json(bot_json(&bot)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HandoffFields {
    min_confidence: Option<f64>,
    on_unknown: Option<HandoffPolicy>,
    fallback_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BotFields {
    name: Option<String>,
    system_prompt: Option<String>,
    language: Option<String>,
    handoff: Option<HandoffFields>,
    llm: Option<BotLlm>,
    widget_origins: Option<Vec<String>>,
    /// Absent: unchanged; `null`: the server's; text: the bot's own.
    #[serde(default, deserialize_with = "present")]
    disclosure: Option<Option<String>>,
}

/// A field that is present, `null` included (`Some(None)`), told apart
/// from an absent one (`None`, by `#[serde(default)]`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// `base` with the fields the client sent.
fn merged(base: BotSpec, fields: BotFields) -> Result<BotSpec, ApiError> {
    let mut spec = base;
    if let Some(name) = fields.name {
        let name = text_field("name", &name, 64)?;
        if name.contains('/') {
            return Err(bad_request("name must not contain `/`"));
        }
        spec.name = name;
    }
    if let Some(prompt) = fields.system_prompt {
        if prompt.chars().count() > 20_000 {
            return Err(bad_request(
                "system_prompt must be at most 20000 characters",
            ));
        }
        spec.system_prompt = prompt;
    }
    if let Some(language) = fields.language {
        spec.language = language
            .parse()
            .map_err(|e: knowledge::UnsupportedLanguage| bad_request(e.to_string()))?;
    }
    if let Some(handoff) = fields.handoff {
        if let Some(min) = handoff.min_confidence {
            if !(0.0..=1.0).contains(&min) {
                return Err(bad_request(format!(
                    "handoff.min_confidence must be between 0 and 1, not {min}"
                )));
            }
            spec.min_confidence = min;
        }
        if let Some(policy) = handoff.on_unknown {
            spec.handoff_policy = policy;
        }
        if let Some(message) = handoff.fallback_message {
            if message.chars().count() > 2000 {
                return Err(bad_request(
                    "handoff.fallback_message must be at most 2000 characters",
                ));
            }
            spec.fallback_message = message;
        }
    }
    if let Some(llm) = fields.llm {
        if llm.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(bad_request("llm.temperature must be between 0 and 2"));
        }
        spec.llm_settings = llm;
    }
    if let Some(origins) = fields.widget_origins {
        if origins.len() > 50 {
            return Err(bad_request("widget_origins holds at most 50 origins"));
        }
        if let Some(problem) = origins.iter().find_map(|o| WidgetOrigins::problem(o)) {
            return Err(bad_request(format!("widget_origins: {problem}")));
        }
        spec.widget_origins = WidgetOrigins(origins);
    }
    if let Some(disclosure) = fields.disclosure {
        if disclosure
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1000)
        {
            return Err(bad_request("disclosure must be at most 1000 characters"));
        }
        spec.disclosure = disclosure.map(|d| d.trim().to_owned());
    }
    Ok(spec)
}

/// Tells every node's answerers that the bot changed.
async fn announce(state: &AppState, bot_id: &str) {
    use broker::Broker;
    if let Err(error) = state
        .app
        .broker
        .publish(crate::context::BOT_CHANGES_TOPIC, bot_id)
        .await
    {
        tracing::warn!(%error, "bot change not announced; caches expire within 30 s");
    }
}

async fn create_bot(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    body: Json<BotFields>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let body = body.into_inner();
    if body.name.is_none() {
        return Err(bad_request("name is required"));
    }
    let base = BotSpec {
        workspace_id: who.workspace_id.clone(),
        name: String::new(),
        system_prompt: String::new(),
        language: knowledge::Language::English,
        llm_settings: BotLlm::default(),
        handoff_policy: HandoffPolicy::FallbackMessage,
        min_confidence: 0.35,
        fallback_message: "Let me get a colleague to help you with that.".into(),
        disclosure: None,
        knowledge_paths: KnowledgePaths::default(),
        source_file: None,
        widget_origins: WidgetOrigins::default(),
    };
    let spec = merged(base, body)?;
    let mut conn = state.app.db.get().await?;
    if Bot::find(&mut conn, &who.workspace_id, &spec.name)
        .await?
        .is_some()
    {
        return Err(conflict(format!(
            "a bot named `{}` exists already",
            spec.name
        )));
    }
    let bot = Bot::upsert(&mut conn, &spec).await?.row().clone();
    drop(conn);
    let after = bot_json(&bot);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "bot.create",
            target_kind: "bot",
            target_id: Some(&bot.id),
            before: None,
            after: Some(after.clone()),
        },
    )
    .await;
    Ok(HttpResponse::Created().json(after))
}

async fn update_bot(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    body: Json<BotFields>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let bot = workspace_bot(&state, &who, &id).await?;
    if let Some(file) = &bot.source_file {
        return Err(conflict(format!(
            "this bot is declared in {file}: change it there (the file is applied at start-up)"
        )));
    }
    let body = body.into_inner();
    if body.name.as_deref().is_some_and(|n| n.trim() != bot.name) {
        return Err(bad_request("a bot cannot be renamed"));
    }
    let base = BotSpec {
        workspace_id: bot.workspace_id.clone(),
        name: bot.name.clone(),
        system_prompt: bot.system_prompt.clone(),
        language: bot.language,
        llm_settings: bot.llm_settings.clone(),
        handoff_policy: bot.handoff_policy,
        min_confidence: bot.min_confidence,
        fallback_message: bot.fallback_message.clone(),
        disclosure: bot.disclosure.clone(),
        knowledge_paths: bot.knowledge_paths.clone(),
        source_file: None,
        widget_origins: bot.widget_origins.clone(),
    };
    let spec = merged(base, body)?;
    let mut conn = state.app.db.get().await?;
    let upserted = Bot::upsert(&mut conn, &spec).await?;
    drop(conn);
    let after = bot_json(upserted.row());
    if let Upserted::Updated { before, .. } = &upserted {
        announce(&state, &bot.id).await;
        record(
            &state,
            &who,
            &Origin::of(&req),
            Change {
                action: "bot.update",
                target_kind: "bot",
                target_id: Some(&bot.id),
                before: Some(bot_json(before)),
                after: Some(after.clone()),
            },
        )
        .await;
    }
    Ok(HttpResponse::Ok().json(after))
}

async fn list_documents(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let bot = workspace_bot(&state, &who, &id).await?;
    let mut conn = state.app.db.get().await?;
    let items: Vec<Value> = Document::list(&mut conn, &bot.id)
        .await?
        .iter()
        .map(super::knowledge::document_json)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": null })))
}
