//! Realtime events for agents: published on the broker's pub/sub, one
//! topic per workspace ([`topic`]), so every node's agent sockets see them.
//!
//! Publishing is best effort: the database is the record, an event lost to
//! a broker outage is caught up from it.

use serde::Serialize;

use crate::app::App;
use crate::broker::Broker;
use crate::models::conversation::ConversationStatus;
use crate::models::handoff::Handoff;
use crate::models::message::Message;

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

/// Publishes `event` to the workspace's agents; failures are logged.
pub async fn publish(app: &App, workspace_id: &str, event: &Event<'_>) {
    let payload = match serde_json::to_string(event) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::error!(%error, "event not serializable");
            return;
        }
    };
    if let Err(error) = app.broker.publish(&topic(workspace_id), &payload).await {
        tracing::warn!(%error, "realtime event not published");
    }
}
