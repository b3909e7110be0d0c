//! The workspace event log: every realtime event, numbered, so an agent
//! socket that reconnects replays what it missed, from any node.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::{DbConn, DbError, now};
use crate::db_run;
use crate::schema::events;

/// A stored event.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct StoredEvent {
    /// Its number, increasing across the whole log.
    pub seq: i64,
    /// Its workspace.
    pub workspace_id: String,
    /// Its type, e.g. `message.created`.
    pub kind: String,
    /// The event as JSON, without its seq.
    pub payload: String,
    /// When.
    pub created_at: NaiveDateTime,
}

impl StoredEvent {
    /// Appends an event; returns its seq.
    pub async fn append(
        conn: &mut DbConn,
        workspace_id: &str,
        kind: &str,
        payload: &str,
    ) -> Result<i64, DbError> {
        Ok(db_run!(conn: {
            diesel::insert_into(events::table)
                .values((
                    events::workspace_id.eq(workspace_id),
                    events::kind.eq(kind),
                    events::payload.eq(payload),
                    events::created_at.eq(now()),
                ))
                .returning(events::seq)
                .get_result(conn)
                .await?
        }))
    }

    /// The workspace's events after `seq`, oldest first, at most `limit`.
    pub async fn after(
        conn: &mut DbConn,
        workspace_id: &str,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, DbError> {
        Ok(db_run!(conn: {
            events::table
                .filter(events::workspace_id.eq(workspace_id))
                .filter(events::seq.gt(seq))
                .order(events::seq)
                .limit(limit)
                .select(StoredEvent::as_select())
                .load(conn)
                .await?
        }))
    }

    /// The workspace's latest seq (0 when it has none).
    pub async fn latest(conn: &mut DbConn, workspace_id: &str) -> Result<i64, DbError> {
        let seq: Option<i64> = db_run!(conn: {
            events::table
                .filter(events::workspace_id.eq(workspace_id))
                .select(diesel::dsl::max(events::seq))
                .first(conn)
                .await?
        });
        Ok(seq.unwrap_or(0))
    }

    /// Forgets events older than `before`. Returns how many.
    pub async fn prune(conn: &mut DbConn, before: NaiveDateTime) -> Result<usize, DbError> {
        Ok(db_run!(conn: {
            diesel::delete(events::table.filter(events::created_at.lt(before)))
                .execute(conn)
                .await?
        }))
    }
}
