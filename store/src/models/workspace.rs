//! Workspaces: one business (tenant). Everything else belongs to one.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::workspaces;

/// A workspace.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = workspaces)]
pub struct Workspace {
    /// UUID.
    pub id: String,
    /// Unique short name, as written in bot files (`workspace = "acme"`).
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
}

impl Workspace {
    /// The workspace with this slug, created (named after the slug) if missing.
    /// Safe under concurrency: racing callers get the same row.
    pub async fn ensure(conn: &mut DbConn, slug: &str) -> Result<Self, DbError> {
        let at = now();
        Ok(db_run!(conn: {
            diesel::insert_into(workspaces::table)
                .values((
                    workspaces::id.eq(new_id()),
                    workspaces::slug.eq(slug),
                    workspaces::name.eq(slug),
                    workspaces::created_at.eq(at),
                    workspaces::updated_at.eq(at),
                ))
                .on_conflict(workspaces::slug)
                .do_nothing()
                .execute(conn)
                .await?;
            workspaces::table
                .filter(workspaces::slug.eq(slug))
                .select(Workspace::as_select())
                .first(conn)
                .await?
        }))
    }

    /// By slug.
    pub async fn find_by_slug(conn: &mut DbConn, slug: &str) -> Result<Option<Self>, DbError> {
        Ok(db_run!(conn: {
            workspaces::table
                .filter(workspaces::slug.eq(slug))
                .select(Workspace::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }
}

impl Workspace {
    /// The workspace with this id.
    pub async fn find_by_id(conn: &mut DbConn, id: &str) -> Result<Option<Self>, DbError> {
        Ok(db_run!(conn: {
            workspaces::table
                .find(id)
                .select(Workspace::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }
}
