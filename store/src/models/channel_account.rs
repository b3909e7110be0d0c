//! Channel accounts: one bot's presence on one platform (a Telegram bot, a
//! Facebook page, an inbound address), with its credentials sealed at rest.

use std::collections::BTreeMap;

use channels::ChannelKind;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::bot::Upserted;
use super::text_enum;
use crate::crypto::{CryptoError, KeyRole, MasterKey, NewMasterKey, Secret};
use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::channel_accounts;

text_enum! {
    /// Whether an account takes traffic.
    pub enum AccountStatus {
        /// Webhooks are accepted and replies sent.
        Active = "active",
        /// Kept for history; webhooks are refused.
        Disabled = "disabled",
    }
}

/// Named secrets of an account (`bot_token`, `app_secret`, …).
pub type Credentials = BTreeMap<String, Secret>;

/// A channel account. `credentials` stays sealed until [`open_credentials`](Self::open_credentials).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = channel_accounts)]
pub struct ChannelAccount {
    /// UUID.
    pub id: String,
    /// The `{account}` of webhook routes, unique.
    pub public_id: String,
    /// Owning bot.
    pub bot_id: String,
    /// Platform.
    #[diesel(deserialize_as = String)]
    pub kind: ChannelKind,
    /// Platform identity: Telegram bot id, Facebook page id, inbound address.
    pub external_id: Option<String>,
    /// Sealed credentials; never serialized.
    #[serde(skip)]
    pub credentials: String,
    /// Active or disabled.
    pub status: AccountStatus,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
    /// When the server last registered the account's webhook with its
    /// platform (Telegram `setWebhook`); `None` if it never did.
    pub webhook_set_at: Option<NaiveDateTime>,
}

/// The associated data that binds sealed credentials to their account.
fn seal_context(public_id: &str) -> String {
    format!("channel_account:{public_id}")
}

/// An account as declared.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    /// Webhook route id.
    pub public_id: String,
    /// Owning bot.
    pub bot_id: String,
    /// Platform.
    pub kind: ChannelKind,
    /// Platform identity.
    pub external_id: Option<String>,
    /// Plaintext secrets, sealed on write.
    pub credentials: Credentials,
}

/// Decrypted credentials, as the channel adapters read them.
#[derive(Debug)]
pub struct AccountSecrets(pub Credentials);

impl channels::Secrets for AccountSecrets {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(Secret::expose)
    }
}

impl ChannelAccount {
    /// Decrypts the credentials for an adapter.
    pub fn secrets(&self, key: &MasterKey) -> Result<AccountSecrets, CryptoError> {
        self.open_credentials(key).map(AccountSecrets)
    }

    /// Decrypts the credentials.
    pub fn open_credentials(&self, key: &MasterKey) -> Result<Credentials, CryptoError> {
        let plain = key.open(&self.credentials, &seal_context(&self.public_id))?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Format)
    }

    /// The credentials sealed anew under `target`, opened with the ring:
    /// one step of a key rotation.
    pub fn resealed_credentials(
        &self,
        key: &MasterKey,
        target: &NewMasterKey,
    ) -> Result<String, CryptoError> {
        let context = seal_context(&self.public_id);
        let plain = key.open(&self.credentials, &context)?;
        Ok(target.seal(&plain, &context))
    }

    /// Creates the account or brings it in line with `spec` (and active).
    /// Credentials are compared decrypted, so an unchanged file does not
    /// rewrite them.
    pub async fn upsert(
        conn: &mut DbConn,
        key: &MasterKey,
        spec: &AccountSpec,
    ) -> Result<Upserted<ChannelAccount>, UpsertAccountError> {
        if let Some(created) = Self::create(conn, key, spec).await? {
            return Ok(Upserted::Created(created));
        }
        let plain = serde_json::to_vec(&spec.credentials).unwrap_or_default();
        let sealed = key.seal(&plain, &seal_context(&spec.public_id));
        let at = now();
        let row = db_run!(conn: {
            channel_accounts::table
                .filter(channel_accounts::public_id.eq(&spec.public_id))
                .select(ChannelAccount::as_select())
                .first(conn)
                .await
                .map_err(DbError::from)?
        });
        let same_secrets = row.open_credentials(key)? == spec.credentials;
        if row.bot_id == spec.bot_id
            && row.kind == spec.kind
            && row.external_id == spec.external_id
            && row.status == AccountStatus::Active
            && same_secrets
        {
            return Ok(Upserted::Unchanged(row));
        }
        let before = row;
        let after = db_run!(conn: {
            diesel::update(channel_accounts::table.find(&before.id))
                .set((
                    channel_accounts::bot_id.eq(&spec.bot_id),
                    channel_accounts::kind.eq(spec.kind.as_str()),
                    channel_accounts::external_id.eq(&spec.external_id),
                    channel_accounts::credentials.eq(&sealed),
                    channel_accounts::status.eq(AccountStatus::Active),
                    channel_accounts::updated_at.eq(at),
                ))
                .returning(ChannelAccount::as_returning())
                .get_result(conn)
                .await
                .map_err(|e| UpsertAccountError::from_insert(e, spec))?
        });
        Ok(Upserted::Updated { before, after })
    }

    /// Disables the active accounts of `bot_id` whose public id is not in
    /// `keep`; returns them as they were.
    pub async fn disable_others(
        conn: &mut DbConn,
        bot_id: &str,
        keep: &[String],
    ) -> Result<Vec<ChannelAccount>, DbError> {
        Ok(db_run!(conn: {
            let stale: Vec<ChannelAccount> = channel_accounts::table
                .filter(channel_accounts::bot_id.eq(bot_id))
                .filter(channel_accounts::status.eq(AccountStatus::Active))
                // The web chat account is made on first use, never declared.
                .filter(channel_accounts::kind.ne(ChannelKind::Webchat.as_str()))
                .filter(channel_accounts::public_id.ne_all(keep))
                .select(ChannelAccount::as_select())
                .load(conn)
                .await?;
            let ids: Vec<&String> = stale.iter().map(|a| &a.id).collect();
            diesel::update(channel_accounts::table.filter(channel_accounts::id.eq_any(ids)))
                .set((
                    channel_accounts::status.eq(AccountStatus::Disabled),
                    channel_accounts::updated_at.eq(now()),
                ))
                .execute(conn)
                .await?;
            stale
        }))
    }

    /// By id.
    pub async fn find_by_id(
        conn: &mut DbConn,
        id: &str,
    ) -> Result<Option<ChannelAccount>, DbError> {
        Ok(db_run!(conn: {
            channel_accounts::table
                .find(id)
                .select(ChannelAccount::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// By the public id of webhook routes.
    pub async fn find_by_public_id(
        conn: &mut DbConn,
        public_id: &str,
    ) -> Result<Option<ChannelAccount>, DbError> {
        Ok(db_run!(conn: {
            channel_accounts::table
                .filter(channel_accounts::public_id.eq(public_id))
                .select(ChannelAccount::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// Every active account of `kind`.
    pub async fn active_of_kind(
        conn: &mut DbConn,
        kind: ChannelKind,
    ) -> Result<Vec<ChannelAccount>, DbError> {
        Ok(db_run!(conn: {
            channel_accounts::table
                .filter(channel_accounts::kind.eq(kind.as_str()))
                .filter(channel_accounts::status.eq(AccountStatus::Active))
                .select(ChannelAccount::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Accepts a signed webhook token once per signing key (`signer` is a
    /// hash of it): `false` when it was already used. Atomic, so concurrent
    /// replays lose. Tokens older than `keep` are forgotten on the way.
    pub async fn accept_token(
        conn: &mut DbConn,
        signer: &str,
        token: &str,
        keep: chrono::Duration,
    ) -> Result<bool, DbError> {
        use crate::schema::webhook_tokens;
        let at = now();
        let inserted = db_run!(conn: {
            diesel::delete(webhook_tokens::table.filter(webhook_tokens::seen_at.lt(at - keep)))
                .execute(conn)
                .await?;
            diesel::insert_into(webhook_tokens::table)
                .values((
                    webhook_tokens::signer.eq(signer),
                    webhook_tokens::token.eq(token),
                    webhook_tokens::seen_at.eq(at),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?
        });
        Ok(inserted == 1)
    }

    /// Forgets an accepted token (its request failed before storing, so the
    /// platform's retry must be accepted).
    pub async fn forget_token(conn: &mut DbConn, signer: &str, token: &str) -> Result<(), DbError> {
        use crate::schema::webhook_tokens;
        db_run!(conn: {
            diesel::delete(
                webhook_tokens::table
                    .filter(webhook_tokens::signer.eq(signer))
                    .filter(webhook_tokens::token.eq(token)),
            )
            .execute(conn)
            .await?;
        });
        Ok(())
    }

    /// Every active account with its bot's workspace: what a node keeps in
    /// memory to route webhooks without a query.
    pub async fn all_active(conn: &mut DbConn) -> Result<Vec<(ChannelAccount, String)>, DbError> {
        use crate::schema::bots;
        Ok(db_run!(conn: {
            channel_accounts::table
                .inner_join(bots::table)
                .filter(channel_accounts::status.eq(AccountStatus::Active))
                .select((ChannelAccount::as_select(), bots::workspace_id))
                .load(conn)
                .await?
        }))
    }

    /// The active account of `kind` with this platform identity.
    pub async fn find_active_by_external_id(
        conn: &mut DbConn,
        kind: ChannelKind,
        external_id: &str,
    ) -> Result<Option<ChannelAccount>, DbError> {
        Ok(db_run!(conn: {
            channel_accounts::table
                .filter(channel_accounts::kind.eq(kind.as_str()))
                .filter(channel_accounts::external_id.eq(external_id))
                .filter(channel_accounts::status.eq(AccountStatus::Active))
                .select(ChannelAccount::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }
}

/// Why an account could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum UpsertAccountError {
    /// Another active account already has this platform identity.
    #[error("another active {kind} account already uses `{external_id}`")]
    ExternalIdTaken {
        /// Platform.
        kind: ChannelKind,
        /// The identity.
        external_id: String,
    },
    /// Stored credentials do not decrypt.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl UpsertAccountError {
    fn from_insert(e: diesel::result::Error, spec: &AccountSpec) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match (&e, &spec.external_id) {
            (Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _), Some(external_id)) => {
                Self::ExternalIdTaken {
                    kind: spec.kind,
                    external_id: external_id.clone(),
                }
            }
            _ => Self::Db(e.into()),
        }
    }
}

impl ChannelAccount {
    /// How many accounts' credentials open with a key of the ring other
    /// than the primary: left by a rotation, or sealed by a node that still
    /// ran with the old key. Until none is, the other keys are needed.
    pub async fn count_not_on_primary(
        conn: &mut DbConn,
        key: &MasterKey,
    ) -> Result<usize, DbError> {
        let all: Vec<ChannelAccount> = db_run!(conn: {
            channel_accounts::table
                .select(ChannelAccount::as_select())
                .load(conn)
                .await?
        });
        Ok(all
            .iter()
            .filter(|a| {
                key.open_with_role(&a.credentials, &seal_context(&a.public_id))
                    .is_ok_and(|opened| opened.role != KeyRole::Primary)
            })
            .count())
    }

    /// The bot's accounts, active and disabled, by public id.
    pub async fn of_bot(conn: &mut DbConn, bot_id: &str) -> Result<Vec<ChannelAccount>, DbError> {
        Ok(db_run!(conn: {
            channel_accounts::table
                .filter(channel_accounts::bot_id.eq(bot_id))
                .order(channel_accounts::public_id)
                .select(ChannelAccount::as_select())
                .load(conn)
                .await?
        }))
    }
}

impl ChannelAccount {
    /// Stores a new account; `None` when its public id exists already
    /// (nothing changed: an id is never taken over).
    pub async fn create(
        conn: &mut DbConn,
        key: &MasterKey,
        spec: &AccountSpec,
    ) -> Result<Option<ChannelAccount>, UpsertAccountError> {
        let plain = serde_json::to_vec(&spec.credentials).unwrap_or_default();
        let sealed = key.seal(&plain, &seal_context(&spec.public_id));
        let at = now();
        Ok(db_run!(conn: {
            diesel::insert_into(channel_accounts::table)
                .values((
                    channel_accounts::id.eq(new_id()),
                    channel_accounts::public_id.eq(&spec.public_id),
                    channel_accounts::bot_id.eq(&spec.bot_id),
                    channel_accounts::kind.eq(spec.kind.as_str()),
                    channel_accounts::external_id.eq(&spec.external_id),
                    channel_accounts::credentials.eq(&sealed),
                    channel_accounts::status.eq(AccountStatus::Active),
                    channel_accounts::created_at.eq(at),
                    channel_accounts::updated_at.eq(at),
                ))
                .on_conflict(channel_accounts::public_id)
                .do_nothing()
                .returning(ChannelAccount::as_returning())
                .get_result(conn)
                .await
                .optional()
                .map_err(|e| UpsertAccountError::from_insert(e, spec))?
        }))
    }
}

impl ChannelAccount {
    /// Every account of the workspace's bots, in one query.
    pub async fn in_workspace(
        conn: &mut DbConn,
        workspace_id: &str,
    ) -> Result<Vec<ChannelAccount>, DbError> {
        use crate::schema::bots;
        Ok(db_run!(conn: {
            channel_accounts::table
                .inner_join(bots::table)
                .filter(bots::workspace_id.eq(workspace_id))
                .select(ChannelAccount::as_select())
                .load(conn)
                .await?
        }))
    }
}

/// What an account has been doing, for the console: read from the stored
/// messages, so the webhook path writes nothing extra for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AccountActivity {
    /// When its latest customer message was stored (received by webhook,
    /// or by the chat widget's socket).
    pub last_inbound_at: Option<NaiveDateTime>,
    /// Its latest failed delivery: when it was given up, and why.
    pub last_delivery_error: Option<(NaiveDateTime, String)>,
}

impl ChannelAccount {
    /// Records that the server registered the account's webhook now, or
    /// (`false`) that it no longer stands.
    pub async fn mark_webhook_set(
        conn: &mut DbConn,
        id: &str,
        set: bool,
    ) -> Result<Option<NaiveDateTime>, DbError> {
        let at = set.then(now);
        db_run!(conn: {
            diesel::update(channel_accounts::table.find(id))
                .set(channel_accounts::webhook_set_at.eq(at))
                .execute(conn)
                .await?;
        });
        Ok(at)
    }

    /// Disables one account (kept for its conversations' history; its
    /// webhooks are refused from now on). Returns it as it is now.
    pub async fn disable(conn: &mut DbConn, id: &str) -> Result<ChannelAccount, DbError> {
        Ok(db_run!(conn: {
            diesel::update(channel_accounts::table.find(id))
                .set((
                    channel_accounts::status.eq(AccountStatus::Disabled),
                    channel_accounts::webhook_set_at.eq(None::<NaiveDateTime>),
                    channel_accounts::updated_at.eq(now()),
                ))
                .returning(ChannelAccount::as_returning())
                .get_result(conn)
                .await?
        }))
    }

    /// The activity of each of `ids` (absent: none). The latest customer
    /// message is one aggregate over the account's inbound messages (the
    /// `(channel_account_id, direction, external_id)` unique index serves
    /// it); the latest failure one probe per account of the partial index
    /// of failed messages.
    pub async fn activity(
        conn: &mut DbConn,
        ids: &[String],
    ) -> Result<BTreeMap<String, AccountActivity>, DbError> {
        use super::message::Direction;
        use crate::schema::messages;
        use diesel::dsl::max;
        let mut out: BTreeMap<String, AccountActivity> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let inbound: Vec<(String, Option<NaiveDateTime>)> = db_run!(conn: {
            messages::table
                .filter(messages::channel_account_id.eq_any(ids))
                .filter(messages::direction.eq(Direction::Inbound))
                .group_by(messages::channel_account_id)
                .select((messages::channel_account_id, max(messages::created_at)))
                .load(conn)
                .await?
        });
        for (id, at) in inbound {
            out.entry(id).or_default().last_inbound_at = at;
        }
        for id in ids {
            let failure: Option<(Option<NaiveDateTime>, Option<String>)> = db_run!(conn: {
                messages::table
                    .filter(messages::channel_account_id.eq(id))
                    .filter(messages::delivery_failed_at.is_not_null())
                    .order(messages::delivery_failed_at.desc())
                    .select((messages::delivery_failed_at, messages::delivery_error))
                    .first(conn)
                    .await
                    .optional()?
            });
            if let Some((Some(at), error)) = failure {
                out.entry(id.clone()).or_default().last_delivery_error =
                    Some((at, error.unwrap_or_default()));
            }
        }
        Ok(out)
    }
}
