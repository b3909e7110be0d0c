//! Login sessions and API tokens. Only a SHA-256 of each token is stored:
//! the database alone opens nothing.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::user::Role;
use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::{api_tokens, memberships, sessions, users};

/// A login session.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct Session {
    /// SHA-256 (hex) of the token.
    pub id: String,
    /// Who.
    pub user_id: String,
    /// In which workspace.
    pub workspace_id: String,
    /// From where it was opened.
    pub source_ip: Option<String>,
    /// With what.
    pub user_agent: Option<String>,
    /// Opened.
    pub created_at: NaiveDateTime,
    /// Last used (updated at most once a minute).
    pub last_seen_at: NaiveDateTime,
    /// Ends.
    pub expires_at: NaiveDateTime,
    /// Logged out.
    pub revoked_at: Option<NaiveDateTime>,
}

/// A session to open.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// SHA-256 (hex) of the token.
    pub hash: &'a str,
    /// Who.
    pub user_id: &'a str,
    /// Where.
    pub workspace_id: &'a str,
    /// Client address.
    pub source_ip: Option<&'a str>,
    /// Client.
    pub user_agent: Option<&'a str>,
    /// Lifetime.
    pub ttl: chrono::Duration,
}

impl Session {
    /// Opens a session.
    pub async fn open(conn: &mut DbConn, new: &NewSession<'_>) -> Result<Session, DbError> {
        let at = now();
        Ok(db_run!(conn: {
            diesel::insert_into(sessions::table)
                .values((
                    sessions::id.eq(new.hash),
                    sessions::user_id.eq(new.user_id),
                    sessions::workspace_id.eq(new.workspace_id),
                    sessions::source_ip.eq(new.source_ip),
                    sessions::user_agent.eq(new.user_agent),
                    sessions::created_at.eq(at),
                    sessions::last_seen_at.eq(at),
                    sessions::expires_at.eq(at + new.ttl),
                ))
                .returning(Session::as_returning())
                .get_result(conn)
                .await?
        }))
    }

    /// The live session with this token hash: not revoked, not expired.
    pub async fn live(conn: &mut DbConn, hash: &str) -> Result<Option<Session>, DbError> {
        let at = now();
        Ok(db_run!(conn: {
            sessions::table
                .find(hash)
                .filter(sessions::revoked_at.is_null())
                .filter(sessions::expires_at.gt(at))
                .select(Session::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// Records use, at most once a minute per session.
    pub async fn touch(conn: &mut DbConn, hash: &str) -> Result<(), DbError> {
        let at = now();
        db_run!(conn: {
            diesel::update(
                sessions::table
                    .find(hash)
                    .filter(sessions::last_seen_at.lt(at - chrono::Duration::minutes(1))),
            )
            .set(sessions::last_seen_at.eq(at))
            .execute(conn)
            .await?;
        });
        Ok(())
    }

    /// Logs out.
    pub async fn revoke(conn: &mut DbConn, hash: &str) -> Result<(), DbError> {
        db_run!(conn: {
            diesel::update(sessions::table.find(hash).filter(sessions::revoked_at.is_null()))
                .set(sessions::revoked_at.eq(now()))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Logs the user out of one workspace (removed from it).
    pub async fn revoke_in(
        conn: &mut DbConn,
        user_id: &str,
        workspace_id: &str,
    ) -> Result<usize, DbError> {
        Ok(db_run!(conn: {
            diesel::update(
                sessions::table
                    .filter(sessions::user_id.eq(user_id))
                    .filter(sessions::workspace_id.eq(workspace_id))
                    .filter(sessions::revoked_at.is_null()),
            )
            .set(sessions::revoked_at.eq(now()))
            .execute(conn)
            .await?
        }))
    }

    /// Logs the user out everywhere (disabled, removed, password changed).
    pub async fn revoke_all(conn: &mut DbConn, user_id: &str) -> Result<usize, DbError> {
        Ok(db_run!(conn: {
            diesel::update(
                sessions::table
                    .filter(sessions::user_id.eq(user_id))
                    .filter(sessions::revoked_at.is_null()),
            )
            .set(sessions::revoked_at.eq(now()))
            .execute(conn)
            .await?
        }))
    }
}

/// Who answers for an API token, as things stand now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creator {
    /// Created without a user (`frontdesk token create`): the workspace.
    Workspace,
    /// Its creator, an active member of the token's workspace with this role.
    Member(Role),
    /// Its creator was disabled, removed from the workspace, or deleted.
    Gone,
}

/// The role a token of `role` acts with: its own, but never more than its
/// creator's current role; none at all once its creator is gone. A
/// workspace's token keeps its own.
pub fn effective_role(role: Role, creator: Creator) -> Option<Role> {
    match creator {
        Creator::Workspace => Some(role),
        Creator::Member(theirs) if theirs.rank() < role.rank() => Some(theirs),
        Creator::Member(_) => Some(role),
        Creator::Gone => None,
    }
}

/// An API token for machines. The token itself is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = api_tokens)]
pub struct ApiToken {
    /// UUID.
    pub id: String,
    /// Its workspace.
    pub workspace_id: String,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 (hex) of the token.
    #[serde(skip)]
    pub token_hash: String,
    /// The user who created it and answers for it: the token acts only
    /// while they are an active member of its workspace, and never with
    /// more than their role there. `None`: created without a user (`frontdesk
    /// token create`), the workspace answers for it; it lives until revoked
    /// or expired.
    pub created_by: Option<String>,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Last used (updated at most once a minute).
    pub last_used_at: Option<NaiveDateTime>,
    /// Ends, if it does.
    pub expires_at: Option<NaiveDateTime>,
    /// Revoked.
    pub revoked_at: Option<NaiveDateTime>,
}

impl ApiToken {
    /// Stores a token.
    pub async fn create(
        conn: &mut DbConn,
        workspace_id: &str,
        name: &str,
        role: Role,
        hash: &str,
        created_by: Option<&str>,
        expires_at: Option<NaiveDateTime>,
    ) -> Result<ApiToken, DbError> {
        Ok(db_run!(conn: {
            diesel::insert_into(api_tokens::table)
                .values((
                    api_tokens::id.eq(new_id()),
                    api_tokens::workspace_id.eq(workspace_id),
                    api_tokens::name.eq(name),
                    api_tokens::role.eq(role),
                    api_tokens::token_hash.eq(hash),
                    api_tokens::created_by.eq(created_by),
                    api_tokens::created_at.eq(now()),
                    api_tokens::expires_at.eq(expires_at),
                ))
                .returning(ApiToken::as_returning())
                .get_result(conn)
                .await?
        }))
    }

    /// The usable token with this hash: not revoked, not expired, and its
    /// creator (when a user) still an active member of its workspace. Its
    /// `role` is the one it acts with now (see [`effective_role`]), which
    /// may be less than the role it was created with.
    pub async fn live(conn: &mut DbConn, hash: &str) -> Result<Option<ApiToken>, DbError> {
        let at = now();
        let token: Option<ApiToken> = db_run!(conn: {
            api_tokens::table
                .filter(api_tokens::token_hash.eq(hash))
                .filter(api_tokens::revoked_at.is_null())
                .select(ApiToken::as_select())
                .first(conn)
                .await
                .optional()?
        });
        let Some(mut token) = token.filter(|t| t.expires_at.is_none_or(|e| e > at)) else {
            return Ok(None);
        };
        let Some(role) = token.acting_role(conn).await? else {
            return Ok(None);
        };
        token.role = role;
        Ok(Some(token))
    }

    /// Where the token's creator stands in its workspace now.
    pub async fn creator(&self, conn: &mut DbConn) -> Result<Creator, DbError> {
        let Some(user_id) = &self.created_by else {
            return Ok(Creator::Workspace);
        };
        let role: Option<Role> = db_run!(conn: {
            memberships::table
                .inner_join(users::table)
                .filter(memberships::workspace_id.eq(&self.workspace_id))
                .filter(memberships::user_id.eq(user_id))
                .filter(users::disabled.eq(false))
                .select(memberships::role)
                .first::<Role>(conn)
                .await
                .optional()?
        });
        Ok(role.map_or(Creator::Gone, Creator::Member))
    }

    /// The role the token acts with now, whatever its state otherwise
    /// (revoked, expired); `None` once its creator is gone.
    pub async fn acting_role(&self, conn: &mut DbConn) -> Result<Option<Role>, DbError> {
        Ok(effective_role(self.role, self.creator(conn).await?))
    }

    /// The workspace's token `id`.
    pub async fn find(
        conn: &mut DbConn,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<ApiToken>, DbError> {
        Ok(db_run!(conn: {
            api_tokens::table
                .find(id)
                .filter(api_tokens::workspace_id.eq(workspace_id))
                .select(ApiToken::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// Revokes the live tokens `user_id` created in the workspace (they
    /// were removed from it): for good, even if they come back.
    pub async fn revoke_created_by(
        conn: &mut DbConn,
        user_id: &str,
        workspace_id: &str,
    ) -> Result<usize, DbError> {
        Ok(db_run!(conn: {
            diesel::update(
                api_tokens::table
                    .filter(api_tokens::created_by.eq(user_id))
                    .filter(api_tokens::workspace_id.eq(workspace_id))
                    .filter(api_tokens::revoked_at.is_null()),
            )
            .set(api_tokens::revoked_at.eq(now()))
            .execute(conn)
            .await?
        }))
    }

    /// Records use, at most once a minute.
    pub async fn touch(conn: &mut DbConn, id: &str) -> Result<(), DbError> {
        let at = now();
        db_run!(conn: {
            diesel::update(
                api_tokens::table.find(id).filter(
                    api_tokens::last_used_at
                        .is_null()
                        .or(api_tokens::last_used_at.lt(at - chrono::Duration::minutes(1))),
                ),
            )
            .set(api_tokens::last_used_at.eq(at))
            .execute(conn)
            .await?;
        });
        Ok(())
    }

    /// The workspace's tokens, newest first (revoked ones included).
    pub async fn list(conn: &mut DbConn, workspace_id: &str) -> Result<Vec<ApiToken>, DbError> {
        Ok(db_run!(conn: {
            api_tokens::table
                .filter(api_tokens::workspace_id.eq(workspace_id))
                .order(api_tokens::created_at.desc())
                .select(ApiToken::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Revokes one of the workspace's tokens; `None` if it has no such token.
    pub async fn revoke(
        conn: &mut DbConn,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<ApiToken>, DbError> {
        Ok(db_run!(conn: {
            diesel::update(
                api_tokens::table
                    .find(id)
                    .filter(api_tokens::workspace_id.eq(workspace_id)),
            )
            .set(api_tokens::revoked_at.eq(now()))
            .returning(ApiToken::as_returning())
            .get_result(conn)
            .await
            .optional()?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{Creator, effective_role};
    use crate::models::user::Role;

    #[test]
    fn a_token_never_acts_above_its_creator() {
        // The workspace's own tokens keep their role.
        for role in Role::ALL {
            assert_eq!(effective_role(*role, Creator::Workspace), Some(*role));
        }
        // A user's token: the lower of the two, their role checked now.
        assert_eq!(
            effective_role(Role::Owner, Creator::Member(Role::Admin)),
            Some(Role::Admin)
        );
        assert_eq!(
            effective_role(Role::Admin, Creator::Member(Role::Agent)),
            Some(Role::Agent)
        );
        assert_eq!(
            effective_role(Role::Agent, Creator::Member(Role::Owner)),
            Some(Role::Agent),
            "a promotion of the creator does not lift the token above its own role"
        );
        assert_eq!(
            effective_role(Role::Admin, Creator::Member(Role::Admin)),
            Some(Role::Admin)
        );
        // Gone (disabled, removed, deleted): the token does nothing.
        for role in Role::ALL {
            assert_eq!(effective_role(*role, Creator::Gone), None);
        }
    }
}
