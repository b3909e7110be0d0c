//! What the business learns from its bot, end to end: customers write on
//! Telegram (signed webhooks, a local fake of the Bot API) to a bot with
//! its own knowledge; it answers what it knows and hands off the rest.
//! Then the analytics match what was sent, the questions it could not
//! answer are knowledge gaps (grouped, requests for a person left out),
//! answering a gap makes the bot answer that question, and an escalation
//! shows the earlier resolved case like it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::agents::{call, login, member};
use crate::both_backends;
use crate::common::fakes::FakePlatform;
use crate::common::{TestDb, TestServer, until_turns_done};
use store::models::bot::Bot;
use store::models::user::Role;
use store::models::workspace::Workspace;

const BAKERY: &str = r#"
workspace = "bakery"
name = "crumb"
system_prompt = "You are the bakery's assistant."
language = "en"

[handoff]
on_unknown = "fallback_message"
fallback_message = "Let me find a baker who can help you with that."

[[channels]]
kind = "telegram"
id = "crumb-tg"
bot_token = "5151:crumb-token"
secret_token = "crumb-secret"
"#;

const OTHER: &str = r#"
workspace = "elsewhere"
name = "theirs"
system_prompt = "You help."
"#;

const KNOWLEDGE: &str = "# Opening hours\n\n\
The bakery is open Tuesday to Saturday from 7 am to 6 pm. On Sundays we open from 8 am to noon. \
We are closed on Mondays.\n\n\
# Sourdough\n\n\
Our sourdough bread is baked every morning with a starter we have kept alive since 1987. \
A large loaf costs 65 SEK and a small loaf 40 SEK.\n\n\
# Allergies\n\n\
All our breads contain gluten. The almond croissants contain nuts. \
Ask at the counter for the full list of allergens of every product.\n";

/// Answered from the knowledge, with a phrase the reply must contain.
const IN_SCOPE: [(&str, &str); 3] = [
    ("When are you open on Sundays?", "8 am to noon"),
    ("How much does a large sourdough loaf cost?", "65 SEK"),
    ("Do the almond croissants contain nuts?", "contain nuts"),
];

/// Nothing in the knowledge answers these. The first two ask one thing.
const OUT_OF_SCOPE: [&str; 4] = [
    "Do you deliver wedding cakes to Malmö?",
    "Can you deliver a wedding cake to Malmö?",
    "Can I pay with an invoice for my company order?",
    "Is there parking for electric cars near your shop?",
];

const FOR_A_PERSON: &str = "I want to talk to a human, please";

const GAP_ANSWER: &str =
    "Yes: we deliver wedding cakes to Malmö on Saturdays, for a fee of 300 SEK.";

struct Bakery {
    server: TestServer,
    telegram: FakePlatform,
    bot: Bot,
    admin: String,
    http: reqwest::Client,
    update: std::sync::atomic::AtomicI64,
}

impl Bakery {
    async fn says(&self, chat: i64, text: &str) {
        let n = self
            .update
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let body = json!({
            "update_id": n,
            "message": {
                "message_id": n, "date": 1, "text": text,
                "chat": { "id": chat, "type": "private" },
                "from": { "id": chat, "first_name": format!("Kim {chat}") }
            }
        });
        let res = self
            .http
            .post(self.server.url("/webhooks/telegram/crumb-tg"))
            .header("x-telegram-bot-api-secret-token", "crumb-secret")
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 200);
    }

    /// What the bot sent to `chat`, joined.
    fn sent_to(&self, chat: i64) -> String {
        self.telegram
            .calls("/sendMessage")
            .iter()
            .filter(|c| c.body["chat_id"].as_i64() == Some(chat))
            .filter_map(|c| c.body["text"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.server, Some(&self.admin), method, path, body).await
    }

    /// The conversation of Telegram chat `chat` (its latest).
    async fn conversation_of(&self, chat: i64) -> Value {
        let (status, list) = self
            .api(
                "GET",
                &format!("/conversations?bot_id={}&limit=200", self.bot.id),
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        let id = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|c| c["customer"]["display_name"] == json!(format!("Kim {chat}")))
            .unwrap_or_else(|| panic!("no conversation of chat {chat}: {list}"))["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let (status, detail) = self.api("GET", &format!("/conversations/{id}"), None).await;
        assert_eq!(status, 200, "{detail}");
        detail
    }
}

async fn bakery(db: &TestDb) -> Option<Bakery> {
    let models = crate::knowledge::model_dir()?;
    db.write_bot("bakery.toml", BAKERY);
    db.write_bot("other.toml", OTHER);
    let telegram = FakePlatform::start().await;
    let mut settings = db.settings();
    settings.worker.debounce_ms = 0;
    settings.embedding.model_dir = models;
    settings.channels.telegram.api_base = telegram.url.clone();
    let server = TestServer::with_worker(settings, &[], "w").await;
    let app = &server.app;
    let bot = {
        let mut conn = app.db.get().await.expect("conn");
        let ws = Workspace::ensure(&mut conn, "bakery").await.expect("ws");
        Bot::find(&mut conn, &ws.id, "crumb")
            .await
            .expect("q")
            .expect("bot")
    };
    app.knowledge
        .ingest_bytes(
            &app.db,
            &bot,
            "bakery.md",
            "bakery.md",
            KNOWLEDGE.as_bytes().to_vec(),
            &frontdesk::kb::Quiet,
        )
        .await
        .expect("knowledge");
    member(app, "bakery", "owner@bakery.test", Role::Owner).await;
    let admin = login(&server, "owner@bakery.test").await;
    Some(Bakery {
        server,
        telegram,
        bot,
        admin,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        update: std::sync::atomic::AtomicI64::new(1),
    })
}

async fn gaps_end_to_end(db: TestDb) {
    let Some(shop) = bakery(&db).await else {
        return;
    };
    let app = shop.server.app.clone();

    // One conversation per question, each from its own chat.
    let mut chat = 100;
    for (question, _) in IN_SCOPE {
        chat += 1;
        shop.says(chat, question).await;
    }
    for question in OUT_OF_SCOPE {
        chat += 1;
        shop.says(chat, question).await;
    }
    chat += 1;
    shop.says(chat, FOR_A_PERSON).await;
    until_turns_done(&app).await;
    for (i, (question, expected)) in IN_SCOPE.iter().enumerate() {
        let sent = shop.sent_to(101 + i as i64);
        assert!(sent.contains(expected), "{question} → {sent}");
    }
    for (i, question) in OUT_OF_SCOPE.iter().enumerate() {
        let sent = shop.sent_to(104 + i as i64);
        assert!(sent.contains("find a baker"), "{question} → {sent}");
    }

    // The analytics count exactly what was sent.
    let (status, report) = shop
        .api("GET", &format!("/analytics?bot_id={}", shop.bot.id), None)
        .await;
    assert_eq!(status, 200, "{report}");
    let totals = &report["totals"];
    let sent = IN_SCOPE.len() + OUT_OF_SCOPE.len() + 1;
    assert_eq!(totals["conversations"], json!(sent), "{totals}");
    assert_eq!(totals["customer_messages"], json!(sent), "{totals}");
    assert_eq!(totals["answered_by_bot"], json!(IN_SCOPE.len()), "{totals}");
    assert_eq!(
        totals["handed_off"],
        json!(OUT_OF_SCOPE.len() + 1),
        "{totals}"
    );
    let rate = totals["deflection_rate"].as_f64().expect("rate");
    assert!(
        (rate - IN_SCOPE.len() as f64 / sent as f64).abs() < 1e-9,
        "{totals}"
    );
    for p in ["p50", "p90"] {
        let secs = totals["first_response_seconds"][p]
            .as_f64()
            .expect("seconds");
        assert!(secs > 0.0 && secs < 60.0, "{totals}");
    }

    // The gaps: the two phrasings of the cake question are one gap, the
    // request for a person is none.
    let (status, gaps) = shop
        .api(
            "GET",
            &format!("/knowledge/gaps?bot_id={}", shop.bot.id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{gaps}");
    let items = gaps["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 3, "{gaps}");
    // Turns of different conversations run in any order: either phrasing
    // may come first and name the gap.
    let cake = items
        .iter()
        .find(|g| OUT_OF_SCOPE[..2].contains(&g["question"].as_str().unwrap_or_default()))
        .unwrap_or_else(|| panic!("the cake question is a gap: {gaps}"));
    assert_eq!(cake["count"], 2, "{cake}");
    let mut examples: Vec<&str> = cake["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    examples.sort_unstable();
    let mut phrasings = OUT_OF_SCOPE[..2].to_vec();
    phrasings.sort_unstable();
    assert_eq!(examples, phrasings, "{cake}");
    assert!(cake["last_seen"].is_string(), "{cake}");
    assert_eq!(items[0]["id"], cake["id"], "the most asked first: {gaps}");
    for question in &OUT_OF_SCOPE[2..] {
        assert!(
            items
                .iter()
                .any(|g| g["question"] == *question && g["count"] == 1),
            "{question} is a gap: {gaps}"
        );
    }
    assert!(
        !items.iter().any(|g| g["question"] == FOR_A_PERSON),
        "{gaps}"
    );

    // Refusals.
    let gap_path = format!(
        "/knowledge/gaps/{}/answer",
        cake["id"].as_str().expect("id")
    );
    for (body, needle) in [
        (json!({ "answer": "  " }), "answer must not be empty"),
        (
            json!({ "answer": "x".repeat(4001) }),
            "at most 4000 characters",
        ),
    ] {
        let (status, error) = shop.api("POST", &gap_path, Some(body)).await;
        assert_eq!(status, 400, "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{error}"
        );
    }
    let (status, _) = shop
        .api(
            "POST",
            "/knowledge/gaps/no-such-gap/answer",
            Some(json!({ "answer": GAP_ANSWER })),
        )
        .await;
    assert_eq!(status, 404);
    let (status, error) = shop.api("GET", "/knowledge/gaps?status=closed", None).await;
    assert_eq!(status, 400, "{error}");
    member(&app, "elsewhere", "owner@elsewhere.test", Role::Owner).await;
    let stranger = login(&shop.server, "owner@elsewhere.test").await;
    let (status, _) = call(
        &shop.server,
        Some(&stranger),
        "POST",
        &gap_path,
        Some(json!({ "answer": GAP_ANSWER })),
    )
    .await;
    assert_eq!(
        status, 404,
        "a gap of another workspace does not exist there"
    );
    let (status, theirs) = call(
        &shop.server,
        Some(&stranger),
        "GET",
        "/knowledge/gaps",
        None,
    )
    .await;
    assert_eq!((status, theirs["items"].clone()), (200, json!([])));

    // Answering the gap: an FAQ document, searchable when the 201 comes.
    let (status, answered) = shop
        .api("POST", &gap_path, Some(json!({ "answer": GAP_ANSWER })))
        .await;
    assert_eq!(status, 201, "{answered}");
    assert!(answered["gap"]["answered_at"].is_string(), "{answered}");
    let document_id = answered["document"]["id"]
        .as_str()
        .expect("document")
        .to_owned();
    assert_eq!(answered["gap"]["document_id"], json!(document_id));
    let (_, documents) = shop
        .api("GET", &format!("/bots/{}/documents", shop.bot.id), None)
        .await;
    assert!(
        documents["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|d| d["id"] == json!(document_id)),
        "{documents}"
    );
    let (_, open) = shop
        .api(
            "GET",
            &format!("/knowledge/gaps?bot_id={}", shop.bot.id),
            None,
        )
        .await;
    assert_eq!(open["items"].as_array().expect("items").len(), 2, "{open}");
    chat += 1;
    let asks_again = chat;
    shop.says(asks_again, OUT_OF_SCOPE[0]).await;
    until_turns_done(&app).await;
    let sent = shop.sent_to(asks_again);
    assert!(
        sent.contains(GAP_ANSWER),
        "answered from the gap's answer: {sent}"
    );
    // Its document deleted, the gap is open again; answered again, closed.
    let (status, _) = shop
        .api(
            "DELETE",
            &format!("/bots/{}/documents/{document_id}", shop.bot.id),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, open) = shop
        .api(
            "GET",
            &format!("/knowledge/gaps?bot_id={}", shop.bot.id),
            None,
        )
        .await;
    assert_eq!(open["items"].as_array().expect("items").len(), 3, "{open}");
    let (status, _) = shop
        .api("POST", &gap_path, Some(json!({ "answer": GAP_ANSWER })))
        .await;
    assert_eq!(status, 201);

    // An agent answers the parking question and resolves it; the next
    // customer asking it shows that case beside the escalation.
    let parking = shop.conversation_of(107).await;
    let parking_id = parking["id"].as_str().expect("id").to_owned();
    assert_eq!(parking["handoff"]["similar"], json!([]), "{parking}");
    let agent_reply = "There are two chargers in the car park behind the shop.";
    let (status, _) = shop
        .api(
            "POST",
            &format!("/conversations/{parking_id}/reply"),
            Some(json!({ "text": agent_reply })),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = shop
        .api(
            "POST",
            &format!("/conversations/{parking_id}/resolve"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    chat += 1;
    shop.says(chat, "Where can I charge my electric car near the bakery?")
        .await;
    until_turns_done(&app).await;
    let next = shop.conversation_of(chat).await;
    assert_eq!(next["status"], "pending_handoff", "{next}");
    let similar = next["handoff"]["similar"]
        .as_array()
        .expect("similar")
        .clone();
    assert_eq!(similar.len(), 1, "{next}");
    assert_eq!(similar[0]["conversation_id"], json!(parking_id));
    assert_eq!(similar[0]["question"], OUT_OF_SCOPE[3]);
    assert_eq!(similar[0]["reply"], agent_reply);
    assert!(similar[0]["score"].as_f64().expect("score") > 0.0);

    shop.server.stop().await;
    shop.telegram.stop().await;
}

both_backends! {
    gaps_are_found_answered_and_remembered => gaps_end_to_end;
}
