//! Handoffs: a conversation passed to a person, with the reason, the bot's
//! draft, its sources and a triage.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::handoffs;

/// A handoff.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = handoffs)]
pub struct Handoff {
    /// UUID.
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// Conversation.
    pub conversation_id: String,
    /// Why (`low_confidence`, `no_information`, `customer_asked`, …).
    pub reason: String,
    /// Details of the reason.
    pub detail: Option<String>,
    /// The customer's question.
    pub question: String,
    /// What the bot would have answered (maybe empty).
    pub draft: String,
    /// JSON array of sources.
    pub sources: String,
    /// Retrieval confidence, 0 to 1.
    pub confidence: f64,
    /// Topic.
    pub category: String,
    /// `negative`, `neutral`, `positive`.
    pub sentiment: String,
    /// `low`, `medium`, `high`.
    pub urgency: String,
    /// `model` or `rules`.
    pub triage_source: String,
    /// The user who asked for it.
    pub requested_by: Option<String>,
    /// When.
    pub created_at: NaiveDateTime,
    /// When an agent resolved the conversation or handed it back.
    pub closed_at: Option<NaiveDateTime>,
}

/// A handoff to store.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = handoffs)]
pub struct NewHandoff {
    /// Workspace.
    pub workspace_id: String,
    /// Conversation.
    pub conversation_id: String,
    /// Why.
    pub reason: String,
    /// Details.
    pub detail: Option<String>,
    /// Question.
    pub question: String,
    /// Draft.
    pub draft: String,
    /// JSON array of sources.
    pub sources: String,
    /// Confidence.
    pub confidence: f64,
    /// Topic.
    pub category: String,
    /// Sentiment.
    pub sentiment: String,
    /// Urgency.
    pub urgency: String,
    /// `model` or `rules`.
    pub triage_source: String,
    /// Requesting user.
    pub requested_by: Option<String>,
}

impl Handoff {
    /// Stores a handoff.
    pub async fn insert(conn: &mut DbConn, new: &NewHandoff) -> Result<Handoff, DbError> {
        let id = new_id();
        let at = now();
        Ok(db_run!(conn: {
            diesel::insert_into(handoffs::table)
                .values((
                    handoffs::id.eq(&id),
                    handoffs::created_at.eq(at),
                    new,
                ))
                .returning(Handoff::as_returning())
                .get_result(conn)
                .await?
        }))
    }

    /// The conversation's handoffs, oldest first.
    pub async fn of_conversation(
        conn: &mut DbConn,
        conversation_id: &str,
    ) -> Result<Vec<Handoff>, DbError> {
        Ok(db_run!(conn: {
            handoffs::table
                .filter(handoffs::conversation_id.eq(conversation_id))
                .order(handoffs::created_at)
                .select(Handoff::as_select())
                .load(conn)
                .await?
        }))
    }

    /// The workspace's open handoffs, oldest first.
    pub async fn open_in(conn: &mut DbConn, workspace_id: &str) -> Result<Vec<Handoff>, DbError> {
        Ok(db_run!(conn: {
            handoffs::table
                .filter(handoffs::workspace_id.eq(workspace_id))
                .filter(handoffs::closed_at.is_null())
                .order(handoffs::created_at)
                .select(Handoff::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Closes the conversation's open handoffs; returns how many.
    pub async fn close_for(conn: &mut DbConn, conversation_id: &str) -> Result<usize, DbError> {
        let at = now();
        Ok(db_run!(conn: {
            diesel::update(
                handoffs::table
                    .filter(handoffs::conversation_id.eq(conversation_id))
                    .filter(handoffs::closed_at.is_null()),
            )
            .set(handoffs::closed_at.eq(at))
            .execute(conn)
            .await?
        }))
    }
}
