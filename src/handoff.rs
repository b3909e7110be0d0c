//! Who answers a conversation: the bot hands it to people, agents take it
//! over, hand it back or resolve it. Every change is a conditional update
//! (a conversation an agent owns is never handed off again by the bot) and
//! is published to the workspace's agents.

use serde::Serialize;

pub use answer::handoff::{Reason, Request, Source};

use crate::context::App;
use crate::events::{self, Event};

use store::db::DbError;
use store::models::conversation::{Conversation, ConversationStatus};
use store::models::handoff::{Handoff, NewHandoff};

/// Hands the conversation to people if the bot has it: it moves to
/// `pending_handoff`, the handoff is stored and published. `None` when
/// the conversation was not the bot's (an agent has it already).
pub async fn request(
    app: &App,
    conversation_id: &str,
    request: Request,
) -> Result<Option<Handoff>, DbError> {
    let mut conn = app.db.get().await?;
    let Some(conversation) = Conversation::transition(
        &mut conn,
        conversation_id,
        &[ConversationStatus::Bot],
        ConversationStatus::PendingHandoff,
        None,
    )
    .await?
    else {
        return Ok(None);
    };
    let sources = serde_json::to_value(&request.sources).unwrap_or_default();
    let inserted = Handoff::insert(
        &mut conn,
        &NewHandoff {
            workspace_id: conversation.workspace_id.clone(),
            conversation_id: conversation.id.clone(),
            reason: request.reason.as_str().into(),
            detail: request.detail,
            question: request.question,
            draft: request.draft,
            sources: sources.to_string(),
            confidence: f64::from(request.confidence),
            category: request.triage.category,
            sentiment: serde_plain(&request.triage.sentiment),
            urgency: serde_plain(&request.triage.urgency),
            triage_source: request.triage.source,
            requested_by: request.requested_by,
        },
    )
    .await;
    let handoff = match inserted {
        Ok(handoff) => handoff,
        Err(e) => {
            // Never leave a conversation waiting for people with no handoff
            // to show them: give it back to the bot, then report.
            let reverted = Conversation::transition(
                &mut conn,
                conversation_id,
                &[ConversationStatus::PendingHandoff],
                ConversationStatus::Bot,
                None,
            )
            .await;
            if let Err(revert) = reverted {
                tracing::error!(
                    conversation = conversation_id,
                    error = %revert,
                    "handoff not stored and the conversation not given back to the bot"
                );
            }
            return Err(e);
        }
    };
    drop(conn);
    app.metrics
        .handoffs
        .with_label_values(&[request.reason.as_str()])
        .inc();
    tracing::info!(
        conversation = %conversation.id,
        reason = request.reason.as_str(),
        urgency = %handoff.urgency,
        "handed off to people"
    );
    publish_status(app, &conversation).await;
    events::publish(
        app,
        &conversation.workspace_id,
        &Event::HandoffRequested {
            conversation_id: &conversation.id,
            handoff: &handoff,
            sources,
        },
    )
    .await;
    // After the agents were told: embedding the question takes a moment.
    crate::gaps::remember(app, &conversation.bot_id, &handoff).await;
    Ok(Some(handoff))
}

/// An agent takes the conversation: the bot stays silent, queued turns
/// included. `None` if it is resolved (or gone).
pub async fn take_over(
    app: &App,
    conversation_id: &str,
    agent_id: Option<&str>,
) -> Result<Option<Conversation>, DbError> {
    change(
        app,
        conversation_id,
        &[
            ConversationStatus::Bot,
            ConversationStatus::PendingHandoff,
            ConversationStatus::Agent,
        ],
        ConversationStatus::Agent,
        Some(agent_id),
    )
    .await
}

/// The bot answers again, from the customer's next message on: what was
/// said meanwhile is the agent's, and open handoffs are closed.
pub async fn hand_back(app: &App, conversation_id: &str) -> Result<Option<Conversation>, DbError> {
    change(
        app,
        conversation_id,
        &[
            ConversationStatus::PendingHandoff,
            ConversationStatus::Agent,
        ],
        ConversationStatus::Bot,
        Some(None),
    )
    .await
}

/// Closes the conversation; the customer's next message opens a new one.
pub async fn resolve(app: &App, conversation_id: &str) -> Result<Option<Conversation>, DbError> {
    change(
        app,
        conversation_id,
        &[
            ConversationStatus::Bot,
            ConversationStatus::PendingHandoff,
            ConversationStatus::Agent,
        ],
        ConversationStatus::Resolved,
        None,
    )
    .await
}

async fn change(
    app: &App,
    conversation_id: &str,
    from: &[ConversationStatus],
    to: ConversationStatus,
    agent: Option<Option<&str>>,
) -> Result<Option<Conversation>, DbError> {
    let mut conn = app.db.get().await?;
    let Some(conversation) =
        Conversation::transition(&mut conn, conversation_id, from, to, agent).await?
    else {
        return Ok(None);
    };
    // Messages so far are handled: by the agent, or no longer the bot's to answer.
    Conversation::give_up_unanswered(&mut conn, conversation_id).await?;
    if to != ConversationStatus::Agent {
        Handoff::close_for(&mut conn, conversation_id).await?;
    }
    drop(conn);
    publish_status(app, &conversation).await;
    Ok(Some(conversation))
}

async fn publish_status(app: &App, conversation: &Conversation) {
    events::publish(
        app,
        &conversation.workspace_id,
        &Event::StatusChanged {
            conversation_id: &conversation.id,
            status: conversation.status,
            agent_id: conversation.assigned_agent_id.as_deref(),
        },
    )
    .await;
}

fn serde_plain(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}
