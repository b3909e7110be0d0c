//! Users (support agents and administrators) and their role per workspace.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;

use super::text_enum;
use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::{memberships, sessions, users};

text_enum! {
    /// What a user may do in a workspace. Each role includes the ones below it.
    pub enum Role {
        /// Manages users, plus everything an admin does.
        Owner = "owner",
        /// Configures bots, channels and knowledge, plus everything an agent does.
        Admin = "admin",
        /// Takes over and answers conversations.
        Agent = "agent",
    }
}

/// A user. The password hash is never serialized.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = users)]
pub struct User {
    /// UUID.
    pub id: String,
    /// Login, stored lowercased, unique.
    pub email: String,
    /// Shown to colleagues.
    pub display_name: String,
    /// Argon2 PHC string; `None` until a password is set.
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// Cannot log in.
    pub disabled: bool,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
}

impl User {
    /// Creates a user.
    pub async fn create(
        conn: &mut DbConn,
        email: &str,
        display_name: &str,
        password_hash: Option<&str>,
    ) -> Result<User, DbError> {
        let at = now();
        Ok(db_run!(conn: {
            diesel::insert_into(users::table)
                .values((
                    users::id.eq(new_id()),
                    users::email.eq(email.trim().to_lowercase()),
                    users::display_name.eq(display_name),
                    users::password_hash.eq(password_hash),
                    users::disabled.eq(false),
                    users::created_at.eq(at),
                    users::updated_at.eq(at),
                ))
                .returning(User::as_returning())
                .get_result(conn)
                .await?
        }))
    }

    /// Gives the user `role` in the workspace (replacing a previous role).
    pub async fn set_role(
        conn: &mut DbConn,
        user_id: &str,
        workspace_id: &str,
        role: Role,
    ) -> Result<(), DbError> {
        db_run!(conn: {
            diesel::insert_into(memberships::table)
                .values((
                    memberships::workspace_id.eq(workspace_id),
                    memberships::user_id.eq(user_id),
                    memberships::role.eq(role),
                    memberships::created_at.eq(now()),
                ))
                .on_conflict((memberships::workspace_id, memberships::user_id))
                .do_update()
                .set(memberships::role.eq(role))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// The user's role in the workspace, if a member.
    pub async fn role_in(
        conn: &mut DbConn,
        user_id: &str,
        workspace_id: &str,
    ) -> Result<Option<Role>, DbError> {
        Ok(db_run!(conn: {
            memberships::table
                .find((workspace_id, user_id))
                .select(memberships::role)
                .first::<Role>(conn)
                .await
                .optional()?
        }))
    }
}

/// A user as a workspace's members list shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// Their role in the workspace.
    pub role: Role,
}

impl Role {
    /// How much the role may do: owner 3, admin 2, agent 1.
    pub fn rank(self) -> u8 {
        match self {
            Role::Owner => 3,
            Role::Admin => 2,
            Role::Agent => 1,
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self.rank() >= needed.rank()
    }
}

impl User {
    /// The user with this email (any case).
    pub async fn find_by_email(conn: &mut DbConn, email: &str) -> Result<Option<User>, DbError> {
        let email = email.trim().to_lowercase();
        Ok(db_run!(conn: {
            users::table
                .filter(users::email.eq(&email))
                .select(User::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// The user with this id.
    pub async fn find_by_id(conn: &mut DbConn, id: &str) -> Result<Option<User>, DbError> {
        Ok(db_run!(conn: {
            users::table
                .find(id)
                .select(User::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// The workspaces the user belongs to, with the role in each.
    pub async fn memberships(
        conn: &mut DbConn,
        user_id: &str,
    ) -> Result<Vec<(String, Role)>, DbError> {
        Ok(db_run!(conn: {
            memberships::table
                .filter(memberships::user_id.eq(user_id))
                .order(memberships::created_at)
                .select((memberships::workspace_id, memberships::role))
                .load(conn)
                .await?
        }))
    }

    /// The workspace's members, by email.
    pub async fn members(conn: &mut DbConn, workspace_id: &str) -> Result<Vec<Member>, DbError> {
        let rows: Vec<(User, Role)> = db_run!(conn: {
            users::table
                .inner_join(memberships::table)
                .filter(memberships::workspace_id.eq(workspace_id))
                .order(users::email)
                .select((User::as_select(), memberships::role))
                .load(conn)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(user, role)| Member { user, role })
            .collect())
    }

    /// Sets the password hash.
    pub async fn set_password(conn: &mut DbConn, id: &str, hash: &str) -> Result<(), DbError> {
        db_run!(conn: {
            diesel::update(users::table.find(id))
                .set((users::password_hash.eq(hash), users::updated_at.eq(now())))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Sets the password hash and ends the user's sessions, all but `keep`
    /// (the session that changed its own password), in one transaction: no
    /// session opened with the old password outlives the change. Returns how
    /// many sessions ended.
    pub async fn change_password(
        conn: &mut DbConn,
        id: &str,
        hash: &str,
        keep: Option<&str>,
    ) -> Result<usize, DbError> {
        let at = now();
        let keep = keep.unwrap_or("");
        Ok(db_run!(conn: {
            conn.transaction(async |conn| {
                diesel::update(users::table.find(id))
                    .set((users::password_hash.eq(hash), users::updated_at.eq(at)))
                    .execute(conn)
                    .await?;
                diesel::update(
                    sessions::table
                        .filter(sessions::user_id.eq(id))
                        .filter(sessions::id.ne(keep))
                        .filter(sessions::revoked_at.is_null()),
                )
                .set(sessions::revoked_at.eq(at))
                .execute(conn)
                .await
            })
            .await?
        }))
    }

    /// Enables or disables the account; a disabled user cannot log in and
    /// their sessions stop working.
    pub async fn set_disabled(conn: &mut DbConn, id: &str, disabled: bool) -> Result<(), DbError> {
        db_run!(conn: {
            diesel::update(users::table.find(id))
                .set((users::disabled.eq(disabled), users::updated_at.eq(now())))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Removes the user from the workspace. Returns whether they were in it.
    pub async fn remove_from(
        conn: &mut DbConn,
        user_id: &str,
        workspace_id: &str,
    ) -> Result<bool, DbError> {
        let n = db_run!(conn: {
            diesel::delete(memberships::table.find((workspace_id, user_id)))
                .execute(conn)
                .await?
        });
        Ok(n > 0)
    }
}
