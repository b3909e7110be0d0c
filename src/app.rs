//! Start-up, on top of everything: opening Frontdesk, and [`start`], the
//! one start-up function `main`, the tests and the benchmarks share.
//!
//! [`open`]: connect the database → apply migrations → load the master key
//! and check it against the database ([`open_master_key`], which finishes an
//! interrupted key rotation) → apply the bot files → connect Redis when
//! configured. Each step fails with one line that says what and where.
//! [`start`] then runs what the command needs: the knowledge sync of the
//! bot files, the worker loops, the HTTP server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::dev::ServerHandle;
use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::answerer::Answerer;

use crate::accounts::Accounts;
use crate::botfiles::BotFiles;
use crate::config::Settings;
use crate::context::{App, Channels};
use crate::door::Door;
use crate::kb::Knowledge;
use crate::metrics::Metrics;
use broker::memory::MemoryBroker;
use broker::redis::RedisBroker;
use broker::{AnyBroker, Broker};
use store::crypto::{KeyFiles, KeyFilesLock, KeyRole, MasterKey};
use store::db::Db;
use store::models::channel_account::ChannelAccount;
use store::models::instance_meta;

/// Opens the database (migrating it), the master key, the bot files and Redis.
/// `env` resolves the bot files' `env:` secrets.
pub async fn open(settings: Settings, env: &[(String, String)]) -> anyhow::Result<App> {
    open_with(settings, env, true).await
}

/// Like [`open`] for commands that need no broker (`frontdesk kb …`): the
/// in-process broker stands in, so Redis being down does not stop them.
pub async fn open_local(settings: Settings, env: &[(String, String)]) -> anyhow::Result<App> {
    open_with(settings, env, false).await
}

async fn open_with(
    settings: Settings,
    env: &[(String, String)],
    with_broker: bool,
) -> anyhow::Result<App> {
    // Bot files first: a bad one stops start-up before anything is written.
    let bot_files = BotFiles::load(&settings.bots.dir, env)?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
    let db = Db::connect(&settings.database).await?;
    let applied = db.migrate(&settings.database).await?;
    if !applied.is_empty() {
        tracing::info!(count = applied.len(), versions = ?applied, "applied database migrations");
    }
    let master_key = open_master_key(&db, &settings).await?;
    let bot_files = bot_files.apply(&db, &master_key).await?;
    tracing::info!(
        dir = %settings.bots.dir.display(),
        files = bot_files.files,
        bots_changed = bot_files.bots_changed,
        channels_changed = bot_files.channels_changed,
        channels_disabled = bot_files.channels_disabled,
        "bot files applied"
    );
    let broker = match settings.redis.url.as_ref().filter(|_| with_broker) {
        Some(url) => {
            let pool_size = settings.worker.concurrency * 2 + 8;
            AnyBroker::Redis(
                RedisBroker::connect(url.expose(), &settings.redis.key_prefix, pool_size)
                    .await
                    .with_context(|| format!("cannot use Redis at {url} (redis.url)"))?,
            )
        }
        None => AnyBroker::Memory(MemoryBroker::new()),
    };
    if bot_files.bots_changed > 0 {
        // Other nodes' workers drop their cached bots.
        let _ = broker
            .publish(crate::context::BOT_CHANGES_TOPIC, crate::context::ALL_BOTS)
            .await;
    }
    let accounts = Arc::new(Accounts::default());
    if bot_files.channels_changed + bot_files.channels_disabled > 0 {
        accounts.changed(&broker).await;
    }
    // SQLite has one writer anyway; on PostgreSQL a second overlaps the
    // round trips.
    let writers = match db.backend() {
        store::db::Backend::Sqlite => 1,
        store::db::Backend::Postgres => 2,
    };
    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    Ok(App {
        door: Door::open(
            &db,
            broker.clone(),
            metrics.clone(),
            (writers, settings.server.webhook_queue),
            crate::events::topic,
        ),
        accounts,
        channels: Channels::new(&settings.channels),
        knowledge: Arc::new({
            let mut knowledge = Knowledge::new(&settings.data_dir, &settings.embedding.model_dir)
                .with_approximate_from(settings.knowledge.approximate_from);
            if let Some(model) = settings
                .embedding
                .model
                .as_deref()
                .and_then(knowledge::models::embedding_model)
            {
                knowledge = knowledge.with_model(model);
            }
            if settings.embedding.rerank {
                knowledge.with_reranker()
            } else {
                knowledge
            }
        }),
        knowledge_synced: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        settings: Arc::new(settings),
        db,
        master_key,
        broker,
        metrics,
        bot_files,
    })
}

/// The database (migrated) and the master key, nothing else: what
/// `frontdesk keys …` needs. No bot file is read or applied.
pub async fn open_keys(settings: &Settings) -> anyhow::Result<(Db, MasterKey)> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
    let db = Db::connect(&settings.database).await?;
    db.migrate(&settings.database).await?;
    let master_key = open_master_key(&db, settings).await?;
    Ok((db, master_key))
}

/// Loads the master keyring and checks it against the database. A rotation
/// that committed but did not promote `master.key.new` (the process stopped
/// in between) is finished here; a database sealed with a key that only
/// opens, and credentials left on a previous key, are reported.
pub async fn open_master_key(db: &Db, settings: &Settings) -> anyhow::Result<MasterKey> {
    let key_file = settings.master_key_file();
    let load = || {
        MasterKey::load(
            settings.security.master_key.as_deref(),
            &settings.security.previous_master_keys,
            &key_file,
        )
    };
    let mut key = load()?;
    let mut sealed_with = instance_meta::verify_master_key(db, &key, &key_file).await?;
    if sealed_with.role == KeyRole::Pending
        && let Some(files) = key.files().cloned()
    {
        // Under the lock, a rotation running beside this start-up finishes
        // first; then the files say what is left to do.
        let _lock = lock_key_files(&files).await?;
        key = load()?;
        sealed_with = instance_meta::verify_master_key(db, &key, &key_file).await?;
        if sealed_with.role == KeyRole::Pending {
            files.promote_new().context(
                "the database uses the key of an unfinished rotation, which cannot be promoted",
            )?;
            key = load()?;
            sealed_with = instance_meta::verify_master_key(db, &key, &key_file).await?;
            tracing::warn!(
                key_file = %files.current.display(),
                previous = %files.previous.display(),
                "finished an interrupted master key rotation: the database was re-sealed with \
                 master.key.new, now promoted to master.key; the old key is kept as master.key.previous"
            );
        }
    }
    if sealed_with.role != KeyRole::Primary {
        tracing::warn!(
            sealed_with = %sealed_with.origin,
            primary = %key.origin(),
            "the database is sealed with a key that only opens here: a key rotation is not finished \
             on this node; make that key the master key and this one a previous key (docs/keys.md). \
             Credentials open; new ones are sealed with the primary"
        );
    }
    let others = key.others();
    if others.iter().any(|(role, _)| *role == KeyRole::Pending) {
        tracing::warn!(
            key_file = %key_file.display(),
            "master.key.new exists but the database does not use it: a `frontdesk keys rotate` is \
             running, or one stopped before its commit and changed nothing; the next rotation \
             replaces it"
        );
    }
    if others.iter().any(|(role, _)| *role == KeyRole::Previous) {
        let mut conn = db.get().await?;
        let left = ChannelAccount::count_not_on_primary(&mut conn, &key).await?;
        let previous: Vec<String> = others
            .iter()
            .map(|(_, origin)| origin.to_string())
            .collect();
        if left > 0 {
            tracing::warn!(
                accounts = left,
                previous = ?previous,
                "channel credentials are still sealed with a previous master key; keep the previous \
                 keys until `frontdesk keys rotate` has re-sealed them"
            );
        } else {
            tracing::info!(
                previous = ?previous,
                "every channel credential is sealed with the primary master key; the previous keys \
                 are no longer needed here"
            );
        }
    }
    Ok(key)
}

/// Takes the lock of the key files, off the async threads (it waits for a
/// rotation in progress).
pub async fn lock_key_files(files: &KeyFiles) -> anyhow::Result<KeyFilesLock> {
    let files = files.clone();
    Ok(tokio::task::spawn_blocking(move || files.lock())
        .await
        .context("the key file lock was abandoned")??)
}

/// Applies migrations only (`frontdesk migrate`); returns the versions applied.
pub async fn migrate(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let db = Db::connect(&settings.database).await?;
    Ok(db.migrate(&settings.database).await?)
}

/// Ingests what changed in every active bot's `knowledge` paths (bot files),
/// then marks start-up sync done. Failures are logged per file; the server
/// answers meanwhile, `/readyz` says not ready until this finishes.
pub async fn sync_bot_knowledge(app: App) {
    use std::sync::atomic::Ordering;
    app.knowledge_synced.store(false, Ordering::SeqCst);
    let paths = knowledge::models::ModelPaths::new(&app.settings.embedding.model_dir);
    let rerank = app.settings.embedding.rerank;
    let bots = match app.db.get().await {
        Ok(mut conn) => store::models::bot::Bot::all(&mut conn).await,
        Err(e) => Err(e),
    }
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "knowledge sync: cannot list bots");
        Vec::new()
    });
    // The models the bots use (at least the default one).
    let mut models = vec![&knowledge::models::MINILM];
    for bot in &bots {
        let model = app.knowledge.model_for(bot);
        if !models.contains(&model) {
            models.push(model);
        }
    }
    let missing = models.iter().any(|m| !paths.missing(m).is_empty())
        || (rerank && !paths.missing_reranker().is_empty());
    if app.settings.embedding.auto_install && missing {
        tracing::warn!(dir = %paths.dir.display(), "embedding model missing: fetching it (embedding.auto_install)");
        let wanted = models.clone();
        let fetched = tokio::task::spawn_blocking(move || {
            knowledge::models::install(&paths, &wanted, rerank, &mut |line| {
                tracing::info!("{line}")
            })
        })
        .await;
        match fetched {
            Ok(Ok(_)) => tracing::info!("embedding model installed"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot fetch the embedding model; run `frontdesk models install` by hand")
            }
            Err(e) => tracing::error!(error = %e, "embedding model installer stopped"),
        }
    }
    // Load the model now (and say loudly if it is missing), not on the
    // first customer question.
    for model in models {
        let _ = app.knowledge.embedder(model).await;
    }
    let _ = app.knowledge.reranker().await;
    let bots = match app.db.get().await {
        Ok(mut conn) => store::models::bot::Bot::file_managed(&mut conn).await,
        Err(e) => Err(e),
    };
    match bots {
        Ok(bots) => {
            for bot in bots.iter().filter(|b| !b.knowledge_paths.0.is_empty()) {
                sync_bot_sources(&app, bot, true).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "knowledge sync: cannot list bots"),
    }
    app.knowledge_synced.store(true, Ordering::SeqCst);
}

/// Ingests one bot file's `knowledge`: its websites, and (`with_paths`) its
/// files and folders. Logged, never failing.
async fn sync_bot_sources(app: &App, bot: &store::models::bot::Bot, with_paths: bool) {
    let (urls, paths): (Vec<String>, Vec<String>) = bot
        .knowledge_paths
        .0
        .iter()
        .cloned()
        .partition(|s| crate::kb::is_url(s));
    let paths: Vec<std::path::PathBuf> = paths.into_iter().map(Into::into).collect();
    let progress = crate::kb::LogProgress;
    let mut report = crate::kb::IngestReport::default();
    if with_paths && !paths.is_empty() {
        match app
            .knowledge
            .ingest_paths(&app.db, bot, &paths, &progress)
            .await
        {
            Ok(r) => report.merge(r),
            Err(e) => tracing::error!(bot = %bot.name, error = %e, "knowledge sync failed"),
        }
    }
    if !urls.is_empty() {
        let options = crate::kb::CrawlOptions::default();
        match app
            .knowledge
            .ingest_urls(&app.db, bot, &urls, options, &progress)
            .await
        {
            Ok(r) => report.merge(r),
            Err(e) => tracing::error!(bot = %bot.name, error = %e, "website crawl failed"),
        }
    }
    tracing::info!(
        bot = %bot.name,
        ingested = report.ingested,
        unchanged = report.unchanged,
        failed = report.failed.len(),
        removed = report.removed,
        chunks = report.chunks,
        "knowledge synced from the bot file"
    );
}

/// Crawls the websites of the bot files' `knowledge` again every
/// `knowledge.refresh_hours` (never when it is 0). Unchanged pages cost a
/// request each, not an embedding.
pub async fn refresh_websites(app: App) {
    let hours = app.settings.knowledge.refresh_hours;
    if hours == 0 {
        return;
    }
    let every = std::time::Duration::from_secs(hours.saturating_mul(3600));
    loop {
        tokio::time::sleep(every).await;
        let bots = match app.db.get().await {
            Ok(mut conn) => store::models::bot::Bot::file_managed(&mut conn).await,
            Err(e) => Err(e),
        };
        match bots {
            Ok(bots) => {
                for bot in &bots {
                    if bot.knowledge_paths.0.iter().any(|s| crate::kb::is_url(s)) {
                        sync_bot_sources(&app, bot, false).await;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "website refresh: cannot list bots"),
        }
    }
}

/// What [`start`] runs besides opening the app.
#[derive(Debug, Default)]
pub struct Startup {
    /// Serve HTTP on this listener (bound by the caller, so a taken port is
    /// reported before any start-up work; port 0 in tests). `None`: no
    /// HTTP, as `frontdesk worker`.
    pub http: Option<TcpListener>,
    /// Run `worker.concurrency` worker loops under this consumer name.
    pub worker: Option<String>,
    /// Ingest the bot files' knowledge paths in the background (`/readyz`
    /// waits for it), as `frontdesk serve` does; [`KnowledgeSync::Await`] waits
    /// for it before returning (benchmarks), [`KnowledgeSync::Skip`] leaves it.
    pub knowledge: KnowledgeSync,
}

/// The start-up knowledge sync of [`Startup`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum KnowledgeSync {
    /// In the background, while the server answers.
    #[default]
    Background,
    /// Before [`start`] returns.
    Await,
    /// Not at all.
    Skip,
}

/// A started gateway: what `main`, the tests and the benchmarks run.
pub struct Running {
    /// The opened app.
    pub app: App,
    /// Where HTTP listens, when it does.
    pub addr: Option<SocketAddr>,
    server: Option<(ServerHandle, JoinHandle<std::io::Result<()>>)>,
    workers: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// The one start-up: opens the app ([`open`]), then as `startup` asks
/// syncs the bot files' knowledge, starts the worker loops (with the answer
/// pipeline watching for bot changes) and the HTTP server (with the hourly
/// pruning of the event log).
pub async fn start(
    settings: Settings,
    env: &[(String, String)],
    startup: Startup,
) -> anyhow::Result<Running> {
    let app = open(settings, env).await?;
    match startup.knowledge {
        // After the sync, the vectors of each bot's model are kept current
        // in the background (a change of model re-embeds).
        KnowledgeSync::Background => {
            app.knowledge_synced.store(false, Ordering::SeqCst);
            let app = app.clone();
            tokio::spawn(async move {
                sync_bot_knowledge(app.clone()).await;
                tokio::spawn(refresh_websites(app.clone()));
                crate::kb::keep_vectors_current(app.knowledge.clone(), app.db.clone()).await;
            });
        }
        KnowledgeSync::Await => {
            sync_bot_knowledge(app.clone()).await;
            tokio::spawn(refresh_websites(app.clone()));
            tokio::spawn(crate::kb::keep_vectors_current(
                app.knowledge.clone(),
                app.db.clone(),
            ));
        }
        KnowledgeSync::Skip => {}
    }
    let (stop, stopped) = watch::channel(false);
    // One pipeline for the worker loops and the console's trial questions.
    let answerer = Arc::new(Answerer::new(app.clone(), env));
    answerer.watch_bot_changes().await;
    let workers = startup.worker.map(|consumer| {
        tokio::spawn(crate::worker::run(
            app.clone(),
            answerer.clone(),
            consumer,
            stopped,
        ))
    });
    let (server, addr) = match startup.http {
        Some(listener) => {
            app.accounts.watch(&app.broker).await;
            tokio::spawn(crate::events::prune_events(app.clone()));
            let (server, addr) = crate::server::build(app.clone(), answerer, listener)?;
            (Some((server.handle(), tokio::spawn(server))), Some(addr))
        }
        None => (None, None),
    };
    Ok(Running {
        app,
        addr,
        server,
        workers,
        stop,
    })
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .field("worker", &self.workers.is_some())
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Runs until SIGTERM or SIGINT (see [`crate::server::stop_on_signals`]),
    /// then lets in-flight requests and turns finish.
    pub async fn until_signalled(self) -> anyhow::Result<()> {
        let handle = self.server.as_ref().map(|(handle, _)| handle.clone());
        crate::server::stop_on_signals(handle, self.stop.clone());
        if let Some((_, serving)) = self.server {
            serving
                .await
                .context("HTTP server stopped")?
                .context("HTTP server failed")?;
        }
        if let Some(workers) = self.workers {
            let _ = workers.await;
        }
        Ok(())
    }

    /// Stops now, gracefully: the server finishes its requests, the workers
    /// their current turn.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some((handle, serving)) = self.server {
            handle.stop(true).await;
            let _ = serving.await;
        }
        if let Some(workers) = self.workers {
            let _ = workers.await;
        }
    }
}
