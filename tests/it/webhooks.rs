//! The front door, end to end: real payloads posted with right and wrong
//! signatures to a running gateway configured by a bot file; redeliveries,
//! concurrency, malformed input; replies captured by fake platform servers.

use std::time::Duration;

use channels::ChannelKind;
use frontdesk::delivery::{Delivery, deliver};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use store::models::channel_account::ChannelAccount;
use store::models::conversation::{Conversation, ConversationStatus};
use store::models::customer::Customer;
use store::models::message::{
    AuthorKind, DeliveryStatus, Direction, Inserted, Message, NewMessage,
};
use store::settings::DatabaseUrl;

use crate::both_backends;
use crate::common::fakes::{FakePlatform, FakeSmtp};
use crate::common::{Backend, TestDb, TestServer, env, repo_path};

const TG_SECRET: &str = "tg-secret_1";
const FB_SECRET: &str = "TestAppSecret";
const MAILGUN_KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";

const BOT_FILE: &str = r#"
workspace = "shop"
name = "help"
system_prompt = "You help."

[[channels]]
kind = "telegram"
id = "shop-tg"
bot_token = "env:SHOP_TG_TOKEN"
secret_token = "tg-secret_1"

[[channels]]
kind = "messenger"
id = "shop-fb"
page_id = "123123123"
app_secret = "TestAppSecret"
page_access_token = "env:SHOP_FB_TOKEN"
verify_token = "verify-me"

[[channels]]
kind = "email"
id = "shop-mail"
address = "support@shop.example"
signing_key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"

[[channels]]
kind = "email"
id = "shop-sales"
address = "sales@shop.example"
signing_key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
"#;

struct Gateway {
    server: TestServer,
    telegram: FakePlatform,
    graph: FakePlatform,
    smtp: FakeSmtp,
    http: reqwest::Client,
    _db: TestDb,
}

impl Gateway {
    async fn start(test_db: TestDb) -> Gateway {
        Self::start_with(test_db, |_| {}).await
    }

    async fn start_with(
        test_db: TestDb,
        tweak: impl FnOnce(&mut frontdesk::config::Settings),
    ) -> Gateway {
        let telegram = FakePlatform::start().await;
        let graph = FakePlatform::start().await;
        let smtp = FakeSmtp::start().await;
        test_db.write_bot("shop.toml", BOT_FILE);
        let mut settings = test_db.settings();
        tweak(&mut settings);
        settings.channels.telegram.api_base = telegram.url.clone();
        settings.channels.messenger.graph_api_base = format!("{}/v21.0", graph.url);
        settings.channels.email.smtp_url = Some(smtp.url.clone());
        let server = TestServer::start(
            settings,
            &env(&[
                ("SHOP_TG_TOKEN", "4242:tg-token"),
                ("SHOP_FB_TOKEN", "fb-page-token"),
            ]),
        )
        .await;
        Gateway {
            server,
            telegram,
            graph,
            smtp,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            _db: test_db,
        }
    }

    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut req = self.http.post(self.server.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("send");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn telegram(&self, secret: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(secret) = secret {
            headers.push(("x-telegram-bot-api-secret-token", secret));
        }
        self.post("/webhooks/telegram/shop-tg", &headers, body.to_vec())
            .await
    }

    async fn messenger(&self, secret: &str, body: &[u8]) -> (u16, Value) {
        let signature = format!("sha256={}", hmac_hex(secret, &[body]));
        self.post(
            "/webhooks/messenger",
            &[
                ("content-type", "application/json"),
                ("x-hub-signature-256", &signature),
            ],
            body.to_vec(),
        )
        .await
    }

    async fn account(&self, public_id: &str) -> ChannelAccount {
        let mut conn = self.server.app.db.get().await.expect("conn");
        ChannelAccount::find_by_public_id(&mut conn, public_id)
            .await
            .expect("query")
            .expect("account")
    }

    /// Every message of every conversation of the account, in order.
    async fn messages(&self, public_id: &str) -> Vec<Message> {
        let account = self.account(public_id).await;
        let mut conn = self.server.app.db.get().await.expect("conn");
        let mut all = Vec::new();
        for conversation in self.conversations(public_id).await {
            all.extend(
                Message::list(&mut conn, &conversation.id)
                    .await
                    .expect("list"),
            );
        }
        all.retain(|m| m.channel_account_id == account.id);
        all
    }

    async fn conversations(&self, public_id: &str) -> Vec<Conversation> {
        let account = self.account(public_id).await;
        let mut conn = self.server.app.db.get().await.expect("conn");
        let bot = store::models::bot::Bot::find_by_id(&mut conn, &account.bot_id)
            .await
            .expect("q")
            .expect("bot");
        let mut out = Vec::new();
        for customer in customers(&mut conn, &bot.workspace_id, account.kind).await {
            out.extend(
                Conversation::open_of_customer(&mut conn, &account.id, &customer.id)
                    .await
                    .expect("q"),
            );
        }
        out
    }

    async fn stop(self) {
        self.server.stop().await;
        self.telegram.stop().await;
        self.graph.stop().await;
    }
}

async fn customers(
    conn: &mut store::db::DbConn,
    workspace_id: &str,
    kind: ChannelKind,
) -> Vec<Customer> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use store::schema::customers;
    store::db_run!(conn: {
        customers::table
            .filter(customers::workspace_id.eq(workspace_id))
            .filter(customers::channel_kind.eq(kind.as_str()))
            .select(Customer::as_select())
            .load(conn)
            .await
            .expect("customers")
    })
}

/// Claims (and acks) every queued turn; their conversations.
async fn queued(app: &frontdesk::context::App) -> Vec<String> {
    use broker::Broker;
    let mut out = Vec::new();
    while let Some(claimed) = app
        .broker
        .claim("test", Duration::from_millis(1), Duration::from_secs(3600))
        .await
        .expect("claim")
    {
        out.push(claimed.job().expect("job").conversation_id);
        app.broker.ack(&claimed).await.expect("ack");
    }
    out
}

pub(crate) fn hmac_hex(key: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(repo_path("tests/fixtures").join(path)).expect("fixture")
}

// ---------------------------------------------------------------- Telegram

async fn telegram_verify_parse_dedupe(test_db: TestDb) {
    let gw = Gateway::start(test_db).await;
    let text = fixture("telegram/official-bot-docs-webhooks/02_message_text.json");

    // Wrong, missing and empty secrets: 401, nothing stored.
    assert_eq!(gw.telegram(Some("wrong"), &text).await.0, 401);
    assert_eq!(gw.telegram(None, &text).await.0, 401);
    assert_eq!(gw.telegram(Some(""), &text).await.0, 401);
    assert!(gw.messages("shop-tg").await.is_empty());

    // Right secret: stored and queued; a redelivery is a no-op answered 200.
    let (status, body) = gw.telegram(Some(TG_SECRET), &text).await;
    assert_eq!((status, body["stored"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = gw.telegram(Some(TG_SECRET), &text).await;
    assert_eq!(
        (status, body["duplicates"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let messages = gw.messages("shop-tg").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body, "/start");
    assert_eq!(messages[0].external_id.as_deref(), Some("1111111:1365"));
    let conversation = &gw.conversations("shop-tg").await[0];
    assert_eq!(
        queued(&gw.server.app).await,
        vec![conversation.id.clone()],
        "one turn queued"
    );

    let edit = serde_json::to_vec(&json!({
        "update_id": 2,
        "edited_message": {
            "message_id": 1365, "date": 1, "edit_date": 2, "text": "/start please",
            "chat": { "id": 1111111, "type": "private" },
            "from": { "id": 1111111, "first_name": "Test" }
        }
    }))
    .expect("json");
    let (status, body) = gw.telegram(Some(TG_SECRET), &edit).await;
    assert_eq!((status, body["edits"].as_u64()), (200, Some(1)), "{body}");
    let messages = gw.messages("shop-tg").await;
    assert_eq!(messages.len(), 1, "an edit is not a new message");
    assert_eq!(messages[0].body, "/start please");
    assert!(
        messages[0]
            .metadata
            .as_deref()
            .unwrap_or_default()
            .contains("\"edits\":[\"/start\"]")
    );
    assert!(
        queued(&gw.server.app).await.is_empty(),
        "an edit is never answered twice"
    );

    // A button press: stored as the customer's words, and acknowledged so
    // the button stops spinning.
    let press = fixture("telegram/official-bot-docs-webhooks/13_callback_query.json");
    let (status, body) = gw.telegram(Some(TG_SECRET), &press).await;
    assert_eq!((status, body["stored"].as_u64()), (200, Some(1)), "{body}");
    let mut answered = Vec::new();
    for _ in 0..100 {
        answered = gw.telegram.calls("/answerCallbackQuery");
        if !answered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered[0].body["callback_query_id"], "4382bfdwdsb323b2d9");
    queued(&gw.server.app).await;

    // Valid but irrelevant: 200 with the reason, nothing stored.
    for skip in [
        "telegram/bottender/groupMessage.json",
        "telegram/official-bot-docs-webhooks/11_inline_query.json",
        "telegram/official-bot-docs-webhooks/09_voice_message.json",
    ] {
        let (status, body) = gw.telegram(Some(TG_SECRET), &fixture(skip)).await;
        assert_eq!(status, 200, "{skip}: {body}");
        assert_eq!(
            body["skipped"].as_array().map(Vec::len),
            Some(1),
            "{skip}: {body}"
        );
    }
    assert_eq!(
        gw.messages("shop-tg").await.len(),
        2,
        "the button press is the only new message"
    );
    gw.stop().await;
}

both_backends! {
    telegram_webhook => telegram_verify_parse_dedupe;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_reason_and_stores_nothing() {
    let gw = Gateway::start(TestDb::new(Backend::Sqlite).await.expect("sqlite")).await;
    let (status, body) = gw.telegram(Some(TG_SECRET), b"{not json").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("JSON"),
        "{body}"
    );
    assert_eq!(
        gw.telegram(Some(TG_SECRET), &[0xff, 0xfe, 0x00]).await.0,
        400
    );
    let (status, _) = gw
        .post(
            "/webhooks/telegram/shop-tg",
            &[
                ("content-type", "text/plain"),
                ("x-telegram-bot-api-secret-token", TG_SECRET),
            ],
            "{}",
        )
        .await;
    assert_eq!(status, 415);
    let (status, body) = gw
        .post(
            "/webhooks/telegram/nobody",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_eq!(status, 404, "{body}");
    // Two invalid-JSON examples from Meta's docs, correctly signed.
    let bad = b"{\"object\":\"page\",\"entry\":[{\"id\":\"123123123\",}]}";
    assert_eq!(gw.messenger(FB_SECRET, bad).await.0, 400);
    // Oversized: refused before reading.
    let huge = vec![b' '; 3 * 1024 * 1024];
    let (status, _) = gw.telegram(Some(TG_SECRET), &huge).await;
    assert_eq!(status, 413);
    assert!(gw.messages("shop-tg").await.is_empty());
    // The server keeps serving.
    let ok = gw
        .http
        .get(gw.server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(ok.status(), 200);
    let metrics = gw
        .http
        .get(gw.server.url("/metrics"))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    assert!(
        metrics.contains(r#"webhook_requests_total{channel="telegram",outcome="bad_request"}"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_from_one_new_customer() {
    let gw = std::sync::Arc::new(
        Gateway::start(TestDb::new(Backend::Sqlite).await.expect("sqlite")).await,
    );
    let mut tasks = Vec::new();
    for i in 0..24 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            // Every message twice, in parallel, as platforms do.
            let body = serde_json::to_vec(&json!({
                "update_id": 100 + i,
                "message": {
                    "message_id": i / 2, "date": 1, "text": format!("part {}", i / 2),
                    "chat": { "id": 777, "type": "private" },
                    "from": { "id": 777, "first_name": "Bo" }
                }
            }))
            .expect("json");
            gw.telegram(Some(TG_SECRET), &body).await.0
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    let conversations = gw.conversations("shop-tg").await;
    assert_eq!(conversations.len(), 1, "one conversation");
    let seqs: Vec<i64> = gw.messages("shop-tg").await.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
}

/// A storm at load: 40 customers write 8 messages each, in order, and the
/// platform delivers every update twice at once; 64 requests in flight.
/// Each update is stored exactly once, every request gets a 200, and each
/// conversation's seqs are dense and follow the customer's order, with one
/// `message.created` event logged per message.
async fn redelivery_storm_at_load(test_db: TestDb) {
    const CHATS: i64 = 40;
    const EACH: i64 = 8;
    let gw = std::sync::Arc::new(Gateway::start(test_db).await);
    let mut customers = Vec::new();
    for chat in 0..CHATS {
        let gw = gw.clone();
        customers.push(tokio::spawn(async move {
            let mut stored = 0;
            for n in 0..EACH {
                let body = serde_json::to_vec(&json!({
                    "update_id": chat * 1000 + n,
                    "message": {
                        "message_id": n, "date": 1, "text": format!("message {n}"),
                        "chat": { "id": 9000 + chat, "type": "private" },
                        "from": { "id": 9000 + chat, "first_name": "Storm" }
                    }
                }))
                .expect("json");
                let (a, b) = tokio::join!(
                    gw.telegram(Some(TG_SECRET), &body),
                    gw.telegram(Some(TG_SECRET), &body)
                );
                for (status, answer) in [a, b] {
                    assert_eq!(status, 200, "{answer}");
                    stored += answer["stored"].as_u64().expect("stored");
                }
            }
            stored
        }));
    }
    let mut stored = 0;
    for customer in customers {
        stored += customer.await.expect("customer");
    }
    assert_eq!(stored, (CHATS * EACH) as u64, "each update stored once");
    let conversations = gw.conversations("shop-tg").await;
    assert_eq!(conversations.len(), CHATS as usize);
    let mut conn = gw.server.app.db.get().await.expect("conn");
    for conversation in &conversations {
        let messages = Message::list(&mut conn, &conversation.id)
            .await
            .expect("list");
        let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
        let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
        assert_eq!(seqs, (1..=EACH).collect::<Vec<_>>());
        assert_eq!(
            bodies,
            (0..EACH)
                .map(|n| format!("message {n}"))
                .collect::<Vec<_>>(),
            "in the customer's order"
        );
    }
    let workspace = &conversations[0].workspace_id;
    let events = store::models::event::StoredEvent::after(&mut conn, workspace, 0, 100_000)
        .await
        .expect("events");
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("message.created"), (CHATS * EACH) as usize);
    assert_eq!(count("conversation.created"), CHATS as usize);
    for event in events.iter().filter(|e| e.kind == "message.created") {
        let payload: Value = serde_json::from_str(&event.payload).expect("payload");
        let conversation = payload["conversation_id"].as_str().expect("conversation");
        assert_eq!(payload["message"]["conversation_id"], conversation);
        assert!(payload["message"]["seq"].as_i64().expect("seq") >= 1);
    }
}

both_backends! {
    redelivery_storm => redelivery_storm_at_load;
}

/// Overload: while the database cannot take writes, the door holds
/// `server.webhook_queue` webhooks and refuses the rest at once with 503
/// and `Retry-After`. Every webhook it accepted is stored once the
/// database is back, and a refused one is stored when the platform retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_retry_after_and_nothing_accepted_is_lost() {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let test_db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let DatabaseUrl::Sqlite(path) = test_db.url.clone() else {
        unreachable!("a SQLite test database")
    };
    let gw = std::sync::Arc::new(
        Gateway::start_with(test_db, |settings| {
            settings.server.webhook_queue = 2;
            settings.database.sqlite_busy_timeout_ms = 20_000;
        })
        .await,
    );
    let update = |n: i64| {
        serde_json::to_vec(&json!({
            "update_id": 500 + n,
            "message": {
                "message_id": n, "date": 1, "text": format!("rush {n}"),
                "chat": { "id": 4000 + n, "type": "private" },
                "from": { "id": 4000 + n, "first_name": "Rush" }
            }
        }))
        .expect("json")
    };
    // Another process holds the write lock: the door's writer waits.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy()).expect("open");
        conn.batch_execute("BEGIN IMMEDIATE").expect("lock");
        locked.send(()).expect("locked");
        released.recv().expect("release");
        conn.batch_execute("COMMIT").expect("unlock");
    });
    is_locked.recv().expect("locked");
    let send = |n: i64| {
        let gw = gw.clone();
        let body = update(n);
        tokio::spawn(async move {
            let res = gw
                .http
                .post(gw.server.url("/webhooks/telegram/shop-tg"))
                .header("content-type", "application/json")
                .header("x-telegram-bot-api-secret-token", TG_SECRET)
                .body(body)
                .send()
                .await
                .expect("send");
            let retry_after = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            (n, res.status().as_u16(), retry_after)
        })
    };
    // The first webhook is the writer's (waiting on the lock), then the
    // queue fills, then the door refuses.
    let first = send(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rest: Vec<_> = (1..=12).map(send).collect();
    let mut refused = Vec::new();
    let mut waiting = vec![first];
    for task in rest {
        if task.is_finished() {
            let (n, status, retry_after) = task.await.expect("task");
            assert_eq!(status, 503, "only a refusal answers while the lock is held");
            assert_eq!(retry_after.as_deref(), Some("1"));
            refused.push(n);
        } else {
            waiting.push(task);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for task in waiting {
        if task.is_finished() {
            let (n, status, retry_after) = task.await.expect("task");
            assert_eq!(status, 503, "{n}");
            assert_eq!(retry_after.as_deref(), Some("1"));
            refused.push(n);
        } else {
            held.push(task);
        }
    }
    assert_eq!(held.len(), 3, "the writer's webhook and a queue of 2 wait");
    assert_eq!(refused.len(), 10);
    assert!(
        gw.messages("shop-tg").await.is_empty(),
        "nothing stored yet"
    );

    release.send(()).expect("release");
    holder.join().expect("holder");
    for task in held {
        let (n, status, _) = task.await.expect("task");
        assert_eq!(status, 200, "accepted webhook {n} is stored");
    }
    assert_eq!(gw.messages("shop-tg").await.len(), 3);
    // The platform retries what was refused.
    for n in refused {
        assert_eq!(gw.telegram(Some(TG_SECRET), &update(n)).await.0, 200);
    }
    let mut stored: Vec<String> = gw
        .messages("shop-tg")
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    stored.sort();
    let mut expected: Vec<String> = (0..=12).map(|n| format!("rush {n}")).collect();
    expected.sort();
    assert_eq!(stored, expected, "each webhook stored exactly once");
}

// --------------------------------------------------------------- Messenger

async fn messenger_batches(test_db: TestDb) {
    let gw = Gateway::start(test_db).await;
    // The published vector: CRLF body, exact bytes.
    let body = fixture("messenger/botbuilder-dotnet/RequestResponse.json");
    let header = "sha256=13870d954c7cb3a6725c7c8dc58260e6eee77d538dafea1a3703dcc2ae21e97f";
    let (status, _) = gw
        .post(
            "/webhooks/messenger",
            &[
                ("content-type", "application/json"),
                ("x-hub-signature-256", header),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(gw.messages("shop-fb").await[0].body, "asd");

    // Wrong secret, missing header, legacy SHA-1 only: 401.
    assert_eq!(gw.messenger("other-secret", &body).await.0, 401);
    let (status, _) = gw
        .post(
            "/webhooks/messenger",
            &[("content-type", "application/json")],
            body.clone(),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = gw
        .post(
            "/webhooks/messenger",
            &[
                ("content-type", "application/json"),
                (
                    "x-hub-signature",
                    "sha1=1c99183cb7c44ea27fb834746086b65b89800db8",
                ),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, 401);

    // A batch: two entries × several events; text, postback, quick reply,
    // attachment, echo, read.
    let customer = "5550001";
    let batch = serde_json::to_vec(&json!({
        "object": "page",
        "entry": [
            { "id": "123123123", "time": 1, "messaging": [
                { "sender": {"id": customer}, "recipient": {"id": "123123123"}, "timestamp": 1000,
                  "message": { "mid": "m_1", "text": "Do you ship to Austria?" } },
                { "sender": {"id": customer}, "recipient": {"id": "123123123"}, "timestamp": 1001,
                  "postback": { "title": "Opening hours", "payload": "HOURS" } },
                { "sender": {"id": "123123123"}, "recipient": {"id": customer}, "timestamp": 1002,
                  "message": { "mid": "m_echo", "is_echo": true, "text": "hi" } }
            ]},
            { "id": "123123123", "time": 2, "messaging": [
                { "sender": {"id": customer}, "recipient": {"id": "123123123"}, "timestamp": 1003,
                  "message": { "mid": "m_2", "text": "Yes", "quick_reply": { "payload": "YES" } } },
                { "sender": {"id": customer}, "recipient": {"id": "123123123"}, "timestamp": 1004,
                  "message": { "mid": "m_3", "attachments": [ { "type": "image", "payload": { "url": "https://x/y.jpg" } } ] } }
            ]}
        ]
    }))
    .expect("json");
    let (status, reply) = gw.messenger(FB_SECRET, &batch).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["stored"], 4, "{reply}");
    let bodies: Vec<String> = gw
        .messages("shop-fb")
        .await
        .into_iter()
        .filter(|m| m.external_id.as_deref() != Some("Q3znCzp31iKkarGcToiQWSJGtmSVjUPs7GtwB7WEjVRcg9MxG8TT09Z0wimdrcCHxQCRpMSKZcHBthhqXsonoA"))
        .map(|m| m.body)
        .collect();
    assert_eq!(
        bodies,
        vec!["Do you ship to Austria?", "Opening hours", "Yes", ""]
    );
    // Redelivery of the whole batch: nothing new.
    let (_, reply) = gw.messenger(FB_SECRET, &batch).await;
    assert_eq!(
        (reply["stored"].as_u64(), reply["duplicates"].as_u64()),
        (Some(0), Some(4))
    );

    // Unknown page: 404, nothing stored.
    let other = String::from_utf8(batch.clone())
        .expect("utf8")
        .replace("123123123", "999");
    assert_eq!(gw.messenger(FB_SECRET, other.as_bytes()).await.0, 404);

    // Handshake.
    let res = gw
        .http
        .get(gw.server.url("/webhooks/messenger?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.expect("text"), "1158201444");
    let res =
        gw.http
            .get(gw.server.url(
                "/webhooks/messenger?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
            ))
            .send()
            .await
            .expect("get");
    assert_eq!(res.status(), 403);

    // Handover: another app takes the thread; the conversation is the agent's.
    let take = serde_json::to_vec(&json!({
        "object": "page",
        "entry": [{ "id": "123123123", "time": 3, "messaging": [
            { "sender": {"id": customer}, "recipient": {"id": "123123123"}, "timestamp": 1005,
              "take_thread_control": { "previous_owner_app_id": "1" } }
        ]}]
    }))
    .expect("json");
    assert_eq!(gw.messenger(FB_SECRET, &take).await.0, 200);
    let conversation = gw
        .conversations("shop-fb")
        .await
        .into_iter()
        .find(|c| c.status == ConversationStatus::Agent);
    assert!(
        conversation.is_some(),
        "take_thread_control hands the thread to the other app"
    );
    gw.stop().await;
}

both_backends! {
    messenger_webhook => messenger_batches;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_messenger_fixture_is_accepted_when_signed() {
    let gw = Gateway::start(TestDb::new(Backend::Sqlite).await.expect("sqlite")).await;
    let manifest = String::from_utf8(fixture("messenger/MANIFEST.tsv")).expect("utf8");
    let mut posted = 0;
    for line in manifest.lines().skip(1) {
        let mut cols = line.split('\t');
        let (Some(file), Some(shape)) = (cols.next(), cols.next()) else {
            continue;
        };
        let body = if shape.starts_with("single messaging event") {
            let path = file.replace(
                "bottender-MessengerEvent.spec/derived-snake_case",
                "bottender",
            );
            let raw = fixture(&format!("messenger/{path}"));
            let event: Value =
                serde_json::from_slice(raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&raw))
                    .expect("json");
            serde_json::to_vec(&json!({ "object": "page", "entry": [{ "id": "123123123", "time": 1, "messaging": [event] }] }))
                .expect("json")
        } else if shape.starts_with("full body") {
            // Route the fixture's page to our account.
            let raw = String::from_utf8(fixture(&format!("messenger/{file}"))).expect("utf8");
            let ids = channels::messenger::page_ids(raw.as_bytes(), 100).expect("ids");
            ids.iter()
                .fold(raw, |body, id| {
                    body.replace(&format!("\"{id}\""), "\"123123123\"")
                })
                .into_bytes()
        } else {
            continue;
        };
        let (status, reply) = gw.messenger(FB_SECRET, &body).await;
        assert_eq!(status, 200, "{file}: {reply}");
        posted += 1;
    }
    assert!(posted > 40);
    gw.stop().await;
}

// ------------------------------------------------------------------- Email

pub(crate) fn mailgun_form(raw_mime: &str, timestamp: i64, token: &str, key: &str) -> String {
    let ts = timestamp.to_string();
    let signature = hmac_hex(key, &[ts.as_bytes(), token.as_bytes()]);
    form_urlencoded_pairs(&[
        ("timestamp", &ts),
        ("token", token),
        ("signature", &signature),
        ("recipient", "support@shop.example"),
        ("body-mime", raw_mime),
    ])
}

fn form_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn email_verify_thread_reply(test_db: TestDb) {
    let gw = Gateway::start(test_db).await;
    let now = chrono::Utc::now().timestamp();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let first = "From: Ann <Ann@Example.com>\r\nTo: support@shop.example\r\nSubject: Broken bell\r\n\
Message-ID: <a1@example.com>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nMy bell is broken. Gr=FC=DFe\r\n\r\n-- \r\nAnn\r\n";
    let body = mailgun_form(first, now, "token-1", MAILGUN_KEY);

    // Wrong key, stale timestamp: 401.
    assert_eq!(
        gw.post(
            "/webhooks/email/shop-mail",
            &form,
            mailgun_form(first, now, "t0", "wrong")
        )
        .await
        .0,
        401
    );
    assert_eq!(
        gw.post(
            "/webhooks/email/shop-mail",
            &form,
            mailgun_form(first, now - 600, "t9", MAILGUN_KEY)
        )
        .await
        .0,
        401
    );

    let (status, reply) = gw
        .post("/webhooks/email/shop-mail", &form, body.clone())
        .await;
    assert_eq!(status, 200, "{reply}");
    // The same token again: refused as a replay.
    let (status, reply) = gw.post("/webhooks/email/shop-mail", &form, body).await;
    assert_eq!(status, 401, "{reply}");

    let messages = gw.messages("shop-mail").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].body, "My bell is broken. Grüße",
        "charset decoded, signature cut"
    );

    // A reply in the thread joins it; a new subject opens another thread.
    let reply_mime = "From: ann@example.com\r\nSubject: Re: Broken bell\r\nMessage-ID: <a2@example.com>\r\n\
In-Reply-To: <a1@example.com>\r\nReferences: <a1@example.com>\r\n\r\nAlso the brake.\r\n\r\n\
On Mon, 1 Jan 2026 at 10:00, Shop <support@shop.example> wrote:\r\n> old text\r\n";
    let other = "From: ann@example.com\r\nSubject: Invoice\r\nMessage-ID: <b1@example.com>\r\n\r\nWhere is my invoice?\r\n";
    assert_eq!(
        gw.post(
            "/webhooks/email/shop-mail",
            &form,
            mailgun_form(reply_mime, now, "token-2", MAILGUN_KEY)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        gw.post(
            "/webhooks/email/shop-mail",
            &form,
            mailgun_form(other, now, "token-3", MAILGUN_KEY)
        )
        .await
        .0,
        200
    );
    let conversations = gw.conversations("shop-mail").await;
    assert_eq!(conversations.len(), 2, "two threads");
    let mut conn = gw.server.app.db.get().await.expect("conn");
    let bell = conversations
        .iter()
        .find(|c| c.thread_key == "a1@example.com")
        .expect("thread");
    let bell_messages = Message::list(&mut conn, &bell.id).await.expect("list");
    assert_eq!(bell_messages.len(), 2);
    assert_eq!(
        bell_messages[1].body, "Also the brake.",
        "quoted history cut"
    );

    // Our reply threads under the customer's latest message.
    drop(conn);
    let answer = reply_in(&gw, bell, "We will send a new bell today.").await;
    let Delivery::Sent(ids) = deliver(&gw.server.app, &answer.id, false)
        .await
        .expect("deliver")
    else {
        panic!("sent")
    };
    let sent = gw.smtp.messages();
    assert_eq!(sent.len(), 1);
    let mail = &sent[0];
    assert!(mail.contains("Subject: Re: Broken bell"), "{mail}");
    assert!(mail.contains("In-Reply-To: <a2@example.com>"), "{mail}");
    assert!(
        mail.contains("<a1@example.com>") && mail.contains("References:"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("Message-ID: <{}>", ids[0])),
        "{mail}"
    );
    assert!(mail.contains("To: ann@example.com"), "{mail}");

    // The customer answers our reply: threading through our own Message-ID.
    let third = format!(
        "From: ann@example.com\r\nSubject: Re: Broken bell\r\nMessage-ID: <a3@example.com>\r\nIn-Reply-To: <{}>\r\n\r\nThanks!\r\n",
        ids[0]
    );
    assert_eq!(
        gw.post(
            "/webhooks/email/shop-mail",
            &form,
            mailgun_form(&third, now, "token-4", MAILGUN_KEY)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        gw.conversations("shop-mail").await.len(),
        2,
        "still two threads"
    );
    gw.stop().await;
}

both_backends! {
    email_webhook => email_verify_thread_reply;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_multipart_and_mime_corpus() {
    let gw = Gateway::start(TestDb::new(Backend::Sqlite).await.expect("sqlite")).await;
    let now = chrono::Utc::now().timestamp();
    // multipart/form-data, as Mailgun posts routes with attachments.
    let raw = String::from_utf8_lossy(&fixture(
        "email/talon/tests/fixtures/standard_replies/gmail.eml",
    ))
    .into_owned();
    let ts = now.to_string();
    let signature = hmac_hex(MAILGUN_KEY, &[ts.as_bytes(), b"mp-token"]);
    let boundary = "frontdeskBoundary42";
    let mut body = String::new();
    for (name, value) in [
        ("timestamp", ts.as_str()),
        ("token", "mp-token"),
        ("signature", &signature),
        ("body-mime", &raw),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let ct = format!("multipart/form-data; boundary={boundary}");
    let (status, reply) = gw
        .post(
            "/webhooks/email/shop-mail/mime",
            &[("content-type", &ct)],
            body,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(gw.messages("shop-mail").await[0].body, "Hello");

    // Every message of the MIME corpora: stored, or refused with a reason
    // (no sender); never a 5xx.
    let mut stored = 0;
    for dir in [
        "email/enmime/testdata/mail",
        "email/ruby-mail-gem/emails/mime_emails",
        "email/ruby-mail-gem/emails/multi_charset",
    ] {
        for (i, entry) in std::fs::read_dir(repo_path("tests/fixtures").join(dir))
            .expect("dir")
            .enumerate()
        {
            let raw = std::fs::read(entry.expect("e").path()).expect("read");
            let form = mailgun_form(
                &String::from_utf8_lossy(&raw),
                now,
                &format!("{dir}-{i}"),
                MAILGUN_KEY,
            );
            let (status, reply) = gw
                .post(
                    "/webhooks/email/shop-mail",
                    &[("content-type", "application/x-www-form-urlencoded")],
                    form,
                )
                .await;
            assert!(
                status == 200 || status == 400,
                "{dir} #{i}: {status} {reply}"
            );
            if status == 200 {
                stored += 1;
            }
        }
    }
    assert!(stored > 30, "only {stored} stored");

    // A MIME bomb: 3000 nested multiparts. Refused or parsed, never a crash.
    let mut bomb = String::from("From: x@example.com\r\nMessage-ID: <bomb@x>\r\n");
    for i in 0..3000 {
        bomb.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    let form = mailgun_form(&bomb, now, "bomb", MAILGUN_KEY);
    let (status, _) = gw
        .post(
            "/webhooks/email/shop-mail",
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await;
    assert!(status == 200 || status == 400, "{status}");
    // A 4 MB header line.
    let huge = format!(
        "From: x@example.com\r\nX-Junk: {}\r\n\r\nhi\r\n",
        "a".repeat(4 << 20)
    );
    let form = mailgun_form(&huge, now, "huge", MAILGUN_KEY);
    let (status, _) = gw
        .post(
            "/webhooks/email/shop-mail",
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await;
    assert!(status == 200 || status == 400, "{status}");
    let ok = gw
        .http
        .get(gw.server.url("/healthz"))
        .send()
        .await
        .expect("alive");
    assert_eq!(ok.status(), 200);
    gw.stop().await;
}

async fn hostile_and_automatic_email(test_db: TestDb) {
    let gw = std::sync::Arc::new(Gateway::start(test_db).await);
    let now = chrono::Utc::now().timestamp();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let mime = |from: &str, id: &str, extra: &str, body: &str| {
        format!("From: {from}\r\nSubject: Hi\r\nMessage-ID: <{id}>\r\n{extra}\r\n{body}\r\n")
    };

    // One token, twenty concurrent forged bodies: one is accepted.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let gw = gw.clone();
        let body = mailgun_form(
            &mime("eve@example.com", &format!("forged{i}@x"), "", "forged"),
            now,
            "shared-token",
            MAILGUN_KEY,
        );
        tasks.push(tokio::spawn(async move {
            gw.post(
                "/webhooks/email/shop-mail",
                &[("content-type", "application/x-www-form-urlencoded")],
                body,
            )
            .await
            .0
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.expect("task") == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1, "a token is accepted once");
    // The same signed token replayed at another account with the same key.
    let body = mailgun_form(
        &mime("eve@example.com", "forged-x@x", "", "forged"),
        now,
        "shared-token",
        MAILGUN_KEY,
    );
    assert_eq!(
        gw.post("/webhooks/email/shop-sales", &form, body).await.0,
        401
    );

    // Autoresponders, lists and our own address are never answered.
    for (i, extra) in [
        "Auto-Submitted: auto-replied\r\n",
        "Precedence: bulk\r\n",
        "List-Id: <news.example.com>\r\n",
    ]
    .iter()
    .enumerate()
    {
        let body = mailgun_form(
            &mime(
                "bot@example.com",
                &format!("auto{i}@x"),
                extra,
                "Out of office",
            ),
            now,
            &format!("auto-{i}"),
            MAILGUN_KEY,
        );
        let (status, reply) = gw.post("/webhooks/email/shop-mail", &form, body).await;
        assert_eq!(
            (status, reply["stored"].as_u64()),
            (200, Some(0)),
            "{extra}: {reply}"
        );
    }
    let body = mailgun_form(
        &mime("support@shop.example", "self@x", "", "loop"),
        now,
        "self",
        MAILGUN_KEY,
    );
    let (status, reply) = gw.post("/webhooks/email/shop-mail", &form, body).await;
    assert_eq!(
        (status, reply["stored"].as_u64()),
        (200, Some(0)),
        "{reply}"
    );

    // NUL characters and 10,000 References: stored, not a 5xx loop.
    let refs: Vec<String> = (0..10_000).map(|i| format!("<r{i}@x>")).collect();
    let extra = format!("References: {}\r\n", refs.join(" "));
    let body = mailgun_form(
        &mime("ann@example.com", "nul@x", &extra, "a\u{0}b"),
        now,
        "nul",
        MAILGUN_KEY,
    );
    let (status, reply) = gw.post("/webhooks/email/shop-mail", &form, body).await;
    assert_eq!(
        (status, reply["stored"].as_u64()),
        (200, Some(1)),
        "{reply}"
    );
    assert!(
        gw.messages("shop-mail")
            .await
            .iter()
            .any(|m| m.body == "ab")
    );
    let tg = serde_json::to_vec(&json!({
        "update_id": 9, "message": { "message_id": 1, "date": 1, "text": "x\u{0}y",
        "chat": { "id": 55, "type": "private" }, "from": { "id": 55, "first_name": "N\u{0}o" } }
    }))
    .expect("json");
    assert_eq!(gw.telegram(Some(TG_SECRET), &tg).await.0, 200);

    // Reply-To: used only on the domain of an authenticated From.
    let verified = "X-Mailgun-Spf: Pass\r\nX-Envelope-From: <ann@example.com>\r\n";
    for (id, extra, to) in [
        (
            "rt1@x",
            "Reply-To: Ann Home <ann@home.example>\r\n".to_owned(),
            "ann@example.com",
        ),
        (
            "rt2@x",
            format!("{verified}Reply-To: Ann Home <ann@home.example>\r\n"),
            "ann@example.com",
        ),
        (
            "rt3@x",
            format!("{verified}Reply-To: <billing@eu.example.com>\r\n"),
            "billing@eu.example.com",
        ),
    ] {
        let body = mailgun_form(
            &mime("ann@example.com", id, &extra, "Please answer"),
            now,
            id,
            MAILGUN_KEY,
        );
        assert_eq!(
            gw.post("/webhooks/email/shop-mail", &form, body).await.0,
            200
        );
        let conversation = gw
            .conversations("shop-mail")
            .await
            .into_iter()
            .find(|c| c.thread_key == id)
            .expect("thread");
        let answer = reply_in(&gw, &conversation, "Sure.").await;
        assert!(matches!(
            deliver(&gw.server.app, &answer.id, false)
                .await
                .expect("deliver"),
            Delivery::Sent(_)
        ));
        let sent = gw.smtp.messages();
        let last = sent.last().expect("a mail");
        assert!(last.contains(&format!("To: {to}")), "{id}: {last}");
        assert!(last.contains("Auto-Submitted: auto-replied"), "{last}");
    }
    // The verdicts are stored with the message.
    let verdicts: Vec<(serde_json::Value, serde_json::Value)> = gw
        .messages("shop-mail")
        .await
        .iter()
        .filter(|m| m.body == "Please answer")
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(m.metadata.as_deref()?).ok())
        .map(|m| {
            (
                m["email"]["auth"]["spf"].clone(),
                m["email"]["auth"]["authenticated"].clone(),
            )
        })
        .collect();
    assert_eq!(verdicts.len(), 3, "{verdicts:?}");
    assert_eq!(
        verdicts
            .iter()
            .filter(|(spf, ok)| spf == "pass" && ok == &json!(true))
            .count(),
        2,
        "{verdicts:?}"
    );
}

both_backends! {
    hostile_email => hostile_and_automatic_email;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2822_thread_from_one_sender_is_one_conversation() {
    // example05 (John → Mary) and example07 (John's reply to Mary's reply)
    // reach our address from John: one conversation. Mary's example06 is
    // another sender, so it never joins John's thread.
    let gw = Gateway::start(TestDb::new(Backend::Sqlite).await.expect("sqlite")).await;
    let now = chrono::Utc::now().timestamp();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for (i, file) in ["example05.eml", "example07.eml"].iter().enumerate() {
        let raw = String::from_utf8_lossy(&fixture(&format!(
            "email/ruby-mail-gem/emails/rfc2822/{file}"
        )))
        .into_owned();
        let (status, reply) = gw
            .post(
                "/webhooks/email/shop-mail",
                &form,
                mailgun_form(&raw, now, &format!("t{i}"), MAILGUN_KEY),
            )
            .await;
        assert_eq!(status, 200, "{file}: {reply}");
    }
    let conversations = gw.conversations("shop-mail").await;
    assert_eq!(conversations.len(), 1, "{conversations:?}");
    gw.stop().await;
}

// ---------------------------------------------------------------- Outbound

async fn outbound_message(gw: &Gateway, public_id: &str, text: &str) -> Message {
    let conversation = gw.conversations(public_id).await.remove(0);
    reply_in(gw, &conversation, text).await
}

/// A bot reply stored in `conversation`, pending delivery.
async fn reply_in(gw: &Gateway, conversation: &Conversation, text: &str) -> Message {
    let mut conn = gw.server.app.db.get().await.expect("conn");
    match Message::insert(
        &mut conn,
        &NewMessage {
            conversation_id: &conversation.id,
            channel_account_id: &conversation.channel_account_id,
            direction: Direction::Outbound,
            author_kind: AuthorKind::Bot,
            author_user_id: None,
            body: text,
            external_id: None,
            metadata: None,
        },
    )
    .await
    .expect("insert")
    {
        Inserted::New(m) => m,
        Inserted::Duplicate(_) => panic!("new"),
    }
}

async fn status_of(gw: &Gateway, id: &str) -> Message {
    let mut conn = gw.server.app.db.get().await.expect("conn");
    Message::find(&mut conn, id)
        .await
        .expect("q")
        .expect("message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_replies_split_and_retry() {
    let gw = Gateway::start(TestDb::new(Backend::Sqlite).await.expect("sqlite")).await;
    let text = fixture("telegram/official-bot-docs-webhooks/02_message_text.json");
    assert_eq!(gw.telegram(Some(TG_SECRET), &text).await.0, 200);

    // 5000 characters: two messages, cut at a sentence; the first attempt
    // is rate-limited and retried after `retry_after`.
    let long = "Our workshop services any bicycle brand within a day. ".repeat(92);
    let message = outbound_message(&gw, "shop-tg", long.trim()).await;
    gw.telegram.script([(429, json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}))]);
    let outcome = deliver(&gw.server.app, &message.id, false)
        .await
        .expect("deliver");
    let Delivery::Sent(ids) = outcome else {
        panic!("sent: {outcome:?}")
    };
    assert_eq!(ids.len(), 2);
    let calls = gw.telegram.calls("/sendMessage");
    assert_eq!(calls.len(), 3, "one 429, then two parts");
    assert!(calls[0].path.starts_with("/bot4242:tg-token/"));
    assert_eq!(calls[1].body["chat_id"], 1111111);
    assert!(
        calls[1].body.get("parse_mode").is_none(),
        "plain text: no entity parsing"
    );
    for call in &calls[1..] {
        let part = call.body["text"].as_str().expect("text");
        assert!(part.chars().count() <= 4096);
        assert!(part.ends_with("day."));
    }
    let stored = status_of(&gw, &message.id).await;
    assert_eq!(stored.delivery_status, Some(DeliveryStatus::Sent));
    assert_eq!(stored.external_id.as_deref(), Some(ids[0].as_str()));
    // Not sent twice.
    assert_eq!(
        deliver(&gw.server.app, &message.id, false)
            .await
            .expect("again"),
        Delivery::NotPending
    );

    // A permanent failure is recorded, not retried forever.
    let blocked = outbound_message(&gw, "shop-tg", "Hello?").await;
    gw.telegram.script([(403, json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}))]);
    let Delivery::Failed(reason) = deliver(&gw.server.app, &blocked.id, false)
        .await
        .expect("deliver")
    else {
        panic!("failed")
    };
    assert!(reason.contains("blocked"), "{reason}");
    let stored = status_of(&gw, &blocked.id).await;
    assert_eq!(stored.delivery_status, Some(DeliveryStatus::Failed));
    assert!(
        stored
            .delivery_error
            .unwrap_or_default()
            .contains("blocked")
    );

    frontdesk::delivery::typing(&gw.server.app, &stored.conversation_id).await;
    assert_eq!(
        gw.telegram.calls("/sendChatAction")[0].body["action"],
        "typing"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messenger_replies_and_receipts() {
    let gw = Gateway::start(TestDb::new(Backend::Sqlite).await.expect("sqlite")).await;
    let body = fixture("messenger/botbuilder-dotnet/RequestResponse.json");
    assert_eq!(gw.messenger(FB_SECRET, &body).await.0, 200);

    let long = "Delivery inside Germany takes one to two working days. ".repeat(45);
    let message = outbound_message(&gw, "shop-fb", long.trim()).await;
    gw.graph.script([(500, json!({"error": {"message": "An unexpected error has occurred", "code": 2, "is_transient": true}}))]);
    let Delivery::Sent(ids) = deliver(&gw.server.app, &message.id, false)
        .await
        .expect("deliver")
    else {
        panic!("sent")
    };
    assert_eq!(ids.len(), 2, "2000-character limit");
    let calls = gw.graph.calls("/me/messages");
    assert_eq!(calls.len(), 3, "one 500, then two parts");
    assert_eq!(calls[1].body["messaging_type"], "RESPONSE");
    assert_eq!(calls[1].body["recipient"]["id"], "123123123");
    assert!(
        calls[1].query.is_empty(),
        "the page token is not in the URL"
    );
    assert_eq!(
        calls[1].authorization.as_deref(),
        Some("Bearer fb-page-token")
    );
    assert!(
        calls[1].body["message"]["text"]
            .as_str()
            .expect("t")
            .chars()
            .count()
            <= 2000
    );

    // Delivery then read receipts move the message forward.
    let delivered = serde_json::to_vec(&json!({
        "object": "page",
        "entry": [{ "id": "123123123", "time": 1, "messaging": [
            { "sender": {"id": "123123123"}, "recipient": {"id": "123123123"},
              "delivery": { "mids": [ids[0]], "watermark": 1 } }
        ]}]
    }))
    .expect("json");
    let (_, reply) = gw.messenger(FB_SECRET, &delivered).await;
    assert_eq!(reply["receipts"], 1, "{reply}");
    assert_eq!(
        status_of(&gw, &message.id).await.delivery_status,
        Some(DeliveryStatus::Delivered)
    );
    let read = serde_json::to_vec(&json!({
        "object": "page",
        "entry": [{ "id": "123123123", "time": 1, "messaging": [
            { "sender": {"id": "123123123"}, "recipient": {"id": "123123123"}, "timestamp": 2,
              "read": { "watermark": chrono::Utc::now().timestamp_millis() + 60_000 } }
        ]}]
    }))
    .expect("json");
    gw.messenger(FB_SECRET, &read).await;
    assert_eq!(
        status_of(&gw, &message.id).await.delivery_status,
        Some(DeliveryStatus::Read)
    );

    frontdesk::delivery::typing(&gw.server.app, &message.conversation_id).await;
    assert_eq!(
        gw.graph.calls("/me/messages").last().expect("typing").body["sender_action"],
        "typing_on"
    );
    gw.stop().await;
}

/// Sends a request head declaring `declared` body bytes, then only `sent`
/// of them, and reads what the server answers without the rest.
async fn answer_to_partial_body(gw: &Gateway, path: &str, declared: usize, sent: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gw.server.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {declared}\r\n\r\n",
        gw.server.addr
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&vec![b'a'; sent]).await.expect("body");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer without the rest of the body")
        .expect("read");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_expensive_happens_before_verification() {
    let test_db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let gw = Gateway::start(test_db).await;

    // A 30 MiB email to an unknown account: 404 with 1 KiB of it sent.
    for path in ["/webhooks/email/no-such", "/webhooks/email/no-such/mime"] {
        let answer = answer_to_partial_body(&gw, path, 30 << 20, 1024).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
    }
    // To a known account, over the limit by its Content-Length: 413 unread.
    let answer = answer_to_partial_body(&gw, "/webhooks/email/shop-mail", 40 << 20, 1024).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A Messenger body just under 2 MiB naming 120,000 distinct pages,
    // unsigned: refused as a whole, no page looked up.
    let mut entries = Vec::new();
    let mut body = String::new();
    for i in 0.. {
        entries.push(format!(r#"{{"id":"{i}"}}"#));
        if i % 1000 == 0 {
            body = format!(r#"{{"object":"page","entry":[{}]}}"#, entries.join(","));
            if body.len() > (2 << 20) - 20_000 {
                break;
            }
        }
    }
    assert!(entries.len() > 120_000, "{}", entries.len());
    let (status, reply) = gw
        .post(
            "/webhooks/messenger",
            &[
                ("content-type", "application/json"),
                ("x-hub-signature-256", "sha256=00"),
            ],
            body,
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("more than 100 distinct page ids")),
        "{reply}"
    );
    // The known page with a forged signature: 401; the server still answers.
    let forged =
        json!({ "object": "page", "entry": [{ "id": "123123123", "time": 1, "messaging": [] }] });
    let (status, _) = gw
        .messenger("wrong secret", forged.to_string().as_bytes())
        .await;
    assert_eq!(status, 401);
    let health = gw
        .http
        .get(gw.server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    gw.stop().await;
}
