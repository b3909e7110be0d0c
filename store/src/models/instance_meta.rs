//! Facts about this Frontdesk installation, kept in its database: the check
//! that the master key is the right one, and the re-sealing of every stored
//! secret when the key rotates.
//!
//! Sealed values in the database: `channel_accounts.credentials` and the
//! key check here. A new sealed column must join [`reseal_all`].

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::crypto::{CryptoError, KeyOrigin, KeyRole, MasterKey, NewMasterKey};
use crate::db::{Db, DbError, now};
use crate::db_run;
use crate::models::channel_account::ChannelAccount;
use crate::schema::{channel_accounts, instance_meta};

const KEY_CHECK: &str = "master_key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"frontdesk master key check v1";

/// The master key does not match the one the database was set up with.
#[derive(Debug, thiserror::Error)]
#[error(
    "the master key ({origin}) is not the one that encrypted this database's channel \
     credentials; restore the original key (security.master_key or {key_file}), or after \
     `frontdesk keys rotate` the new one"
)]
pub struct WrongMasterKey {
    /// Where the key in use came from.
    pub origin: String,
    /// Where a generated key would live.
    pub key_file: String,
}

/// Errors of [`verify_master_key`].
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    /// See [`WrongMasterKey`].
    #[error(transparent)]
    Wrong(#[from] WrongMasterKey),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The key of the ring that opens the database's key check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedWith {
    /// Primary, previous, or the pending key of a rotation.
    pub role: KeyRole,
    /// Where that key came from.
    pub origin: KeyOrigin,
}

/// Checks `key` against the sentinel sealed with the first key this database
/// saw (recording it on first use), so a wrong key is refused at start-up
/// rather than when a credential is first needed. Says which key of the ring
/// opened it: not the primary means a rotation is not finished here.
pub async fn verify_master_key(
    db: &Db,
    key: &MasterKey,
    key_file: &std::path::Path,
) -> Result<SealedWith, KeyCheckError> {
    let mut conn = db.get().await?;
    let sealed = key.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK);
    let stored: String = db_run!(conn: {
        diesel::insert_into(instance_meta::table)
            .values((
                instance_meta::key.eq(KEY_CHECK),
                instance_meta::value.eq(&sealed),
                instance_meta::updated_at.eq(now()),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await
            .map_err(DbError::from)?;
        instance_meta::table
            .find(KEY_CHECK)
            .select(instance_meta::value)
            .first(conn)
            .await
            .map_err(DbError::from)?
    });
    match key.open_with_role(&stored, KEY_CHECK) {
        Ok(opened) if opened.plaintext == KEY_CHECK_PLAINTEXT => Ok(SealedWith {
            role: opened.role,
            origin: opened.origin,
        }),
        _ => Err(WrongMasterKey {
            origin: key.origin().to_string(),
            key_file: key_file.display().to_string(),
        }
        .into()),
    }
}

/// Errors of [`reseal_all`]. Each leaves the database as it was.
#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    /// A stored value opens with no key of the ring.
    #[error("{what} does not open with the master key or a previous key ({source})")]
    Open {
        /// Which value.
        what: String,
        /// Why.
        source: CryptoError,
    },
    /// A value changed while the rotation ran: another rotation, or a node
    /// saving credentials.
    #[error("{what} changed while the rotation ran; run it again")]
    Changed {
        /// Which value.
        what: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for ResealError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Re-seals every sealed value under `target`, each opened with the ring
/// `key`, in one transaction; returns how many. Until the commit the old
/// values stand, so nodes on the old key keep working; a value changed
/// meanwhile by someone else fails the whole rotation rather than being
/// overwritten.
pub async fn reseal_all(
    db: &Db,
    key: &MasterKey,
    target: &NewMasterKey,
) -> Result<usize, ResealError> {
    let mut conn = db.get().await?;
    let at = now();
    Ok(db_run!(conn: {
        conn.transaction(async |conn| {
            // A write first: SQLite takes its write lock here rather than at
            // a later update (where a concurrent writer would fail the
            // transaction), PostgreSQL locks the key check so rotations
            // queue, and the second finds values it cannot open.
            diesel::update(instance_meta::table.find(KEY_CHECK))
                .set(instance_meta::updated_at.eq(at))
                .execute(conn)
                .await?;
            let stored: String = instance_meta::table
                .find(KEY_CHECK)
                .select(instance_meta::value)
                .first(conn)
                .await?;
            let plain = key.open(&stored, KEY_CHECK).map_err(|source| ResealError::Open {
                what: "the master key check".into(),
                source,
            })?;
            diesel::update(instance_meta::table.find(KEY_CHECK))
                .set(instance_meta::value.eq(target.seal(&plain, KEY_CHECK)))
                .execute(conn)
                .await?;
            let accounts: Vec<ChannelAccount> = channel_accounts::table
                .select(ChannelAccount::as_select())
                .load(conn)
                .await?;
            for account in &accounts {
                let what = || format!("the credentials of channel account `{}`", account.public_id);
                let sealed = account
                    .resealed_credentials(key, target)
                    .map_err(|source| ResealError::Open { what: what(), source })?;
                let updated = diesel::update(
                    channel_accounts::table
                        .find(&account.id)
                        .filter(channel_accounts::credentials.eq(&account.credentials)),
                )
                .set(channel_accounts::credentials.eq(&sealed))
                .execute(conn)
                .await?;
                if updated != 1 {
                    return Err(ResealError::Changed { what: what() });
                }
            }
            Ok::<_, ResealError>(accounts.len() + 1)
        })
        .await?
    }))
}
