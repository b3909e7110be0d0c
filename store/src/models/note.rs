//! Private notes agents leave on a conversation; never sent to the customer.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::notes;

/// A note.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = notes)]
pub struct Note {
    /// UUID.
    pub id: String,
    /// Its workspace.
    #[serde(skip)]
    pub workspace_id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// The user who wrote it (`None` for an API token).
    pub author_id: Option<String>,
    /// Text.
    pub body: String,
    /// Written.
    pub created_at: NaiveDateTime,
}

impl Note {
    /// Adds a note.
    pub async fn add(
        conn: &mut DbConn,
        workspace_id: &str,
        conversation_id: &str,
        author_id: Option<&str>,
        body: &str,
    ) -> Result<Note, DbError> {
        Ok(db_run!(conn: {
            diesel::insert_into(notes::table)
                .values((
                    notes::id.eq(new_id()),
                    notes::workspace_id.eq(workspace_id),
                    notes::conversation_id.eq(conversation_id),
                    notes::author_id.eq(author_id),
                    notes::body.eq(body),
                    notes::created_at.eq(now()),
                ))
                .returning(Note::as_returning())
                .get_result(conn)
                .await?
        }))
    }

    /// The conversation's notes, oldest first.
    pub async fn of_conversation(
        conn: &mut DbConn,
        conversation_id: &str,
    ) -> Result<Vec<Note>, DbError> {
        Ok(db_run!(conn: {
            notes::table
                .filter(notes::conversation_id.eq(conversation_id))
                .order(notes::created_at)
                .select(Note::as_select())
                .load(conn)
                .await?
        }))
    }
}
