//! Queue benchmark: `cargo bench --bench queue` (PostgreSQL and Redis from
//! `TEST_DATABASE_URL` / `TEST_REDIS_URL`, default the local services).
//!
//! Prints, for the in-process and the Redis broker:
//! 1. broker only — turns/s through enqueue → claim → lock → unlock → ack,
//!    and lock+unlock latency p50/p99, with 1, 2 and 4 workers;
//! 2. whole turns — turns/s through the real worker (fence, read unanswered,
//!    store, finish) on SQLite, with an empty responder, 1, 2 and 4 workers;
//! 3. multi-process — `serve --no-worker` + 2 × `worker` on PostgreSQL +
//!    Redis: Telegram webhooks in, acknowledgements out to a local fake Bot
//!    API; messages/s end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use broker::memory::MemoryBroker;
use broker::redis::RedisBroker;
use broker::{AnyBroker, Broker};
use frontdesk::turn::{BoxFuture, Replies, Responder, TurnInput, Verdict};
use frontdesk::worker::Worker;

#[allow(dead_code)]
#[path = "../tests/it/common/mod.rs"]
mod common;

use common::fakes::FakePlatform;

use common::{pg_admin_url as pg_url, redis_url};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn broker_only(broker: AnyBroker, workers: usize, turns: usize) -> (f64, Duration, Duration) {
    for i in 0..turns {
        broker.enqueue(&format!("c{i}")).await.unwrap();
    }
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let broker = broker.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while done.load(Ordering::SeqCst) < turns {
                let Some(job) = broker
                    .claim(
                        &format!("w{w}"),
                        Duration::from_millis(20),
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap()
                else {
                    continue;
                };
                let conversation = job.job().unwrap().conversation_id;
                let t = Instant::now();
                let lock = broker
                    .lock(&conversation, Duration::from_secs(30))
                    .await
                    .unwrap()
                    .unwrap();
                broker.unlock(&lock).await.unwrap();
                latencies.push(t.elapsed());
                broker.ack(&job).await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let rate = turns as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (
        rate,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    )
}

struct Silent;
impl Responder for Silent {
    fn respond<'a>(
        &'a self,
        _turn: &'a TurnInput,
        _out: Replies,
    ) -> BoxFuture<'a, Result<Verdict, String>> {
        Box::pin(async { Ok(Verdict::default()) })
    }
}

const BOT: &str = "workspace = \"bench\"\nname = \"b\"\nsystem_prompt = \"x\"\n\
[[channels]]\nkind = \"telegram\"\nid = \"bench-tg\"\nbot_token = \"1:t\"\nsecret_token = \"s\"\n";

async fn whole_turns(redis: bool, workers: usize, conversations: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bots")).unwrap();
    std::fs::write(dir.path().join("bots/b.toml"), BOT).unwrap();
    let mut settings = frontdesk::config::Settings::defaults(&[]);
    settings.data_dir = dir.path().join("data");
    settings.bots.dir = dir.path().join("bots");
    settings.database.url = frontdesk::config::DatabaseUrl::Sqlite(dir.path().join("db.sqlite"));
    settings.worker.debounce_ms = 0;
    // Nothing listens here: typing indicators fail at once.
    settings.channels.telegram.api_base = "http://127.0.0.1:9".into();
    if redis {
        settings.redis.url = Some(redis_url().try_into().unwrap());
        settings.redis.key_prefix = format!("fdbench:{}", uuid::Uuid::new_v4().simple());
    }
    let app = frontdesk::app::open(settings, &[]).await.unwrap();
    let mut conn = app.db.get().await.unwrap();
    let account =
        store::models::channel_account::ChannelAccount::find_by_public_id(&mut conn, "bench-tg")
            .await
            .unwrap()
            .unwrap();
    drop(conn);
    let route = app
        .accounts
        .by_public_id(&app.db, &app.master_key, &account.public_id)
        .await
        .unwrap()
        .unwrap();
    for c in 0..conversations {
        let event = channels::RoutedEvent {
            account: None,
            event: channels::InboundEvent::Message(channels::InboundMessage {
                external_id: format!("{c}:1"),
                sender: channels::Sender {
                    external_id: c.to_string(),
                    display_name: None,
                },
                text: "hello".into(),
                origin: channels::Origin::Text,
                attachments: Vec::new(),
                sent_at: None,
                reply_to: None,
                email: None,
            }),
        };
        frontdesk::ingest::ingest(&app, &route.account, &route.workspace_id, vec![event])
            .await
            .unwrap();
    }
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut worker = Worker::new(app.clone(), Arc::new(Silent), format!("w{w}"));
        worker.wait = Duration::from_millis(20);
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < conversations {
                if let frontdesk::worker::Outcome::Answered { .. } =
                    worker.process_next().await.unwrap()
                {
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    conversations as f64 / started.elapsed().as_secs_f64()
}

async fn multi_process(messages_per_conversation: usize, conversations: usize) -> Option<f64> {
    let admin = pg_url();
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    let name = format!("fd_bench_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .ok()?;
    let mut db_url = url::Url::parse(&admin).ok()?;
    db_url.set_path(&name);

    // The tests' fake Bot API: replies are its sendMessage calls.
    let telegram = FakePlatform::start().await;
    let fake = telegram.url.clone();
    let replies = || telegram.calls("/sendMessage").len();

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config/bots")).unwrap();
    std::fs::write(dir.path().join("config/bots/b.toml"), BOT).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prefix = format!("fdbench:{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("FRONTDESK__DATABASE__URL", db_url.to_string()),
        ("FRONTDESK__REDIS__URL", redis_url()),
        ("FRONTDESK__REDIS__KEY_PREFIX", prefix),
        ("FRONTDESK__CHANNELS__TELEGRAM__API_BASE", fake),
        ("FRONTDESK__SERVER__BIND", format!("127.0.0.1:{port}")),
        ("FRONTDESK__WORKER__DEBOUNCE_MS", "0".into()),
        ("FRONTDESK__LOG__FILTER", "warn".into()),
    ];
    let spawn = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_frontdesk"))
            .args(args)
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut children = vec![spawn(&["serve", "--no-worker"])];
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/webhooks/telegram/bench-tg");
    for _ in 0..200 {
        if http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    children.push(spawn(&["worker"]));
    children.push(spawn(&["worker"]));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let mut posts = Vec::new();
    for m in 1..=messages_per_conversation {
        for c in 1..=conversations {
            let body = serde_json::json!({
                "update_id": m * 100_000 + c,
                "message": { "message_id": m, "date": 1, "text": format!("m{m}"),
                  "chat": { "id": c, "type": "private" }, "from": { "id": c, "first_name": "B" } }
            });
            let req = http
                .post(&url)
                .header("x-telegram-bot-api-secret-token", "s")
                .json(&body);
            posts.push(tokio::spawn(async move {
                req.send().await.unwrap().status().as_u16()
            }));
        }
    }
    for post in posts {
        assert_eq!(post.await.unwrap(), 200);
    }
    let accepted = started.elapsed();
    // Every conversation answered at least once (bursts coalesce).
    let deadline = Instant::now() + Duration::from_secs(120);
    while replies() < conversations && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = started.elapsed();
    println!(
        "  {} webhooks accepted in {:.2} s ({:.0}/s); every conversation answered after {:.2} s; {} replies",
        messages_per_conversation * conversations,
        accepted.as_secs_f64(),
        (messages_per_conversation * conversations) as f64 / accepted.as_secs_f64(),
        all.as_secs_f64(),
        replies()
    );
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    telegram.stop().await;
    let _ = client
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await;
    Some(all.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        frontdesk::telemetry::init(frontdesk::config::LogFormat::Text, &filter, None);
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("queue benchmark on {cores} cores (debug builds are ~10x slower; use cargo bench)");
    let redis_ok = RedisBroker::connect(&redis_url(), "fdbench:probe", 2)
        .await
        .is_ok();

    println!("\n1. broker only: enqueue → claim → lock → unlock → ack (2,000 turns)");
    for workers in [1, 2, 4] {
        let memory = broker_only(AnyBroker::Memory(MemoryBroker::new()), workers, 2000).await;
        println!(
            "  in-process, {workers} worker(s): {:>8.0} turns/s, lock+unlock p50 {:>6.1} µs p99 {:>6.1} µs",
            memory.0,
            memory.1.as_secs_f64() * 1e6,
            memory.2.as_secs_f64() * 1e6
        );
        if redis_ok {
            let prefix = format!("fdbench:{}", uuid::Uuid::new_v4().simple());
            let broker = RedisBroker::connect(&redis_url(), &prefix, 16)
                .await
                .unwrap();
            let redis = broker_only(AnyBroker::Redis(broker), workers, 2000).await;
            println!(
                "  Redis,      {workers} worker(s): {:>8.0} turns/s, lock+unlock p50 {:>6.1} µs p99 {:>6.1} µs",
                redis.0,
                redis.1.as_secs_f64() * 1e6,
                redis.2.as_secs_f64() * 1e6
            );
        }
    }

    println!("\n2. whole turns through the worker on SQLite, empty responder (300 conversations)");
    for workers in [1, 2, 4] {
        let memory = whole_turns(false, workers, 300).await;
        print!("  {workers} worker(s): in-process {memory:>6.0} turns/s");
        if redis_ok {
            print!(
                ", Redis {:>6.0} turns/s",
                whole_turns(true, workers, 300).await
            );
        }
        println!();
    }

    println!(
        "\n3. multi-process: serve --no-worker + 2 x worker, PostgreSQL + Redis (100 conversations x 5 messages)"
    );
    if !redis_ok || multi_process(5, 100).await.is_none() {
        println!("  skipped: PostgreSQL or Redis not reachable");
    }
}
