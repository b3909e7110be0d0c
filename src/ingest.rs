//! Ingest: normalized events of one channel account → stored messages and
//! queued turns.
//!
//! For a customer message: find or create the customer, find or open the
//! conversation (email replies join their thread through `In-Reply-To` and
//! `References`), store the message (a redelivered platform id is a no-op),
//! then queue the conversation's turn on the broker. Edits update the stored text and are
//! never answered again; delivery and read receipts move outbound messages
//! forward; handover events move control between the bot and another app.
//! Everything is stored before the webhook is answered 200.

use channels::{Handover, InboundEvent, InboundMessage, RoutedEvent};
use serde_json::json;

use crate::context::App;
use broker::Broker;
use store::db::{DbConn, DbError};
use store::models::bot::Bot;
use store::models::channel_account::ChannelAccount;
use store::models::conversation::{Conversation, ConversationKey, ConversationStatus};
use store::models::customer::Customer;
use store::models::message::{
    AuthorKind, DeliveryStatus, Direction, Inserted, Message, NewMessage,
};

/// What one webhook's events did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// New customer messages stored (and queued).
    pub stored: usize,
    /// Messages already stored (redeliveries).
    pub duplicates: usize,
    /// Edits recorded.
    pub edits: usize,
    /// Outbound messages moved to delivered/read.
    pub receipts: usize,
    /// Events skipped, with their reasons.
    pub skipped: Vec<String>,
}

impl IngestReport {
    /// What happened, by result name, for metrics.
    pub fn counts(&self) -> [(&'static str, usize); 5] {
        [
            ("stored", self.stored),
            ("duplicate", self.duplicates),
            ("edit", self.edits),
            ("receipt", self.receipts),
            ("skipped", self.skipped.len()),
        ]
    }
}

/// Stores the events of `account`. A database failure is returned (the
/// webhook then fails and the platform retries; what was stored dedupes).
pub async fn ingest(
    app: &App,
    account: &ChannelAccount,
    events: Vec<RoutedEvent>,
) -> Result<IngestReport, DbError> {
    let mut report = IngestReport::default();
    // New messages, announced once the connection is back in the pool:
    // publishing takes a connection of its own, and holding two at once
    // under a burst of webhooks would starve the pool.
    let mut created: Vec<(String, Message)> = Vec::new();
    let mut conn = app.db.get().await?;
    let Some(bot) = Bot::find_by_id(&mut conn, &account.bot_id).await? else {
        report
            .skipped
            .push("the account's bot no longer exists".into());
        return Ok(report);
    };
    for routed in events {
        match routed.event {
            InboundEvent::Message(message) => {
                let message = clean(message);
                if account.kind == channels::ChannelKind::Email
                    && account.external_id.as_deref() == Some(message.sender.external_id.as_str())
                {
                    report.skipped.push("email from our own address".into());
                    continue;
                }
                match store_message(&mut conn, &bot, account, &message).await? {
                    (Inserted::New(stored), conversation) => {
                        report.stored += 1;
                        // Stored is what counts: if the broker is down, the
                        // sweeper queues the turn once it is back.
                        if let Err(error) = app.broker.enqueue(&conversation).await {
                            tracing::warn!(%conversation, %error, "turn not queued; the sweeper will retry");
                        }
                        created.push((conversation, stored));
                    }
                    (Inserted::Duplicate(_), _) => report.duplicates += 1,
                }
            }
            InboundEvent::Edit {
                external_id,
                sender,
                mut text,
            } => {
                text.retain(|c| c != '\0');
                match Message::find_by_external(
                    &mut conn,
                    &account.id,
                    Direction::Inbound,
                    &external_id,
                )
                .await?
                {
                    Some(original) if original.body != text => {
                        Message::record_edit(&mut conn, &original, &text).await?;
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
                    customer_conversations(&mut conn, &bot, account, &customer).await?;
                report.receipts += Message::advance_delivery(
                    &mut conn,
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
                    customer_conversations(&mut conn, &bot, account, &customer).await?;
                report.receipts += Message::advance_delivery(
                    &mut conn,
                    &account.id,
                    &[],
                    &conversations,
                    Some(watermark.naive_utc()),
                    DeliveryStatus::Read,
                )
                .await?;
            }
            InboundEvent::Handover { customer, to } => {
                for id in customer_conversations(&mut conn, &bot, account, &customer).await? {
                    let Some(conversation) = Conversation::find(&mut conn, &id).await? else {
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
                    Conversation::set_status(&mut conn, &id, status).await?;
                }
            }
            InboundEvent::Skipped { reason } => report.skipped.push(reason),
        }
    }
    drop(conn);
    for (conversation, stored) in &created {
        if stored.seq == 1 {
            crate::events::publish(
                app,
                &bot.workspace_id,
                &crate::events::Event::ConversationCreated {
                    conversation_id: conversation,
                    bot_id: &bot.id,
                    channel: account.kind.as_str(),
                },
            )
            .await;
        }
        crate::events::publish(
            app,
            &bot.workspace_id,
            &crate::events::Event::MessageCreated {
                conversation_id: conversation,
                message: stored,
            },
        )
        .await;
    }
    for reason in &report.skipped {
        tracing::info!(account = %account.public_id, %reason, "webhook event skipped");
    }
    Ok(report)
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
    bot: &Bot,
    account: &ChannelAccount,
    external_user_id: &str,
) -> Result<Vec<String>, DbError> {
    let customer = Customer::find(conn, &bot.workspace_id, account.kind, external_user_id).await?;
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

/// Stores one customer message; returns what happened and its conversation.
async fn store_message(
    conn: &mut DbConn,
    bot: &Bot,
    account: &ChannelAccount,
    message: &InboundMessage,
) -> Result<(Inserted, String), DbError> {
    // A redelivery is answered before touching customers or conversations.
    if let Some(existing) =
        Message::find_by_external(conn, &account.id, Direction::Inbound, &message.external_id)
            .await?
    {
        let conversation = existing.conversation_id.clone();
        return Ok((Inserted::Duplicate(existing), conversation));
    }
    let customer = Customer::ensure(
        conn,
        &bot.workspace_id,
        account.kind,
        &message.sender.external_id,
        message.sender.display_name.as_deref(),
    )
    .await?;
    let thread_key = match &message.email {
        Some(email) => {
            let ancestors: Vec<String> = email
                .in_reply_to
                .iter()
                .chain(email.references.iter())
                .cloned()
                .collect();
            Conversation::thread_of(conn, &account.id, &customer.id, &ancestors)
                .await?
                // A new thread is keyed by its first message.
                .unwrap_or_else(|| email.message_id.clone())
        }
        None => String::new(),
    };
    let conversation = Conversation::open_for(
        conn,
        ConversationKey {
            workspace_id: &bot.workspace_id,
            bot_id: &bot.id,
            customer_id: &customer.id,
            channel_account_id: &account.id,
            thread_key: &thread_key,
        },
    )
    .await?;
    let metadata = json!({
        "origin": message.origin,
        "attachments": message.attachments,
        "reply_to": message.reply_to,
        "sent_at": message.sent_at,
        "email": message.email,
    })
    .to_string();
    let inserted = Message::insert(
        conn,
        &NewMessage {
            conversation_id: &conversation.id,
            channel_account_id: &account.id,
            direction: Direction::Inbound,
            author_kind: AuthorKind::Customer,
            author_user_id: None,
            body: &message.text,
            external_id: Some(&message.external_id),
            metadata: Some(&metadata),
        },
    )
    .await?;
    Ok((inserted, conversation.id))
}
