//! The audit log: who changed what, when, from where, before and after.
//! Append-only; kept when the workspace it concerns is deleted.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::text_enum;
use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::audit_log;

text_enum! {
    /// Who acted.
    pub enum ActorKind {
        /// A logged-in user.
        User = "user",
        /// A machine with an API token.
        ApiToken = "api_token",
        /// Frontdesk itself, e.g. applying a bot file.
        System = "system",
    }
}

/// An audit entry.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = audit_log)]
pub struct AuditEntry {
    /// UUID v7 (time-ordered).
    pub id: String,
    /// Workspace concerned.
    pub workspace_id: Option<String>,
    /// Who acted.
    pub actor_kind: ActorKind,
    /// User id, token id, or e.g. the bot file for the system.
    pub actor_id: Option<String>,
    /// Dotted verb, e.g. `bot.create`.
    pub action: String,
    /// Kind of object changed.
    pub target_kind: String,
    /// Its id.
    pub target_id: Option<String>,
    /// Client address.
    pub source_ip: Option<String>,
    /// Request id, to find the matching log lines.
    pub request_id: Option<String>,
    /// JSON before, secrets redacted.
    pub before_state: Option<String>,
    /// JSON after, secrets redacted.
    pub after_state: Option<String>,
    /// When.
    pub created_at: NaiveDateTime,
}

/// An entry to record. States are serialized as JSON: pass types whose
/// `Serialize` leaves secrets out.
#[derive(Debug, Clone, Default)]
pub struct Audit<'a> {
    /// Workspace.
    pub workspace_id: Option<&'a str>,
    /// Who.
    pub actor_kind: Option<ActorKind>,
    /// Which one.
    pub actor_id: Option<&'a str>,
    /// What.
    pub action: &'a str,
    /// On what kind.
    pub target_kind: &'a str,
    /// On which.
    pub target_id: Option<&'a str>,
    /// From where.
    pub source_ip: Option<&'a str>,
    /// Request.
    pub request_id: Option<&'a str>,
    /// Before.
    pub before: Option<serde_json::Value>,
    /// After.
    pub after: Option<serde_json::Value>,
}

impl Audit<'_> {
    /// Appends the entry.
    pub async fn record(&self, conn: &mut DbConn) -> Result<(), DbError> {
        let before = self.before.as_ref().map(serde_json::Value::to_string);
        let after = self.after.as_ref().map(serde_json::Value::to_string);
        db_run!(conn: {
            diesel::insert_into(audit_log::table)
                .values((
                    audit_log::id.eq(new_id()),
                    audit_log::workspace_id.eq(self.workspace_id),
                    audit_log::actor_kind.eq(self.actor_kind.unwrap_or(ActorKind::System)),
                    audit_log::actor_id.eq(self.actor_id),
                    audit_log::action.eq(self.action),
                    audit_log::target_kind.eq(self.target_kind),
                    audit_log::target_id.eq(self.target_id),
                    audit_log::source_ip.eq(self.source_ip),
                    audit_log::request_id.eq(self.request_id),
                    audit_log::before_state.eq(before),
                    audit_log::after_state.eq(after),
                    audit_log::created_at.eq(now()),
                ))
                .execute(conn)
                .await?;
        });
        Ok(())
    }
}

impl AuditEntry {
    /// The workspace's newest entries first.
    pub async fn recent(
        conn: &mut DbConn,
        workspace_id: &str,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, DbError> {
        Ok(db_run!(conn: {
            audit_log::table
                .filter(audit_log::workspace_id.eq(workspace_id))
                .order(audit_log::id.desc())
                .limit(limit)
                .select(AuditEntry::as_select())
                .load(conn)
                .await?
        }))
    }
}

/// Which entries of a workspace to list: each set field must match exactly.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditFilter<'a> {
    /// Dotted verb, e.g. `bot.update`.
    pub action: Option<&'a str>,
    /// The user or token that acted.
    pub actor_id: Option<&'a str>,
    /// Kind of object changed, e.g. `bot`.
    pub target_kind: Option<&'a str>,
    /// The object changed.
    pub target_id: Option<&'a str>,
}

impl AuditEntry {
    /// A page of the workspace's entries that pass `filter`, newest first:
    /// those older than the entry `before` (ids are time-ordered).
    pub async fn page(
        conn: &mut DbConn,
        workspace_id: &str,
        filter: AuditFilter<'_>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, DbError> {
        Ok(db_run!(conn: {
            let mut query = audit_log::table
                .filter(audit_log::workspace_id.eq(workspace_id))
                .into_boxed();
            if let Some(action) = filter.action {
                query = query.filter(audit_log::action.eq(action));
            }
            if let Some(actor) = filter.actor_id {
                query = query.filter(audit_log::actor_id.eq(actor));
            }
            if let Some(kind) = filter.target_kind {
                query = query.filter(audit_log::target_kind.eq(kind));
            }
            if let Some(target) = filter.target_id {
                query = query.filter(audit_log::target_id.eq(target));
            }
            if let Some(before) = before {
                query = query.filter(audit_log::id.lt(before));
            }
            query
                .order(audit_log::id.desc())
                .limit(limit)
                .select(AuditEntry::as_select())
                .load(conn)
                .await?
        }))
    }
}
