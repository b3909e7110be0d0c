//! Turns end to end, on both brokers: ingest → queue → worker → responder →
//! the real Telegram adapter → a fake Bot API. Order under bursts, one turn
//! per conversation at a time, parallelism across conversations, a worker
//! dying mid-turn, Redis restarting empty, corrupt jobs.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::Broker;
use channels::{InboundEvent, InboundMessage, Origin, RoutedEvent, Sender};
use frontdesk::context::App;
use frontdesk::turn::{Acknowledger, BoxFuture, Replies, Responder, TurnInput, Verdict};
use frontdesk::worker::{Outcome, Worker};
use store::models::channel_account::ChannelAccount;

use crate::common::fakes::FakePlatform;
use crate::common::{Backend, TestDb, env, missing_service, redis_url};

const BOT_FILE: &str = r#"
workspace = "shop"
name = "help"
system_prompt = "You help."

[[channels]]
kind = "telegram"
id = "shop-tg"
bot_token = "4242:tg-token"
secret_token = "tg-secret"
"#;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Redis,
}

struct Setup {
    app: App,
    telegram: FakePlatform,
    account: ChannelAccount,
    _db: TestDb,
}

async fn setup(kind: Kind, tweak: impl FnOnce(&mut frontdesk::config::Settings)) -> Option<Setup> {
    let db = TestDb::new(Backend::Sqlite).await?;
    db.write_bot("shop.toml", BOT_FILE);
    let telegram = FakePlatform::start().await;
    let mut settings = db.settings();
    settings.channels.telegram.api_base = telegram.url.clone();
    settings.worker.debounce_ms = 20;
    settings.worker.lock_ttl_ms = 400;
    settings.worker.reclaim_idle_ms = 800;
    settings.worker.retry_base_ms = 50;
    if let Kind::Redis = kind {
        let url = redis_url();
        if broker::redis::RedisBroker::connect(&url, "fdtest:probe", 2)
            .await
            .is_err()
        {
            missing_service("Redis", &url);
            return None;
        }
        settings.redis.url = Some(url.try_into().expect("url"));
        settings.redis.key_prefix = format!("fdtest:{}", uuid::Uuid::new_v4().simple());
    }
    tweak(&mut settings);
    let app = frontdesk::app::open(settings, &env(&[]))
        .await
        .expect("open");
    let mut conn = app.db.get().await.expect("conn");
    let account = ChannelAccount::find_by_public_id(&mut conn, "shop-tg")
        .await
        .expect("q")
        .expect("account");
    drop(conn);
    Some(Setup {
        app,
        telegram,
        account,
        _db: db,
    })
}

impl Setup {
    /// A customer message through the real ingest path (stored, queued).
    async fn customer_says(&self, chat: i64, n: usize, text: &str) {
        let event = RoutedEvent {
            account: None,
            event: InboundEvent::Message(InboundMessage {
                external_id: format!("{chat}:{n}"),
                sender: Sender {
                    external_id: chat.to_string(),
                    display_name: None,
                },
                text: text.to_owned(),
                origin: Origin::Text,
                attachments: Vec::new(),
                sent_at: None,
                reply_to: None,
                email: None,
            }),
        };
        let route = self
            .app
            .accounts
            .by_public_id(&self.app.db, &self.app.master_key, &self.account.public_id)
            .await
            .expect("accounts")
            .expect("account");
        frontdesk::ingest::ingest(&self.app, &route.account, &route.workspace_id, vec![event])
            .await
            .expect("ingest");
    }

    /// The texts the fake Bot API received, per chat, in order.
    fn replies(&self) -> BTreeMap<i64, Vec<String>> {
        let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for call in self.telegram.calls("/sendMessage") {
            let chat = call.body["chat_id"].as_i64().expect("chat");
            out.entry(chat)
                .or_default()
                .push(call.body["text"].as_str().expect("text").to_owned());
        }
        out
    }

    /// Runs `workers` workers until `done` holds (or 30 s pass).
    async fn drain(
        &self,
        responder: Arc<dyn Responder>,
        workers: usize,
        done: impl Fn(&BTreeMap<i64, Vec<String>>) -> bool,
    ) {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..workers {
            let mut worker = Worker::new(self.app.clone(), responder.clone(), format!("w{i}"));
            worker.wait = Duration::from_millis(50);
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    worker.process_next().await.expect("process");
                }
            }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done(&self.replies()) {
            assert!(
                std::time::Instant::now() < deadline,
                "not drained: {:?}",
                self.replies()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let in-flight turns finish, then check nothing more happens.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            task.await.expect("worker");
        }
    }
}

/// The customer words quoted in acknowledgements, in order.
fn quoted(replies: &[String]) -> Vec<String> {
    replies
        .iter()
        .flat_map(|r| {
            r.split('“')
                .skip(1)
                .filter_map(|q| q.split('”').next().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Acknowledges, while checking that no two turns of one conversation
/// overlap and counting how many turns run at once.
#[derive(Default)]
struct Watchful {
    active: Mutex<HashSet<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    pause: Duration,
    overlaps: AtomicUsize,
}

impl Responder for Watchful {
    fn respond<'a>(
        &'a self,
        turn: &'a TurnInput,
        out: Replies,
    ) -> BoxFuture<'a, Result<Verdict, String>> {
        Box::pin(async move {
            let id = turn.conversation.id.clone();
            if !self.active.lock().expect("lock").insert(id.clone()) {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.pause).await;
            let out = Acknowledger.respond(turn, out).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.active.lock().expect("lock").remove(&id);
            out
        })
    }
}

async fn strict_order_under_a_burst(kind: Kind) {
    let Some(s) = setup(kind, |_| {}).await else {
        return;
    };
    let watch = Arc::new(Watchful::default());
    // 100 rapid messages while three workers run.
    let feeder = async {
        for n in 1..=100 {
            s.customer_says(900, n, &format!("m{n}")).await;
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
    };
    let expected: Vec<String> = (1..=100).map(|n| format!("m{n}")).collect();
    let drain = s.drain(watch.clone(), 3, |r| {
        r.get(&900).map(|v| quoted(v).len()) == Some(100)
    });
    tokio::join!(feeder, drain);
    let replies = s.replies();
    assert_eq!(
        quoted(&replies[&900]),
        expected,
        "every message answered once, in order"
    );
    assert_eq!(
        watch.overlaps.load(Ordering::SeqCst),
        0,
        "two workers held one conversation"
    );
    assert!(
        replies[&900].len() < 100,
        "bursts are coalesced into fewer turns"
    );
}

async fn conversations_run_in_parallel(kind: Kind) {
    let Some(s) = setup(kind, |_| {}).await else {
        return;
    };
    let watch = Arc::new(Watchful {
        pause: Duration::from_millis(150),
        ..Watchful::default()
    });
    for chat in 1..=8 {
        for n in 1..=3 {
            s.customer_says(chat, n, &format!("c{chat} m{n}")).await;
        }
    }
    s.drain(watch.clone(), 4, |r| {
        (1..=8).all(|c| r.get(&c).map(|v| quoted(v).len()) == Some(3))
    })
    .await;
    assert!(
        watch.max_running.load(Ordering::SeqCst) >= 2,
        "turns of different conversations overlap"
    );
    assert_eq!(watch.overlaps.load(Ordering::SeqCst), 0);
    for chat in 1..=8 {
        let expected: Vec<String> = (1..=3).map(|n| format!("c{chat} m{n}")).collect();
        assert_eq!(quoted(&s.replies()[&chat]), expected);
    }
}

/// Enters, tells the test, and never returns: a worker that hangs or dies.
struct Stuck(Arc<tokio::sync::Notify>);

impl Responder for Stuck {
    fn respond<'a>(
        &'a self,
        _turn: &'a TurnInput,
        _out: Replies,
    ) -> BoxFuture<'a, Result<Verdict, String>> {
        Box::pin(async move {
            self.0.notify_one();
            std::future::pending::<()>().await;
            Ok(Verdict::default())
        })
    }
}

async fn a_worker_killed_mid_turn_is_replaced(kind: Kind) {
    let Some(s) = setup(kind, |_| {}).await else {
        return;
    };
    s.customer_says(42, 1, "is my order shipped?").await;
    let entered = Arc::new(tokio::sync::Notify::new());
    let mut doomed = Worker::new(s.app.clone(), Arc::new(Stuck(entered.clone())), "doomed");
    doomed.wait = Duration::from_millis(200);
    let task = tokio::spawn(async move {
        loop {
            let _ = doomed.process_next().await;
        }
    });
    tokio::time::timeout(Duration::from_secs(5), entered.notified())
        .await
        .expect("turn started");
    task.abort(); // the worker dies holding the lock and the unacked turn
    let _ = task.await;
    s.drain(Arc::new(Acknowledger), 2, |r| r.get(&42).is_some())
        .await;
    assert_eq!(
        s.replies()[&42],
        vec!["Thanks, we received: “is my order shipped?”. A member of our team will reply here."]
    );
    assert_eq!(
        s.telegram.calls("/sendMessage").len(),
        1,
        "exactly one reply"
    );
}

/// Sends one paragraph (tagged as a handoff notice or not), then hangs:
/// a worker that dies mid-answer.
struct HalfThenStuck {
    notice: bool,
}

impl Responder for HalfThenStuck {
    fn respond<'a>(
        &'a self,
        _turn: &'a TurnInput,
        out: Replies,
    ) -> BoxFuture<'a, Result<Verdict, String>> {
        Box::pin(async move {
            let metadata = self
                .notice
                .then(|| r#"{"notice":"low_confidence"}"#.to_owned());
            out.send(frontdesk::turn::Reply {
                text: "First half of the answer.".into(),
                metadata,
            })
            .await;
            std::future::pending::<()>().await;
            Ok(Verdict::default())
        })
    }
}

/// A worker dies after sending part of its turn: the next one finishes the
/// turn as the first meant to, never with a new answer. A half answer
/// ends with the handoff notice; a notice already sent gets its handoff.
async fn a_worker_dying_mid_answer_is_finished_by_a_handoff(kind: Kind) {
    for notice in [false, true] {
        let Some(s) = setup(kind, |_| {}).await else {
            return;
        };
        s.customer_says(5, 1, "how do refunds work?").await;
        let mut doomed = Worker::new(s.app.clone(), Arc::new(HalfThenStuck { notice }), "doomed");
        doomed.wait = Duration::from_millis(200);
        let task = tokio::spawn(async move {
            loop {
                let _ = doomed.process_next().await;
            }
        });
        // Dies once the first part is sent and recorded as sent (killed
        // between the two, it would rightly be sent again).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut conn = s.app.db.get().await.expect("conn");
            let sent: i64 = store::db_run!(conn: {
                use diesel::prelude::*;
                use diesel_async::RunQueryDsl;
                store::schema::messages::table
                    .filter(store::schema::messages::delivery_status.eq("sent"))
                    .count()
                    .get_result(conn)
                    .await
                    .expect("count")
            });
            if sent > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "first part not sent");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let _ = task.await;
        let mut conn = s.app.db.get().await.expect("conn");
        let conversation = store::models::conversation::Conversation::open_of_customer(
            &mut conn,
            &s.account.id,
            &customer_id(&s, "5").await,
        )
        .await
        .expect("q")
        .remove(0);
        drop(conn);
        let pending = |app: App, id: String| async move {
            let mut conn = app.db.get().await.expect("conn");
            store::models::conversation::Conversation::find(&mut conn, &id)
                .await
                .expect("q")
                .expect("conversation")
                .status
                == store::models::conversation::ConversationStatus::PendingHandoff
        };
        let mut worker = Worker::new(s.app.clone(), Arc::new(Acknowledger), "heir");
        worker.wait = Duration::from_millis(50);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !pending(s.app.clone(), conversation.id.clone()).await {
            assert!(
                std::time::Instant::now() < deadline,
                "not handed off (notice: {notice})"
            );
            worker.process_next().await.expect("process");
        }
        let expected = if notice { 1 } else { 2 };
        assert_eq!(s.replies()[&5].len(), expected, "{:?}", s.replies());
        let replies = &s.replies()[&5];
        assert_eq!(replies[0], "First half of the answer.");
        if !notice {
            assert!(
                !replies[1].contains("we received"),
                "the notice, not a new answer: {replies:?}"
            );
        }
        let mut conn = s.app.db.get().await.expect("conn");
        let handoffs =
            store::models::handoff::Handoff::of_conversation(&mut conn, &conversation.id)
                .await
                .expect("handoffs");
        assert_eq!(handoffs.len(), 1, "one handoff");
        let reason = if notice {
            "low_confidence"
        } else {
            "generation_failed"
        };
        assert_eq!(handoffs[0].reason, reason);
    }
}

async fn an_agent_owned_conversation_gets_no_reply(kind: Kind) {
    let Some(s) = setup(kind, |_| {}).await else {
        return;
    };
    s.customer_says(7, 1, "hello").await;
    let mut conn = s.app.db.get().await.expect("conn");
    let conversation = store::models::conversation::Conversation::open_of_customer(
        &mut conn,
        &s.account.id,
        &customer_id(&s, "7").await,
    )
    .await
    .expect("q")
    .remove(0);
    store::models::conversation::Conversation::set_status(
        &mut conn,
        &conversation.id,
        store::models::conversation::ConversationStatus::Agent,
    )
    .await
    .expect("status");
    drop(conn);
    let mut worker = Worker::new(s.app.clone(), Arc::new(Acknowledger), "w");
    worker.wait = Duration::from_millis(100);
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let outcome = worker.process_next().await.expect("process");
        if matches!(outcome, Outcome::Silent { .. }) {
            outcomes.push(outcome);
            break;
        }
        outcomes.push(outcome);
    }
    assert!(
        matches!(outcomes.last(), Some(Outcome::Silent { .. })),
        "{outcomes:?}"
    );
    assert!(
        s.telegram.calls("/sendMessage").is_empty(),
        "the bot stays silent"
    );
}

async fn customer_id(s: &Setup, external: &str) -> String {
    let mut conn = s.app.db.get().await.expect("conn");
    let mut conn2 = s.app.db.get().await.expect("conn");
    let bot = store::models::bot::Bot::find_by_id(&mut conn, &s.account.bot_id)
        .await
        .expect("q")
        .expect("bot");
    store::models::customer::Customer::find(
        &mut conn2,
        &bot.workspace_id,
        channels::ChannelKind::Telegram,
        external,
    )
    .await
    .expect("q")
    .expect("customer")
    .id
}

async fn failing_turns_retry_then_dead_letter(kind: Kind) {
    let Some(s) = setup(kind, |w| w.worker.max_attempts = 3).await else {
        return;
    };
    struct Broken(AtomicUsize);
    impl Responder for Broken {
        fn respond<'a>(
            &'a self,
            _t: &'a TurnInput,
            _out: Replies,
        ) -> BoxFuture<'a, Result<Verdict, String>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Err("model server unreachable".to_owned()) })
        }
    }
    s.customer_says(5, 1, "hi").await;
    let broken = Arc::new(Broken(AtomicUsize::new(0)));
    let mut worker = Worker::new(s.app.clone(), broken.clone(), "w");
    worker.wait = Duration::from_millis(300);
    let mut dead = None;
    for _ in 0..60 {
        if let Outcome::DeadLettered { reason } = worker.process_next().await.expect("process") {
            dead = Some(reason);
            break;
        }
    }
    let reason = dead.expect("dead-lettered after its attempts");
    assert!(reason.contains("model server unreachable"), "{reason}");
    assert_eq!(broken.0.load(Ordering::SeqCst), 3);
    let (letters, total) = s.app.broker.dead_letters(10).await.expect("letters");
    assert_eq!(total, 1);
    assert!(letters[0].reason.contains("failed 3 times"));
    frontdesk::worker::sweep(&s.app).await.expect("sweep");
    assert_eq!(s.app.metrics.dead_letters.get(), 1);
}

async fn lost_turns_are_found_by_the_sweeper(kind: Kind) {
    let Some(s) = setup(kind, |_| {}).await else {
        return;
    };
    s.customer_says(11, 1, "anyone there?").await;
    // The queue forgets the turn (Redis restarted empty, or the broker was
    // down at ingest): claim and drop it without acking or processing.
    let claimed = s
        .app
        .broker
        .claim(
            "lost",
            Duration::from_millis(200),
            Duration::from_secs(3600),
        )
        .await
        .expect("claim")
        .expect("queued");
    s.app.broker.ack(&claimed).await.expect("forget");
    tokio::time::sleep(Duration::from_millis(2100)).await; // past the sweep grace
    assert_eq!(frontdesk::worker::sweep(&s.app).await.expect("sweep"), 1);
    s.drain(Arc::new(Acknowledger), 1, |r| r.get(&11).is_some())
        .await;
    assert_eq!(s.replies()[&11].len(), 1);
}

macro_rules! on_both_brokers {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn memory() {
                    super::$name(super::Kind::Memory).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn redis() {
                    super::$name(super::Kind::Redis).await;
                }
            }
        )+
    };
}

on_both_brokers!(
    strict_order_under_a_burst,
    conversations_run_in_parallel,
    a_worker_killed_mid_turn_is_replaced,
    a_worker_dying_mid_answer_is_finished_by_a_handoff,
    an_agent_owned_conversation_gets_no_reply,
    failing_turns_retry_then_dead_letter,
    lost_turns_are_found_by_the_sweeper,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_jobs_are_dead_lettered() {
    let Some(s) = setup(Kind::Redis, |_| {}).await else {
        return;
    };
    let broker::AnyBroker::Redis(_) = &s.app.broker else {
        panic!("redis")
    };
    let prefix = s.app.settings.redis.key_prefix.clone();
    let client = deadpool_redis::redis::Client::open(redis_url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let _: String = deadpool_redis::redis::cmd("XADD")
        .arg(format!("{prefix}:turns"))
        .arg("*")
        .arg("job")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("xadd");
    let mut worker = Worker::new(s.app.clone(), Arc::new(Acknowledger), "w");
    worker.wait = Duration::from_millis(300);
    let outcome = worker.process_next().await.expect("no crash");
    let Outcome::DeadLettered { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("corrupt turn payload"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarting_empty_loses_nothing() {
    let Some(mut redis) = crate::common::PrivateRedis::start() else {
        return;
    };
    let url = redis.url();
    let Some(s) = setup(Kind::Memory, |settings| {
        settings.redis.url = Some(url.clone().try_into().expect("url"));
        settings.redis.key_prefix = "fdtest:restart".into();
        settings.worker.sweep_interval_secs = 1;
    })
    .await
    else {
        return;
    };
    // Messages stored and queued, then Redis dies and comes back empty.
    for chat in 1..=5 {
        s.customer_says(chat, 1, &format!("before {chat}")).await;
    }
    redis.restart();
    // While it is down, ingest still stores (the queueing fails, logged).
    redis.kill();
    for chat in 6..=8 {
        s.customer_says(chat, 1, &format!("during {chat}")).await;
    }
    redis.restart();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(frontdesk::worker::run(
        s.app.clone(),
        Arc::new(Acknowledger),
        "restart".into(),
        stopped,
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.replies().len() < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "lost: {:?}",
            s.replies()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    run.await.expect("workers stop");
    for chat in 1..=8 {
        assert_eq!(s.replies()[&chat].len(), 1, "chat {chat} answered once");
    }
}
