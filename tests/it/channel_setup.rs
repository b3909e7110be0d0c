//! Channel setup from the API, end to end: a Telegram bot added with its
//! token alone (the server makes the secret token and calls `setWebhook` on
//! a fake Bot API), Telegram's refusals shown verbatim, what each platform
//! needs pasted (`setup`), and each account's latest webhook and delivery
//! error.

use serde_json::{Value, json};

use crate::agents::{call, login, member};
use crate::both_backends;
use crate::common::fakes::FakePlatform;
use crate::common::{Backend, TestDb, TestServer, repo_path};
use frontdesk::config::PublicUrl;
use frontdesk::delivery::{Delivery, deliver};
use store::models::message::{AuthorKind, Direction, Inserted, Message, NewMessage};
use store::models::user::Role;

const PUBLIC: &str = "https://support.example.com";
const TOKEN: &str = "4242:tg-token";

/// A gateway whose Telegram Bot API is `telegram`, with `public_url`; an
/// admin's token and a new bot's id.
async fn gateway(
    db: &TestDb,
    telegram: &FakePlatform,
    public_url: Option<&str>,
) -> (TestServer, String, String) {
    let mut settings = db.settings();
    settings.channels.telegram.api_base = telegram.url.clone();
    settings.server.public_url =
        public_url.map(|u| PublicUrl::try_from(u.to_owned()).expect("public url"));
    let server = TestServer::start(settings, &[]).await;
    member(&server.app, "acme", "admin@acme.example", Role::Admin).await;
    let admin = login(&server, "admin@acme.example").await;
    let (status, bot) = call(
        &server,
        Some(&admin),
        "POST",
        "/bots",
        Some(json!({ "name": "help" })),
    )
    .await;
    assert_eq!(status, 201, "{bot}");
    let bot_id = bot["id"].as_str().expect("bot id").to_owned();
    (server, admin, bot_id)
}

/// The bot's channels, by public id.
async fn channel(server: &TestServer, admin: &str, bot_id: &str, public_id: &str) -> Value {
    let (status, list) = call(
        server,
        Some(admin),
        "GET",
        &format!("/bots/{bot_id}/channels"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["public_id"] == public_id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Posts a Telegram update to the account's route with `secret`.
async fn telegram_update(server: &TestServer, public_id: &str, secret: &str) -> u16 {
    let body = std::fs::read(repo_path(
        "tests/fixtures/telegram/official-bot-docs-webhooks/02_message_text.json",
    ))
    .expect("fixture");
    crate::agents::http()
        .post(server.url(&format!("/webhooks/telegram/{public_id}")))
        .header("content-type", "application/json")
        .header("x-telegram-bot-api-secret-token", secret)
        .body(body)
        .send()
        .await
        .expect("webhook")
        .status()
        .as_u16()
}

async fn telegram_with_the_token_alone(db: TestDb) {
    let telegram = FakePlatform::start().await;
    let (server, admin, bot_id) = gateway(&db, &telegram, Some(PUBLIC)).await;
    let channels = format!("/bots/{bot_id}/channels");

    let (status, added) = call(
        &server,
        Some(&admin),
        "POST",
        &channels,
        Some(json!({ "kind": "telegram", "id": "acme-tg", "bot_token": TOKEN })),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    let hook_url = format!("{PUBLIC}/webhooks/telegram/acme-tg");
    assert_eq!(added["connected"], true, "{added}");
    assert_eq!(added["setup"]["webhook_url"], hook_url.as_str());
    assert!(added["setup"].get("note").is_none(), "{added}");
    assert_eq!(added["last_webhook_at"], Value::Null);
    assert_eq!(added["last_delivery_error"], Value::Null);

    // setWebhook: this gateway's route, a generated secret, the updates read.
    let calls = telegram.calls("/setWebhook");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, format!("/bot{TOKEN}/setWebhook"));
    assert_eq!(calls[0].body["url"], hook_url.as_str());
    let secret = calls[0].body["secret_token"]
        .as_str()
        .expect("secret_token")
        .to_owned();
    assert!(
        secret.len() >= 32
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "Telegram's alphabet, long enough: {secret}"
    );
    assert_eq!(
        calls[0].body["allowed_updates"],
        json!(["message", "edited_message", "callback_query"])
    );
    assert!(
        !added.to_string().contains(&secret) && !added.to_string().contains("tg-token"),
        "no credential in the answer: {added}"
    );

    // Updates signed with the generated secret get in; others do not.
    assert_eq!(
        telegram_update(&server, "acme-tg", "wrong-secret").await,
        401
    );
    assert_eq!(
        channel(&server, &admin, &bot_id, "acme-tg").await["last_webhook_at"],
        Value::Null
    );
    assert_eq!(telegram_update(&server, "acme-tg", &secret).await, 200);
    let listed = channel(&server, &admin, &bot_id, "acme-tg").await;
    assert!(listed["last_webhook_at"].is_string(), "{listed}");
    assert_eq!(listed["connected"], true);

    // A reply Telegram refuses: the account's latest delivery error.
    let (_, conversations) = call(&server, Some(&admin), "GET", "/conversations", None).await;
    let conversation_id = conversations["items"][0]["id"]
        .as_str()
        .expect("conversation");
    let account_id = listed["id"].as_str().expect("account id");
    let reply = {
        let mut conn = server.app.db.get().await.expect("conn");
        let new = NewMessage {
            conversation_id,
            channel_account_id: account_id,
            direction: Direction::Outbound,
            author_kind: AuthorKind::Bot,
            author_user_id: None,
            body: "Hello?",
            external_id: None,
            metadata: None,
        };
        match Message::insert(&mut conn, &new).await.expect("insert") {
            Inserted::New(m) => m,
            Inserted::Duplicate(_) => panic!("a new message"),
        }
    };
    telegram.script([(
        403,
        json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
    )]);
    let outcome = deliver(&server.app, &reply.id, false)
        .await
        .expect("deliver");
    assert!(matches!(outcome, Delivery::Failed(_)), "{outcome:?}");
    let listed = channel(&server, &admin, &bot_id, "acme-tg").await;
    let error = &listed["last_delivery_error"];
    assert!(error["at"].is_string(), "{listed}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("Forbidden: bot was blocked by the user")),
        "{listed}"
    );

    // Registered again on request, with the stored secret.
    let (status, again) = call(
        &server,
        Some(&admin),
        "POST",
        &format!("{channels}/acme-tg/webhook"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["connected"], true);
    let calls = telegram.calls("/setWebhook");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].body["secret_token"], secret.as_str());
    assert_eq!(calls[1].body["url"], hook_url.as_str());

    // The same Telegram bot under another id: refused before Telegram is told.
    let (status, body) = call(
        &server,
        Some(&admin),
        "POST",
        &channels,
        Some(json!({ "kind": "telegram", "id": "acme-tg-2", "bot_token": TOKEN })),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(telegram.calls("/setWebhook").len(), 2, "Telegram untouched");

    // Full URLs for the other platforms.
    let (status, fb) = call(
        &server,
        Some(&admin),
        "POST",
        &channels,
        Some(
            json!({ "kind": "messenger", "id": "acme-fb", "page_id": "555", "app_secret": "s",
            "page_access_token": "p", "verify_token": "paste-me" }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{fb}");
    assert_eq!(
        fb["setup"]["callback_url"],
        format!("{PUBLIC}/webhooks/messenger")
    );
    assert_eq!(fb["setup"]["verify_token"], "paste-me");
    assert_eq!(fb["connected"], false, "no webhook from Meta yet");
    // WhatsApp and Instagram, added like the others: their setup, and the
    // new account answers the handshake and takes a signed webhook at once.
    for (kind, id_key, token_key, platform_id) in [
        (
            "whatsapp",
            "phone_number_id",
            "access_token",
            "106540352242999",
        ),
        (
            "instagram",
            "ig_account_id",
            "page_access_token",
            "17841400000000999",
        ),
    ] {
        let mut add = json!({ "kind": kind, "id": format!("acme-{kind}"), "app_secret": "meta-secret",
            "verify_token": format!("{kind}-verify") });
        add[id_key] = json!(platform_id);
        add[token_key] = json!("tok");
        let (status, created) =
            call(&server, Some(&admin), "POST", &channels, Some(add.clone())).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(
            created["setup"]["callback_url"],
            format!("{PUBLIC}/webhooks/{kind}")
        );
        assert_eq!(created["setup"]["verify_token"], format!("{kind}-verify"));
        assert_eq!(created["setup"]["subscribe_fields"][0], "messages");
        assert!(
            created["setup"]["steps"]
                .as_array()
                .is_some_and(|s| !s.is_empty()),
            "{created}"
        );
        assert_eq!(created["webhook"], format!("/webhooks/{kind}"));
        assert!(!created.to_string().contains("meta-secret"), "{created}");
        // A platform id that is not Meta's numeric id: 400 naming the key.
        add[id_key] = json!("not-an-id");
        add["id"] = json!(format!("acme-{kind}-2"));
        let (status, body) = call(&server, Some(&admin), "POST", &channels, Some(add)).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(id_key), "{body}");
        let challenge = reqwest::get(server.url(&format!(
            "/webhooks/{kind}?hub.mode=subscribe&hub.verify_token={kind}-verify&hub.challenge=77"
        )))
        .await
        .expect("handshake");
        assert_eq!(challenge.status(), 200);
        let body = if kind == "whatsapp" {
            json!({ "object": "whatsapp_business_account", "entry": [{ "id": "W", "changes": [{ "field": "messages",
                "value": { "metadata": { "phone_number_id": platform_id }, "messages": [
                    { "from": "4670000", "id": "wamid.api1", "timestamp": "1", "type": "text", "text": { "body": "hello" } }] } }] }] })
        } else {
            json!({ "object": "instagram", "entry": [{ "id": platform_id, "time": 1, "messaging": [
                { "sender": { "id": "igsid-1" }, "recipient": { "id": platform_id }, "timestamp": 1,
                  "message": { "mid": "ig-api-1", "text": "hello" } }] }] })
        }
        .to_string();
        let signature = format!(
            "sha256={}",
            crate::webhooks::hmac_hex("meta-secret", &[body.as_bytes()])
        );
        let res = reqwest::Client::new()
            .post(server.url(&format!("/webhooks/{kind}")))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .expect("webhook");
        assert_eq!(res.status(), 200, "{kind}");
        let report: Value = res.json().await.expect("json");
        assert_eq!(report["stored"], 1, "{kind}: {report}");
    }
    let (status, mail) = call(&server, Some(&admin), "POST", &channels,
        Some(json!({ "kind": "email", "id": "acme-mail", "address": "Support@Acme.example", "signing_key": "k" }))).await;
    assert_eq!(status, 201, "{mail}");
    assert_eq!(
        mail["setup"]["mailgun_route"],
        json!({
            "expression": "match_recipient(\"support@acme.example\")",
            "actions": [format!("forward(\"{PUBLIC}/webhooks/email/acme-mail/mime\")"), "stop()"],
        })
    );
    let widget = channel(&server, &admin, &bot_id, &format!("webchat-{bot_id}")).await;
    assert_eq!(
        widget["setup"]["embed_snippet"],
        format!("<script src=\"{PUBLIC}/widget.js\" data-bot=\"{bot_id}\" defer></script>")
    );
    assert_eq!(widget["connected"], true);

    // Removed: the webhook is deleted, the route closed, the id free again.
    let (status, body) = call(
        &server,
        Some(&admin),
        "DELETE",
        &format!("{channels}/acme-tg"),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(telegram.calls("/deleteWebhook").len(), 1);
    assert_eq!(
        channel(&server, &admin, &bot_id, "acme-tg").await,
        Value::Null
    );
    assert_eq!(telegram_update(&server, "acme-tg", &secret).await, 404);
    let (status, _) = call(
        &server,
        Some(&admin),
        "DELETE",
        &format!("{channels}/acme-tg"),
        None,
    )
    .await;
    assert_eq!(status, 404, "already removed");
    let (_, audit) = call(&server, Some(&admin), "GET", "/audit?limit=200", None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"channel.delete"), "{actions:?}");
    assert!(
        !audit.to_string().contains("paste-me"),
        "no verify token in the audit log"
    );
    let (status, again) = call(
        &server,
        Some(&admin),
        "POST",
        &channels,
        Some(json!({ "kind": "telegram", "id": "acme-tg", "bot_token": TOKEN })),
    )
    .await;
    assert_eq!(status, 201, "{again}");
    let calls = telegram.calls("/setWebhook");
    assert_eq!(calls.len(), 3);
    let new_secret = calls[2].body["secret_token"].as_str().expect("secret");
    assert_ne!(new_secret, secret, "a new secret");
    assert_eq!(telegram_update(&server, "acme-tg", &secret).await, 401);
    assert_eq!(telegram_update(&server, "acme-tg", new_secret).await, 200);

    server.stop().await;
    telegram.stop().await;
}

both_backends! {
    telegram_added_with_its_token_alone => telegram_with_the_token_alone;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_refusals_are_shown_verbatim() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let telegram = FakePlatform::start().await;
    let (server, admin, bot_id) = gateway(&db, &telegram, Some("http://support.example.com")).await;
    let channels = format!("/bots/{bot_id}/channels");
    let add = json!({ "kind": "telegram", "id": "acme-tg", "bot_token": TOKEN });

    // A token Telegram does not know: the caller's input, 422.
    telegram.script([(
        401,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
    )]);
    let (status, body) = call(&server, Some(&admin), "POST", &channels, Some(add.clone())).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("Unauthorized"), "{message}");
    assert_eq!(body["error"]["details"]["telegram"]["error_code"], 401);
    assert_eq!(
        channel(&server, &admin, &bot_id, "acme-tg").await,
        Value::Null,
        "nothing stored"
    );

    // A public URL that is not HTTPS: Telegram's words, 502.
    let (status, body) = call(&server, Some(&admin), "POST", &channels, Some(add.clone())).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("bad webhook: An HTTPS URL must be provided for webhook"),
        "{message}"
    );
    assert_eq!(
        body["error"]["details"]["telegram"]["description"],
        "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
    );
    assert_eq!(
        channel(&server, &admin, &bot_id, "acme-tg").await,
        Value::Null,
        "nothing stored, nothing connected"
    );
    assert_eq!(telegram.calls("/setWebhook").len(), 2);
    server.stop().await;
    telegram.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_public_url_setup_gives_paths() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let telegram = FakePlatform::start().await;
    let (server, admin, bot_id) = gateway(&db, &telegram, None).await;
    let channels = format!("/bots/{bot_id}/channels");

    let (status, tg) = call(
        &server,
        Some(&admin),
        "POST",
        &channels,
        Some(json!({ "kind": "telegram", "id": "acme-tg", "bot_token": TOKEN })),
    )
    .await;
    assert_eq!(status, 201, "{tg}");
    assert_eq!(tg["connected"], false);
    assert_eq!(tg["setup"]["webhook_url"], "/webhooks/telegram/acme-tg");
    let note = tg["setup"]["note"].as_str().expect("note");
    assert!(note.contains("server.public_url"), "{note}");
    assert!(telegram.requests().is_empty(), "Telegram not called");
    // Registering needs the public URL.
    let (status, body) = call(
        &server,
        Some(&admin),
        "POST",
        &format!("{channels}/acme-tg/webhook"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("server.public_url"))
    );

    let (status, fb) = call(
        &server,
        Some(&admin),
        "POST",
        &channels,
        Some(
            json!({ "kind": "messenger", "id": "acme-fb", "page_id": "555", "app_secret": "s",
            "page_access_token": "p", "verify_token": "paste-me" }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{fb}");
    assert_eq!(fb["setup"]["callback_url"], "/webhooks/messenger");
    assert_eq!(fb["setup"]["verify_token"], "paste-me");
    assert!(fb["setup"]["note"].is_string());
    let (status, mail) = call(&server, Some(&admin), "POST", &channels,
        Some(json!({ "kind": "email", "id": "acme-mail", "address": "support@acme.example", "signing_key": "k" }))).await;
    assert_eq!(status, 201, "{mail}");
    assert_eq!(
        mail["setup"]["mailgun_route"]["actions"][0],
        "forward(\"/webhooks/email/acme-mail/mime\")"
    );
    let widget = channel(&server, &admin, &bot_id, &format!("webchat-{bot_id}")).await;
    assert_eq!(
        widget["setup"]["embed_snippet"],
        format!("<script src=\"/widget.js\" data-bot=\"{bot_id}\" defer></script>")
    );
    let (status, _) = call(
        &server,
        Some(&admin),
        "DELETE",
        &format!("{channels}/webchat-{bot_id}"),
        None,
    )
    .await;
    assert_eq!(status, 409, "the web chat stays");
    server.stop().await;
    telegram.stop().await;
}
