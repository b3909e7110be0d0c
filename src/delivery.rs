//! Outbound delivery: a stored outbound message → the customer's channel.
//!
//! The message is sent through the adapter of the conversation's account
//! (split within the platform's limits, retried with backoff inside the
//! adapter), then marked `sent` with the platform's id, or `failed` with the
//! reason. A message that is not pending is not sent again. Email replies
//! thread under the customer's latest message (`In-Reply-To`, `References`,
//! `Re:` subject).

use channels::{Channel, ChannelKind, EmailReply, OutboundMessage, Reach, Recipient};

use crate::context::App;
use crate::window;
use store::db::DbError;
use store::models::channel_account::{AccountSecrets, AccountStatus, ChannelAccount};
use store::models::conversation::Conversation;
use store::models::customer::Customer;
use store::models::message::{DeliveryStatus, Direction, Message};

/// What [`deliver`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted by the platform; its ids, one per part.
    Sent(Vec<String>),
    /// Given up; recorded on the message.
    Failed(String),
    /// Not pending (already sent, failed, or not outbound): nothing done.
    NotPending,
}

/// Sends the outbound message `message_id` and records the outcome.
/// `retry_sending`: also take a message left `sending` by a worker that
/// died (the caller holds the conversation, so no one else is sending it).
pub async fn deliver(
    app: &App,
    message_id: &str,
    retry_sending: bool,
) -> Result<Delivery, DbError> {
    let mut conn = app.db.get().await?;
    let Some(message) = Message::find(&mut conn, message_id).await? else {
        return Ok(Delivery::NotPending);
    };
    let takeable: &[DeliveryStatus] = if retry_sending {
        &[DeliveryStatus::Pending, DeliveryStatus::Sending]
    } else {
        &[DeliveryStatus::Pending]
    };
    if message.direction != Direction::Outbound
        || !message
            .delivery_status
            .is_some_and(|status| takeable.contains(&status))
    {
        return Ok(Delivery::NotPending);
    }
    // Claim it: of two deliverers racing, one sends.
    if !Message::claim_for_sending(&mut conn, &message.id, takeable).await? {
        return Ok(Delivery::NotPending);
    }
    let target = match target(app, &mut conn, &message).await? {
        Ok(target) => target,
        Err(reason) => return fail(app, &message, reason).await,
    };
    // No connection is held while the platform answers (it may take retries).
    drop(conn);
    // "Did you mean…" options go out as the platform's buttons.
    let outbound = OutboundMessage {
        text: message.body.clone(),
        choices: channels::choices::Offer::from_metadata(message.metadata.as_deref())
            .map(|offer| offer.choices())
            .unwrap_or_default(),
        reach: target.reach,
    };
    let secrets = target.secrets;
    let result = match target.kind {
        ChannelKind::Telegram => {
            app.channels
                .telegram
                .send(&secrets, &target.recipient, &outbound)
                .await
        }
        ChannelKind::Messenger => {
            app.channels
                .messenger
                .send(&secrets, &target.recipient, &outbound)
                .await
        }
        ChannelKind::Email => {
            app.channels
                .email
                .send(&secrets, &target.recipient, &outbound)
                .await
        }
        ChannelKind::Whatsapp => {
            app.channels
                .whatsapp
                .send(&secrets, &target.recipient, &outbound)
                .await
        }
        ChannelKind::Instagram => {
            app.channels
                .instagram
                .send(&secrets, &target.recipient, &outbound)
                .await
        }
        // The widget's socket got it with its `message.created` event, and
        // replays it from the database after a reconnect.
        ChannelKind::Webchat => Ok(vec![channels::Sent {
            external_id: message.id.clone(),
        }]),
    };
    match result {
        Ok(sent) => {
            let ids: Vec<String> = sent.into_iter().map(|s| s.external_id).collect();
            let mut conn = app.db.get().await?;
            Message::record_sent(&mut conn, &message.id, &ids).await?;
            if let channels::Reach::Template { name, .. } = &outbound.reach {
                // The customer got the template, not these words: said
                // on the message, for the agent.
                Message::annotate(&mut conn, &message.id, "sent_as_template", name.as_str())
                    .await?;
            }
            tracing::info!(message = %message.id, parts = ids.len(), "reply sent");
            Ok(Delivery::Sent(ids))
        }
        Err(error) => fail(app, &message, error.to_string()).await,
    }
}

/// Shows a typing indicator in the conversation's channel. Best effort (one
/// attempt): failures are logged, never returned.
pub async fn typing(app: &App, conversation_id: &str) {
    let outcome = async {
        let mut conn = app.db.get().await.map_err(|e| e.to_string())?;
        let conversation = Conversation::find(&mut conn, conversation_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no such conversation")?;
        let (account, customer) = account_and_customer(&mut conn, &conversation)
            .await
            .map_err(|e| e.to_string())??;
        let secrets = account
            .secrets(&app.master_key)
            .map_err(|e| e.to_string())?;
        // WhatsApp shows typing against the customer's latest message.
        let last = if account.kind == ChannelKind::Whatsapp {
            Message::last_inbound(&mut conn, &conversation.id)
                .await
                .map_err(|e| e.to_string())?
        } else {
            None
        };
        let to = Recipient {
            external_id: customer.external_user_id,
            email: None,
            last_inbound: last.and_then(|m| m.external_id),
            via: account.external_id.clone(),
        };
        match account.kind {
            ChannelKind::Telegram => app.channels.telegram.typing(&secrets, &to).await,
            ChannelKind::Messenger => app.channels.messenger.typing(&secrets, &to).await,
            ChannelKind::Whatsapp => app.channels.whatsapp.typing(&secrets, &to).await,
            ChannelKind::Instagram => app.channels.instagram.typing(&secrets, &to).await,
            ChannelKind::Webchat => {
                crate::events::typing(app, &conversation.workspace_id, &conversation.id).await;
                Ok(())
            }
            ChannelKind::Email => Ok(()),
        }
        .map_err(|e| e.to_string())
    }
    .await;
    if let Err(error) = outcome {
        tracing::debug!(conversation = conversation_id, %error, "typing indicator not shown");
    }
}

struct Target {
    kind: ChannelKind,
    recipient: Recipient,
    secrets: AccountSecrets,
    reach: Reach,
}

async fn account_and_customer(
    conn: &mut store::db::DbConn,
    conversation: &Conversation,
) -> Result<Result<(ChannelAccount, Customer), String>, DbError> {
    let account = ChannelAccount::find_by_id(conn, &conversation.channel_account_id).await?;
    let customer = Customer::find_by_id(conn, &conversation.customer_id).await?;
    Ok(match (account, customer) {
        (Some(account), Some(customer)) => Ok((account, customer)),
        _ => Err("the conversation's account or customer is gone".into()),
    })
}

async fn target(
    app: &App,
    conn: &mut store::db::DbConn,
    message: &Message,
) -> Result<Result<Target, String>, DbError> {
    let Some(conversation) = Conversation::find(conn, &message.conversation_id).await? else {
        return Ok(Err("the conversation is gone".into()));
    };
    let (account, customer) = match account_and_customer(conn, &conversation).await? {
        Ok(pair) => pair,
        Err(reason) => return Ok(Err(reason)),
    };
    if account.status != AccountStatus::Active {
        return Ok(Err(format!(
            "channel account `{}` is disabled",
            account.public_id
        )));
    }
    let secrets = match account.secrets(&app.master_key) {
        Ok(secrets) => secrets,
        Err(e) => {
            return Ok(Err(format!(
                "cannot decrypt the account's credentials: {e}"
            )));
        }
    };
    // Email replies go to `Reply-To` only when it is on the domain of an
    // authenticated `From`: anyone can write a `Reply-To`, and a bot must
    // not send a business's answers wherever a stranger asks. Agents still
    // see it with the message.
    // The customer's latest message: for Meta's window (and WhatsApp's
    // read marks) and email threading; other channels need no query.
    let last = if account.kind.has_window() || account.kind == ChannelKind::Email {
        Message::last_inbound(conn, &conversation.id).await?
    } else {
        None
    };
    // Meta's platforms: the bot writes within 24 hours of the customer's
    // last message, a person later only as the platform allows.
    let reach = match window::reach_now(account.kind, last.as_ref(), message, &secrets) {
        Ok(reach) => reach,
        Err(closed) => return Ok(Err(closed.reason)),
    };
    let mut address = None;
    let email = if account.kind == ChannelKind::Email {
        let thread: Option<channels::EmailThread> = last
            .as_ref()
            .and_then(|m| m.metadata.as_deref())
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .and_then(|m| serde_json::from_value(m["email"].clone()).ok());
        let (subject, in_reply_to, references, reply_to) = match thread {
            Some(t) => {
                let mut refs = t.references.clone();
                if !refs.contains(&t.message_id) {
                    refs.push(t.message_id.clone());
                }
                let reply_to = t.reply_to.filter(|to| {
                    t.auth.authenticated
                        && channels::email_domain(to).is_some_and(|theirs| {
                            channels::email_domain(&customer.external_user_id)
                                .is_some_and(|from| channels::domains_aligned(&theirs, &from))
                        })
                });
                (t.subject, Some(t.message_id), refs, reply_to)
            }
            None => (String::new(), None, Vec::new(), None),
        };
        address = reply_to;
        Some(EmailReply {
            from: account.external_id.clone().unwrap_or_default(),
            subject,
            in_reply_to,
            references,
        })
    } else {
        None
    };
    Ok(Ok(Target {
        kind: account.kind,
        recipient: Recipient {
            external_id: address.unwrap_or(customer.external_user_id),
            email,
            last_inbound: last.and_then(|m| m.external_id),
            via: account.external_id.clone(),
        },
        secrets,
        reach,
    }))
}

async fn fail(app: &App, message: &Message, reason: String) -> Result<Delivery, DbError> {
    tracing::warn!(message = %message.id, %reason, "reply not delivered");
    let mut conn = app.db.get().await?;
    Message::set_delivery(
        &mut conn,
        &message.id,
        DeliveryStatus::Failed,
        None,
        Some(&reason),
    )
    .await?;
    Ok(Delivery::Failed(reason))
}
