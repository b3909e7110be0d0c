//! `GET /api/v1/analytics` end to end: a known set of conversations
//! (customer messages through ingest; bot and agent replies and handoffs
//! stored as the worker and the console store them), then exact totals,
//! series that sum to them, and the refusals.

use serde_json::{Value, json};

use crate::agents::{call, login, member};
use crate::both_backends;
use crate::common::{TestDb, TestServer};
use store::models::bot::Bot;
use store::models::conversation::{Conversation, ConversationFilter};
use store::models::customer::Customer;
use store::models::message::{AuthorKind, Direction, Message, NewMessage};
use store::models::user::Role;
use store::models::workspace::Workspace;

const ACME: &str = r#"
workspace = "acme"
name = "help"
system_prompt = "You help."

[[channels]]
kind = "telegram"
id = "acme-tg"
bot_token = "4242:tg-token"
secret_token = "tg-secret"
"#;

const OTHER: &str = r#"
workspace = "other"
name = "theirs"
system_prompt = "You help others."
"#;

/// A customer message from Telegram chat `chat`, through ingest.
async fn customer_says(app: &frontdesk::context::App, chat: i64, n: usize, text: &str) {
    let route = app
        .accounts
        .by_public_id(&app.db, &app.master_key, "acme-tg")
        .await
        .expect("accounts")
        .expect("account");
    let event = channels::RoutedEvent {
        account: None,
        event: channels::InboundEvent::Message(channels::InboundMessage {
            external_id: format!("{chat}:{n}"),
            sender: channels::Sender {
                external_id: chat.to_string(),
                display_name: Some(format!("Customer {chat}")),
            },
            text: text.to_owned(),
            origin: channels::Origin::Text,
            attachments: Vec::new(),
            sent_at: None,
            reply_to: None,
            email: None,
        }),
    };
    frontdesk::ingest::ingest(app, &route.account, &route.workspace_id, vec![event])
        .await
        .expect("ingest");
}

/// The open conversation of Telegram chat `chat`.
async fn conversation_of(
    app: &frontdesk::context::App,
    workspace_id: &str,
    chat: i64,
) -> Conversation {
    let mut conn = app.db.get().await.expect("conn");
    let all = Conversation::page(&mut conn, workspace_id, &ConversationFilter::default(), 100)
        .await
        .expect("conversations");
    for c in all {
        let customer = Customer::find_by_id(&mut conn, &c.customer_id)
            .await
            .expect("customer")
            .expect("exists");
        if customer.external_user_id == chat.to_string() {
            return c;
        }
    }
    panic!("no conversation of chat {chat}");
}

/// Stores an outbound reply as the worker (bot) or the console (agent) does.
async fn reply(
    app: &frontdesk::context::App,
    c: &Conversation,
    author: AuthorKind,
    agent: Option<&str>,
    metadata: Option<&str>,
) {
    let mut conn = app.db.get().await.expect("conn");
    Message::insert(
        &mut conn,
        &NewMessage {
            conversation_id: &c.id,
            channel_account_id: &c.channel_account_id,
            direction: Direction::Outbound,
            author_kind: author,
            author_user_id: agent,
            body: "a reply",
            external_id: None,
            metadata,
        },
    )
    .await
    .expect("reply");
}

async fn hand_off(
    app: &frontdesk::context::App,
    c: &Conversation,
    reason: frontdesk::handoff::Reason,
) {
    let request = frontdesk::handoff::Request {
        reason,
        detail: None,
        question: "where is my order?".into(),
        triage: answer::triage::by_rules("where is my order?", None),
        draft: String::new(),
        sources: Vec::new(),
        confidence: 0.1,
        requested_by: None,
    };
    frontdesk::handoff::request(app, &c.id, request)
        .await
        .expect("handoff")
        .expect("the bot had it");
}

fn sum(series: &Value, field: &str) -> u64 {
    series
        .as_array()
        .expect("series")
        .iter()
        .map(|b| b[field].as_u64().expect("count"))
        .sum()
}

fn positive_fraction(v: &Value) -> f64 {
    assert!(v.is_f64(), "fractional seconds: {v}");
    let secs = v.as_f64().expect("number");
    assert!(secs > 0.0 && secs < 600.0, "{secs}");
    secs
}

fn assert_zeros(figures: &Value) {
    for field in [
        "conversations",
        "customer_messages",
        "answered_by_bot",
        "handed_off",
        "choices_offered",
        "choices_taken",
    ] {
        assert_eq!(figures[field], 0, "{field}: {figures}");
    }
    assert_eq!(figures["deflection_rate"], 0.0);
    assert_eq!(figures["handoff_reasons"], json!({}));
    assert_eq!(
        figures["first_response_seconds"],
        json!({ "p50": null, "p90": null })
    );
}

async fn analytics_report(db: TestDb) {
    db.write_bot("acme.toml", ACME);
    db.write_bot("other.toml", OTHER);
    let server = TestServer::start(db.settings(), &[]).await;
    let app = &server.app;
    member(app, "acme", "admin@acme.test", Role::Admin).await;
    let agent_user = member(app, "acme", "agent@acme.test", Role::Agent).await;
    let admin = login(&server, "admin@acme.test").await;
    let agent = login(&server, "agent@acme.test").await;
    let (acme, bot, theirs) = {
        let mut conn = app.db.get().await.expect("conn");
        let acme = Workspace::ensure(&mut conn, "acme").await.expect("ws");
        let other = Workspace::ensure(&mut conn, "other").await.expect("ws");
        let bot = Bot::find(&mut conn, &acme.id, "help")
            .await
            .expect("q")
            .expect("bot");
        let theirs = Bot::find(&mut conn, &other.id, "theirs")
            .await
            .expect("q")
            .expect("bot");
        (acme, bot, theirs)
    };

    // 1: the bot answers.
    customer_says(app, 1, 1, "What are your opening hours?").await;
    let c1 = conversation_of(app, &acme.id, 1).await;
    reply(
        app,
        &c1,
        AuthorKind::Bot,
        None,
        Some(r#"{"answer":{"provider":"extractive"}}"#),
    )
    .await;
    // 2: the bot offers choices, the customer types "1", the bot answers.
    customer_says(app, 2, 1, "shipping").await;
    let c2 = conversation_of(app, &acme.id, 2).await;
    let offer = json!({
        "answer": { "decision": "choices" },
        "choices": { "token": "tok2", "question": "shipping", "options": [
            { "n": 1, "label": "Shipping times", "chunk_id": "c1" },
            { "n": 0, "label": "None of these" },
        ] },
    })
    .to_string();
    reply(app, &c2, AuthorKind::Bot, None, Some(&offer)).await;
    customer_says(app, 2, 2, "1").await;
    reply(app, &c2, AuthorKind::Bot, None, Some(r#"{"answer":{}}"#)).await;
    // 3: handed off for low confidence; the bot's notice, then an agent.
    customer_says(app, 3, 1, "my parcel is broken").await;
    let c3 = conversation_of(app, &acme.id, 3).await;
    hand_off(app, &c3, frontdesk::handoff::Reason::LowConfidence).await;
    reply(
        app,
        &c3,
        AuthorKind::Bot,
        None,
        Some(r#"{"notice":"low_confidence"}"#),
    )
    .await;
    reply(app, &c3, AuthorKind::Agent, Some(&agent_user.id), None).await;
    // 4: handed off on request, never replied to, resolved.
    customer_says(app, 4, 1, "I want a person").await;
    let c4 = conversation_of(app, &acme.id, 4).await;
    hand_off(app, &c4, frontdesk::handoff::Reason::Requested).await;
    frontdesk::handoff::resolve(app, &c4.id)
        .await
        .expect("resolve")
        .expect("resolved");

    // Default range (the last 30 days), by day.
    let (status, body) = call(&server, Some(&admin), "GET", "/analytics", None).await;
    assert_eq!(status, 200, "{body}");
    let totals = &body["totals"];
    assert_eq!(totals["conversations"], 4, "{totals}");
    assert_eq!(totals["customer_messages"], 5, "{totals}");
    assert_eq!(totals["answered_by_bot"], 2, "{totals}");
    assert_eq!(totals["handed_off"], 2, "{totals}");
    assert_eq!(
        totals["handoff_reasons"],
        json!({ "low_confidence": 1, "requested": 1 })
    );
    assert_eq!(totals["deflection_rate"], 0.5);
    assert_eq!(
        (
            totals["choices_offered"].as_u64(),
            totals["choices_taken"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let p50 = positive_fraction(&totals["first_response_seconds"]["p50"]);
    let p90 = positive_fraction(&totals["first_response_seconds"]["p90"]);
    assert!(p50 <= p90);
    positive_fraction(&totals["agent_first_response_seconds"]["p50"]);
    positive_fraction(&totals["resolution_seconds"]["p50"]);
    let series = &body["series"];
    let days = series.as_array().expect("series");
    assert!((30..=31).contains(&days.len()), "{}", days.len());
    for field in [
        "conversations",
        "customer_messages",
        "answered_by_bot",
        "handed_off",
    ] {
        assert_eq!(Some(sum(series, field)), totals[field].as_u64(), "{field}");
    }
    let start = days[0]["start"].as_str().expect("start");
    assert!(start.ends_with("T00:00:00Z"), "{start}");
    chrono::DateTime::parse_from_rfc3339(start).expect("RFC 3339");
    let today = days
        .iter()
        .find(|d| d["conversations"] != 0)
        .expect("a day with them");
    assert_eq!(today["handoff_reasons"], totals["handoff_reasons"]);

    // By week, for one bot and one channel: the same totals.
    let (status, weekly) = call(
        &server,
        Some(&admin),
        "GET",
        &format!(
            "/analytics?interval=week&bot_id={}&channel=telegram",
            bot.id
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{weekly}");
    assert_eq!(weekly["totals"], body["totals"]);
    assert_eq!(sum(&weekly["series"], "conversations"), 4);
    // Another channel: nothing.
    let (status, none) = call(
        &server,
        Some(&admin),
        "GET",
        "/analytics?channel=email",
        None,
    )
    .await;
    assert_eq!(status, 200, "{none}");
    assert_zeros(&none["totals"]);

    // Empty ranges: zeros, never an error.
    for range in [
        "from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00%2B02:00",
    ] {
        let (status, empty) = call(
            &server,
            Some(&admin),
            "GET",
            &format!("/analytics?{range}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{range}: {empty}");
        assert_zeros(&empty["totals"]);
        if range.starts_with("from=2026") {
            assert_eq!(empty["series"], json!([]), "{empty}");
        }
        for bucket in empty["series"].as_array().expect("series") {
            assert_zeros(bucket);
        }
    }

    // Bad input: 400 naming the parameter; unknown bots 404; agents 403.
    for (query, named) in [
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("interval=month", "interval"),
        ("channel=fax", "channel"),
        ("from=1990-01-01T00:00:00Z", "interval"),
    ] {
        let (status, error) = call(
            &server,
            Some(&admin),
            "GET",
            &format!("/analytics?{query}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}: {error}");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains(named), "{query}: {message}");
    }
    for bot_id in ["no-such-bot", theirs.id.as_str()] {
        let (status, error) = call(
            &server,
            Some(&admin),
            "GET",
            &format!("/analytics?bot_id={bot_id}"),
            None,
        )
        .await;
        assert_eq!(status, 404, "{bot_id}: {error}");
    }
    let (status, _) = call(&server, Some(&agent), "GET", "/analytics", None).await;
    assert_eq!(status, 403);

    server.stop().await;
}

both_backends! {
    analytics_totals_series_and_refusals => analytics_report;
}
