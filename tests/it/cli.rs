//! The `frontdesk` binary as a new user runs it: a fresh directory holding
//! only the shipped `config/`, no environment beyond PATH and HOME.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::fakes::{FakeLlm, LlmBehaviour};
use crate::common::{Backend, TestDb, repo_path};

/// A scratch working directory with a copy of the shipped `config/`.
pub(crate) fn fresh_install() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&repo_path("config"), &dir.path().join("config"));
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

pub(crate) fn frontdesk(cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontdesk"));
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cwd)
        // A fresh HOME has no embedding model; fetching 130 MB per test is
        // not what these tests are about (tests/it/knowledge.rs uses the
        // installed model).
        .env("FRONTDESK__EMBEDDING__AUTO_INSTALL", "false")
        .envs(env.iter().copied());
    cmd
}

pub(crate) fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    frontdesk(cwd, env)
        .args(args)
        .output()
        .expect("run frontdesk")
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The single `error:` line of a failed command; no panic, no backtrace.
fn one_error_line(output: &Output) -> String {
    let text = stderr(output);
    assert!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{text}"
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line in:\n{text}");
    errors[0].to_owned()
}

/// A `frontdesk serve` child and the address it listens on.
pub(crate) struct Served {
    child: Child,
    pub(crate) addr: String,
    log: mpsc::Receiver<String>,
}

fn serve(cwd: &Path, env: &[(&str, &str)]) -> Served {
    serve_with(cwd, env, &["serve"])
}

pub(crate) fn serve_with(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Served {
    let mut env = env.to_vec();
    env.push(("FRONTDESK__SERVER__BIND", "127.0.0.1:0"));
    env.push(("FRONTDESK__SERVER__WORKERS", "1"));
    let mut child = frontdesk(cwd, &env)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if let Some(rest) = line.split("listening addr=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or(rest).to_owned();
                    return Served {
                        child,
                        addr,
                        log: rx,
                    };
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not start:\n{}", seen.join("\n"));
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Served {
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("http://{}{}", self.addr, path))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("request")
    }

    /// SIGTERM, then the exit status and the rest of the log.
    pub(crate) fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let rest: Vec<String> = self.log.try_iter().collect();
        (status, rest.join("\n"))
    }
}

async fn ready_then_graceful_stop(cwd: &Path, env: &[(&str, &str)]) {
    let served = serve(cwd, env);
    // Ready once the demo bot's knowledge is ingested (503 until then).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let body: serde_json::Value = loop {
        let res = served.get("/readyz").await;
        let status = res.status();
        let body: serde_json::Value = res.json().await.expect("json");
        if status == 200 {
            break body;
        }
        assert_eq!(
            body["checks"]["knowledge"]["startup_sync"], "running",
            "{body}"
        );
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "ready");
    // A fresh HOME has no embedding model: search says it runs on BM25 alone.
    assert_eq!(body["checks"]["knowledge"]["search"], "bm25_only", "{body}");
    assert!(
        body["checks"]["knowledge"]["degraded"]
            .as_str()
            .is_some_and(|d| d.contains("frontdesk models install")),
        "{body}"
    );
    assert_eq!(
        body["checks"]["bot_files"]["files"], 1,
        "the demo bot is applied"
    );
    let (status, log) = served.terminate();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("shutting down"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_install_serves_ready_on_embedded_defaults() {
    let dir = fresh_install();
    ready_then_graceful_stop(dir.path(), &[]).await;
    assert!(dir.path().join("data/frontdesk.db").is_file());
    let key = dir.path().join("data/master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "generated key is private");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_install_serves_ready_on_postgres() {
    let Some(test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let url = test_db.url.to_string();
    let dir = fresh_install();
    ready_then_graceful_stop(dir.path(), &[("FRONTDESK__DATABASE__URL", &url)]).await;
}

#[test]
fn migrate_twice_is_a_no_op_the_second_time() {
    let dir = fresh_install();
    let first = run(dir.path(), &["migrate"], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = String::from_utf8_lossy(&first.stdout);
    let expected = format!(
        "applied {} migration(s) to sqlite://data/frontdesk.db",
        crate::common::migration_count()
    );
    assert!(out.starts_with(&expected), "{out}");
    let second = run(dir.path(), &["migrate"], &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    let out = String::from_utf8_lossy(&second.stdout);
    assert_eq!(
        out.trim(),
        "database sqlite://data/frontdesk.db is up to date"
    );
}

#[test]
fn unknown_config_key_names_key_and_source() {
    let dir = fresh_install();
    let out = run(
        dir.path(),
        &["migrate"],
        &[("FRONTDESK__SERVER__BNDD", "x")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        one_error_line(&out),
        "error: unknown config key `server.bndd` in environment variable FRONTDESK__SERVER__BNDD"
    );

    let shipped = std::fs::read_to_string(dir.path().join("config/frontdesk.toml")).expect("read");
    std::fs::write(
        dir.path().join("config/frontdesk.toml"),
        shipped.replace("pool_size = 8", "pool_sise = 8"),
    )
    .expect("write");
    let out = run(dir.path(), &["serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        one_error_line(&out),
        "error: unknown config key `database.pool_sise` in config/frontdesk.toml"
    );

    std::fs::write(dir.path().join("config/frontdesk.toml"), shipped).expect("restore");
    let extra = dir.path().join("extra.toml");
    std::fs::write(&extra, "[server]\nworkers = \"two\"\n").expect("write");
    let out = run(dir.path(), &["--config", "extra.toml", "migrate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        one_error_line(&out)
            .starts_with("error: invalid value for config key `server.workers` in extra.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_secret_variable_stops_start_up() {
    let dir = fresh_install();
    std::fs::write(
        dir.path().join("config/bots/shop.toml"),
        "workspace = \"shop\"\nname = \"help\"\nsystem_prompt = \"x\"\n\
         [[channels]]\nkind = \"telegram\"\nid = \"shop-tg\"\n\
         bot_token = \"env:SHOP_TG_TOKEN\"\nsecret_token = \"abc\"\n",
    )
    .expect("write");
    let out = run(dir.path(), &["serve"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_error_line(&out),
        "error: config/bots/shop.toml: `channels[0].bot_token`: environment variable SHOP_TG_TOKEN is not set"
    );
}

#[test]
fn unreachable_database_is_one_clear_line() {
    let dir = fresh_install();
    let out = run(
        dir.path(),
        &["migrate"],
        &[
            (
                "FRONTDESK__DATABASE__URL",
                "postgres://app:hunter2@127.0.0.1:1/frontdesk",
            ),
            ("FRONTDESK__DATABASE__CONNECT_TIMEOUT_SECS", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let line = one_error_line(&out);
    assert!(
        line.starts_with(
            "error: cannot connect to the database at postgres://app:***@127.0.0.1:1/frontdesk"
        ),
        "{line}"
    );
    assert!(!stderr(&out).contains("hunter2"), "password leaked");
}

#[test]
fn malformed_master_key_is_refused() {
    let dir = fresh_install();
    let out = run(
        dir.path(),
        &["serve"],
        &[("FRONTDESK__SECURITY__MASTER_KEY", "too-short")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_error_line(&out),
        "error: security.master_key: a master key must be 32 bytes written as 64 hex characters or base64"
    );
    assert!(!stderr(&out).contains("too-short"));
}

/// A child process killed when dropped, so a failing test leaves none behind.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A `frontdesk worker` child, started and ready.
fn spawn_worker(cwd: &Path, env: &[(&str, &str)]) -> Guarded {
    let mut child = frontdesk(cwd, env)
        .arg("worker")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("workers started") {
                let _ = tx.send(());
            }
        }
    });
    let child = Guarded(child);
    rx.recv_timeout(Duration::from_secs(60))
        .expect("worker did not start");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_process_bursts_survive_a_killed_worker() {
    let Some(test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let redis = crate::common::redis_url();
    if deadpool_redis::redis::Client::open(redis.as_str())
        .and_then(|c| c.get_connection())
        .is_err()
    {
        crate::common::missing_service("Redis", &redis);
        return;
    }
    let telegram = crate::common::fakes::FakePlatform::start().await;
    // The model quotes the customer's messages back: each reply says which
    // messages its turn answered. No knowledge, so `ai_generate` answers.
    let llm = FakeLlm::start(LlmBehaviour::QuoteQuestion).await;
    let dir = fresh_install();
    std::fs::write(
        dir.path().join("config/bots/shop.toml"),
        "workspace = \"shop\"\nname = \"help\"\nsystem_prompt = \"x\"\n\
         [handoff]\non_unknown = \"ai_generate\"\n\
         [llm]\nprovider = \"openai\"\nmodel = \"fake\"\n\
         [[channels]]\nkind = \"telegram\"\nid = \"shop-tg\"\n\
         bot_token = \"4242:tg-token\"\nsecret_token = \"tg-secret\"\n",
    )
    .expect("bot file");
    let db_url = test_db.url.to_string();
    let prefix = format!("fdtest:{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("FRONTDESK__DATABASE__URL", db_url.as_str()),
        ("FRONTDESK__REDIS__URL", redis.as_str()),
        ("FRONTDESK__REDIS__KEY_PREFIX", prefix.as_str()),
        (
            "FRONTDESK__CHANNELS__TELEGRAM__API_BASE",
            telegram.url.as_str(),
        ),
        ("FRONTDESK__WORKER__CONCURRENCY", "2"),
        ("FRONTDESK__WORKER__DEBOUNCE_MS", "100"),
        ("FRONTDESK__WORKER__LOCK_TTL_MS", "1500"),
        ("FRONTDESK__WORKER__RECLAIM_IDLE_MS", "3000"),
        ("FRONTDESK__WORKER__SWEEP_INTERVAL_SECS", "2"),
        ("FRONTDESK__LLM__BASE_URL", llm.url.as_str()),
    ];
    let served = serve_with(dir.path(), &env, &["serve", "--no-worker"]);
    let mut doomed = spawn_worker(dir.path(), &env);
    let mut survivor = spawn_worker(dir.path(), &env);

    // Bursts across 30 conversations, 4 messages each, sent in parallel.
    let http = reqwest::Client::new();
    let url = format!("http://{}/webhooks/telegram/shop-tg", served.addr);
    let mut posts = Vec::new();
    for round in 1..=4 {
        for chat in 1..=30 {
            let body = serde_json::json!({
                "update_id": round * 1000 + chat,
                "message": {
                    "message_id": round, "date": 1, "text": format!("c{chat} r{round}"),
                    "chat": { "id": chat, "type": "private" }, "from": { "id": chat, "first_name": "C" }
                }
            });
            let req = http
                .post(&url)
                .header("x-telegram-bot-api-secret-token", "tg-secret")
                .json(&body);
            posts.push(tokio::spawn(async move {
                req.send().await.map(|r| r.status().as_u16())
            }));
        }
        if round == 2 {
            // Mid-run: one worker dies without a chance to clean up.
            tokio::time::sleep(Duration::from_millis(150)).await;
            doomed.0.kill().expect("SIGKILL");
            let _ = doomed.0.wait();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for post in posts {
        assert_eq!(post.await.expect("task").expect("post"), 200);
    }

    // Every conversation answered: each message quoted once, in order.
    let quoted = |text: &str| -> Vec<String> {
        text.split('“')
            .skip(1)
            .filter_map(|q| q.split('”').next().map(str::to_owned))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut per_chat: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
        for call in telegram.calls("/sendMessage") {
            let chat = call.body["chat_id"].as_i64().expect("chat");
            per_chat
                .entry(chat)
                .or_default()
                .extend(quoted(call.body["text"].as_str().expect("text")));
        }
        let complete = (1..=30).all(|c| per_chat.get(&c).map(Vec::len) >= Some(4));
        if complete {
            // Parallel posts may arrive in any order; the order to keep is
            // the order in which they were stored.
            let stored = stored_order(&test_db.url.to_string()).await;
            for chat in 1..=30 {
                let expected = &stored[&format!("{chat}")];
                assert_eq!(expected.len(), 4, "chat {chat}: all four stored");
                assert_eq!(
                    &per_chat[&chat], expected,
                    "chat {chat}: in stored order, once"
                );
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unanswered after 90 s: {per_chat:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing more arrives afterwards (no duplicate turns).
    let settled = telegram.calls("/sendMessage").len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(telegram.calls("/sendMessage").len(), settled);

    let pid = survivor.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = survivor.0.wait().expect("wait");
    assert!(
        status.success(),
        "worker exits cleanly on SIGTERM: {status:?}"
    );
    let (status, _) = served.terminate();
    assert!(status.success());
    telegram.stop().await;
    llm.stop().await;
}

/// Customer messages per chat (Telegram user id), in stored order.
async fn stored_order(url: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT c.external_user_id, m.body FROM messages m \
             JOIN conversations v ON v.id = m.conversation_id \
             JOIN customers c ON c.id = v.customer_id \
             WHERE m.direction = 'inbound' ORDER BY v.id, m.seq",
            &[],
        )
        .await
        .expect("query");
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in rows {
        out.entry(row.get(0)).or_default().push(row.get(1));
    }
    out
}

// `frontdesk keys rotate` (docs/keys.md).

/// A bot file with one Telegram account: credentials to seal.
const KEYS_BOT: &str = "workspace = \"shop\"\nname = \"help\"\nsystem_prompt = \"x\"\n\
    [[channels]]\nkind = \"telegram\"\nid = \"shop-tg\"\n\
    bot_token = \"4242:tg-token\"\nsecret_token = \"tg-secret\"\n";

/// A fresh install with the Telegram bot file, on `test_db`'s backend
/// (SQLite in the install's own `data/`), and its environment.
fn keys_install(test_db: &TestDb) -> (tempfile::TempDir, Vec<(String, String)>) {
    let dir = fresh_install();
    std::fs::write(dir.path().join("config/bots/shop.toml"), KEYS_BOT).expect("bot file");
    let mut env = Vec::new();
    if matches!(test_db.url, frontdesk::config::DatabaseUrl::Postgres(_)) {
        env.push((
            "FRONTDESK__DATABASE__URL".to_owned(),
            test_db.url.to_string(),
        ));
    }
    (dir, env)
}

/// Runs `args` with `base` plus `extra` in the environment.
fn run_keys(
    cwd: &Path,
    args: &[&str],
    base: &[(String, String)],
    extra: &[(&str, &str)],
) -> Output {
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    run(cwd, args, &env)
}

/// A command that opens the database, the master key and the bot files
/// (whose credentials are compared decrypted).
const OPEN: &[&str] = &[
    "token",
    "create",
    "--workspace",
    "shop",
    "--name",
    "ops",
    "--role",
    "admin",
];

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn key_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("data").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_owned()
}

async fn telegram_webhook(served: &Served, secret: &str) -> u16 {
    let body = serde_json::json!({
        "update_id": 1,
        "message": {
            "message_id": 1, "date": 1, "text": "hello",
            "chat": { "id": 7, "type": "private" }, "from": { "id": 7, "first_name": "C" }
        }
    });
    reqwest::Client::new()
        .post(format!("http://{}/webhooks/telegram/shop-tg", served.addr))
        .header("x-telegram-bot-api-secret-token", secret)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

/// A key kept in `data/master.key`: rotated through the files, the server
/// opens the credentials with the new key, the old key alone is refused, and
/// kept as a previous key it still opens.
async fn keys_rotate_key_file(test_db: TestDb) {
    let (dir, env) = keys_install(&test_db);
    let cwd = dir.path();
    let out = run_keys(cwd, OPEN, &env, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let old = key_file(cwd, "master.key");

    let out = run_keys(cwd, &["keys", "rotate"], &env, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.starts_with(
            "rotated 2 sealed values to a new master key (key file data/master.key; \
             previous key kept at data/master.key.previous)"
        ),
        "{printed}"
    );
    let new = key_file(cwd, "master.key");
    assert_ne!(new, old);
    assert_eq!(key_file(cwd, "master.key.previous"), old);
    assert!(!cwd.join("data/master.key.new").exists());
    assert!(
        !printed.contains(&new) && !stderr(&out).contains(&new),
        "key shown"
    );
    #[cfg(unix)]
    for name in ["master.key", "master.key.previous"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cwd.join("data").join(name))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }

    // The server opens the credentials: the webhook secret verifies.
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let served = serve_with(cwd, &env_refs, &["serve", "--no-worker"]);
    assert_eq!(telegram_webhook(&served, "tg-secret").await, 200);
    assert_ne!(telegram_webhook(&served, "wrong").await, 200);
    let (status, log) = served.terminate();
    assert!(status.success(), "{log}");

    // The old key alone is refused; as a previous key beside the new one,
    // it is accepted.
    std::fs::rename(cwd.join("data/master.key.previous"), cwd.join("old.key")).expect("mv");
    let out = run_keys(
        cwd,
        OPEN,
        &env,
        &[("FRONTDESK__SECURITY__MASTER_KEY", &old)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        one_error_line(&out)
            .contains("is not the one that encrypted this database's channel credentials"),
        "{}",
        stderr(&out)
    );
    let out = run_keys(
        cwd,
        OPEN,
        &env,
        &[
            ("FRONTDESK__SECURITY__MASTER_KEY", &old),
            ("FRONTDESK__SECURITY__PREVIOUS_MASTER_KEYS", &new),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the database is sealed with a key that only opens here"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&new) && !stderr(&out).contains(&old));
}

/// A key from `security.master_key`: the new key comes from a variable
/// (never printed) or is generated and printed once; nodes move over with
/// the old key as a previous key.
async fn keys_rotate_configured_key(test_db: TestDb) {
    let (dir, env) = keys_install(&test_db);
    let cwd = dir.path();
    let k1 = "11".repeat(32);
    let k2 = "22".repeat(32);
    let out = run_keys(cwd, OPEN, &env, &[("FRONTDESK__SECURITY__MASTER_KEY", &k1)]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run_keys(
        cwd,
        &["keys", "rotate", "--new-key-env", "NEW_KEY"],
        &env,
        &[("FRONTDESK__SECURITY__MASTER_KEY", &k1), ("NEW_KEY", &k2)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.starts_with("rotated 2 sealed values to a new master key\n"),
        "{printed}"
    );
    assert!(
        printed.contains("the new master key is the one in NEW_KEY"),
        "{printed}"
    );
    assert!(
        printed.contains("security.previous_master_keys"),
        "{printed}"
    );
    assert!(!printed.contains(&k2) && !stderr(&out).contains(&k2));
    assert!(
        !cwd.join("data/master.key").exists(),
        "no key file for a configured key"
    );

    // The old key alone: refused. The old key with the new one as a
    // previous key (a node not moved yet): works, and says so.
    let out = run_keys(cwd, OPEN, &env, &[("FRONTDESK__SECURITY__MASTER_KEY", &k1)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run_keys(
        cwd,
        OPEN,
        &env,
        &[
            ("FRONTDESK__SECURITY__MASTER_KEY", &k1),
            ("FRONTDESK__SECURITY__PREVIOUS_MASTER_KEYS", &k2),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a key rotation is not finished on this node"),
        "{}",
        stderr(&out)
    );
    // Moved: the new key, the old one as a previous key, no longer needed.
    let out = run_keys(
        cwd,
        OPEN,
        &env,
        &[
            ("FRONTDESK__SECURITY__MASTER_KEY", &k2),
            ("FRONTDESK__SECURITY__PREVIOUS_MASTER_KEYS", &k1),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("every channel credential is sealed with the primary master key"),
        "{}",
        stderr(&out)
    );

    // Generated: printed once on stdout, never in the log.
    let out = run_keys(
        cwd,
        &["keys", "rotate"],
        &env,
        &[("FRONTDESK__SECURITY__MASTER_KEY", &k2)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let k3 = printed
        .lines()
        .skip_while(|l| !l.starts_with("new master key (shown once"))
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("new master key"))
        .unwrap_or_else(|| panic!("no key in:\n{printed}"))
        .to_owned();
    assert!(!stderr(&out).contains(&k3), "the new key was logged");
    let out = run_keys(cwd, OPEN, &env, &[("FRONTDESK__SECURITY__MASTER_KEY", &k3)]);
    assert!(out.status.success(), "{}", stderr(&out));
}

crate::both_backends! {
    keys_rotate_file => keys_rotate_key_file;
    keys_rotate_config => keys_rotate_configured_key;
}

#[test]
fn keys_rotate_refuses_bad_input_and_changes_nothing() {
    let dir = fresh_install();
    std::fs::write(dir.path().join("config/bots/shop.toml"), KEYS_BOT).expect("bot file");
    let out = run(dir.path(), OPEN, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = key_file(dir.path(), "master.key");

    let out = run(
        dir.path(),
        &["keys", "rotate", "--new-key-env", "NEW_KEY"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_error_line(&out),
        "error: --new-key-env NEW_KEY: the variable is not set; nothing was changed"
    );
    let out = run(
        dir.path(),
        &["keys", "rotate", "--new-key-env", "NEW_KEY"],
        &[("NEW_KEY", "too-short")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_error_line(&out),
        "error: --new-key-env: nothing was changed: environment variable NEW_KEY: a master key \
         must be 32 bytes written as 64 hex characters or base64"
    );
    assert!(!stderr(&out).contains("too-short"));
    assert_eq!(key_file(dir.path(), "master.key"), before);
    assert!(!dir.path().join("data/master.key.new").exists());
    assert!(!dir.path().join("data/master.key.previous").exists());
}

/// The states a crash leaves: a new key file written but never committed
/// (ignored, then replaced), and a commit whose key file was not promoted
/// (finished by the next start-up).
#[test]
fn keys_rotate_recovers_from_a_crash_at_each_step() {
    let dir = fresh_install();
    let cwd = dir.path();
    std::fs::write(cwd.join("config/bots/shop.toml"), KEYS_BOT).expect("bot file");
    let out = run(cwd, OPEN, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let old = key_file(cwd, "master.key");

    // Before the commit: master.key.new exists, the database does not use it.
    std::fs::write(
        cwd.join("data/master.key.new"),
        format!("{}\n", "33".repeat(32)),
    )
    .expect("new");
    let out = run(cwd, OPEN, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("master.key.new exists but the database does not use it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(key_file(cwd, "master.key"), old);
    let out = run(cwd, &["keys", "rotate"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let new = key_file(cwd, "master.key");
    assert!(new != old && new != "33".repeat(32));
    assert!(!cwd.join("data/master.key.new").exists());

    // After the commit, before the promotion: as the files were then.
    std::fs::rename(cwd.join("data/master.key"), cwd.join("data/master.key.new")).expect("mv");
    std::fs::rename(
        cwd.join("data/master.key.previous"),
        cwd.join("data/master.key"),
    )
    .expect("mv");
    let out = run(cwd, OPEN, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("finished an interrupted master key rotation"),
        "{}",
        stderr(&out)
    );
    assert_eq!(key_file(cwd, "master.key"), new);
    assert_eq!(key_file(cwd, "master.key.previous"), old);
    assert!(!cwd.join("data/master.key.new").exists());
    let out = run(cwd, OPEN, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("interrupted"), "{}", stderr(&out));
}
