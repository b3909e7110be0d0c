//! What the bot could not answer, remembered: each handoff's question as a
//! vector ([`HandoffVector`], for similar resolved cases) and the questions
//! handed off for want of knowledge, grouped by similarity ([`Gap`]).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::conversation::ConversationStatus;
use super::knowledge::{pack_vectors, unpack_vectors};
use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::{conversations, handoff_vectors, handoffs, knowledge_gaps, messages};

/// At most this many questions are kept verbatim in a gap.
pub const MAX_EXAMPLES: usize = 10;

/// The vector of one handoff's question.
#[derive(Debug)]
pub struct HandoffVector;

/// An earlier handoff of a resolved conversation, for similar cases.
#[derive(Debug, Clone)]
pub struct ResolvedCase {
    /// Its conversation.
    pub conversation_id: String,
    /// The customer's question.
    pub question: String,
    /// When it was handed off.
    pub handed_off_at: NaiveDateTime,
    /// The question's vector.
    pub vector: Vec<f32>,
}

impl HandoffVector {
    /// Stores the vector of `handoff_id`'s question.
    pub async fn insert(
        conn: &mut DbConn,
        handoff_id: &str,
        bot_id: &str,
        model: &str,
        vector: &[f32],
    ) -> Result<(), DbError> {
        let bytes = pack_vectors(std::slice::from_ref(&vector.to_vec()));
        let at = now();
        db_run!(conn: {
            diesel::insert_into(handoff_vectors::table)
                .values((
                    handoff_vectors::handoff_id.eq(handoff_id),
                    handoff_vectors::bot_id.eq(bot_id),
                    handoff_vectors::model.eq(model),
                    handoff_vectors::vector.eq(&bytes),
                    handoff_vectors::created_at.eq(at),
                ))
                .execute(conn)
                .await?
        });
        Ok(())
    }

    /// The stored vector of `handoff_id`, with its model.
    pub async fn of(
        conn: &mut DbConn,
        handoff_id: &str,
    ) -> Result<Option<(String, Vec<f32>)>, DbError> {
        let row: Option<(String, Vec<u8>)> = db_run!(conn: {
            handoff_vectors::table
                .filter(handoff_vectors::handoff_id.eq(handoff_id))
                .select((handoff_vectors::model, handoff_vectors::vector))
                .first(conn)
                .await
                .optional()?
        });
        Ok(row.and_then(|(model, bytes)| Some((model, single(&bytes)?))))
    }

    /// The `limit` latest handoffs of `bot_id`'s resolved conversations
    /// other than `except`, whose vectors are of `model`.
    pub async fn resolved_cases(
        conn: &mut DbConn,
        bot_id: &str,
        model: &str,
        except: &str,
        limit: i64,
    ) -> Result<Vec<ResolvedCase>, DbError> {
        let rows: Vec<(String, String, NaiveDateTime, Vec<u8>)> = db_run!(conn: {
            handoff_vectors::table
                .inner_join(handoffs::table.inner_join(conversations::table))
                .filter(handoff_vectors::bot_id.eq(bot_id))
                .filter(handoff_vectors::model.eq(model))
                .filter(conversations::status.eq(ConversationStatus::Resolved.as_str()))
                .filter(handoffs::conversation_id.ne(except))
                .order(handoff_vectors::created_at.desc())
                .limit(limit)
                .select((
                    handoffs::conversation_id,
                    handoffs::question,
                    handoffs::created_at,
                    handoff_vectors::vector,
                ))
                .load(conn)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(conversation_id, question, handed_off_at, bytes)| {
                Some(ResolvedCase {
                    conversation_id,
                    question,
                    handed_off_at,
                    vector: single(&bytes)?,
                })
            })
            .collect())
    }
}

/// The first reply an agent sent in `conversation_id` at or after `after`.
pub async fn agent_reply_after(
    conn: &mut DbConn,
    conversation_id: &str,
    after: NaiveDateTime,
) -> Result<Option<String>, DbError> {
    Ok(db_run!(conn: {
        messages::table
            .filter(messages::conversation_id.eq(conversation_id))
            .filter(messages::direction.eq("outbound"))
            .filter(messages::author_kind.eq("agent"))
            .filter(messages::created_at.ge(after))
            .order(messages::seq)
            .select(messages::body)
            .first::<String>(conn)
            .await
            .optional()?
    }))
}

/// One stored vector.
fn single(bytes: &[u8]) -> Option<Vec<f32>> {
    let dims = bytes.len() / 4;
    unpack_vectors(bytes, dims)?.into_iter().next()
}

/// A group of similar questions the bot could not answer.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = knowledge_gaps)]
pub struct Gap {
    /// UUID.
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// Bot.
    pub bot_id: String,
    /// The group's first question, verbatim.
    pub question: String,
    /// Embedding model of `vector`.
    pub model: String,
    /// The first question's vector.
    pub vector: Vec<u8>,
    /// JSON array of the group's questions, verbatim.
    pub examples: String,
    /// How many handoffs it groups.
    pub count: i64,
    /// First handoff.
    pub first_seen: NaiveDateTime,
    /// Latest handoff.
    pub last_seen: NaiveDateTime,
    /// When someone answered it.
    pub answered_at: Option<NaiveDateTime>,
    /// Who.
    pub answered_by: Option<String>,
    /// The FAQ document the answer became.
    pub document_id: Option<String>,
}

/// Which gaps to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapStatus {
    /// Not answered yet.
    Open,
    /// Answered.
    Answered,
    /// Both.
    All,
}

impl Gap {
    /// The group's questions.
    pub fn examples(&self) -> Vec<String> {
        serde_json::from_str(&self.examples).unwrap_or_default()
    }

    /// The first question's vector.
    pub fn vector(&self) -> Option<Vec<f32>> {
        single(&self.vector)
    }

    /// The open gaps of `bot_id` whose vectors are of `model`, most recent
    /// first, at most `limit`.
    pub async fn open_of_bot(
        conn: &mut DbConn,
        bot_id: &str,
        model: &str,
        limit: i64,
    ) -> Result<Vec<Gap>, DbError> {
        Ok(db_run!(conn: {
            knowledge_gaps::table
                .filter(knowledge_gaps::bot_id.eq(bot_id))
                .filter(knowledge_gaps::model.eq(model))
                .filter(knowledge_gaps::answered_at.is_null())
                .order(knowledge_gaps::last_seen.desc())
                .limit(limit)
                .select(Gap::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Opens a gap with its first question.
    pub async fn open(
        conn: &mut DbConn,
        workspace_id: &str,
        bot_id: &str,
        question: &str,
        model: &str,
        vector: &[f32],
    ) -> Result<String, DbError> {
        let id = new_id();
        let at = now();
        let bytes = pack_vectors(std::slice::from_ref(&vector.to_vec()));
        let examples = serde_json::json!([question]).to_string();
        db_run!(conn: {
            diesel::insert_into(knowledge_gaps::table)
                .values((
                    knowledge_gaps::id.eq(&id),
                    knowledge_gaps::workspace_id.eq(workspace_id),
                    knowledge_gaps::bot_id.eq(bot_id),
                    knowledge_gaps::question.eq(question),
                    knowledge_gaps::model.eq(model),
                    knowledge_gaps::vector.eq(&bytes),
                    knowledge_gaps::examples.eq(&examples),
                    knowledge_gaps::count.eq(1i64),
                    knowledge_gaps::first_seen.eq(at),
                    knowledge_gaps::last_seen.eq(at),
                ))
                .execute(conn)
                .await?
        });
        Ok(id)
    }

    /// Counts one more handoff of `question` in this gap; the question is
    /// kept verbatim when it is new and there is room.
    pub async fn add(&self, conn: &mut DbConn, question: &str) -> Result<(), DbError> {
        let mut examples = self.examples();
        if examples.len() < MAX_EXAMPLES && !examples.iter().any(|e| e == question) {
            examples.push(question.to_owned());
        }
        let examples = serde_json::to_string(&examples).unwrap_or_else(|_| "[]".into());
        let at = now();
        db_run!(conn: {
            diesel::update(knowledge_gaps::table.find(&self.id))
                .set((
                    knowledge_gaps::examples.eq(&examples),
                    knowledge_gaps::count.eq(knowledge_gaps::count + 1i64),
                    knowledge_gaps::last_seen.eq(at),
                ))
                .execute(conn)
                .await?
        });
        Ok(())
    }

    /// The workspace's gaps, the most asked first.
    pub async fn list(
        conn: &mut DbConn,
        workspace_id: &str,
        bot_id: Option<&str>,
        status: GapStatus,
        limit: i64,
    ) -> Result<Vec<Gap>, DbError> {
        Ok(db_run!(conn: {
            let mut query = knowledge_gaps::table
                .filter(knowledge_gaps::workspace_id.eq(workspace_id))
                .into_boxed();
            if let Some(bot_id) = bot_id {
                query = query.filter(knowledge_gaps::bot_id.eq(bot_id));
            }
            query = match status {
                GapStatus::Open => query.filter(knowledge_gaps::answered_at.is_null()),
                GapStatus::Answered => query.filter(knowledge_gaps::answered_at.is_not_null()),
                GapStatus::All => query,
            };
            query
                .order((knowledge_gaps::count.desc(), knowledge_gaps::last_seen.desc()))
                .limit(limit)
                .select(Gap::as_select())
                .load(conn)
                .await?
        }))
    }

    /// The gap `id` of `workspace_id`.
    pub async fn find(
        conn: &mut DbConn,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<Gap>, DbError> {
        Ok(db_run!(conn: {
            knowledge_gaps::table
                .filter(knowledge_gaps::workspace_id.eq(workspace_id))
                .filter(knowledge_gaps::id.eq(id))
                .select(Gap::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// Opens again the gaps `document_id` answered (it was deleted, so
    /// the bot does not know again); returns how many.
    pub async fn reopen_answered_by(
        conn: &mut DbConn,
        document_id: &str,
    ) -> Result<usize, DbError> {
        Ok(db_run!(conn: {
            diesel::update(
                knowledge_gaps::table.filter(knowledge_gaps::document_id.eq(document_id)),
            )
            .set((
                knowledge_gaps::answered_at.eq(None::<NaiveDateTime>),
                knowledge_gaps::answered_by.eq(None::<String>),
                knowledge_gaps::document_id.eq(None::<String>),
            ))
            .execute(conn)
            .await?
        }))
    }

    /// Marks the gap answered by `user` with `document_id`.
    pub async fn mark_answered(
        conn: &mut DbConn,
        id: &str,
        user: Option<&str>,
        document_id: &str,
    ) -> Result<(), DbError> {
        let at = now();
        db_run!(conn: {
            diesel::update(knowledge_gaps::table.find(id))
                .set((
                    knowledge_gaps::answered_at.eq(at),
                    knowledge_gaps::answered_by.eq(user),
                    knowledge_gaps::document_id.eq(document_id),
                ))
                .execute(conn)
                .await?
        });
        Ok(())
    }
}
