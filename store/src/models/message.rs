//! Messages of a conversation, in order.
//!
//! `seq` is the ordering key: dense per conversation, assigned by bumping
//! `conversations.last_seq` in the same transaction as the insert (a write
//! first, so SQLite takes its write lock at once and PostgreSQL its row lock).
//! `(channel_account_id, direction, external_id)` is unique, so a platform
//! redelivering a message is a no-op.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;

use super::text_enum;
use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::{conversations, messages};

text_enum! {
    /// Into or out of Frontdesk.
    pub enum Direction {
        /// From the customer.
        Inbound = "inbound",
        /// To the customer.
        Outbound = "outbound",
    }
}

text_enum! {
    /// Who wrote it.
    pub enum AuthorKind {
        /// The customer.
        Customer = "customer",
        /// The bot.
        Bot = "bot",
        /// A human agent.
        Agent = "agent",
        /// Frontdesk itself (notices, handoff messages).
        System = "system",
    }
}

text_enum! {
    /// Delivery state of an outbound message.
    pub enum DeliveryStatus {
        /// Not yet accepted by the platform.
        Pending = "pending",
        /// Being sent; a crash here leaves it for an operator, never resent.
        Sending = "sending",
        /// Accepted by the platform.
        Sent = "sent",
        /// Delivered to the device.
        Delivered = "delivered",
        /// Read by the customer.
        Read = "read",
        /// Given up; see `delivery_error`.
        Failed = "failed",
    }
}

/// A message.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = messages)]
pub struct Message {
    /// UUID.
    pub id: String,
    /// Conversation.
    pub conversation_id: String,
    /// Account it came through or goes out through.
    pub channel_account_id: String,
    /// Position in the conversation, from 1.
    pub seq: i64,
    /// In or out.
    pub direction: Direction,
    /// Who wrote it.
    pub author_kind: AuthorKind,
    /// The agent, for agent messages.
    pub author_user_id: Option<String>,
    /// Text.
    pub body: String,
    /// The platform's id for it, account-unique.
    pub external_id: Option<String>,
    /// JSON: attachments and other platform details.
    pub metadata: Option<String>,
    /// Outbound only.
    pub delivery_status: Option<DeliveryStatus>,
    /// Why delivery failed.
    pub delivery_error: Option<String>,
    /// Stored.
    pub created_at: NaiveDateTime,
    /// Bot replies: `<answered seq>:<part>`.
    pub reply_key: Option<String>,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Conversation.
    pub conversation_id: &'a str,
    /// Account.
    pub channel_account_id: &'a str,
    /// In or out.
    pub direction: Direction,
    /// Who wrote it.
    pub author_kind: AuthorKind,
    /// The agent, for agent messages.
    pub author_user_id: Option<&'a str>,
    /// Text.
    pub body: &'a str,
    /// Platform id, unique per account and direction.
    pub external_id: Option<&'a str>,
    /// JSON metadata.
    pub metadata: Option<&'a str>,
}

/// One part of a bot's reply in a turn.
#[derive(Debug, Clone, Copy)]
pub struct TurnReply<'a> {
    /// The inbound seq the turn answers up to.
    pub covered: i64,
    /// The part's position in the turn's reply, from 0.
    pub part: usize,
    /// Text.
    pub text: &'a str,
    /// JSON metadata (sources, confidence).
    pub metadata: Option<&'a str>,
}

/// What [`Message::insert`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Stored now.
    New(Message),
    /// The platform id was already stored; nothing changed.
    Duplicate(Message),
}

impl Message {
    /// Stores a message at the end of its conversation. A message whose
    /// `external_id` is already stored for its account and direction is not
    /// stored again: the existing row is returned as a duplicate.
    pub async fn insert(conn: &mut DbConn, new: &NewMessage<'_>) -> Result<Inserted, DbError> {
        if let Some(existing) = Self::find_external(conn, new).await? {
            return Ok(Inserted::Duplicate(existing));
        }
        let at = now();
        let delivery = (new.direction == Direction::Outbound).then_some(DeliveryStatus::Pending);
        let outcome = db_run!(conn: {
            conn.transaction(async |conn| {
                let seq: i64 = diesel::update(conversations::table.find(new.conversation_id))
                    .set((
                        conversations::last_seq.eq(conversations::last_seq + 1),
                        conversations::last_message_at.eq(at),
                        conversations::updated_at.eq(at),
                    ))
                    .returning(conversations::last_seq)
                    .get_result(conn)
                    .await?;
                diesel::insert_into(messages::table)
                    .values((
                        messages::id.eq(new_id()),
                        messages::conversation_id.eq(new.conversation_id),
                        messages::channel_account_id.eq(new.channel_account_id),
                        messages::seq.eq(seq),
                        messages::direction.eq(new.direction),
                        messages::author_kind.eq(new.author_kind),
                        messages::author_user_id.eq(new.author_user_id),
                        messages::body.eq(new.body),
                        messages::external_id.eq(new.external_id),
                        messages::metadata.eq(new.metadata),
                        messages::delivery_status.eq(delivery),
                        messages::created_at.eq(at),
                    ))
                    .returning(Message::as_returning())
                    .get_result(conn)
                    .await
            })
            .await
        });
        match outcome {
            Ok(message) => Ok(Inserted::New(message)),
            // A concurrent delivery of the same message won the race; its
            // transaction rolled ours back, seq included.
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) if new.external_id.is_some() => match Self::find_external(conn, new).await? {
                Some(existing) => Ok(Inserted::Duplicate(existing)),
                None => Err(DbError::Query(diesel::result::Error::NotFound)),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn find_external(
        conn: &mut DbConn,
        new: &NewMessage<'_>,
    ) -> Result<Option<Message>, DbError> {
        match new.external_id {
            Some(external_id) => {
                Self::find_by_external(conn, new.channel_account_id, new.direction, external_id)
                    .await
            }
            None => Ok(None),
        }
    }

    /// The message with this platform id on this account.
    pub async fn find_by_external(
        conn: &mut DbConn,
        channel_account_id: &str,
        direction: Direction,
        external_id: &str,
    ) -> Result<Option<Message>, DbError> {
        Ok(db_run!(conn: {
            messages::table
                .filter(messages::channel_account_id.eq(channel_account_id))
                .filter(messages::direction.eq(direction))
                .filter(messages::external_id.eq(external_id))
                .select(Message::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// The conversation's customer messages that no turn handled yet, in order.
    pub async fn unanswered(
        conn: &mut DbConn,
        conversation: &crate::models::conversation::Conversation,
    ) -> Result<Vec<Message>, DbError> {
        Ok(db_run!(conn: {
            messages::table
                .filter(messages::conversation_id.eq(&conversation.id))
                .filter(messages::direction.eq(Direction::Inbound))
                .filter(messages::seq.gt(conversation.answered_seq))
                .order(messages::seq)
                .select(Message::as_select())
                .load(conn)
                .await?
        }))
    }

    /// The bot replies stored for the turn that covers inbound messages up
    /// to `covered`, in order.
    pub async fn replies_for(
        conn: &mut DbConn,
        conversation_id: &str,
        covered: i64,
    ) -> Result<Vec<Message>, DbError> {
        let pattern = format!("{covered}:%");
        Ok(db_run!(conn: {
            messages::table
                .filter(messages::conversation_id.eq(conversation_id))
                .filter(messages::reply_key.like(&pattern))
                .order(messages::seq)
                .select(Message::as_select())
                .load(conn)
                .await?
        }))
    }

    /// The turn a dead worker left unfinished: the inbound seq its stored
    /// replies cover (the lowest above `answered_seq`) and those replies.
    pub async fn unfinished_turn(
        conn: &mut DbConn,
        conversation: &crate::models::conversation::Conversation,
    ) -> Result<Option<(i64, Vec<Message>)>, DbError> {
        let keys: Vec<Option<String>> = db_run!(conn: {
            messages::table
                .filter(messages::conversation_id.eq(&conversation.id))
                .filter(messages::reply_key.is_not_null())
                .filter(messages::seq.gt(conversation.answered_seq))
                .select(messages::reply_key)
                .load(conn)
                .await?
        });
        let covered = keys
            .iter()
            .flatten()
            .filter_map(|k| k.split(':').next()?.parse::<i64>().ok())
            .filter(|c| *c > conversation.answered_seq)
            .min();
        match covered {
            Some(c) => Ok(Some((
                c,
                Self::replies_for(conn, &conversation.id, c).await?,
            ))),
            None => Ok(None),
        }
    }

    /// Stores part `part` of a turn's reply (pending delivery) at the end of
    /// the conversation, keyed `covered:part`, if the turn `token` still
    /// holds the fence; `None` if a newer turn took over. If this part was
    /// stored already (by a worker that died), returns that one.
    pub async fn insert_reply(
        conn: &mut DbConn,
        conversation: &crate::models::conversation::Conversation,
        token: i64,
        reply: TurnReply<'_>,
    ) -> Result<Option<Message>, DbError> {
        let at = now();
        let key = format!("{}:{}", reply.covered, reply.part);
        let outcome = db_run!(conn: {
            conn.transaction(async |conn| {
                let seq: Option<i64> = diesel::update(
                    conversations::table
                        .find(&conversation.id)
                        .filter(conversations::turn_fence.eq(token))
                        // An agent took over or a handoff is pending: the
                        // bot must not add a word, even mid-answer.
                        .filter(conversations::status.eq(
                            crate::models::conversation::ConversationStatus::Bot,
                        )),
                )
                .set((
                    conversations::last_seq.eq(conversations::last_seq + 1),
                    conversations::last_message_at.eq(at),
                    conversations::updated_at.eq(at),
                ))
                .returning(conversations::last_seq)
                .get_result(conn)
                .await
                .optional()?;
                let Some(seq) = seq else {
                    return Ok::<_, diesel::result::Error>(None);
                };
                let message = diesel::insert_into(messages::table)
                    .values((
                        messages::id.eq(new_id()),
                        messages::conversation_id.eq(&conversation.id),
                        messages::channel_account_id.eq(&conversation.channel_account_id),
                        messages::seq.eq(seq),
                        messages::direction.eq(Direction::Outbound),
                        messages::author_kind.eq(AuthorKind::Bot),
                        messages::body.eq(reply.text),
                        messages::metadata.eq(reply.metadata),
                        messages::delivery_status.eq(DeliveryStatus::Pending),
                        messages::created_at.eq(at),
                        messages::reply_key.eq(&key),
                    ))
                    .returning(Message::as_returning())
                    .get_result(conn)
                    .await?;
                Ok(Some(message))
            })
            .await
        });
        match outcome {
            Ok(stored) => Ok(stored),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(Self::replies_for(conn, &conversation.id, reply.covered)
                .await?
                .into_iter()
                .find(|m| m.reply_key.as_deref() == Some(key.as_str()))),
            Err(e) => Err(e.into()),
        }
    }

    /// The conversation's messages before `seq`, newest `limit` of them, in
    /// order.
    pub async fn before(
        conn: &mut DbConn,
        conversation_id: &str,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<Message>, DbError> {
        let mut found: Vec<Message> = db_run!(conn: {
            messages::table
                .filter(messages::conversation_id.eq(conversation_id))
                .filter(messages::seq.lt(seq))
                .order(messages::seq.desc())
                .limit(limit)
                .select(Message::as_select())
                .load(conn)
                .await?
        });
        found.reverse();
        Ok(found)
    }

    /// Whether the bot has written in the conversation before.
    pub async fn bot_has_replied(
        conn: &mut DbConn,
        conversation_id: &str,
    ) -> Result<bool, DbError> {
        Ok(Self::bot_replies_since(conn, conversation_id, None).await? > 0)
    }

    /// How many messages the bot wrote in the conversation since `since`
    /// (ever, when `None`).
    pub async fn bot_replies_since(
        conn: &mut DbConn,
        conversation_id: &str,
        since: Option<NaiveDateTime>,
    ) -> Result<i64, DbError> {
        let since = since.unwrap_or(chrono::DateTime::UNIX_EPOCH.naive_utc());
        Ok(db_run!(conn: {
            messages::table
                .filter(messages::conversation_id.eq(conversation_id))
                .filter(messages::author_kind.eq(AuthorKind::Bot))
                .filter(messages::created_at.gt(since))
                .count()
                .get_result(conn)
                .await?
        }))
    }

    /// The conversation's newest customer message.
    pub async fn last_inbound(
        conn: &mut DbConn,
        conversation_id: &str,
    ) -> Result<Option<Message>, DbError> {
        Ok(db_run!(conn: {
            messages::table
                .filter(messages::conversation_id.eq(conversation_id))
                .filter(messages::direction.eq(Direction::Inbound))
                .order(messages::seq.desc())
                .select(Message::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// By id.
    pub async fn find(conn: &mut DbConn, id: &str) -> Result<Option<Message>, DbError> {
        Ok(db_run!(conn: {
            messages::table
                .find(id)
                .select(Message::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// Replaces the text of an edited message, keeping the history in its
    /// metadata (`edits`: earlier texts, oldest first).
    pub async fn record_edit(
        conn: &mut DbConn,
        message: &Message,
        new_body: &str,
    ) -> Result<(), DbError> {
        let mut metadata: serde_json::Value = message
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        if !metadata.is_object() {
            metadata = serde_json::json!({});
        }
        let edits = metadata
            .as_object_mut()
            .map(|m| m.entry("edits").or_insert_with(|| serde_json::json!([])));
        if let Some(serde_json::Value::Array(edits)) = edits {
            edits.push(serde_json::json!(message.body));
        }
        let metadata = metadata.to_string();
        db_run!(conn: {
            diesel::update(messages::table.find(&message.id))
                .set((messages::body.eq(new_body), messages::metadata.eq(&metadata)))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Sets `metadata[key]` on a message, keeping the rest of its metadata
    /// (a reaction, the template a reply was sent as).
    pub async fn annotate(
        conn: &mut DbConn,
        id: &str,
        key: &str,
        value: impl Into<serde_json::Value>,
    ) -> Result<(), DbError> {
        let before: Option<Option<String>> = db_run!(conn: {
            messages::table
                .find(id)
                .select(messages::metadata)
                .first(conn)
                .await
                .optional()?
        });
        let mut metadata = before
            .flatten()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        metadata[key] = value.into();
        let metadata = metadata.to_string();
        db_run!(conn: {
            diesel::update(messages::table.find(id))
                .set(messages::metadata.eq(&metadata))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Claims a pending outbound message for sending: `false` if another
    /// deliverer has it (or it is no longer pending).
    pub async fn claim_for_sending(
        conn: &mut DbConn,
        id: &str,
        from: &[DeliveryStatus],
    ) -> Result<bool, DbError> {
        let claimed = db_run!(conn: {
            diesel::update(
                messages::table
                    .find(id)
                    .filter(messages::delivery_status.eq_any(from)),
            )
            .set(messages::delivery_status.eq(DeliveryStatus::Sending))
            .execute(conn)
            .await?
        });
        Ok(claimed == 1)
    }

    /// Records a sent message: the platform ids of its parts (the first as
    /// its `external_id`, all in `metadata.parts`, beside what the metadata
    /// held: sources, a handoff notice), and `sent` unless a receipt
    /// already moved it further.
    pub async fn record_sent(conn: &mut DbConn, id: &str, parts: &[String]) -> Result<(), DbError> {
        let before: Option<Option<String>> = db_run!(conn: {
            messages::table
                .find(id)
                .select(messages::metadata)
                .first(conn)
                .await
                .optional()?
        });
        let mut metadata = before
            .flatten()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        metadata["parts"] = serde_json::json!(parts);
        let metadata = metadata.to_string();
        db_run!(conn: {
            diesel::update(messages::table.find(id))
                .set((
                    messages::external_id.eq(parts.first()),
                    messages::metadata.eq(&metadata),
                    messages::delivery_error.eq(None::<String>),
                    messages::delivery_failed_at.eq(None::<chrono::NaiveDateTime>),
                ))
                .execute(conn)
                .await?;
            diesel::update(
                messages::table
                    .find(id)
                    .filter(messages::delivery_status.eq_any([DeliveryStatus::Pending, DeliveryStatus::Sending])),
            )
            .set(messages::delivery_status.eq(DeliveryStatus::Sent))
            .execute(conn)
            .await?;
        });
        Ok(())
    }

    /// Records the outcome of sending an outbound message.
    pub async fn set_delivery(
        conn: &mut DbConn,
        id: &str,
        status: DeliveryStatus,
        external_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        let failed_at = (status == DeliveryStatus::Failed).then(now);
        db_run!(conn: {
            diesel::update(messages::table.find(id))
                .set((
                    messages::delivery_status.eq(status),
                    messages::external_id.eq(external_id),
                    messages::delivery_error.eq(error),
                    messages::delivery_failed_at.eq(failed_at),
                ))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Moves outbound messages forward to `status` (`delivered` or `read`):
    /// those of this account whose platform id is in `external_ids`, and those
    /// of `conversation_ids` stored up to `up_to`. Never moves backwards.
    /// Returns how many changed.
    pub async fn advance_delivery(
        conn: &mut DbConn,
        channel_account_id: &str,
        external_ids: &[String],
        conversation_ids: &[String],
        up_to: Option<chrono::NaiveDateTime>,
        status: DeliveryStatus,
    ) -> Result<usize, DbError> {
        // A receipt may overtake our own record of the send.
        let earlier: &[DeliveryStatus] = match status {
            DeliveryStatus::Read => &[
                DeliveryStatus::Sending,
                DeliveryStatus::Sent,
                DeliveryStatus::Delivered,
            ],
            _ => &[DeliveryStatus::Sending, DeliveryStatus::Sent],
        };
        let mut changed = 0;
        db_run!(conn: {
            if !external_ids.is_empty() {
                changed += diesel::update(
                    messages::table
                        .filter(messages::channel_account_id.eq(channel_account_id))
                        .filter(messages::direction.eq(Direction::Outbound))
                        .filter(messages::external_id.eq_any(external_ids))
                        .filter(messages::delivery_status.eq_any(earlier)),
                )
                .set(messages::delivery_status.eq(status))
                .execute(conn)
                .await?;
            }
            if let Some(up_to) = up_to
                && !conversation_ids.is_empty()
            {
                changed += diesel::update(
                    messages::table
                        .filter(messages::conversation_id.eq_any(conversation_ids))
                        .filter(messages::direction.eq(Direction::Outbound))
                        .filter(messages::created_at.le(up_to))
                        .filter(messages::delivery_status.eq_any(earlier)),
                )
                .set(messages::delivery_status.eq(status))
                .execute(conn)
                .await?;
            }
        });
        Ok(changed)
    }

    /// The conversation's messages in order.
    pub async fn list(conn: &mut DbConn, conversation_id: &str) -> Result<Vec<Message>, DbError> {
        Ok(db_run!(conn: {
            messages::table
                .filter(messages::conversation_id.eq(conversation_id))
                .order(messages::seq)
                .select(Message::as_select())
                .load(conn)
                .await?
        }))
    }
}

impl Message {
    /// The conversation's newest message.
    pub async fn last_of(
        conn: &mut DbConn,
        conversation_id: &str,
    ) -> Result<Option<Message>, DbError> {
        Ok(db_run!(conn: {
            messages::table
                .filter(messages::conversation_id.eq(conversation_id))
                .order(messages::seq.desc())
                .select(Message::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// The conversation's messages after `seq`, oldest first, at most `limit`.
    pub async fn after(
        conn: &mut DbConn,
        conversation_id: &str,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<Message>, DbError> {
        Ok(db_run!(conn: {
            messages::table
                .filter(messages::conversation_id.eq(conversation_id))
                .filter(messages::seq.gt(seq))
                .order(messages::seq)
                .limit(limit)
                .select(Message::as_select())
                .load(conn)
                .await?
        }))
    }
}
