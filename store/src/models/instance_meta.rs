//! Facts about this Frontdesk installation, kept in its database.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::crypto::MasterKey;
use crate::db::{Db, DbError, now};
use crate::db_run;
use crate::schema::instance_meta;

const KEY_CHECK: &str = "master_key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"frontdesk master key check v1";

/// The master key does not match the one the database was set up with.
#[derive(Debug, thiserror::Error)]
#[error(
    "the master key ({origin}) is not the one that encrypted this database's channel \
     credentials; restore the original key (security.master_key or {key_file})"
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

/// Checks `key` against the sentinel sealed with the first key this database
/// saw (recording it on first use), so a wrong key is refused at start-up
/// rather than when a credential is first needed.
pub async fn verify_master_key(
    db: &Db,
    key: &MasterKey,
    key_file: &std::path::Path,
) -> Result<(), KeyCheckError> {
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
    match key.open(&stored, KEY_CHECK) {
        Ok(plain) if plain == KEY_CHECK_PLAINTEXT => Ok(()),
        _ => Err(WrongMasterKey {
            origin: key.origin().to_string(),
            key_file: key_file.display().to_string(),
        }
        .into()),
    }
}
