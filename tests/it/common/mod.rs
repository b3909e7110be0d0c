//! Shared fixtures: per-test databases, settings, a running server, and
//! fake platforms (Telegram Bot API, Graph API, SMTP) as real local servers.

pub mod chrome;
pub mod fakes;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use frontdesk::config::{DatabaseUrl, Settings};

/// `true` under CI, where a missing service is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says loudly that a test skips because `what` is missing; in CI, fails.
pub fn missing_service(what: &str, why: &str) {
    assert!(!in_ci(), "{what} is required in CI: {why}");
    // Straight to the stderr handle: libtest captures eprintln! of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED: {what} is not reachable ({why}); start it or run .ci/run\n"
    );
}

/// The PostgreSQL server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis tests use, each under its own key prefix.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of the test's own, plus a scratch directory for data_dir and
/// bot files. PostgreSQL databases are dropped when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub url: DatabaseUrl,
    pg_name: Option<String>,
}

impl TestDb {
    /// A fresh database on `backend`, or `None` (skip) when PostgreSQL is
    /// unreachable outside CI.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => Some(TestDb {
                url: DatabaseUrl::Sqlite(dir.path().join("frontdesk.db")),
                dir,
                pg_name: None,
            }),
            Backend::Postgres => {
                let admin = pg_admin_url();
                let client = match pg_connect(&admin).await {
                    Ok(client) => client,
                    Err(e) => {
                        missing_service("PostgreSQL", &format!("{admin}: {e}"));
                        return None;
                    }
                };
                let name = format!("fd_test_{}", uuid::Uuid::new_v4().simple());
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&admin).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                Some(TestDb {
                    url: DatabaseUrl::Postgres(url.to_string()),
                    dir,
                    pg_name: Some(name),
                })
            }
        }
    }

    /// Settings for this database: data and bot files in the scratch
    /// directory, port 0, one HTTP worker.
    pub fn settings(&self) -> Settings {
        let mut s = Settings::defaults(&[]);
        s.data_dir = self.dir.path().join("data");
        s.bots.dir = self.bots_dir();
        s.database.url = self.url.clone();
        s.database.pool_size = 4;
        s.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        s.server.workers = 1;
        s.server.shutdown_timeout_secs = 5;
        s
    }

    /// Where this test's bot files go.
    pub fn bots_dir(&self) -> PathBuf {
        self.dir.path().join("bots")
    }

    /// Writes a bot file.
    pub fn write_bot(&self, file: &str, text: &str) {
        std::fs::create_dir_all(self.bots_dir()).expect("mkdir bots");
        std::fs::write(self.bots_dir().join(file), text).expect("write bot file");
    }
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .map_err(|_| "no answer within 3 s".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime; use a thread with its own.
        let admin = pg_admin_url();
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(client) = pg_connect(&admin).await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
        if joined.is_err() {
            eprintln!("could not drop a test database");
        }
    }
}

/// Runs the same async test body on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident => $body:ident;)+) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = $crate::common::TestDb::new($crate::common::Backend::Sqlite)
                        .await
                        .expect("sqlite is always available");
                    super::$body(db).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) =
                        $crate::common::TestDb::new($crate::common::Backend::Postgres).await
                    {
                        super::$body(db).await;
                    }
                }
            }
        )+
    };
}

/// A running gateway for tests: the real start-up ([`frontdesk::app::start`]),
/// HTTP on port 0, no worker loops (tests drain the queue themselves) unless
/// [`TestServer::with_worker`] starts them.
pub struct TestServer {
    pub addr: SocketAddr,
    pub app: frontdesk::context::App,
    running: frontdesk::app::Running,
}

impl TestServer {
    /// Opens the app on `settings` (migrations, bot files) and serves it.
    pub async fn start(settings: Settings, env: &[(String, String)]) -> TestServer {
        Self::launch(settings, env, None).await
    }

    /// Like [`TestServer::start`], with the worker loops and the answer
    /// pipeline, as `frontdesk serve` runs them.
    pub async fn with_worker(
        settings: Settings,
        env: &[(String, String)],
        consumer: &str,
    ) -> TestServer {
        Self::launch(settings, env, Some(consumer.to_owned())).await
    }

    async fn launch(
        settings: Settings,
        env: &[(String, String)],
        worker: Option<String>,
    ) -> TestServer {
        let startup = frontdesk::app::Startup {
            http: Some(TcpListener::bind("127.0.0.1:0").expect("bind port 0")),
            worker,
            knowledge: frontdesk::app::KnowledgeSync::Skip,
        };
        let running = Box::pin(frontdesk::app::start(settings, env, startup))
            .await
            .expect("start the gateway");
        TestServer {
            addr: running.addr.expect("serves HTTP"),
            app: running.app.clone(),
            running,
        }
    }

    /// `http://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful stop: requests and the workers' current turns finish.
    pub async fn stop(self) {
        Box::pin(self.running.stop()).await;
    }
}

/// Reads a file under the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// How many migrations the repository holds (the same for both backends).
pub fn migration_count() -> usize {
    std::fs::read_dir(repo_path("migrations/sqlite"))
        .expect("migrations/sqlite")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .count()
}

/// Env pairs from literals.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A Redis server of the test's own (for stopping and restarting it), or
/// `None` (skip) when `redis-server` is not installed outside CI.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub fn start() -> Option<PrivateRedis> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut redis = PrivateRedis {
            port,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        if let Err(e) = redis.spawn() {
            missing_service("redis-server", &e);
            return None;
        }
        Some(redis)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not start".into())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (its data is gone: it keeps nothing on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until every stored customer message was handled by a turn:
/// answered, or seen in silence while people have the conversation. What
/// a test asserts about a turn's effects holds from then on.
pub async fn until_turns_done(app: &frontdesk::context::App) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = app.db.get().await.expect("conn");
        let cutoff = chrono::Utc::now().naive_utc() + chrono::Duration::hours(1);
        let waiting = store::models::conversation::Conversation::with_unanswered(&mut conn, cutoff)
            .await
            .expect("conversations with unanswered messages");
        drop(conn);
        if waiting.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no turn handled the messages of {waiting:?} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to 30 s for `check` to hold, looking every 100 ms.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
