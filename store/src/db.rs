//! Database access: one pool over PostgreSQL or SQLite, one dispatch point.
//!
//! Every query is written once, inside [`db_run!`](crate::db_run), which
//! expands it for whichever backend the pool holds:
//!
//! ```ignore
//! let mut conn = db.get().await?;
//! db_run!(conn: {
//!     workspaces::table.find(id).first::<Workspace>(conn).await
//! })
//! ```
//!
//! PostgreSQL goes through diesel-async's `AsyncPgConnection` (tokio-postgres,
//! no libpq), over TLS as the URL's `sslmode` says ([`crate::tls`]). SQLite (bundled) runs in WAL mode with a busy timeout and foreign
//! keys on, behind `SyncConnectionWrapper`, which moves each query onto the
//! blocking pool. Migrations are embedded in the binary, one folder per backend.

use std::path::Path;
use std::time::Duration;

use diesel::SqliteConnection;
use diesel::connection::SimpleConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

use crate::settings::{DatabaseSettings, DatabaseUrl};
use crate::tls::PgConnector;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");

/// PostgreSQL advisory lock key that serializes migrations across nodes.
const MIGRATION_LOCK: i64 = 0x6672_6f6e_7464_736b; // "frontdsk"

/// SQLite behind the async interface.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached or opened.
    #[error("cannot connect to the database at {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// No pooled connection became free in time, or the pool broke.
    #[error("database connection pool: {0}")]
    Pool(String),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A migration failed; the database keeps the migrations before it.
    #[error("database migration failed: {0}")]
    Migration(String),
}

/// Which backend a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// A pool of connections to the configured database. Cheap to clone.
#[derive(Clone)]
pub enum Db {
    /// PostgreSQL.
    Postgres(Pool<AsyncPgConnection>),
    /// SQLite.
    Sqlite(Pool<SqliteConn>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({:?})", self.backend())
    }
}

/// One pooled connection. Use it through [`db_run!`](crate::db_run).
#[allow(missing_debug_implementations)] // the pooled connections have no Debug
#[allow(clippy::large_enum_variant)] // checked out briefly, one at a time; not worth a box
pub enum DbConn {
    /// PostgreSQL.
    Postgres(Object<AsyncPgConnection>),
    /// SQLite.
    Sqlite(Object<SqliteConn>),
}

/// Runs `$body` with `$conn` bound to the concrete connection of whichever
/// backend `$conn` (a [`DbConn`]) holds. The body is compiled once per backend,
/// so each query is written once and type-checked for both.
#[macro_export]
macro_rules! db_run {
    ($conn:ident: $body:block) => {
        match $conn.dispatch() {
            $crate::db::DbConn::Postgres($conn) => {
                let $conn: &mut ::diesel_async::AsyncPgConnection = &mut **$conn;
                $body
            }
            $crate::db::DbConn::Sqlite($conn) => {
                let $conn: &mut $crate::db::SqliteConn = &mut **$conn;
                $body
            }
        }
    };
}

impl DbConn {
    /// The connection itself; lets [`db_run!`](crate::db_run) take either an
    /// owned `DbConn` or a `&mut DbConn`.
    #[doc(hidden)]
    pub fn dispatch(&mut self) -> &mut Self {
        self
    }
}

impl Db {
    /// Opens a pool and checks that the database answers. For SQLite, the
    /// file's directory is created when missing.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, DbError> {
        let timeout = Duration::from_secs(settings.connect_timeout_secs.max(1));
        let db = match &settings.url {
            DatabaseUrl::Postgres(url) => {
                let connector =
                    PgConnector::new(url).map_err(|e| connect_error(&settings.url, e))?;
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                config.custom_setup = Box::new(move |_url| {
                    let connector = connector.clone();
                    async move { connector.connect().await }.boxed()
                });
                let manager =
                    AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
                Self::Postgres(pool(manager, settings, timeout)?)
            }
            DatabaseUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| connect_error(&settings.url, e))?;
                }
                let busy_ms = settings.sqlite_busy_timeout_ms;
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.custom_setup = Box::new(move |url| {
                    let url = url.to_owned();
                    async move { open_sqlite(&url, busy_ms).await }.boxed()
                });
                let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(
                    path.to_string_lossy(),
                    config,
                );
                Self::Sqlite(pool(manager, settings, timeout)?)
            }
        };
        db.ping().await.map_err(|e| match e {
            // The pool's wording adds nothing to why the connection failed.
            DbError::Pool(reason) => connect_error(&settings.url, reason),
            e => connect_error(&settings.url, e),
        })?;
        Ok(db)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// A pooled connection.
    pub async fn get(&self) -> Result<DbConn, DbError> {
        match self {
            Self::Postgres(pool) => pool.get().await.map(DbConn::Postgres).map_err(pool_error),
            Self::Sqlite(pool) => pool.get().await.map(DbConn::Sqlite).map_err(pool_error),
        }
    }

    /// Runs `SELECT 1`: the readiness check.
    pub async fn ping(&self) -> Result<(), DbError> {
        use diesel::IntoSql;
        use diesel_async::RunQueryDsl;
        let mut conn = self.get().await?;
        db_run!(conn: {
            diesel::select(1_i32.into_sql::<diesel::sql_types::Integer>())
                .get_result::<i32>(conn)
                .await?;
        });
        Ok(())
    }

    /// Whether this process's connections to PostgreSQL are encrypted (as
    /// the server sees one of them, in `pg_stat_ssl`); `None` on SQLite.
    pub async fn encrypted(&self) -> Result<Option<bool>, DbError> {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Ssl {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            ssl: bool,
        }
        match self.get().await? {
            DbConn::Postgres(mut conn) => {
                let row: Ssl =
                    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                        .get_result(&mut *conn)
                        .await?;
                Ok(Some(row.ssl))
            }
            DbConn::Sqlite(_) => Ok(None),
        }
    }

    /// Applies pending migrations; returns the versions applied now (empty
    /// when the database was up to date). Runs on its own connection on the
    /// blocking pool, so it works on any runtime flavour.
    pub async fn migrate(&self, settings: &DatabaseSettings) -> Result<Vec<String>, DbError> {
        let url = settings.url.clone();
        let busy_ms = settings.sqlite_busy_timeout_ms;
        // PostgreSQL: connected here, as the pool connects (TLS included),
        // then driven synchronously by the migration harness.
        let pg = match &url {
            DatabaseUrl::Postgres(raw) => {
                let connector = PgConnector::new(raw).map_err(|e| connect_error(&url, e))?;
                let timeout = Duration::from_secs(settings.connect_timeout_secs.max(1));
                let conn = tokio::time::timeout(timeout, connector.connect())
                    .await
                    .map_err(|_| connect_error(&url, "no connection within the connect timeout"))?
                    .map_err(|e| connect_error(&url, e))?;
                Some(conn)
            }
            DatabaseUrl::Sqlite(_) => None,
        };
        tokio::task::spawn_blocking(move || match (&url, pg) {
            (DatabaseUrl::Postgres(_), Some(conn)) => {
                use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
                let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
                // Nodes starting together take turns; the lock is released
                // below or when the session ends.
                conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                    .map_err(|e| DbError::Migration(e.to_string()))?;
                let applied = conn
                    .run_pending_migrations(PG_MIGRATIONS)
                    .map(|v| v.into_iter().map(|v| v.to_string()).collect())
                    .map_err(|e| DbError::Migration(e.to_string()));
                let _ = conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
                applied
            }
            (DatabaseUrl::Postgres(_), None) => Err(connect_error(&url, "no connection")),
            (DatabaseUrl::Sqlite(path), _) => {
                let mut conn =
                    establish_sqlite(path, busy_ms).map_err(|e| connect_error(&url, e))?;
                // Two processes migrating one file at once: the loser fails
                // on the winner's tables; its retry finds them recorded. One
                // migration at a time, so what this node applied is known
                // exactly across retries.
                let mut applied = Vec::new();
                let mut failures = 0;
                loop {
                    let next = conn
                        .pending_migrations(SQLITE_MIGRATIONS)
                        .map_err(|e| DbError::Migration(e.to_string()))
                        .map(|pending| pending.into_iter().next());
                    let next = match next {
                        Ok(Some(next)) => next,
                        Ok(None) => break Ok(applied),
                        Err(_) if failures < 5 => {
                            failures += 1;
                            std::thread::sleep(Duration::from_millis(200 * failures));
                            continue;
                        }
                        Err(e) => break Err(e),
                    };
                    match conn.run_migration(&*next) {
                        Ok(version) => applied.push(version.to_string()),
                        Err(_) if failures < 5 => {
                            failures += 1;
                            std::thread::sleep(Duration::from_millis(200 * failures));
                        }
                        Err(e) => break Err(DbError::Migration(e.to_string())),
                    }
                }
            }
        })
        .await
        .map_err(|e| DbError::Migration(e.to_string()))?
    }
}

fn pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    settings: &DatabaseSettings,
    timeout: Duration,
) -> Result<Pool<C>, DbError>
where
    C: diesel_async::pooled_connection::PoolableConnection + Send + 'static,
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager,
{
    Pool::builder(manager)
        .max_size(settings.pool_size.max(1))
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| connect_error(&settings.url, e))
}

/// A pool error; a failed connection reads as its own reason, without
/// deadpool's "Error occurred while creating a new object".
fn pool_error<E: std::fmt::Display>(error: deadpool::managed::PoolError<E>) -> DbError {
    match error {
        deadpool::managed::PoolError::Backend(e) => DbError::Pool(e.to_string()),
        e => DbError::Pool(e.to_string()),
    }
}

fn connect_error(url: &DatabaseUrl, reason: impl std::fmt::Display) -> DbError {
    DbError::Connect {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

async fn open_sqlite(path: &str, busy_ms: u32) -> diesel::ConnectionResult<SqliteConn> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || establish_sqlite(Path::new(&path), busy_ms))
        .await
        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?
        .map(SyncConnectionWrapper::new)
}

/// Opens SQLite with the pragmas every connection needs: WAL so readers never
/// block the writer, a busy timeout so writers queue instead of failing,
/// foreign keys (off by default in SQLite), and `synchronous = FULL`: in WAL
/// mode that syncs the log at every commit, so a message acknowledged with
/// 200 survives a power loss (`NORMAL` may lose the last commits). Webhooks
/// share commits ([group commit](crate::models::inbound)), so the fsync is
/// paid once per batch, not per message.
fn establish_sqlite(path: &Path, busy_ms: u32) -> diesel::ConnectionResult<SqliteConnection> {
    use diesel::Connection;
    let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
    let pragmas = format!(
        "PRAGMA busy_timeout = {busy_ms}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -{SQLITE_CACHE_KIB}; PRAGMA mmap_size = {SQLITE_MMAP_BYTES}; PRAGMA wal_autocheckpoint = 16384;"
    );
    // Switching a fresh file to WAL needs a moment alone with it: processes
    // opening one database together retry instead of failing.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match conn.batch_execute(&pragmas) {
            Ok(()) => break,
            Err(e) if attempt < 20 && e.to_string().contains("locked") => {
                std::thread::sleep(std::time::Duration::from_millis(25 * attempt));
            }
            Err(e) => return Err(diesel::ConnectionError::BadConnection(e.to_string())),
        }
    }
    Ok(conn)
}

/// Page cache per connection, KiB (SQLite's default is 2 MiB).
const SQLITE_CACHE_KIB: u32 = 16 * 1024;

/// Reads through a memory map of the file, up to this many bytes, instead
/// of a copy per page read.
const SQLITE_MMAP_BYTES: u64 = 256 * 1024 * 1024;

/// A new random id: UUID v7, so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The current time, UTC, as stored.
pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}
