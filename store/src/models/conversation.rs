//! Conversations: one customer's exchange with one bot through one channel
//! account, from first message to resolution.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::text_enum;
use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::{conversations, messages};

text_enum! {
    /// Who is answering.
    pub enum ConversationStatus {
        /// The bot answers.
        Bot = "bot",
        /// Waiting for an agent; the bot stays silent.
        PendingHandoff = "pending_handoff",
        /// An agent answers; the bot stays silent.
        Agent = "agent",
        /// Closed; the customer's next message opens a new conversation.
        Resolved = "resolved",
    }
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = conversations)]
pub struct Conversation {
    /// UUID.
    pub id: String,
    /// Workspace (denormalized for scoping every query).
    pub workspace_id: String,
    /// Answering bot.
    pub bot_id: String,
    /// The customer.
    pub customer_id: String,
    /// The account the customer wrote to; replies go out through it.
    pub channel_account_id: String,
    /// Who is answering.
    pub status: ConversationStatus,
    /// Email: the thread's root Message-ID; empty for chat channels.
    pub thread_key: String,
    /// The agent who took over.
    pub assigned_agent_id: Option<String>,
    /// Ordering key of the newest message.
    pub last_seq: i64,
    /// Opened.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
    /// Newest message.
    pub last_message_at: NaiveDateTime,
    /// When resolved.
    pub resolved_at: Option<NaiveDateTime>,
    /// Inbound messages up to this seq are handled.
    pub answered_seq: i64,
    /// Fencing token of the newest turn started here.
    pub turn_fence: i64,
}

/// Identifies where a conversation happens.
#[derive(Debug, Clone, Copy)]
pub struct ConversationKey<'a> {
    /// Workspace.
    pub workspace_id: &'a str,
    /// Bot.
    pub bot_id: &'a str,
    /// Customer.
    pub customer_id: &'a str,
    /// Channel account.
    pub channel_account_id: &'a str,
    /// Email thread root; `""` for chat channels (one open conversation).
    pub thread_key: &'a str,
}

impl Conversation {
    /// The open (not resolved) conversation for this customer and account,
    /// opened if there is none. Concurrent first messages all get the same
    /// conversation: the partial unique index `conversations_one_open` lets
    /// one insert win and the others do nothing.
    pub async fn open_for(
        conn: &mut DbConn,
        key: ConversationKey<'_>,
    ) -> Result<Conversation, DbError> {
        let at = now();
        Ok(db_run!(conn: {
            diesel::insert_into(conversations::table)
                .values((
                    conversations::id.eq(new_id()),
                    conversations::workspace_id.eq(key.workspace_id),
                    conversations::bot_id.eq(key.bot_id),
                    conversations::customer_id.eq(key.customer_id),
                    conversations::channel_account_id.eq(key.channel_account_id),
                    conversations::status.eq(ConversationStatus::Bot),
                    conversations::thread_key.eq(key.thread_key),
                    conversations::last_seq.eq(0_i64),
                    conversations::created_at.eq(at),
                    conversations::updated_at.eq(at),
                    conversations::last_message_at.eq(at),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            conversations::table
                .filter(conversations::channel_account_id.eq(key.channel_account_id))
                .filter(conversations::customer_id.eq(key.customer_id))
                .filter(conversations::thread_key.eq(key.thread_key))
                .filter(conversations::status.ne(ConversationStatus::Resolved))
                .select(Conversation::as_select())
                .first(conn)
                .await?
        }))
    }

    /// The open conversations of a customer on an account (all threads).
    pub async fn open_of_customer(
        conn: &mut DbConn,
        channel_account_id: &str,
        customer_id: &str,
    ) -> Result<Vec<Conversation>, DbError> {
        Ok(db_run!(conn: {
            conversations::table
                .filter(conversations::channel_account_id.eq(channel_account_id))
                .filter(conversations::customer_id.eq(customer_id))
                .filter(conversations::status.ne(ConversationStatus::Resolved))
                .select(Conversation::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Fences a turn: bumps the conversation's fencing token and returns it
    /// (`None`: no such conversation). Called under the broker's lock; a
    /// turn whose token is no longer the stored one must not write. The
    /// database owns the counter, so it survives broker restarts.
    pub async fn start_turn(conn: &mut DbConn, id: &str) -> Result<Option<i64>, DbError> {
        Ok(db_run!(conn: {
            diesel::update(conversations::table.find(id))
                .set(conversations::turn_fence.eq(conversations::turn_fence + 1))
                .returning(conversations::turn_fence)
                .get_result::<i64>(conn)
                .await
                .optional()?
        }))
    }

    /// Gives up the conversation's unanswered messages (their turn was
    /// dead-lettered), so the sweeper stops re-queueing them.
    pub async fn give_up_unanswered(conn: &mut DbConn, id: &str) -> Result<(), DbError> {
        db_run!(conn: {
            diesel::update(conversations::table.find(id))
                .set(conversations::answered_seq.eq(conversations::last_seq))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Records that inbound messages up to `covered` are handled, if the
    /// turn `token` still holds the fence. Never moves backwards.
    pub async fn finish_turn(
        conn: &mut DbConn,
        id: &str,
        token: i64,
        covered: i64,
    ) -> Result<bool, DbError> {
        let updated = db_run!(conn: {
            diesel::update(
                conversations::table
                    .find(id)
                    .filter(conversations::turn_fence.eq(token))
                    .filter(conversations::answered_seq.lt(covered)),
            )
            .set((
                conversations::answered_seq.eq(covered),
                conversations::updated_at.eq(now()),
            ))
            .execute(conn)
            .await?
        });
        Ok(updated == 1)
    }

    /// Open conversations holding a customer message stored before `cutoff`
    /// that no turn has handled.
    pub async fn with_unanswered(
        conn: &mut DbConn,
        cutoff: NaiveDateTime,
    ) -> Result<Vec<String>, DbError> {
        use crate::models::message::Direction;
        Ok(db_run!(conn: {
            conversations::table
                .filter(conversations::status.ne(ConversationStatus::Resolved))
                .filter(diesel::dsl::exists(
                    messages::table
                        .filter(messages::conversation_id.eq(conversations::id))
                        .filter(messages::direction.eq(Direction::Inbound))
                        .filter(messages::seq.gt(conversations::answered_seq))
                        .filter(messages::created_at.lt(cutoff)),
                ))
                .select(conversations::id)
                .load::<String>(conn)
                .await?
        }))
    }

    /// By id.
    pub async fn find(conn: &mut DbConn, id: &str) -> Result<Option<Conversation>, DbError> {
        Ok(db_run!(conn: {
            conversations::table
                .find(id)
                .select(Conversation::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// Moves the conversation to `to` if its status is one of `from`, and
    /// sets its agent when `agent` is given (`Some(None)` clears it).
    /// `None`: it was in another state (or is gone), nothing changed.
    pub async fn transition(
        conn: &mut DbConn,
        id: &str,
        from: &[ConversationStatus],
        to: ConversationStatus,
        agent: Option<Option<&str>>,
    ) -> Result<Option<Conversation>, DbError> {
        let at = now();
        let resolved_at = (to == ConversationStatus::Resolved).then_some(at);
        let from = from.to_vec();
        Ok(db_run!(conn: {
            let target = conversations::table
                .find(id)
                .filter(conversations::status.eq_any(from.clone()));
            match agent {
                Some(agent) => diesel::update(target)
                    .set((
                        conversations::status.eq(to),
                        conversations::assigned_agent_id.eq(agent),
                        conversations::resolved_at.eq(resolved_at),
                        conversations::updated_at.eq(at),
                    ))
                    .returning(Conversation::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?,
                None => diesel::update(target)
                    .set((
                        conversations::status.eq(to),
                        conversations::resolved_at.eq(resolved_at),
                        conversations::updated_at.eq(at),
                    ))
                    .returning(Conversation::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?,
            }
        }))
    }

    /// Moves the conversation to `status`; resolving stamps `resolved_at`.
    pub async fn set_status(
        conn: &mut DbConn,
        id: &str,
        status: ConversationStatus,
    ) -> Result<Conversation, DbError> {
        let at = now();
        let resolved_at = (status == ConversationStatus::Resolved).then_some(at);
        Ok(db_run!(conn: {
            diesel::update(conversations::table.find(id))
                .set((
                    conversations::status.eq(status),
                    conversations::resolved_at.eq(resolved_at),
                    conversations::updated_at.eq(at),
                ))
                .returning(Conversation::as_returning())
                .get_result(conn)
                .await?
        }))
    }
}

/// Which conversations a list shows.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only this status.
    pub status: Option<ConversationStatus>,
    /// Only this bot's.
    pub bot_id: Option<String>,
    /// Only on these channel accounts.
    pub accounts: Option<Vec<String>>,
    /// Only these conversations.
    pub ids: Option<Vec<String>>,
    /// After this `(last_message_at, id)` in the list's order.
    pub after: Option<(NaiveDateTime, String)>,
}

impl Conversation {
    /// A page of the workspace's conversations, most recent activity first.
    pub async fn page(
        conn: &mut DbConn,
        workspace_id: &str,
        filter: &ConversationFilter,
        limit: i64,
    ) -> Result<Vec<Conversation>, DbError> {
        Ok(db_run!(conn: {
            let mut query = conversations::table
                .filter(conversations::workspace_id.eq(workspace_id))
                .into_boxed();
            if let Some(status) = filter.status {
                query = query.filter(conversations::status.eq(status));
            }
            if let Some(bot) = &filter.bot_id {
                query = query.filter(conversations::bot_id.eq(bot));
            }
            if let Some(accounts) = &filter.accounts {
                query = query.filter(conversations::channel_account_id.eq_any(accounts));
            }
            if let Some(ids) = &filter.ids {
                query = query.filter(conversations::id.eq_any(ids));
            }
            if let Some((at, id)) = &filter.after {
                query = query.filter(
                    conversations::last_message_at
                        .lt(at)
                        .or(conversations::last_message_at.eq(at).and(conversations::id.lt(id))),
                );
            }
            query
                .order((conversations::last_message_at.desc(), conversations::id.desc()))
                .limit(limit)
                .select(Conversation::as_select())
                .load(conn)
                .await?
        }))
    }
}
