//! Realtime events for agents: published on the broker's pub/sub, one
//! topic per workspace ([`topic`]), so every node's agent sockets see them.
//!
//! Every event is first appended to the workspace's event log (numbered by
//! `seq`), then published: a socket that missed some (a reconnect, a broker
//! outage) replays them from the log.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::context::App;
use broker::Broker;
use store::models::conversation::ConversationStatus;
use store::models::event::StoredEvent;
use store::models::handoff::Handoff;
use store::models::message::Message;

/// An event, as JSON `{"type": "...", ...}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum Event<'a> {
    /// A message was stored (a customer's, an agent's, or a paragraph of the bot's answer).
    #[serde(rename = "message.created")]
    MessageCreated {
        /// Its conversation.
        conversation_id: &'a str,
        /// The message.
        message: &'a Message,
    },
    /// A customer opened a conversation (its first message follows).
    #[serde(rename = "conversation.created")]
    ConversationCreated {
        /// The conversation.
        conversation_id: &'a str,
        /// Its bot.
        bot_id: &'a str,
        /// Its channel: telegram, messenger, whatsapp, instagram, email, webchat.
        channel: &'a str,
    },
    /// Knowledge being ingested: a file read, chunked, embedded, done.
    #[serde(rename = "knowledge.progress")]
    KnowledgeProgress {
        /// The bot.
        bot_id: &'a str,
        /// What happened: `source`, `stage` and counts.
        progress: &'a serde_json::Value,
    },
    /// An agent left a private note.
    #[serde(rename = "note.created")]
    NoteAdded {
        /// Its conversation.
        conversation_id: &'a str,
        /// The note.
        note: &'a store::models::note::Note,
    },
    /// The bot handed the conversation to a person.
    #[serde(rename = "handoff.requested")]
    HandoffRequested {
        /// Its conversation.
        conversation_id: &'a str,
        /// The handoff: reason, question, draft, sources (JSON text), triage.
        handoff: &'a Handoff,
        /// The sources, parsed.
        sources: serde_json::Value,
    },
    /// Who answers the conversation changed.
    #[serde(rename = "conversation.status")]
    StatusChanged {
        /// Its conversation.
        conversation_id: &'a str,
        /// The new status.
        status: ConversationStatus,
        /// The agent who owns it now.
        agent_id: Option<&'a str>,
    },
}

/// The topic of a workspace's events.
pub fn topic(workspace_id: &str) -> String {
    format!("workspace.{workspace_id}")
}

/// Records `event` in the workspace's log and publishes it, numbered, to
/// the workspace's agents. Failures are logged: the event is lost to live
/// sockets (the database still holds what happened).
pub async fn publish(app: &App, workspace_id: &str, event: &Event<'_>) {
    let mut value = match serde_json::to_value(event) {
        Ok(value) => value,
        Err(error) => {
            tracing::error!(%error, "event not serializable");
            return;
        }
    };
    let kind = value["type"].as_str().unwrap_or("event").to_owned();
    let stored = async {
        let mut conn = app.db.get().await?;
        store::models::event::StoredEvent::append(
            &mut conn,
            workspace_id,
            &kind,
            &value.to_string(),
        )
        .await
    };
    match stored.await {
        Ok(seq) => value["seq"] = serde_json::json!(seq),
        Err(error) => tracing::warn!(%error, kind, "event not logged; published without a seq"),
    }
    if let Err(error) = app
        .broker
        .publish(&topic(workspace_id), &value.to_string())
        .await
    {
        tracing::warn!(%error, kind, "realtime event not published");
    }
}

/// Tells the widget of `conversation` that the bot is writing (not logged).
pub async fn typing(app: &App, workspace_id: &str, conversation_id: &str) {
    let payload = json!({ "type": "typing", "conversation_id": conversation_id }).to_string();
    if let Err(error) = app.broker.publish(&topic(workspace_id), &payload).await {
        tracing::debug!(%error, "typing not published");
    }
}

/// Forgets events older than `realtime.retention_days`, now and then hourly.
pub async fn prune_events(app: App) {
    loop {
        let days = app.settings.realtime.retention_days.max(1);
        let before = store::db::now() - chrono::Duration::days(days);
        let pruned = async {
            let mut conn = app.db.get().await?;
            StoredEvent::prune(&mut conn, before).await
        };
        match pruned.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, days, "old events pruned from the event log"),
            Err(error) => tracing::warn!(%error, "event log not pruned; retrying in an hour"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
