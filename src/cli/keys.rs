//! `frontdesk keys rotate`: every sealed value re-sealed under a new master
//! key, in one transaction.
//!
//! The new key is read and checked before anything is opened, so bad input
//! changes nothing. A key kept in `DATA_DIR/master.key` is rotated through
//! `master.key.new` (written before the transaction, promoted after the
//! commit; see [`store::crypto::KeyFiles`]); a key from
//! `security.master_key` cannot be written back, so the new one is printed
//! once, with what to change. The sequence across nodes is in docs/keys.md.

use anyhow::Context;

use crate::config::Settings;
use store::crypto::{KeyOrigin, NewMasterKey};
use store::models::instance_meta::{self, ResealError};

/// `frontdesk keys …`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Re-seal every stored secret (channel credentials, the key check)
    /// under a new master key, in one transaction. Until it commits, the
    /// old key keeps working everywhere; after, the old key only opens.
    Rotate {
        /// Read the new key (32 bytes as 64 hex characters or base64) from
        /// this environment variable instead of generating one.
        #[arg(long, value_name = "VAR")]
        new_key_env: Option<String>,
    },
}

/// Runs `frontdesk keys …`.
pub async fn run(
    settings: &Settings,
    env: &[(String, String)],
    command: KeysCommand,
) -> anyhow::Result<()> {
    let KeysCommand::Rotate { new_key_env } = command;
    let target = match &new_key_env {
        Some(var) => {
            let text = env
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.as_str())
                .with_context(|| {
                    format!("--new-key-env {var}: the variable is not set; nothing was changed")
                })?;
            NewMasterKey::parse(text, KeyOrigin::Env(var.clone()))
                .context("--new-key-env: nothing was changed")?
        }
        None => NewMasterKey::generate(),
    };
    let (db, key) = crate::app::open_keys(settings).await?;
    let same = key.is_primary(&target);
    let Some(files) = key.files().cloned() else {
        if !same && *target.origin() == KeyOrigin::Random {
            // Before the transaction: a crash after the commit must not
            // take the only copy of the key with it.
            show_new_key(&target);
        }
        let count = instance_meta::reseal_all(&db, &key, &target)
            .await
            .map_err(not_rotated)?;
        print_config_instructions(count, &target, same, key.holds(&target));
        return Ok(());
    };
    // One rotation at a time; re-read the files under the lock, as another
    // may have finished since they were loaded.
    let _lock = crate::app::lock_key_files(&files).await?;
    key.reload()?;
    let same = same || key.is_primary(&target);
    if !same {
        files.write_new(&target)?;
    }
    let count = match instance_meta::reseal_all(&db, &key, &target).await {
        Ok(count) => count,
        Err(e) => {
            // Rolled back for sure: the new key file is of no use. After a
            // database error the commit itself may have been lost on the way
            // back; the file stays, and the next start-up sees which key
            // the database uses.
            if !same && matches!(e, ResealError::Open { .. } | ResealError::Changed { .. }) {
                files.discard_new()?;
            }
            return Err(not_rotated(e));
        }
    };
    if same {
        report(format_args!(
            "re-sealed {count} sealed values under the current master key ({})",
            key.origin()
        ));
        return Ok(());
    }
    files.promote_new().with_context(|| {
        format!(
            "the database was re-sealed with the key in {}, which could not be promoted to {} \
             (the next start-up does it)",
            files.new.display(),
            files.current.display()
        )
    })?;
    report(format_args!(
        "rotated {count} sealed values to a new master key (key file {}; previous key kept at {})\n\
         back up the new key file with the database: backups made from now on need it",
        files.current.display(),
        files.previous.display()
    ));
    Ok(())
}

/// A failed re-sealing, worded by what is known of the database.
fn not_rotated(e: ResealError) -> anyhow::Error {
    let sure = matches!(e, ResealError::Open { .. } | ResealError::Changed { .. });
    anyhow::Error::new(e).context(if sure {
        "the master key was not rotated; nothing was changed"
    } else {
        "the master key was not rotated (if the database connection broke while committing, \
         the next start-up tells which key the database uses)"
    })
}

#[allow(clippy::print_stdout)] // the command's result, for the operator
fn report(line: std::fmt::Arguments<'_>) {
    println!("{line}");
}

/// A generated key for `security.master_key`: shown here once, never
/// logged.
#[allow(clippy::print_stdout)] // the new key, shown once, for the operator
fn show_new_key(target: &NewMasterKey) {
    println!(
        "new master key (shown once, never logged; keep it like the old one; unused if the \
         rotation fails):\n\n    {}\n",
        target.text().expose()
    );
}

/// The key from `security.master_key` is the operator's to change: what to
/// change, after the commit.
#[allow(clippy::print_stdout)] // the command's result, for the operator
fn print_config_instructions(count: usize, target: &NewMasterKey, same: bool, held: bool) {
    if same {
        println!(
            "re-sealed {count} sealed values under the current master key (security.master_key)"
        );
        return;
    }
    println!("rotated {count} sealed values to a new master key");
    if let KeyOrigin::Env(var) = target.origin() {
        println!("the new master key is the one in {var}");
    }
    println!(
        "on every node: set security.master_key to the new key and put the old key in \
         security.previous_master_keys, then restart the node; once every node has restarted \
         and none warns of credentials on a previous key, remove the old key from \
         security.previous_master_keys"
    );
    if !held {
        println!(
            "until a node restarts with the new key it cannot open credentials it reloads \
             (see docs/keys.md for rotating without that gap)"
        );
    }
}
