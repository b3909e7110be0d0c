//! Opening Frontdesk: everything a command needs, in a fixed order.
//!
//! Connect the database → apply migrations → load the master key and check it
//! against the database → apply the bot files → connect Redis when
//! configured. Each step fails with one line that says what and where.

use std::sync::Arc;

use anyhow::Context;

use crate::botfiles::{self, SyncReport};
use crate::config::Settings;
use crate::crypto::MasterKey;
use crate::db::Db;
use crate::models::instance_meta;

/// Everything opened: shared by the server, the worker and the commands.
#[derive(Debug, Clone)]
pub struct App {
    /// Settings, fixed for the process's life.
    pub settings: Arc<Settings>,
    /// The database pool.
    pub db: Db,
    /// Seals and opens channel credentials.
    pub master_key: MasterKey,
    /// Redis, when `redis.url` is set.
    pub redis: Option<deadpool_redis::Pool>,
    /// What the bot files changed at start-up.
    pub bot_files: SyncReport,
}

/// Opens the database (migrating it), the master key, the bot files and Redis.
/// `env` resolves the bot files' `env:` secrets.
pub async fn open(settings: Settings, env: &[(String, String)]) -> anyhow::Result<App> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
    let db = Db::connect(&settings.database).await?;
    let applied = db.migrate(&settings.database).await?;
    if !applied.is_empty() {
        tracing::info!(count = applied.len(), versions = ?applied, "applied database migrations");
    }
    let key_file = settings.master_key_file();
    let master_key = MasterKey::load(settings.security.master_key.as_deref(), &key_file)?;
    instance_meta::verify_master_key(&db, &master_key, &key_file).await?;
    let bot_files = botfiles::sync(&db, &master_key, &settings.bots.dir, env).await?;
    tracing::info!(
        dir = %settings.bots.dir.display(),
        files = bot_files.files,
        bots_changed = bot_files.bots_changed,
        channels_changed = bot_files.channels_changed,
        channels_disabled = bot_files.channels_disabled,
        "bot files applied"
    );
    let redis = match &settings.redis.url {
        Some(url) => Some(
            deadpool_redis::Config::from_url(url.expose())
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .with_context(|| format!("invalid redis.url {url}"))?,
        ),
        None => None,
    };
    Ok(App {
        settings: Arc::new(settings),
        db,
        master_key,
        redis,
        bot_files,
    })
}

/// Applies migrations only (`frontdesk migrate`); returns the versions applied.
pub async fn migrate(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let db = Db::connect(&settings.database).await?;
    Ok(db.migrate(&settings.database).await?)
}
