//! The model usage log end to end: customer messages through signed
//! Telegram webhooks to a real server with its worker, a local
//! OpenAI-compatible model server that reports `usage` or not, then the
//! stored rows and `GET /api/v1/usage` — exact reported counts, estimated
//! ones marked, extractive turns at zero cost, costs from `llm.prices`,
//! and the refusals.

use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use store::db_run;
use store::models::conversation::{Conversation, ConversationFilter};
use store::models::customer::Customer;
use store::models::message::{Direction, Message};
use store::models::usage::Usage;
use store::models::user::Role;
use store::models::workspace::Workspace;
use store::settings::ModelPrice;

use crate::agents::{call, login, member};
use crate::both_backends;
use crate::common::fakes::{FakeLlm, FakePlatform, LlmBehaviour};
use crate::common::{TestDb, TestServer, until_turns_done};

/// A bot on its own Telegram account; `{extra}` adds its handoff and model.
fn bot(name: &str, telegram_id: u32, extra: &str) -> String {
    format!(
        "workspace = \"acme\"\nname = \"{name}\"\nsystem_prompt = \"You help Acme's customers.\"\n\
         {extra}\n\
         [[channels]]\nkind = \"telegram\"\nid = \"acme-{name}\"\n\
         bot_token = \"{telegram_id}:{name}\"\nsecret_token = \"tg-secret\"\n"
    )
}

/// The model bot answers whatever it is asked (`ai_generate`: there is no
/// knowledge); `unpriced` uses a model without a price; `faq` is extractive.
fn write_bots(db: &TestDb) {
    let model = |m: &str| {
        format!(
            "[handoff]\non_unknown = \"ai_generate\"\n[llm]\nprovider = \"openai\"\nmodel = \"{m}\"\n"
        )
    };
    db.write_bot("gen.toml", &bot("gen", 4201, &model("fake-model")));
    db.write_bot(
        "unpriced.toml",
        &bot("unpriced", 4202, &model("unpriced-model")),
    );
    db.write_bot("faq.toml", &bot("faq", 4203, ""));
    db.write_bot(
        "other.toml",
        "workspace = \"other\"\nname = \"theirs\"\nsystem_prompt = \"x\"\n",
    );
}

/// Price of `fake-model` per million tokens.
const PROMPT_PRICE: f64 = 2.0;
const COMPLETION_PRICE: f64 = 10.0;

struct Shop {
    server: TestServer,
    telegram: FakePlatform,
    llm: FakeLlm,
    admin: String,
    workspace_id: String,
    /// Where the tokenizer is (the estimate's, when it is not installed).
    model_dir: std::path::PathBuf,
}

async fn open(db: &TestDb) -> Shop {
    write_bots(db);
    let telegram = FakePlatform::start().await;
    let llm = FakeLlm::start(LlmBehaviour::Stream(vec![
        "Returns are free ".into(),
        "within 30 days.".into(),
    ]))
    .await;
    let mut settings = db.settings();
    if let Some(dir) = knowledge::embed::default_model_dir() {
        settings.embedding.model_dir = dir;
    }
    let model_dir = settings.embedding.model_dir.clone();
    settings.channels.telegram.api_base = telegram.url.clone();
    settings.llm.base_url = Some(llm.url.clone());
    settings.llm.retries = 0;
    settings.worker.debounce_ms = 0;
    settings.llm.prices.0.insert(
        "fake-model".into(),
        ModelPrice {
            prompt_per_million: PROMPT_PRICE,
            completion_per_million: COMPLETION_PRICE,
        },
    );
    let server = TestServer::with_worker(settings, &[], "usage").await;
    member(&server.app, "acme", "admin@acme.test", Role::Admin).await;
    member(&server.app, "acme", "agent@acme.test", Role::Agent).await;
    let admin = login(&server, "admin@acme.test").await;
    let mut conn = server.app.db.get().await.expect("conn");
    let workspace_id = Workspace::ensure(&mut conn, "acme").await.expect("ws").id;
    drop(conn);
    Shop {
        server,
        telegram,
        llm,
        admin,
        workspace_id,
        model_dir,
    }
}

impl Shop {
    /// Customer `chat` writes `text` to bot `name`; returns once the turn
    /// is done.
    async fn says(&self, name: &str, chat: i64, text: &str) {
        let update = json!({
            "update_id": chat,
            "message": {
                "message_id": chat, "date": 1, "text": text,
                "chat": { "id": chat, "type": "private" },
                "from": { "id": chat, "first_name": "C" }
            }
        });
        let res = reqwest::Client::new()
            .post(self.server.url(&format!("/webhooks/telegram/acme-{name}")))
            .header("x-telegram-bot-api-secret-token", "tg-secret")
            .json(&update)
            .send()
            .await
            .expect("webhook");
        assert_eq!(res.status(), 200);
        until_turns_done(&self.server.app).await;
    }

    /// The usage row of Telegram chat `chat`'s turn (waiting for it: it is
    /// written after the turn), with the customer message it answered.
    async fn row_of(&self, chat: i64) -> (Usage, Message) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut conn = self.server.app.db.get().await.expect("conn");
            let conversations = Conversation::page(
                &mut conn,
                &self.workspace_id,
                &ConversationFilter::default(),
                100,
            )
            .await
            .expect("conversations");
            for c in conversations {
                let customer = Customer::find_by_id(&mut conn, &c.customer_id)
                    .await
                    .expect("customer")
                    .expect("exists");
                if customer.external_user_id != chat.to_string() {
                    continue;
                }
                let rows = Usage::of_conversation(&mut conn, &c.id)
                    .await
                    .expect("rows");
                if let [row] = rows.as_slice() {
                    let asked = Message::before(&mut conn, &c.id, i64::MAX, 40)
                        .await
                        .expect("messages")
                        .into_iter()
                        .find(|m| m.direction == Direction::Inbound)
                        .expect("the customer's message");
                    return (row.clone(), asked);
                }
                assert!(rows.len() < 2, "one row per turn: {rows:?}");
            }
            assert!(Instant::now() < deadline, "no usage row for chat {chat}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn usage(&self, query: &str) -> (u16, Value) {
        call(
            &self.server,
            Some(&self.admin),
            "GET",
            &format!("/usage{query}"),
            None,
        )
        .await
    }

    async fn finish(self) {
        self.server.stop().await;
        self.telegram.stop().await;
        self.llm.stop().await;
    }
}

fn cost_of(prompt: i64, completion: i64) -> f64 {
    (prompt as f64 * PROMPT_PRICE + completion as f64 * COMPLETION_PRICE) / 1e6
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

async fn usage_log(db: TestDb) {
    let shop = open(&db).await;

    // 1. The server reports usage, in the last chunk of the stream.
    shop.llm.report_usage(Some((120, 8)));
    shop.says("gen", 1, "How long do I have to return a bike?")
        .await;
    let (reported, asked) = shop.row_of(1).await;
    let streamed = shop.llm.requests()[0].clone();
    assert_eq!(streamed["stream"], true);
    assert_eq!(streamed["stream_options"], json!({ "include_usage": true }));
    assert_eq!(reported.message_id.as_deref(), Some(asked.id.as_str()));
    assert_eq!(reported.conversation_id, asked.conversation_id);
    assert_eq!(
        (reported.provider.as_str(), reported.model.as_deref()),
        ("openai", Some("fake-model"))
    );
    assert_eq!(reported.calls, 1);
    assert_eq!(
        (reported.prompt_tokens, reported.completion_tokens),
        (120, 8)
    );
    assert!(!reported.estimated);
    assert!(reported.latency_ms > 0, "{reported:?}");
    assert!(close(reported.cost.expect("priced"), cost_of(120, 8)));

    // 2. A customer asking for a person: no answer, but the handoff's
    //    triage asks the model (a whole answer, usage beside it).
    shop.llm.report_usage(Some((50, 5)));
    shop.says("gen", 2, "I want to talk to a human please")
        .await;
    let (triage, _) = shop.row_of(2).await;
    let asked_whole = shop.llm.requests()[1].clone();
    assert_eq!(asked_whole["stream"], false, "the triage call");
    assert_eq!(triage.calls, 1);
    assert_eq!((triage.prompt_tokens, triage.completion_tokens), (50, 5));
    assert!(close(triage.cost.expect("priced"), cost_of(50, 5)));

    // 3. No usage reported: counted with the tokenizer, marked estimated.
    shop.llm.report_usage(None);
    shop.says("gen", 3, "Can I return a helmet I already wore?")
        .await;
    let (estimated, _) = shop.row_of(3).await;
    assert!(estimated.estimated);
    assert_eq!(estimated.calls, 1);
    let counter =
        knowledge::embed::TokenCounter::load(&knowledge::models::ModelPaths::new(&shop.model_dir));
    let sent = shop.llm.requests()[2]["messages"].clone();
    let sent = sent.as_array().expect("messages");
    let prompt: usize = sent
        .iter()
        .map(|m| counter.count(m["content"].as_str().expect("content")) + 4)
        .sum();
    let completion = counter.count("Returns are free within 30 days.");
    assert_eq!(
        (estimated.prompt_tokens, estimated.completion_tokens),
        (prompt as i64, completion as i64),
        "counted with the tokenizer, 4 more per message"
    );
    assert!(prompt > 8 && completion > 0);
    let estimated_cost = cost_of(estimated.prompt_tokens, estimated.completion_tokens);
    assert!(close(estimated.cost.expect("priced"), estimated_cost));

    // 4. A model without a price: no cost, not zero.
    shop.llm.report_usage(Some((30, 3)));
    shop.says("unpriced", 4, "Do you ship to Norway?").await;
    let (unpriced, _) = shop.row_of(4).await;
    assert_eq!(unpriced.model.as_deref(), Some("unpriced-model"));
    assert_eq!(
        (unpriced.prompt_tokens, unpriced.completion_tokens),
        (30, 3)
    );
    assert_eq!(unpriced.cost, None);

    // 5. An extractive bot (no knowledge: it hands off): a zero-cost turn.
    shop.says("faq", 5, "Where is my order?").await;
    let (extractive, _) = shop.row_of(5).await;
    assert_eq!(
        (extractive.provider.as_str(), extractive.model.as_deref()),
        ("extractive", None)
    );
    assert_eq!(
        (
            extractive.calls,
            extractive.prompt_tokens,
            extractive.completion_tokens,
            extractive.latency_ms
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(extractive.cost, Some(0.0));
    assert_eq!(
        shop.llm.requests().len(),
        4,
        "the extractive bot asked no model"
    );

    // The report: totals, the day, the models.
    let (status, report) = shop.usage("").await;
    assert_eq!(status, 200, "{report}");
    let totals = &report["totals"];
    assert_eq!(totals["turns"], 5, "{report}");
    assert_eq!(totals["model_turns"], 4);
    assert_eq!(totals["estimated_turns"], 1);
    assert_eq!(
        totals["prompt_tokens"],
        120 + 50 + estimated.prompt_tokens + 30
    );
    assert_eq!(
        totals["completion_tokens"],
        8 + 5 + estimated.completion_tokens + 3
    );
    let known = cost_of(120, 8) + cost_of(50, 5) + estimated_cost;
    assert!(
        close(totals["cost"].as_f64().expect("cost"), known),
        "{totals}"
    );
    assert_eq!(totals["cost_incomplete"], true, "the unpriced turn");
    let p50 = totals["latency_ms"]["p50"].as_f64().expect("p50");
    let p90 = totals["latency_ms"]["p90"].as_f64().expect("p90");
    assert!(p50 > 0.0 && p90 >= p50, "{totals}");

    let series = report["series"].as_array().expect("series");
    assert!(series.len() >= 30, "30 days by default: {}", series.len());
    let today = chrono::Utc::now().date_naive().to_string();
    let day = series.last().expect("today");
    assert_eq!(day["start"], today.as_str());
    let turns: u64 = series.iter().map(|d| d["turns"].as_u64().expect("n")).sum();
    assert_eq!(turns, 5);
    assert_eq!(day["prompt_tokens"], totals["prompt_tokens"]);

    let models: Vec<(Value, Value, Value, Value)> = report["by_model"]
        .as_array()
        .expect("by_model")
        .iter()
        .map(|m| {
            (
                m["provider"].clone(),
                m["model"].clone(),
                m["turns"].clone(),
                m["cost_incomplete"].clone(),
            )
        })
        .collect();
    assert_eq!(
        models,
        [
            (json!("extractive"), Value::Null, json!(1), json!(false)),
            (json!("openai"), json!("fake-model"), json!(3), json!(false)),
            (
                json!("openai"),
                json!("unpriced-model"),
                json!(1),
                json!(true)
            ),
        ]
    );

    // One bot; a bot of another workspace is not found.
    let (_, faq) = shop.usage(&format!("?bot_id={}", extractive.bot_id)).await;
    assert_eq!(faq["totals"]["turns"], 1);
    assert_eq!(faq["totals"]["cost"], 0.0);
    assert_eq!(faq["totals"]["cost_incomplete"], false);
    let theirs = {
        let mut conn = shop.server.app.db.get().await.expect("conn");
        let other = Workspace::ensure(&mut conn, "other").await.expect("ws");
        store::models::bot::Bot::find(&mut conn, &other.id, "theirs")
            .await
            .expect("q")
            .expect("bot")
    };
    let (status, _) = shop.usage(&format!("?bot_id={}", theirs.id)).await;
    assert_eq!(status, 404);

    // An empty range is zeros; bad ranges are refused naming the parameter.
    let (status, empty) = shop
        .usage("?from=2020-01-01T00:00:00Z&to=2020-01-03T00:00:00Z")
        .await;
    assert_eq!(status, 200);
    assert_eq!(empty["totals"]["turns"], 0);
    assert_eq!(empty["totals"]["cost"], 0.0);
    assert_eq!(
        empty["totals"]["latency_ms"],
        json!({ "p50": null, "p90": null })
    );
    assert_eq!(empty["series"].as_array().expect("days").len(), 2);
    assert_eq!(empty["by_model"], json!([]));
    for (query, named) in [
        ("?from=yesterday", "from"),
        ("?to=2026-13-01T00:00:00Z", "to"),
        ("?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
        (
            "?from=2000-01-01T00:00:00Z&to=2026-12-01T00:00:00Z",
            "from/to",
        ),
    ] {
        let (status, body) = shop.usage(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.starts_with(named), "{query}: {message}");
    }

    // Admins only.
    let agent = login(&shop.server, "agent@acme.test").await;
    let (status, _) = call(&shop.server, Some(&agent), "GET", "/usage", None).await;
    assert_eq!(status, 403);
    shop.finish().await;
}

both_backends! {
    usage_log_on => usage_log;
}

/// A usage row that cannot be written is logged; the turn is answered all
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_usage_log_never_fails_the_turn() {
    let db = TestDb::new(crate::common::Backend::Sqlite)
        .await
        .expect("sqlite");
    let shop = open(&db).await;
    let mut conn = shop.server.app.db.get().await.expect("conn");
    db_run!(conn: {
        diesel::sql_query("DROP TABLE model_usage")
            .execute(conn)
            .await
            .expect("drop the table")
    });
    drop(conn);
    shop.says("gen", 7, "How long do I have to return a bike?")
        .await;
    let sent = shop.telegram.calls("/sendMessage");
    assert!(
        sent.iter().any(|c| c.body["text"]
            .as_str()
            .is_some_and(|t| t.contains("30 days"))),
        "answered: {sent:?}"
    );
    shop.finish().await;
}
