//! Customers: the people who write to a workspace, one row per platform identity.

use channels::ChannelKind;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::customers;

/// A customer.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = customers)]
pub struct Customer {
    /// UUID.
    pub id: String,
    /// Workspace written to.
    pub workspace_id: String,
    /// Platform.
    #[diesel(deserialize_as = String)]
    pub channel_kind: ChannelKind,
    /// The platform's id for the person (Telegram user id, page-scoped id, address).
    pub external_user_id: String,
    /// Name as the platform gives it.
    pub display_name: Option<String>,
    /// First seen.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
}

impl Customer {
    /// By id.
    pub async fn find_by_id(conn: &mut DbConn, id: &str) -> Result<Option<Customer>, DbError> {
        Ok(db_run!(conn: {
            customers::table
                .find(id)
                .select(Customer::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// By platform identity.
    pub async fn find(
        conn: &mut DbConn,
        workspace_id: &str,
        kind: ChannelKind,
        external_user_id: &str,
    ) -> Result<Option<Customer>, DbError> {
        Ok(db_run!(conn: {
            customers::table
                .filter(customers::workspace_id.eq(workspace_id))
                .filter(customers::channel_kind.eq(kind.as_str()))
                .filter(customers::external_user_id.eq(external_user_id))
                .select(Customer::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// The customer with this platform identity in `workspace_id`, created if
    /// missing; a newly known display name is recorded. Concurrent calls for
    /// one identity return the same row.
    pub async fn ensure(
        conn: &mut DbConn,
        workspace_id: &str,
        kind: ChannelKind,
        external_user_id: &str,
        display_name: Option<&str>,
    ) -> Result<Customer, DbError> {
        let at = now();
        Ok(db_run!(conn: {
            diesel::insert_into(customers::table)
                .values((
                    customers::id.eq(new_id()),
                    customers::workspace_id.eq(workspace_id),
                    customers::channel_kind.eq(kind.as_str()),
                    customers::external_user_id.eq(external_user_id),
                    customers::display_name.eq(display_name),
                    customers::created_at.eq(at),
                    customers::updated_at.eq(at),
                ))
                .on_conflict((
                    customers::workspace_id,
                    customers::channel_kind,
                    customers::external_user_id,
                ))
                .do_nothing()
                .execute(conn)
                .await?;
            let found: Customer = customers::table
                .filter(customers::workspace_id.eq(workspace_id))
                .filter(customers::channel_kind.eq(kind.as_str()))
                .filter(customers::external_user_id.eq(external_user_id))
                .select(Customer::as_select())
                .first(conn)
                .await?;
            match display_name {
                Some(name) if found.display_name.as_deref() != Some(name) => {
                    diesel::update(customers::table.find(&found.id))
                        .set((customers::display_name.eq(name), customers::updated_at.eq(at)))
                        .returning(Customer::as_returning())
                        .get_result(conn)
                        .await?
                }
                _ => found,
            }
        }))
    }
}
