//! Ingest: normalized events of one channel account → stored messages and
//! queued turns.
//!
//! Customer messages go through the [`Door`](crate::door::Door), which stores the messages of
//! concurrent webhooks together (group commit): for each, the customer is
//! found or created, the conversation found or opened (email replies join
//! their thread through `In-Reply-To` and `References`), the message stored
//! once (a redelivered platform id is a no-op) with its turn, and its events
//! logged; then turns are queued and events published on the broker. Edits
//! update the stored text and are never answered again; delivery and read
//! receipts move outbound messages forward; handover events move control
//! between the bot and another app. Everything is stored and committed
//! before the webhook is answered 200.

use channels::{Handover, InboundEvent, InboundMessage, RoutedEvent, SendStatus};
use chrono::Timelike;
use serde_json::json;

use crate::context::App;
use crate::door::DoorError;
use crate::error::{ApiError, ErrorKind};
use crate::events::Event;
use store::db::{DbConn, DbError, new_id};
use store::models::channel_account::ChannelAccount;
use store::models::conversation::{Conversation, ConversationStatus};
use store::models::customer::Customer;
use store::models::inbound::{NewInbound, StoredInbound, Thread};
use store::models::message::{DeliveryStatus, Direction, Message};

/// What one webhook's events did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// New customer messages stored (and queued).
    pub stored: usize,
    /// Messages already stored (redeliveries).
    pub duplicates: usize,
    /// Edits recorded.
    pub edits: usize,
    /// Outbound messages moved to delivered/read, or failed as the
    /// platform said.
    pub receipts: usize,
    /// Reactions recorded on the messages they react to.
    pub reactions: usize,
    /// Events skipped, with their reasons.
    pub skipped: Vec<String>,
}

impl IngestReport {
    /// What happened, by result name, for metrics.
    pub fn counts(&self) -> [(&'static str, usize); 6] {
        [
            ("stored", self.stored),
            ("duplicate", self.duplicates),
            ("edit", self.edits),
            ("receipt", self.receipts),
            ("reaction", self.reactions),
            ("skipped", self.skipped.len()),
        ]
    }
}

/// Why a webhook's events were not all stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The door is full: retry shortly (503 with `Retry-After`).
    #[error("too many webhooks are waiting to be stored; retry shortly")]
    Busy,
    /// The database failed (the platform retries; what was stored dedupes).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<DoorError> for IngestError {
    fn from(error: DoorError) -> Self {
        match error {
            DoorError::Busy => IngestError::Busy,
            DoorError::Db(error) => IngestError::Db(error),
        }
    }
}

/// How long a refused webhook is asked to wait.
pub const RETRY_AFTER_SECS: u64 = 1;

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Busy => ApiError::new(ErrorKind::Unavailable, error.to_string())
                .with_details(json!({ "retry_after_secs": RETRY_AFTER_SECS })),
            IngestError::Db(error) => error.into(),
        }
    }
}

/// Stores the events of `account` (of `workspace_id`). Customer messages go
/// through the [`Door`](crate::door::Door) with other webhooks' messages; edits, receipts and
/// handovers follow, in order.
pub async fn ingest(
    app: &App,
    account: &ChannelAccount,
    workspace_id: &str,
    events: Vec<RoutedEvent>,
) -> Result<IngestReport, IngestError> {
    let mut report = IngestReport::default();
    let mut rows = Vec::new();
    let mut others = Vec::new();
    for routed in events {
        let InboundEvent::Message(message) = routed.event else {
            others.push(routed.event);
            continue;
        };
        let message = clean(message);
        if let channels::Origin::Unanswered { reason } = &message.origin {
            tracing::info!(account = %account.public_id, %reason, "message kept for agents without an answer");
        }
        if account.kind == channels::ChannelKind::Email
            && account.external_id.as_deref() == Some(message.sender.external_id.as_str())
        {
            report.skipped.push("email from our own address".into());
        } else if app.door.seen(&account.id, &message.external_id).is_some() {
            // A redelivery of a message this node stored: no write.
            report.duplicates += 1;
        } else {
            rows.push(new_inbound(account, workspace_id, message));
        }
    }
    for stored in app.door.store(rows).await? {
        match stored {
            StoredInbound::New { .. } => report.stored += 1,
            StoredInbound::Duplicate { .. } => report.duplicates += 1,
        }
    }
    if !others.is_empty() {
        let mut conn = app.db.get().await?;
        for event in others {
            other_event(&mut conn, account, workspace_id, event, &mut report).await?;
        }
    }
    for reason in &report.skipped {
        tracing::info!(account = %account.public_id, %reason, "webhook event skipped");
    }
    Ok(report)
}

/// A customer message as the door stores it, its events written ahead.
fn new_inbound(
    account: &ChannelAccount,
    workspace_id: &str,
    message: InboundMessage,
) -> NewInbound {
    let at = store::db::now();
    // Both backends keep microseconds; the event must say what is stored.
    let at = at
        .with_nanosecond(at.nanosecond() / 1000 * 1000)
        .unwrap_or(at);
    let metadata = json!({
        "origin": message.origin,
        "attachments": message.attachments,
        "reply_to": message.reply_to,
        "sent_at": message.sent_at,
        "email": message.email,
    })
    .to_string();
    let thread = message.email.as_ref().map(|email| Thread {
        message_id: email.message_id.clone(),
        ancestors: email
            .in_reply_to
            .iter()
            .chain(email.references.iter())
            .cloned()
            .collect(),
    });
    let mut new = NewInbound {
        id: new_id(),
        new_customer_id: new_id(),
        new_conversation_id: new_id(),
        at,
        account_id: account.id.clone(),
        workspace_id: workspace_id.to_owned(),
        bot_id: account.bot_id.clone(),
        channel_kind: account.kind.as_str(),
        sender: message.sender.external_id,
        display_name: message.sender.display_name,
        external_id: message.external_id,
        body: message.text,
        metadata,
        thread,
        conversation_event: String::new(),
        message_event: String::new(),
    };
    // Templates: the batch fills in the conversation and the seq.
    new.conversation_event = event_json(&Event::ConversationCreated {
        conversation_id: "",
        bot_id: &account.bot_id,
        channel: account.kind.as_str(),
    });
    new.message_event = event_json(&Event::MessageCreated {
        conversation_id: "",
        message: &new.message(String::new(), 0),
    });
    new
}

fn event_json(event: &Event<'_>) -> String {
    serde_json::to_string(event).unwrap_or_else(|_| "{}".into())
}

/// An event other than a customer message: an edit, a receipt, a handover.
async fn other_event(
    conn: &mut DbConn,
    account: &ChannelAccount,
    workspace_id: &str,
    event: InboundEvent,
    report: &mut IngestReport,
) -> Result<(), DbError> {
    match event {
        InboundEvent::Message(_) => {}
        InboundEvent::Edit {
            external_id,
            sender,
            mut text,
        } => {
            text.retain(|c| c != '\0');
            match Message::find_by_external(conn, &account.id, Direction::Inbound, &external_id)
                .await?
            {
                Some(original) if original.body != text => {
                    Message::record_edit(conn, &original, &text).await?;
                    report.edits += 1;
                }
                Some(_) => report.duplicates += 1,
                None => report.skipped.push(format!(
                    "edit by {} of a message never received",
                    sender.external_id
                )),
            }
        }
        InboundEvent::Delivered {
            customer,
            message_ids,
            watermark,
        } => {
            let conversations =
                customer_conversations(conn, workspace_id, account, &customer).await?;
            report.receipts += Message::advance_delivery(
                conn,
                &account.id,
                &message_ids,
                &conversations,
                watermark.map(|w| w.naive_utc()),
                DeliveryStatus::Delivered,
            )
            .await?;
        }
        InboundEvent::Read {
            customer,
            watermark,
        } => {
            let conversations =
                customer_conversations(conn, workspace_id, account, &customer).await?;
            report.receipts += Message::advance_delivery(
                conn,
                &account.id,
                &[],
                &conversations,
                Some(watermark.naive_utc()),
                DeliveryStatus::Read,
            )
            .await?;
        }
        InboundEvent::Handover { customer, to } => {
            for id in customer_conversations(conn, workspace_id, account, &customer).await? {
                let Some(conversation) = Conversation::find(conn, &id).await? else {
                    continue;
                };
                // Control coming back only returns a conversation that
                // the handover took, never one our own agents hold.
                let status = match to {
                    Handover::ToOtherApp if conversation.status == ConversationStatus::Bot => {
                        ConversationStatus::Agent
                    }
                    Handover::ToUs
                        if conversation.status == ConversationStatus::Agent
                            && conversation.assigned_agent_id.is_none() =>
                    {
                        ConversationStatus::Bot
                    }
                    _ => {
                        report
                            .skipped
                            .push(format!("handover {to:?} left the conversation as it was"));
                        continue;
                    }
                };
                Conversation::set_status(conn, &id, status).await?;
            }
        }
        InboundEvent::Reaction {
            sender,
            message_id,
            emoji,
        } => {
            let mut target = None;
            for direction in [Direction::Outbound, Direction::Inbound] {
                target =
                    Message::find_by_external(conn, &account.id, direction, &message_id).await?;
                if target.is_some() {
                    break;
                }
            }
            match target {
                Some(message) => {
                    let reaction = json!({ "emoji": emoji, "by": sender.external_id });
                    Message::annotate(conn, &message.id, "reaction", reaction).await?;
                    report.reactions += 1;
                }
                None => report.skipped.push(format!(
                    "reaction to a message we do not have ({message_id})"
                )),
            }
        }
        InboundEvent::Status {
            message_id, status, ..
        } => {
            let Some(message) =
                Message::find_by_external(conn, &account.id, Direction::Outbound, &message_id)
                    .await?
            else {
                report.skipped.push(format!(
                    "status `{}` for a message we never sent ({message_id})",
                    status.as_str()
                ));
                return Ok(());
            };
            match status {
                // Recorded when the send answered.
                SendStatus::Sent => {}
                SendStatus::Delivered => {
                    report.receipts += Message::advance_delivery(
                        conn,
                        &account.id,
                        &[message_id],
                        &[],
                        None,
                        DeliveryStatus::Delivered,
                    )
                    .await?;
                }
                // A read message means the ones before it were read too.
                SendStatus::Read => {
                    report.receipts += Message::advance_delivery(
                        conn,
                        &account.id,
                        &[message_id],
                        std::slice::from_ref(&message.conversation_id),
                        Some(message.created_at),
                        DeliveryStatus::Read,
                    )
                    .await?;
                }
                SendStatus::Failed { reason, .. } => {
                    tracing::warn!(message = %message.id, %reason, "the platform reports a reply undelivered");
                    Message::set_delivery(
                        conn,
                        &message.id,
                        DeliveryStatus::Failed,
                        message.external_id.as_deref(),
                        Some(&reason),
                    )
                    .await?;
                    report.receipts += 1;
                }
            }
        }
        InboundEvent::Skipped { reason } => report.skipped.push(reason),
    }
    Ok(())
}

/// Removes what the database cannot store (NUL characters: PostgreSQL text
/// refuses them) from a message's text and identifiers.
fn clean(mut message: InboundMessage) -> InboundMessage {
    fn strip(s: &mut String) {
        if s.contains('\0') {
            s.retain(|c| c != '\0');
        }
    }
    strip(&mut message.text);
    strip(&mut message.external_id);
    strip(&mut message.sender.external_id);
    if let Some(name) = &mut message.sender.display_name {
        strip(name);
    }
    if let Some(email) = &mut message.email {
        strip(&mut email.subject);
        strip(&mut email.message_id);
    }
    message
}

/// The open conversations of an existing customer on this account.
async fn customer_conversations(
    conn: &mut DbConn,
    workspace_id: &str,
    account: &ChannelAccount,
    external_user_id: &str,
) -> Result<Vec<String>, DbError> {
    let customer = Customer::find(conn, workspace_id, account.kind, external_user_id).await?;
    let Some(customer) = customer else {
        return Ok(Vec::new());
    };
    Ok(
        Conversation::open_of_customer(conn, &account.id, &customer.id)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::models::channel_account::AccountStatus;
    use store::models::inbound::{CONVERSATION_BLANK, SEQ_BLANK, fill};

    fn account() -> ChannelAccount {
        ChannelAccount {
            id: "acct".into(),
            public_id: "shop-tg".into(),
            bot_id: "bot".into(),
            kind: channels::ChannelKind::Telegram,
            external_id: None,
            credentials: String::new(),
            status: AccountStatus::Active,
            created_at: store::db::now(),
            updated_at: store::db::now(),
            webhook_set_at: None,
        }
    }

    /// The door's templates carry exactly the blanks the store fills, and a
    /// customer's words that look like a blank stay as they were.
    #[test]
    fn event_templates_have_their_blanks_and_fill_to_the_event() {
        let words = r#"{"conversation_id":"","seq":0, "x"}"#;
        let new = new_inbound(
            &account(),
            "ws",
            InboundMessage {
                external_id: "7:1".into(),
                sender: channels::Sender {
                    external_id: "7".into(),
                    display_name: Some("Ann".into()),
                },
                text: words.into(),
                origin: channels::Origin::Text,
                attachments: Vec::new(),
                sent_at: None,
                reply_to: None,
                email: None,
            },
        );
        assert_eq!(new.message_event.matches(CONVERSATION_BLANK).count(), 2);
        assert_eq!(new.message_event.matches(SEQ_BLANK).count(), 1);
        assert_eq!(
            new.conversation_event.matches(CONVERSATION_BLANK).count(),
            1
        );

        let event: serde_json::Value =
            serde_json::from_str(&fill(&new.message_event, "conv-1", 42)).expect("json");
        assert_eq!(event["type"], "message.created");
        assert_eq!(event["conversation_id"], "conv-1");
        assert_eq!(event["message"]["conversation_id"], "conv-1");
        assert_eq!(event["message"]["seq"], 42);
        assert_eq!(event["message"]["body"], words);
        assert_eq!(event["message"]["id"], new.id.as_str());
        let opened: serde_json::Value =
            serde_json::from_str(&fill(&new.conversation_event, "conv-1", 1)).expect("json");
        assert_eq!(opened["type"], "conversation.created");
        assert_eq!(opened["conversation_id"], "conv-1");
        assert_eq!(opened["bot_id"], "bot");
    }
}
