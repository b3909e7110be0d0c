//! WhatsApp and Instagram end to end, with Messenger's window rules: signed
//! webhooks from outside to a held-out bot with its own knowledge, the real
//! worker and extractive answerer, replies captured by a local fake of the
//! Graph API. The handshakes, redelivery, forged and malformed bodies,
//! every kind of event, statuses, "did you mean" buttons, failed sends and
//! the 24-hour window for the bot and for agents.
#![allow(clippy::needless_pass_by_value)] // payloads built inline with json!

use std::time::Duration;

use channels::ChannelKind;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use store::db_run;
use store::models::bot::Bot;
use store::models::channel_account::ChannelAccount;
use store::models::conversation::Conversation;
use store::models::message::{
    AuthorKind, DeliveryStatus, Direction, Inserted, Message, NewMessage,
};
use store::models::user::Role;
use store::models::workspace::Workspace;

use crate::agents::{call, login, member};
use crate::both_backends;
use crate::common::fakes::{FakePlatform, Recorded};
use crate::common::{TestDb, TestServer, until_turns_done};
use crate::webhooks::hmac_hex;

const BOT: &str = r#"
workspace = "kayaks"
name = "paddle"
system_prompt = "You are Lakeside Kayaks' assistant."
language = "en"

[handoff]
on_unknown = "fallback_message"
fallback_message = "Let me find someone from the boathouse to help you."

[[channels]]
kind = "whatsapp"
id = "paddle-wa"
phone_number_id = "106540352242922"
app_secret = "wa-app-secret"
access_token = "wa-token"
verify_token = "wa-verify"
reengage_template = "we_are_back"
reengage_language = "en_US"

[[channels]]
kind = "whatsapp"
id = "paddle-wa-2"
phone_number_id = "106540352242923"
app_secret = "wa-app-secret"
access_token = "wa-token-2"
verify_token = "wa-verify-2"

[[channels]]
kind = "instagram"
id = "paddle-ig"
ig_account_id = "17841400000000001"
app_secret = "ig-app-secret"
page_access_token = "ig-token"
verify_token = "ig-verify"

[[channels]]
kind = "messenger"
id = "paddle-fb"
page_id = "4243"
app_secret = "fb-app-secret"
page_access_token = "fb-token"
verify_token = "fb-verify"
"#;

const KNOWLEDGE: &str = "# Rentals\n\n\
A single kayak costs 350 SEK for a full day and 200 SEK for half a day. \
Life jackets are included in every rental.\n\n\
# Opening hours\n\n\
The boathouse is open every day from 9 am to 7 pm between May and September.\n\n\
# Cancellations\n\n\
You can cancel a booking free of charge up to 24 hours before the start time.\n";

const PHONE: &str = "106540352242922";
const PHONE_2: &str = "106540352242923";
const IG: &str = "17841400000000001";

struct Boathouse {
    server: TestServer,
    graph: FakePlatform,
    agent: String,
    http: reqwest::Client,
    n: std::sync::atomic::AtomicUsize,
}

impl Boathouse {
    fn next(&self) -> usize {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// POSTs `body` to `path` signed with `secret` (unsigned when `None`).
    async fn post(&self, path: &str, secret: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.server.url(path))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(secret) = secret {
            req = req.header(
                "x-hub-signature-256",
                format!("sha256={}", hmac_hex(secret, &[body])),
            );
        }
        let res = req.send().await.expect("post");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// A WhatsApp webhook of `messages` and `statuses` for `phone`.
    fn wa_body(phone: &str, wa_id: &str, messages: Value, statuses: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{ "id": "WABA-1", "changes": [{ "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": { "display_phone_number": "15550001111", "phone_number_id": phone },
                "contacts": [{ "profile": { "name": format!("Wa {wa_id}") }, "wa_id": wa_id }],
                "messages": messages,
                "statuses": statuses,
            } }] }]
        }))
        .expect("json")
    }

    /// A customer's WhatsApp text; its wamid.
    async fn wa_says(&self, phone: &str, wa_id: &str, text: &str) -> String {
        let wamid = format!("wamid.in{}", self.next());
        let body = Self::wa_body(
            phone,
            wa_id,
            json!([{ "from": wa_id, "id": wamid, "timestamp": "1700000000", "type": "text", "text": { "body": text } }]),
            json!([]),
        );
        let (status, report) = self
            .post("/webhooks/whatsapp", Some("wa-app-secret"), &body)
            .await;
        assert_eq!(
            (status, report["stored"].as_u64()),
            (200, Some(1)),
            "{report}"
        );
        wamid
    }

    /// A WhatsApp status for one of our messages; the webhook's report.
    async fn wa_status(&self, wa_id: &str, wamid: &str, status: Value) -> Value {
        let mut status = status;
        status["id"] = json!(wamid);
        status["recipient_id"] = json!(wa_id);
        status["timestamp"] = json!("1700000100");
        let body = Self::wa_body(PHONE, wa_id, json!([]), json!([status]));
        let (code, report) = self
            .post("/webhooks/whatsapp", Some("wa-app-secret"), &body)
            .await;
        assert_eq!(code, 200, "{report}");
        report
    }

    /// An Instagram webhook of one `messaging[]` event.
    fn ig_body(event: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "instagram",
            "entry": [{ "id": IG, "time": 1, "messaging": [event] }]
        }))
        .expect("json")
    }

    async fn ig_says(&self, igsid: &str, text: &str) {
        let body = Self::ig_body(json!({
            "sender": { "id": igsid }, "recipient": { "id": IG }, "timestamp": 1_700_000_000_000_i64,
            "message": { "mid": format!("ig-m-{}", self.next()), "text": text }
        }));
        let (status, report) = self
            .post("/webhooks/instagram", Some("ig-app-secret"), &body)
            .await;
        assert_eq!(
            (status, report["stored"].as_u64()),
            (200, Some(1)),
            "{report}"
        );
    }

    async fn fb_says(&self, psid: &str, text: &str) {
        let body = serde_json::to_vec(&json!({
            "object": "page",
            "entry": [{ "id": "4243", "time": 1, "messaging": [{
                "sender": { "id": psid }, "recipient": { "id": "4243" }, "timestamp": 1,
                "message": { "mid": format!("fb-m-{}", self.next()), "text": text }
            }] }]
        }))
        .expect("json");
        let (status, report) = self
            .post("/webhooks/messenger", Some("fb-app-secret"), &body)
            .await;
        assert_eq!(
            (status, report["stored"].as_u64()),
            (200, Some(1)),
            "{report}"
        );
    }

    /// The Cloud API messages sent (not read receipts) to `wa_id` from `phone`.
    fn wa_sent(&self, phone: &str, wa_id: &str) -> Vec<Recorded> {
        self.graph
            .calls(&format!("/{phone}/messages"))
            .into_iter()
            .filter(|c| c.body["to"] == json!(wa_id) && c.body["status"].is_null())
            .collect()
    }

    /// Waits for a Graph call on `path` that `pred` accepts.
    async fn graph_call(&self, path: &str, pred: impl Fn(&Recorded) -> bool) -> Recorded {
        self.graph.call(path, pred, Duration::from_secs(30)).await
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.server, Some(&self.agent), method, path, body).await
    }

    /// The newest conversation of customer `external_id` on `kind`.
    async fn conversation(&self, kind: ChannelKind, external_id: &str) -> Conversation {
        let app = &self.server.app;
        let mut conn = app.db.get().await.expect("conn");
        let ws = Workspace::ensure(&mut conn, "kayaks").await.expect("ws");
        let customer =
            store::models::customer::Customer::find(&mut conn, &ws.id, kind, external_id)
                .await
                .expect("q")
                .unwrap_or_else(|| panic!("no {kind} customer {external_id}"));
        let mut open = Vec::new();
        for account in ["paddle-wa", "paddle-wa-2", "paddle-ig", "paddle-fb"] {
            let Some(a) = ChannelAccount::find_by_public_id(&mut conn, account)
                .await
                .expect("q")
            else {
                continue;
            };
            open.extend(
                Conversation::open_of_customer(&mut conn, &a.id, &customer.id)
                    .await
                    .expect("q"),
            );
        }
        open.into_iter()
            .max_by_key(|c| c.created_at)
            .unwrap_or_else(|| panic!("no open conversation of {external_id}"))
    }

    /// Moves the conversation's messages `hours` into the past.
    async fn age(&self, conversation: &Conversation, hours: i64) {
        let at = (chrono::Utc::now() - chrono::Duration::hours(hours))
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let mut conn = self.server.app.db.get().await.expect("conn");
        let sql = format!(
            "UPDATE messages SET created_at = '{at}' WHERE conversation_id = '{}'",
            conversation.id
        );
        db_run!(conn: {
            diesel::sql_query(sql.as_str()).execute(conn).await.expect("age the messages")
        });
    }

    async fn messages(&self, conversation: &Conversation) -> Vec<Message> {
        let mut conn = self.server.app.db.get().await.expect("conn");
        Message::list(&mut conn, &conversation.id)
            .await
            .expect("messages")
    }
}

async fn boathouse(db: &TestDb) -> Option<Boathouse> {
    let models = crate::knowledge::model_dir()?;
    db.write_bot("kayaks.toml", BOT);
    let graph = FakePlatform::start().await;
    let mut settings = db.settings();
    settings.worker.debounce_ms = 0;
    settings.embedding.model_dir = models;
    let base = format!("{}/v21.0", graph.url);
    settings.channels.whatsapp.graph_api_base = base.clone();
    settings.channels.instagram.graph_api_base = base.clone();
    settings.channels.messenger.graph_api_base = base;
    let server = TestServer::with_worker(settings, &[], "w").await;
    let app = &server.app;
    let bot = {
        let mut conn = app.db.get().await.expect("conn");
        let ws = Workspace::ensure(&mut conn, "kayaks").await.expect("ws");
        Bot::find(&mut conn, &ws.id, "paddle")
            .await
            .expect("q")
            .expect("bot")
    };
    for (name, text) in [
        ("kayaks.md", KNOWLEDGE),
        ("delivery.csv", crate::answer::DELIVERY_FAQ),
    ] {
        app.knowledge
            .ingest_bytes(
                &app.db,
                &bot,
                name,
                name,
                text.as_bytes().to_vec(),
                &frontdesk::kb::Quiet,
            )
            .await
            .expect("knowledge");
    }
    member(app, "kayaks", "agent@kayaks.test", Role::Agent).await;
    let agent = login(&server, "agent@kayaks.test").await;
    Some(Boathouse {
        server,
        graph,
        agent,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        n: std::sync::atomic::AtomicUsize::new(1),
    })
}

async fn handshakes_and_bad_input(shop: &Boathouse) {
    for (route, token) in [("whatsapp", "wa-verify"), ("instagram", "ig-verify")] {
        let get = |token: &str| {
            shop.http
                .get(shop.server.url(&format!(
                    "/webhooks/{route}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
                )))
                .send()
        };
        let ok = get(token).await.expect("get");
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.text().await.expect("text"), "1158201444");
        assert_eq!(get("wrong").await.expect("get").status(), 403, "{route}");
        // Another platform's token is not this one's.
        let other = if route == "whatsapp" {
            "ig-verify"
        } else {
            "wa-verify"
        };
        assert_eq!(get(other).await.expect("get").status(), 403, "{route}");
    }
    let text = Boathouse::wa_body(
        PHONE,
        "46700000001",
        json!([{ "from": "46700000001", "id": "wamid.bad", "timestamp": "1", "type": "text", "text": { "body": "hi" } }]),
        json!([]),
    );
    // Unsigned, forged, tampered, signed with another app's secret: 401.
    assert_eq!(shop.post("/webhooks/whatsapp", None, &text).await.0, 401);
    assert_eq!(
        shop.post("/webhooks/whatsapp", Some("ig-app-secret"), &text)
            .await
            .0,
        401
    );
    let signature = format!("sha256={}", hmac_hex("wa-app-secret", &[&text]));
    let mut tampered = text.clone();
    let at = tampered.windows(2).position(|w| w == b"hi").expect("text");
    tampered[at] = b'H';
    let res = shop
        .http
        .post(shop.server.url("/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(tampered)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 401);
    // Malformed JSON: 400; an unknown phone number or account: 404.
    assert_eq!(
        shop.post(
            "/webhooks/whatsapp",
            Some("wa-app-secret"),
            b"{\"object\": "
        )
        .await
        .0,
        400
    );
    assert_eq!(
        shop.post("/webhooks/instagram", Some("ig-app-secret"), b"[1,")
            .await
            .0,
        400
    );
    let stranger = Boathouse::wa_body("999", "1", json!([]), json!([]));
    let (status, body) = shop
        .post("/webhooks/whatsapp", Some("wa-app-secret"), &stranger)
        .await;
    assert_eq!(status, 404, "{body}");
    let ig_stranger = serde_json::to_vec(
        &json!({ "object": "instagram", "entry": [{ "id": "42", "messaging": [] }] }),
    )
    .expect("json");
    assert_eq!(
        shop.post("/webhooks/instagram", Some("ig-app-secret"), &ig_stranger)
            .await
            .0,
        404
    );
    // Nothing of the refused bodies was stored.
    let mut conn = shop.server.app.db.get().await.expect("conn");
    let ws = Workspace::ensure(&mut conn, "kayaks").await.expect("ws");
    let stored = store::models::customer::Customer::find(
        &mut conn,
        &ws.id,
        ChannelKind::Whatsapp,
        "46700000001",
    )
    .await
    .expect("q");
    assert!(stored.is_none(), "a refused webhook stored its sender");
}

async fn whatsapp_and_instagram(db: TestDb) {
    let Some(shop) = boathouse(&db).await else {
        return;
    };
    handshakes_and_bad_input(&shop).await;

    // A text, answered as WhatsApp text to the sender's wa_id, with the
    // token in the Authorization header; redelivered, stored once.
    let wa = "46701234567";
    let wamid = shop
        .wa_says(
            PHONE,
            wa,
            "How much does a single kayak cost for a full day?",
        )
        .await;
    let redelivery = Boathouse::wa_body(
        PHONE,
        wa,
        json!([{ "from": wa, "id": wamid, "timestamp": "1700000000", "type": "text",
                 "text": { "body": "How much does a single kayak cost for a full day?" } }]),
        json!([]),
    );
    let (status, report) = shop
        .post("/webhooks/whatsapp", Some("wa-app-secret"), &redelivery)
        .await;
    assert_eq!(
        (status, report["duplicates"].as_u64()),
        (200, Some(1)),
        "{report}"
    );
    // A batch: two customers' messages in one change and a status in a
    // second change, every message stored.
    let batch = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA-1", "changes": [
            { "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": { "phone_number_id": PHONE },
                "messages": [
                    { "from": "46700000011", "id": "wamid.b1", "timestamp": "1700000000", "type": "text", "text": { "body": "Do you rent tandem kayaks?" } },
                    { "from": "46700000012", "id": "wamid.b2", "timestamp": "1700000001", "type": "location",
                      "location": { "latitude": 59.33, "longitude": 18.06, "name": "Boathouse" } }
                ] } },
            { "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": { "phone_number_id": PHONE },
                "statuses": [{ "id": "wamid.not-ours", "status": "sent", "timestamp": "1", "recipient_id": "46700000011" }] } }
        ] }]
    }))
    .expect("json");
    let (status, report) = shop
        .post("/webhooks/whatsapp", Some("wa-app-secret"), &batch)
        .await;
    assert_eq!(
        (status, report["stored"].as_u64()),
        (200, Some(2)),
        "{report}"
    );
    let answer = shop
        .graph_call(&format!("/{PHONE}/messages"), |c| {
            c.body["to"] == json!(wa) && c.body["type"] == "text"
        })
        .await;
    assert_eq!(answer.body["messaging_product"], "whatsapp");
    let text = answer.body["text"]["body"].as_str().expect("text");
    assert!(text.contains("350 SEK"), "{text}");
    assert!(text.chars().count() <= channels::whatsapp::MAX_TEXT_CHARS);
    assert_eq!(answer.authorization.as_deref(), Some("Bearer wa-token"));
    assert!(
        answer.query.is_empty(),
        "no token in the URL: {}",
        answer.query
    );
    // The customer's message is marked read, and typing shown against it.
    let reads = shop.graph.calls(&format!("/{PHONE}/messages"));
    assert!(
        reads
            .iter()
            .any(|c| c.body["status"] == "read" && c.body["message_id"] == json!(wamid))
    );
    assert!(
        reads
            .iter()
            .any(|c| c.body["typing_indicator"]["type"] == "text")
    );
    let conversation = shop.conversation(ChannelKind::Whatsapp, wa).await;
    until_turns_done(&shop.server.app).await;
    let messages = shop.messages(&conversation).await;
    let inbound = messages
        .iter()
        .filter(|m| m.direction == Direction::Inbound)
        .count();
    assert_eq!(inbound, 1, "stored once");
    let reply = messages
        .iter()
        .find(|m| m.direction == Direction::Outbound && m.body.contains("350 SEK"))
        .expect("the reply");
    let reply_id = reply.external_id.clone().expect("sent with a wamid");

    // Statuses move the reply forward; one for a message we never sent is
    // answered 200 and skipped with its reason.
    let report = shop
        .wa_status(wa, &reply_id, json!({ "status": "delivered" }))
        .await;
    assert_eq!(report["receipts"], 1, "{report}");
    shop.wa_status(wa, &reply_id, json!({ "status": "read" }))
        .await;
    let report = shop
        .wa_status(wa, "wamid.never", json!({ "status": "delivered" }))
        .await;
    assert!(
        report["skipped"].to_string().contains("never sent"),
        "{report}"
    );
    let stored = shop.messages(&conversation).await;
    let status_of = |id: &str| {
        stored
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.delivery_status)
    };
    assert_eq!(status_of(&reply.id), Some(DeliveryStatus::Read));

    // A reaction is recorded on the message it reacts to.
    let reaction = Boathouse::wa_body(
        PHONE,
        wa,
        json!([{ "from": wa, "id": "wamid.react1", "timestamp": "1700000200", "type": "reaction",
                 "reaction": { "message_id": reply_id, "emoji": "👍" } }]),
        json!([]),
    );
    let (_, report) = shop
        .post("/webhooks/whatsapp", Some("wa-app-secret"), &reaction)
        .await;
    assert_eq!(report["reactions"], 1, "{report}");
    let (status, detail) = shop
        .api("GET", &format!("/conversations/{}", conversation.id), None)
        .await;
    assert_eq!(status, 200, "{detail}");
    let shown = detail["messages"].as_array().expect("messages");
    assert!(shown.iter().any(|m| m["reaction"] == "👍"), "{detail}");
    assert_eq!(detail["window"]["open"], true, "{detail}");
    assert_eq!(detail["window"]["agent_reply"], "standard", "{detail}");

    // A sticker is kept without an answer.
    let sent_before = shop.wa_sent(PHONE, wa).len();
    let sticker = Boathouse::wa_body(
        PHONE,
        wa,
        json!([{ "from": wa, "id": "wamid.sticker1", "timestamp": "1700000300", "type": "sticker",
                 "sticker": { "id": "ST1", "mime_type": "image/webp", "animated": false } }]),
        json!([]),
    );
    let (_, report) = shop
        .post("/webhooks/whatsapp", Some("wa-app-secret"), &sticker)
        .await;
    assert_eq!(report["stored"], 1, "{report}");
    until_turns_done(&shop.server.app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        shop.wa_sent(PHONE, wa).len(),
        sent_before,
        "a sticker is not answered"
    );

    // "Did you mean": reply buttons within WhatsApp's limits; the tap
    // answers from the chosen entry.
    let wa_2 = "46701234568";
    shop.wa_says(PHONE, wa_2, crate::answer::AMBIGUOUS).await;
    let offer = shop
        .graph_call(&format!("/{PHONE}/messages"), |c| {
            c.body["to"] == json!(wa_2) && c.body["type"] == "interactive"
        })
        .await;
    let interactive = &offer.body["interactive"];
    let buttons: Vec<Value> = match interactive["type"].as_str() {
        Some("button") => interactive["action"]["buttons"]
            .as_array()
            .expect("buttons")
            .clone(),
        Some("list") => interactive["action"]["sections"][0]["rows"]
            .as_array()
            .expect("rows")
            .clone(),
        other => panic!("options as {other:?}: {offer:?}"),
    };
    assert!(buttons.len() >= 3 && buttons.len() <= 10, "{buttons:?}");
    let title = |b: &Value| {
        b["reply"]["title"]
            .as_str()
            .or_else(|| b["title"].as_str())
            .expect("title")
            .to_owned()
    };
    let id = |b: &Value| {
        b["reply"]["id"]
            .as_str()
            .or_else(|| b["id"].as_str())
            .expect("id")
            .to_owned()
    };
    for b in &buttons {
        assert!(title(b).chars().count() <= 24, "{b}");
    }
    let shown = |b: &Value| {
        format!(
            "{} {}",
            title(b),
            b["description"].as_str().unwrap_or_default()
        )
    };
    let norway = buttons
        .iter()
        .find(|b| shown(b).contains("Norway"))
        .unwrap_or_else(|| panic!("Norway offered: {buttons:?}"));
    let tap = Boathouse::wa_body(
        PHONE,
        wa_2,
        json!([{ "from": wa_2, "id": "wamid.tap1", "timestamp": "1700000400", "type": "interactive",
                 "interactive": { "type": "button_reply", "button_reply": { "id": id(norway), "title": title(norway) } } }]),
        json!([]),
    );
    assert_eq!(
        shop.post("/webhooks/whatsapp", Some("wa-app-secret"), &tap)
            .await
            .0,
        200
    );
    let chosen = shop
        .graph_call(&format!("/{PHONE}/messages"), |c| {
            c.body["to"] == json!(wa_2)
                && c.body["text"]["body"]
                    .as_str()
                    .is_some_and(|t| t.contains("four to five"))
        })
        .await;
    assert_eq!(chosen.body["type"], "text");
    until_turns_done(&shop.server.app).await;

    // A failure the platform reports later is stored on the message and
    // shown to agents.
    let second = shop.conversation(ChannelKind::Whatsapp, wa_2).await;
    let offer_message = shop
        .messages(&second)
        .await
        .into_iter()
        .find(|m| m.direction == Direction::Outbound && m.external_id.is_some())
        .expect("the offer");
    let report = shop
        .wa_status(
            wa_2,
            offer_message.external_id.as_deref().expect("wamid"),
            json!({ "status": "failed", "errors": [{ "code": 131026, "title": "Message Undeliverable" }] }),
        )
        .await;
    assert_eq!(report["receipts"], 1, "{report}");
    let (_, detail) = shop
        .api("GET", &format!("/conversations/{}", second.id), None)
        .await;
    let failed = detail["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == json!(offer_message.id))
        .expect("shown")
        .clone();
    assert_eq!(failed["delivery_status"], "failed", "{failed}");
    assert!(
        failed["delivery_error"]
            .as_str()
            .expect("error")
            .contains("(131026) Message Undeliverable"),
        "{failed}"
    );

    // A send refused at once: not retried when retrying cannot help
    // (131026), retried when it can (130429); the code is on the message.
    shop.graph.script([(
        400,
        json!({ "error": { "message": "(#131026) Message Undeliverable.", "type": "OAuthException", "code": 131026,
                           "error_data": { "messaging_product": "whatsapp", "details": "Message Undeliverable." } } }),
    )]);
    let before = shop.wa_sent(PHONE, wa_2).len();
    let (status, sent) = shop
        .api(
            "POST",
            &format!("/conversations/{}/reply", second.id),
            Some(json!({ "text": "Let me check that for you." })),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["delivery_status"], "failed", "{sent}");
    assert!(
        sent["delivery_error"]
            .as_str()
            .expect("error")
            .contains("(131026)"),
        "{sent}"
    );
    assert_eq!(shop.wa_sent(PHONE, wa_2).len(), before + 1, "not retried");
    shop.graph.script([(
        400,
        json!({ "error": { "message": "(#130429) Rate limit hit", "code": 130429, "error_data": { "details": "Cloud API message throughput has been reached." } } }),
    )]);
    let (status, sent) = shop
        .api(
            "POST",
            &format!("/conversations/{}/reply", second.id),
            Some(json!({ "text": "Found it: Norway takes four to five days." })),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(
        sent["delivery_status"], "sent",
        "retried past the rate limit: {sent}"
    );
    assert_eq!(shop.wa_sent(PHONE, wa_2).len(), before + 3);

    // Instagram: answered to the sender's IGSID, within 1,000 characters,
    // with the page token in the header; echoes are never answered.
    let igsid = "1791000000000042";
    shop.ig_says(igsid, "When is the boathouse open?").await;
    let ig_answer = shop
        .graph_call(&format!("/{IG}/messages"), |c| {
            c.body["recipient"]["id"] == json!(igsid) && c.body["message"]["text"].is_string()
        })
        .await;
    let text = ig_answer.body["message"]["text"].as_str().expect("text");
    assert!(text.contains("9 am to 7 pm"), "{text}");
    assert!(text.chars().count() <= channels::instagram::MAX_TEXT_CHARS);
    assert_eq!(ig_answer.body["messaging_type"], "RESPONSE");
    assert_eq!(ig_answer.authorization.as_deref(), Some("Bearer ig-token"));
    let echo = Boathouse::ig_body(json!({
        "sender": { "id": IG }, "recipient": { "id": igsid }, "timestamp": 1_700_000_000_500_i64,
        "message": { "mid": "ig-echo-1", "text": "An answer we sent", "is_echo": true }
    }));
    let (status, report) = shop
        .post("/webhooks/instagram", Some("ig-app-secret"), &echo)
        .await;
    assert_eq!(status, 200);
    assert_eq!(report["stored"], 0, "{report}");
    assert!(report["skipped"].to_string().contains("echo"), "{report}");
    let tampered = Boathouse::ig_body(
        json!({ "sender": { "id": igsid }, "recipient": { "id": IG }, "timestamp": 1,
        "message": { "mid": "ig-forged", "text": "forged" } }),
    );
    assert_eq!(
        shop.post("/webhooks/instagram", Some("wa-app-secret"), &tampered)
            .await
            .0,
        401
    );
    until_turns_done(&shop.server.app).await;
    let ig_sends = |shop: &Boathouse| {
        shop.graph
            .calls(&format!("/{IG}/messages"))
            .into_iter()
            .filter(|c| c.body["message"]["text"].is_string())
            .count()
    };
    assert_eq!(ig_sends(&shop), 1, "the echo was not answered");

    window_rules(&shop, wa, igsid).await;
    shop.server.stop().await;
    shop.graph.stop().await;
}

/// The 24-hour window: agents' replies as each platform allows them, the
/// bot never outside it, and the console told the window's state.
async fn window_rules(shop: &Boathouse, wa: &str, igsid: &str) {
    // WhatsApp with a re-engagement template: after 24 hours an agent's
    // reply sends the template, and says so.
    let conversation = shop.conversation(ChannelKind::Whatsapp, wa).await;
    shop.age(&conversation, 25).await;
    let (_, detail) = shop
        .api("GET", &format!("/conversations/{}", conversation.id), None)
        .await;
    assert_eq!(detail["window"]["open"], false, "{detail}");
    assert_eq!(detail["window"]["agent_reply"], "template", "{detail}");
    let (status, sent) = shop
        .api(
            "POST",
            &format!("/conversations/{}/reply", conversation.id),
            Some(json!({ "text": "Are you still there?" })),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["sent_as_template"], "we_are_back", "{sent}");
    let template = shop
        .graph_call(&format!("/{PHONE}/messages"), |c| {
            c.body["type"] == "template"
        })
        .await;
    assert_eq!(template.body["template"]["name"], "we_are_back");
    assert_eq!(template.body["template"]["language"]["code"], "en_US");

    // Without a template: refused with 409, saying when it closed; nothing
    // stored or sent.
    let wa_3 = "46701234569";
    shop.wa_says(PHONE_2, wa_3, "Can I bring my dog in the kayak?")
        .await;
    until_turns_done(&shop.server.app).await;
    let third = shop.conversation(ChannelKind::Whatsapp, wa_3).await;
    shop.age(&third, 30).await;
    let stored = shop.messages(&third).await.len();
    let sends = shop.wa_sent(PHONE_2, wa_3).len();
    let (status, refused) = shop
        .api(
            "POST",
            &format!("/conversations/{}/reply", third.id),
            Some(json!({ "text": "Yes, dogs are welcome." })),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.contains("24-hour window closed at"), "{message}");
    assert!(message.contains("reengage_template"), "{message}");
    assert_eq!(shop.messages(&third).await.len(), stored);
    assert_eq!(shop.wa_sent(PHONE_2, wa_3).len(), sends);

    // The bot never writes outside the window: its reply fails with the
    // reason instead of reaching the platform.
    let app = &shop.server.app;
    let mut conn = app.db.get().await.expect("conn");
    let Inserted::New(late) = Message::insert(
        &mut conn,
        &NewMessage {
            conversation_id: &third.id,
            channel_account_id: &third.channel_account_id,
            direction: Direction::Outbound,
            author_kind: AuthorKind::Bot,
            author_user_id: None,
            body: "A late bot reply",
            external_id: None,
            metadata: None,
        },
    )
    .await
    .expect("insert") else {
        panic!("new message")
    };
    drop(conn);
    match frontdesk::delivery::deliver(app, &late.id, false)
        .await
        .expect("deliver")
    {
        frontdesk::delivery::Delivery::Failed(reason) => {
            assert!(reason.contains("24-hour window closed"), "{reason}");
        }
        other => panic!("the bot wrote outside the window: {other:?}"),
    }
    assert_eq!(shop.wa_sent(PHONE_2, wa_3).len(), sends);

    // Instagram and Messenger: a person's reply after 24 hours goes under
    // the HUMAN_AGENT tag; after 7 days it is refused.
    shop.fb_says("psid-9", "Do you rent paddle boards?").await;
    until_turns_done(&shop.server.app).await;
    for (kind, customer, path) in [
        (ChannelKind::Instagram, igsid, format!("/{IG}/messages")),
        (ChannelKind::Messenger, "psid-9", "/me/messages".to_owned()),
    ] {
        let conversation = shop.conversation(kind, customer).await;
        shop.age(&conversation, 30).await;
        let (_, detail) = shop
            .api("GET", &format!("/conversations/{}", conversation.id), None)
            .await;
        assert_eq!(detail["window"]["agent_reply"], "human_agent", "{detail}");
        let (status, sent) = shop
            .api(
                "POST",
                &format!("/conversations/{}/reply", conversation.id),
                Some(json!({ "text": "Sorry for the wait!" })),
            )
            .await;
        assert_eq!(status, 201, "{kind}: {sent}");
        let tagged = shop
            .graph_call(&path, |c| {
                c.body["recipient"]["id"] == json!(customer)
                    && c.body["message"]["text"] == "Sorry for the wait!"
            })
            .await;
        assert_eq!(tagged.body["messaging_type"], "MESSAGE_TAG", "{kind}");
        assert_eq!(tagged.body["tag"], "HUMAN_AGENT", "{kind}");
        shop.age(&conversation, 24 * 8).await;
        let (status, refused) = shop
            .api(
                "POST",
                &format!("/conversations/{}/reply", conversation.id),
                Some(json!({ "text": "Hello?" })),
            )
            .await;
        assert_eq!(status, 409, "{kind}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .expect("message")
                .contains("7 days"),
            "{refused}"
        );
    }
}

both_backends! {
    whatsapp_and_instagram_end_to_end => whatsapp_and_instagram;
}
