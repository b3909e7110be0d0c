//! Conversations, for agents: the list (escalations first by filter), one
//! conversation with its messages, sources and notes, and the actions —
//! take over, reply through the customer's channel, note, resolve, hand
//! back to the bot, hand off.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use channels::ChannelKind;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Change, Json, Origin, Page, Route, bad_request, conflict, cursor_of, not_found, record,
    text_field,
};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorKind};
use crate::events::{self, Event};
use crate::handoff;
use crate::http::AppState;
use store::models::channel_account::ChannelAccount;
use store::models::conversation::{Conversation, ConversationFilter, ConversationStatus};
use store::models::customer::Customer;
use store::models::handoff::Handoff;
use store::models::message::{AuthorKind, Direction, Inserted, Message, NewMessage};
use store::models::note::Note;
use store::models::user::Role;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/conversations",
        role: Some(Role::Agent),
        summary: "Conversations, most recent activity first",
        body: &[],
        query: &[
            ("status", "bot | pending_handoff | agent | resolved"),
            ("urgency", "low | medium | high (of the open handoff)"),
            (
                "channel",
                "telegram | messenger | whatsapp | instagram | email | webchat",
            ),
            ("bot_id", "string"),
            ("limit", "integer"),
            ("cursor", "string"),
        ],
        ok: 200,
        mount: |r| r.to(list),
    },
    Route {
        method: "GET",
        path: "/conversations/{id}",
        role: Some(Role::Agent),
        summary: "A conversation with its messages, their sources, its handoffs and notes",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(detail),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/take_over",
        role: Some(Role::Agent),
        summary: "Take the conversation: the bot stays silent, queued turns included",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(take_over),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/reply",
        role: Some(Role::Agent),
        summary: "Reply through the customer's channel (takes the conversation over if the bot had it)",
        body: &[("text", "string", true)],
        query: &[],
        ok: 201,
        mount: |r| r.to(reply),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/notes",
        role: Some(Role::Agent),
        summary: "Add a private note, never sent to the customer",
        body: &[("text", "string", true)],
        query: &[],
        ok: 201,
        mount: |r| r.to(note),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/resolve",
        role: Some(Role::Agent),
        summary: "Close the conversation; the customer's next message opens a new one",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(resolve),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/hand_back",
        role: Some(Role::Agent),
        summary: "Give the conversation back to the bot, from the customer's next message on",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(hand_back),
    },
    Route {
        method: "POST",
        path: "/conversations/{id}/handoff",
        role: Some(Role::Agent),
        summary: "Hand the bot's conversation to people",
        body: &[("reason", "string", false)],
        query: &[],
        ok: 201,
        mount: |r| r.to(request_handoff),
    },
];

/// The conversation `id` of the caller's workspace; 404 for any other.
async fn owned(state: &AppState, who: &Principal, id: &str) -> Result<Conversation, ApiError> {
    let mut conn = state.app.db.get().await?;
    Conversation::find(&mut conn, id)
        .await?
        .filter(|c| c.workspace_id == who.workspace_id)
        .ok_or_else(|| not_found("conversation"))
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn handoff_json(h: &Handoff) -> Value {
    json!({
        "id": h.id,
        "reason": h.reason,
        "detail": h.detail,
        "question": h.question,
        "draft": h.draft,
        "sources": parse_json(&h.sources),
        "confidence": h.confidence,
        "category": h.category,
        "sentiment": h.sentiment,
        "urgency": h.urgency,
        "triage_source": h.triage_source,
        "requested_by": h.requested_by,
        "created_at": h.created_at,
        "closed_at": h.closed_at,
    })
}

/// A message as agents see it: the answer's sources pulled out of its
/// metadata, delivery details kept.
pub fn message_json(m: &Message) -> Value {
    let metadata = m.metadata.as_deref().map(parse_json).unwrap_or(Value::Null);
    json!({
        "id": m.id,
        "seq": m.seq,
        "direction": m.direction,
        "author_kind": m.author_kind,
        "author_user_id": m.author_user_id,
        "body": m.body,
        "created_at": m.created_at,
        "delivery_status": m.delivery_status,
        "delivery_error": m.delivery_error,
        "sent_as_template": metadata["sent_as_template"].clone(),
        "reaction": metadata["reaction"]["emoji"].clone(),
        "sources": metadata["answer"]["sources"].clone(),
        "low_confidence": metadata["answer"]["low_confidence"].as_bool().unwrap_or(false),
        "notice": metadata["notice"].clone(),
    })
}

fn summary_json(
    c: &Conversation,
    channel: Option<&str>,
    customer: Option<&Customer>,
    handoff: Option<&Handoff>,
    preview: Option<&str>,
) -> Value {
    json!({
        "id": c.id,
        "bot_id": c.bot_id,
        "channel": channel,
        "status": c.status,
        "customer": customer.map(|cu| json!({
            "id": cu.id,
            "display_name": cu.display_name.clone().unwrap_or_else(|| cu.external_user_id.clone()),
        })),
        "assigned_agent_id": c.assigned_agent_id,
        "last_message_at": c.last_message_at,
        "created_at": c.created_at,
        "preview": preview,
        "handoff": handoff.map(|h| json!({
            "id": h.id,
            "reason": h.reason,
            "question": h.question,
            "draft": h.draft,
            "urgency": h.urgency,
            "sentiment": h.sentiment,
            "category": h.category,
            "created_at": h.created_at,
        })),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<ConversationStatus>,
    urgency: Option<String>,
    channel: Option<String>,
    bot_id: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

impl ListQuery {
    fn page(&self) -> Page {
        Page {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

async fn list(
    state: web::Data<AppState>,
    who: Principal,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Agent)?;
    let limit = query.page().limit()?;
    let mut filter = ConversationFilter {
        status: query.status,
        bot_id: query.bot_id.clone(),
        ..ConversationFilter::default()
    };
    if let Some(parts) = query.page().cursor()? {
        let [at, id] = parts.as_slice() else {
            return Err(bad_request("the cursor is not one this API gave out"));
        };
        let at = chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S%.f")
            .map_err(|_| bad_request("the cursor is not one this API gave out"))?;
        filter.after = Some((at, id.clone()));
    }
    let mut conn = state.app.db.get().await?;
    let open = Handoff::open_in(&mut conn, &who.workspace_id).await?;
    if let Some(urgency) = &query.urgency {
        if !["low", "medium", "high"].contains(&urgency.as_str()) {
            return Err(bad_request("urgency must be low, medium or high"));
        }
        filter.ids = Some(
            open.iter()
                .filter(|h| h.urgency == *urgency)
                .map(|h| h.conversation_id.clone())
                .collect(),
        );
    }
    let accounts: HashMap<String, ChannelAccount> =
        ChannelAccount::in_workspace(&mut conn, &who.workspace_id)
            .await?
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
    if let Some(channel) = &query.channel {
        let kind: ChannelKind = channel.parse().map_err(|_| {
            bad_request(
                "channel must be telegram, messenger, whatsapp, instagram, email or webchat",
            )
        })?;
        filter.accounts = Some(
            accounts
                .values()
                .filter(|a| a.kind == kind)
                .map(|a| a.id.clone())
                .collect(),
        );
    }
    let page = Conversation::page(&mut conn, &who.workspace_id, &filter, limit + 1).await?;
    let more = page.len() as i64 > limit;
    let page: Vec<Conversation> = page.into_iter().take(limit as usize).collect();
    // The newest open handoff of each conversation.
    let mut handoffs: HashMap<&str, &Handoff> = HashMap::new();
    for h in &open {
        handoffs.insert(&h.conversation_id, h);
    }
    let mut items = Vec::with_capacity(page.len());
    for c in &page {
        let customer = Customer::find_by_id(&mut conn, &c.customer_id).await?;
        let preview = Message::last_of(&mut conn, &c.id).await?;
        let preview = preview.map(|m| m.body.chars().take(140).collect::<String>());
        items.push(summary_json(
            c,
            accounts.get(&c.channel_account_id).map(|a| a.kind.as_str()),
            customer.as_ref(),
            handoffs.get(c.id.as_str()).copied(),
            preview.as_deref(),
        ));
    }
    let next = more
        .then(|| {
            page.last().map(|c| {
                cursor_of(&[
                    &c.last_message_at.format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
                    &c.id,
                ])
            })
        })
        .flatten();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": next })))
}

async fn detail_json(
    state: &AppState,
    c: &Conversation,
) -> Result<(Value, Option<Handoff>), ApiError> {
    let mut conn = state.app.db.get().await?;
    let customer = Customer::find_by_id(&mut conn, &c.customer_id).await?;
    let account = ChannelAccount::find_by_id(&mut conn, &c.channel_account_id).await?;
    let messages = Message::list(&mut conn, &c.id).await?;
    let handoffs = Handoff::of_conversation(&mut conn, &c.id).await?;
    let notes = Note::of_conversation(&mut conn, &c.id).await?;
    let open = handoffs.iter().rev().find(|h| h.closed_at.is_none());
    let mut body = summary_json(
        c,
        account.as_ref().map(|a| a.kind.as_str()),
        customer.as_ref(),
        open,
        messages.last().map(|m| m.body.as_str()),
    );
    body["messages"] = messages.iter().map(message_json).collect();
    body["handoffs"] = handoffs.iter().map(handoff_json).collect();
    // Meta's platforms: whether the customer can be written to now, and how.
    if let Some(account) = &account {
        let last = messages
            .iter()
            .rev()
            .find(|m| m.direction == Direction::Inbound);
        if let Some(window) = crate::window::of(account.kind, last)
            && let Ok(secrets) = account.secrets(&state.app.master_key)
        {
            body["window"] = crate::window::json(&window, &secrets);
        }
    }
    body["notes"] = serde_json::to_value(&notes).unwrap_or_default();
    Ok((body, open.cloned()))
}

/// The open escalation's earlier resolved cases like it, in `body` (the
/// detail route only: actions answer without this scan).
async fn add_similar(
    state: &AppState,
    c: &Conversation,
    open: &Handoff,
    body: &mut Value,
) -> Result<(), ApiError> {
    let similar = crate::gaps::similar(&state.app, &c.bot_id, open).await?;
    let similar = serde_json::to_value(&similar).unwrap_or_default();
    body["handoff"]["similar"] = similar.clone();
    if let Some(entry) = body["handoffs"]
        .as_array_mut()
        .and_then(|all| all.iter_mut().find(|h| h["id"] == json!(open.id)))
    {
        entry["similar"] = similar;
    }
    Ok(())
}

async fn detail(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Agent)?;
    let c = owned(&state, &who, &id).await?;
    let (mut body, open) = detail_json(&state, &c).await?;
    if let Some(open) = &open {
        add_similar(&state, &c, open, &mut body).await?;
    }
    Ok(HttpResponse::Ok().json(body))
}

fn status_json(c: &Conversation) -> Value {
    json!({ "status": c.status, "assigned_agent_id": c.assigned_agent_id })
}

/// Records a status change made by `who`.
async fn audit_status(
    state: &AppState,
    who: &Principal,
    req: &HttpRequest,
    action: &str,
    before: &Conversation,
    after: &Conversation,
) {
    record(
        state,
        who,
        &Origin::of(req),
        Change {
            action,
            target_kind: "conversation",
            target_id: Some(&after.id),
            before: Some(status_json(before)),
            after: Some(status_json(after)),
        },
    )
    .await;
}

/// Who answers next: the three moves agents make.
#[derive(Clone, Copy)]
enum Move {
    TakeOver,
    Resolve,
    HandBack,
}

/// Applies `step` to the caller's conversation `id`: 409 when its status
/// does not allow it; audited; answers the conversation as it is now.
async fn change_status(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    id: &str,
    step: Move,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Agent)?;
    let before = owned(state, who, id).await?;
    let (changed, action, refusal) = match step {
        Move::TakeOver => (
            handoff::take_over(&state.app, &before.id, who.user_id()).await?,
            "conversation.take_over",
            "the conversation is resolved; the customer's next message opens a new one".to_owned(),
        ),
        Move::Resolve => (
            handoff::resolve(&state.app, &before.id).await?,
            "conversation.resolve",
            "the conversation is resolved already".to_owned(),
        ),
        Move::HandBack => (
            handoff::hand_back(&state.app, &before.id).await?,
            "conversation.hand_back",
            format!(
                "the conversation is {}: there is nothing to hand back",
                before.status
            ),
        ),
    };
    let after = changed.ok_or_else(|| conflict(refusal))?;
    audit_status(state, who, req, action, &before, &after).await;
    Ok(HttpResponse::Ok().json(detail_json(state, &after).await?.0))
}

async fn take_over(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_status(&state, &req, &who, &id, Move::TakeOver).await
}

async fn resolve(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_status(&state, &req, &who, &id, Move::Resolve).await
}

async fn hand_back(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_status(&state, &req, &who, &id, Move::HandBack).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    text: String,
}

/// Refuses, with 409, an agent's reply that the platform's messaging
/// window would refuse: it is not stored, and the agent reads why and when
/// the window closed.
async fn window_allows_reply(
    state: &AppState,
    conversation: &Conversation,
) -> Result<(), ApiError> {
    let mut conn = state.app.db.get().await?;
    let Some(account) =
        ChannelAccount::find_by_id(&mut conn, &conversation.channel_account_id).await?
    else {
        return Ok(());
    };
    if !account.kind.has_window() {
        return Ok(());
    }
    let last = Message::last_inbound(&mut conn, &conversation.id).await?;
    drop(conn);
    let secrets = account.secrets(&state.app.master_key).map_err(|e| {
        ApiError::new(
            ErrorKind::Internal,
            format!("the account's credentials cannot be read: {e}"),
        )
    })?;
    let Err(closed) = crate::window::reach(
        account.kind,
        last.as_ref(),
        channels::meta::Author::Person,
        &secrets,
    ) else {
        return Ok(());
    };
    let window =
        crate::window::of(account.kind, last.as_ref()).map(|w| crate::window::json(&w, &secrets));
    Err(conflict(&closed.reason).with_details(json!({
        "window": window,
        "closed_since": closed.since,
    })))
}

async fn reply(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    body: Json<Text>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Agent)?;
    let text = text_field("text", &body.text, 4000)?;
    let mut conversation = owned(&state, &who, &id).await?;
    if conversation.status == ConversationStatus::Resolved {
        return Err(conflict(
            "the conversation is resolved; the customer's next message opens a new one",
        ));
    }
    window_allows_reply(&state, &conversation).await?;
    if conversation.status != ConversationStatus::Agent {
        // Replying is taking over: the bot must not talk over the agent.
        let before = conversation.clone();
        conversation = handoff::take_over(&state.app, &conversation.id, who.user_id())
            .await?
            .ok_or_else(|| conflict("the conversation was resolved meanwhile"))?;
        audit_status(
            &state,
            &who,
            &req,
            "conversation.take_over",
            &before,
            &conversation,
        )
        .await;
    }
    let mut conn = state.app.db.get().await?;
    let inserted = Message::insert(
        &mut conn,
        &NewMessage {
            conversation_id: &conversation.id,
            channel_account_id: &conversation.channel_account_id,
            direction: Direction::Outbound,
            author_kind: AuthorKind::Agent,
            author_user_id: who.user_id(),
            body: &text,
            external_id: None,
            metadata: None,
        },
    )
    .await?;
    drop(conn);
    let (Inserted::New(message) | Inserted::Duplicate(message)) = inserted;
    events::publish(
        &state.app,
        &who.workspace_id,
        &Event::MessageCreated {
            conversation_id: &conversation.id,
            message: &message,
        },
    )
    .await;
    crate::delivery::deliver(&state.app, &message.id, false).await?;
    let mut conn = state.app.db.get().await?;
    let message = Message::find(&mut conn, &message.id)
        .await?
        .unwrap_or(message);
    drop(conn);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "conversation.reply",
            target_kind: "message",
            target_id: Some(&message.id),
            before: None,
            after: Some(json!({ "conversation_id": conversation.id, "body": message.body, "delivery_status": message.delivery_status })),
        },
    )
    .await;
    Ok(HttpResponse::Created().json(message_json(&message)))
}

async fn note(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    body: Json<Text>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Agent)?;
    let text = text_field("text", &body.text, 4000)?;
    let conversation = owned(&state, &who, &id).await?;
    let mut conn = state.app.db.get().await?;
    let note = Note::add(
        &mut conn,
        &who.workspace_id,
        &conversation.id,
        who.user_id(),
        &text,
    )
    .await?;
    drop(conn);
    events::publish(
        &state.app,
        &who.workspace_id,
        &Event::NoteAdded {
            conversation_id: &conversation.id,
            note: &note,
        },
    )
    .await;
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "conversation.note",
            target_kind: "note",
            target_id: Some(&note.id),
            before: None,
            after: serde_json::to_value(&note).ok(),
        },
    )
    .await;
    Ok(HttpResponse::Created().json(note))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HandoffBody {
    reason: Option<String>,
}

async fn request_handoff(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    body: Option<Json<HandoffBody>>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Agent)?;
    let conversation = owned(&state, &who, &id).await?;
    let detail = body
        .and_then(|b| b.into_inner().reason)
        .map(|r| r.chars().take(500).collect::<String>());
    let mut conn = state.app.db.get().await?;
    let last = Message::last_inbound(&mut conn, &conversation.id).await?;
    drop(conn);
    let question = last.map(|m| m.body).unwrap_or_default();
    let request = handoff::Request {
        reason: handoff::Reason::Requested,
        detail,
        triage: answer::triage::by_rules(&question, None),
        question,
        draft: String::new(),
        sources: Vec::new(),
        confidence: 0.0,
        requested_by: Some(who.actor_id().to_owned()),
    };
    let created = handoff::request(&state.app, &conversation.id, request)
        .await?
        .ok_or_else(|| {
            conflict(format!(
                "the conversation is {}: only the bot's conversations are handed off",
                conversation.status
            ))
        })?;
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "conversation.handoff",
            target_kind: "conversation",
            target_id: Some(&conversation.id),
            before: Some(status_json(&conversation)),
            after: Some(handoff_json(&created)),
        },
    )
    .await;
    Ok(HttpResponse::Created().json(handoff_json(&created)))
}
