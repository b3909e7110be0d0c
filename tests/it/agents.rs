//! Agents end to end: logins and roles, the REST API scoped to a
//! workspace, the audit log, the agent websocket across two server
//! instances on one Redis, and the web chat widget's socket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::both_backends;
use crate::common::fakes::FakePlatform;
use crate::common::{Backend, TestDb, TestServer, missing_service, redis_url, until_turns_done};
use store::models::user::{Role, User};
use store::models::workspace::Workspace;

pub(crate) const PASSWORD: &str = "correct horse battery";

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A user with `role` in workspace `slug` (created if missing).
pub(crate) async fn member(
    app: &frontdesk::context::App,
    slug: &str,
    email: &str,
    role: Role,
) -> User {
    let mut conn = app.db.get().await.expect("conn");
    let workspace = Workspace::ensure(&mut conn, slug).await.expect("workspace");
    let hash = frontdesk::auth::hash_password(PASSWORD).expect("hash");
    let user = User::create(&mut conn, email, "Test", Some(&hash))
        .await
        .expect("user");
    User::set_role(&mut conn, &user.id, &workspace.id, role)
        .await
        .expect("role");
    user
}

/// Logs in; the bearer token.
pub(crate) async fn login(server: &TestServer, email: &str) -> String {
    let res = http()
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200, "login of {email}");
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .contains("HttpOnly"),
        "session cookie is HttpOnly"
    );
    let body: Value = res.json().await.expect("json");
    body["token"].as_str().expect("token").to_owned()
}

/// A request with the bearer token; the status and JSON body.
pub(crate) async fn call(
    server: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http().request(method, server.url(&format!("/api/v1{path}")));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        assert!(
            value["error"]["code"].is_string() && value["error"]["message"].is_string(),
            "{status} without the error shape: {text}"
        );
    }
    (status, value)
}

/// A customer message on the bot's Telegram account, through ingest.
async fn telegram_message(
    app: &frontdesk::context::App,
    account: &str,
    chat: i64,
    n: usize,
    text: &str,
) {
    let mut conn = app.db.get().await.expect("conn");
    let account =
        store::models::channel_account::ChannelAccount::find_by_public_id(&mut conn, account)
            .await
            .expect("q")
            .expect("account");
    drop(conn);
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
    let route = app
        .accounts
        .by_public_id(&app.db, &app.master_key, &account.public_id)
        .await
        .expect("accounts")
        .expect("account");
    frontdesk::ingest::ingest(app, &route.account, &route.workspace_id, vec![event])
        .await
        .expect("ingest");
}

async fn roles_scoping_and_audit(db: TestDb) {
    let mut settings = db.settings();
    settings.auth.login_attempts = 3;
    let server = TestServer::start(settings, &[]).await;
    let app = &server.app;
    member(app, "acme", "owner@acme.test", Role::Owner).await;
    member(app, "acme", "admin@acme.test", Role::Admin).await;
    let agent_user = member(app, "acme", "agent@acme.test", Role::Agent).await;
    member(app, "other", "owner@other.test", Role::Owner).await;
    let owner = login(&server, "owner@acme.test").await;
    let admin = login(&server, "admin@acme.test").await;
    let agent = login(&server, "agent@acme.test").await;
    let intruder = login(&server, "owner@other.test").await;

    // No token, a forged one: 401.
    assert_eq!(call(&server, None, "GET", "/me", None).await.0, 401);
    assert_eq!(
        call(&server, Some("fds_forged"), "GET", "/conversations", None)
            .await
            .0,
        401
    );
    assert_eq!(
        call(&server, Some("fdt_forged"), "GET", "/bots", None)
            .await
            .0,
        401
    );

    // Admins configure; agents may not.
    let bot_body = json!({ "name": "help", "system_prompt": "You help.",
        "handoff": { "min_confidence": 0.4, "on_unknown": "silent_handoff" } });
    assert_eq!(
        call(
            &server,
            Some(&agent),
            "POST",
            "/bots",
            Some(bot_body.clone())
        )
        .await
        .0,
        403
    );
    let (status, bot) = call(
        &server,
        Some(&admin),
        "POST",
        "/bots",
        Some(bot_body.clone()),
    )
    .await;
    assert_eq!(status, 201, "{bot}");
    assert_eq!(bot["handoff"]["on_unknown"], "silent_handoff");
    assert_eq!(
        call(&server, Some(&admin), "POST", "/bots", Some(bot_body))
            .await
            .0,
        409
    );
    let bot_id = bot["id"].as_str().expect("id").to_owned();
    let (status, list) = call(&server, Some(&agent), "GET", "/bots", None).await;
    assert_eq!(
        (status, list["items"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, changed) = call(&server, Some(&admin), "PATCH", &format!("/bots/{bot_id}"),
        Some(json!({ "handoff": { "on_unknown": "fallback_message", "fallback_message": "A person will reply." } }))).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        changed["handoff"]["fallback_message"],
        "A person will reply."
    );
    let (status, bad) = call(
        &server,
        Some(&admin),
        "PATCH",
        &format!("/bots/{bot_id}"),
        Some(json!({ "handoff": { "min_confidence": 7 } })),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    // The bot's own disclosure; null gives the server's back; an absent
    // field leaves it as it is.
    assert_eq!(changed["disclosure"], Value::Null);
    let bot_path = format!("/bots/{bot_id}");
    let patch = |body: Value| call(&server, Some(&admin), "PATCH", &bot_path, Some(body));
    let (status, changed) = patch(json!({ "disclosure": " I am Acme's bot. " })).await;
    assert_eq!(
        (status, changed["disclosure"].clone()),
        (200, json!("I am Acme's bot."))
    );
    let (_, changed) = patch(json!({ "system_prompt": "You help Acme's customers." })).await;
    assert_eq!(changed["disclosure"], "I am Acme's bot.");
    let (status, bad) = patch(json!({ "disclosure": "x".repeat(1001) })).await;
    assert_eq!(status, 400, "{bad}");
    let (_, changed) = patch(json!({ "disclosure": null })).await;
    assert_eq!(changed["disclosure"], Value::Null);

    // A channel: credentials stored, never returned, never audited.
    let (status, channel) = call(&server, Some(&admin), "POST", &format!("/bots/{bot_id}/channels"),
        Some(json!({ "kind": "telegram", "id": "acme-tg", "bot_token": "777:tok-SECRET-1", "secret_token": "hook-SECRET-2" }))).await;
    assert_eq!(status, 201, "{channel}");
    let (status, bad) = call(&server, Some(&admin), "POST", &format!("/bots/{bot_id}/channels"),
        Some(json!({ "kind": "telegram", "id": "x", "bot_token": "env:HOME", "secret_token": "abc" }))).await;
    assert_eq!(status, 400, "env: refused over the API: {bad}");
    let (status, bad) = call(&server, Some(&admin), "POST", &format!("/bots/{bot_id}/channels"),
        Some(json!({ "kind": "telegram", "id": "y", "bot_token": "1:a", "secret_token": "no spaces allowed SECRET-3" }))).await;
    assert_eq!(status, 400);
    assert!(!bad.to_string().contains("SECRET-3"), "{bad}");
    let (_, channels) = call(
        &server,
        Some(&admin),
        "GET",
        &format!("/bots/{bot_id}/channels"),
        None,
    )
    .await;
    let (_, audit) = call(&server, Some(&admin), "GET", "/audit?limit=200", None).await;
    for text in [channel.to_string(), channels.to_string(), audit.to_string()] {
        assert!(!text.contains("SECRET"), "a credential leaked: {text}");
    }
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "bot.create",
        "bot.update",
        "channel.create",
        "session.login",
    ] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    let update = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .rev()
        .find(|e| e["action"] == "bot.update")
        .expect("the first bot.update (the log is newest first)");
    assert_eq!(update["before"]["handoff"]["on_unknown"], "silent_handoff");
    assert_eq!(update["after"]["handoff"]["on_unknown"], "fallback_message");
    assert_eq!(update["source_ip"], "127.0.0.1");
    assert_eq!(
        call(&server, Some(&agent), "GET", "/audit", None).await.0,
        403
    );
    // Pages of the audit log chain by cursor.
    let (_, first) = call(&server, Some(&admin), "GET", "/audit?limit=2", None).await;
    let cursor = first["next_cursor"].as_str().expect("more pages");
    let (_, second) = call(
        &server,
        Some(&admin),
        "GET",
        &format!("/audit?limit=2&cursor={cursor}"),
        None,
    )
    .await;
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    assert_eq!(
        call(&server, Some(&admin), "GET", "/audit?cursor=garbage", None)
            .await
            .0,
        400
    );

    // A conversation of acme.
    telegram_message(app, "acme-tg", 9, 1, "where is my parcel?").await;
    let (status, convs) = call(
        &server,
        Some(&agent),
        "GET",
        "/conversations?channel=telegram",
        None,
    )
    .await;
    assert_eq!(status, 200, "{convs}");
    let conv_id = convs["items"][0]["id"]
        .as_str()
        .expect("a conversation")
        .to_owned();
    assert_eq!(convs["items"][0]["customer"]["display_name"], "Customer 9");
    let (_, none) = call(
        &server,
        Some(&agent),
        "GET",
        "/conversations?channel=email",
        None,
    )
    .await;
    assert_eq!(none["items"], json!([]));

    // Owners manage people; admins may not.
    let newcomer =
        json!({ "email": "new@acme.test", "password": "long enough pw", "role": "agent" });
    assert_eq!(
        call(
            &server,
            Some(&admin),
            "POST",
            "/users",
            Some(newcomer.clone())
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(&server, Some(&owner), "POST", "/users", Some(newcomer))
            .await
            .0,
        201
    );
    let (status, token) = call(
        &server,
        Some(&owner),
        "POST",
        "/tokens",
        Some(json!({ "name": "crm", "role": "agent" })),
    )
    .await;
    assert_eq!(status, 201);
    let machine = token["token"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    let token_id = token["id"].as_str().expect("id").to_owned();
    let (_, tokens) = call(&server, Some(&owner), "GET", "/tokens", None).await;
    assert!(
        !tokens.to_string().contains(&machine),
        "the secret is never listed"
    );
    assert_eq!(
        call(
            &server,
            Some(&machine),
            "GET",
            &format!("/conversations/{conv_id}"),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &server,
            Some(&machine),
            "POST",
            "/bots",
            Some(json!({ "name": "x" }))
        )
        .await
        .0,
        403
    );

    // Another workspace's owner sees and changes nothing of acme's, by any id.
    for (method, path, body) in [
        ("GET", format!("/bots/{bot_id}"), None),
        (
            "PATCH",
            format!("/bots/{bot_id}"),
            Some(json!({ "system_prompt": "pwned" })),
        ),
        ("GET", format!("/bots/{bot_id}/channels"), None),
        ("DELETE", format!("/bots/{bot_id}/channels/acme-tg"), None),
        (
            "POST",
            format!("/bots/{bot_id}/channels/acme-tg/webhook"),
            None,
        ),
        ("GET", format!("/bots/{bot_id}/documents"), None),
        ("GET", format!("/conversations/{conv_id}"), None),
        ("POST", format!("/conversations/{conv_id}/take_over"), None),
        (
            "POST",
            format!("/conversations/{conv_id}/reply"),
            Some(json!({ "text": "hi" })),
        ),
        (
            "POST",
            format!("/conversations/{conv_id}/notes"),
            Some(json!({ "text": "hi" })),
        ),
        ("POST", format!("/conversations/{conv_id}/resolve"), None),
        (
            "PATCH",
            format!("/users/{}", agent_user.id),
            Some(json!({ "role": "owner" })),
        ),
        ("DELETE", format!("/users/{}", agent_user.id), None),
        ("DELETE", format!("/tokens/{token_id}"), None),
    ] {
        let (status, body) = call(&server, Some(&intruder), method, &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (_, theirs) = call(&server, Some(&intruder), "GET", "/conversations", None).await;
    assert_eq!(theirs["items"], json!([]));
    let (_, theirs) = call(&server, Some(&intruder), "GET", "/bots", None).await;
    assert_eq!(theirs["items"], json!([]));
    let (_, theirs) = call(&server, Some(&intruder), "GET", "/audit", None).await;
    assert!(
        theirs["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["action"] == "session.login")
    );

    // Adding acme's owner to another workspace gives no power over the
    // account: it cannot be disabled from there.
    let (status, added) = call(
        &server,
        Some(&intruder),
        "POST",
        "/users",
        Some(json!({ "email": "owner@acme.test", "role": "agent" })),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    let owner_id = added["id"].as_str().expect("id").to_owned();
    let (status, _) = call(
        &server,
        Some(&intruder),
        "PATCH",
        &format!("/users/{owner_id}"),
        Some(json!({ "disabled": true })),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        call(
            &server,
            Some(&intruder),
            "DELETE",
            &format!("/users/{owner_id}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(&server, Some(&owner), "GET", "/me", None).await.0,
        200,
        "still logged in to acme"
    );

    // Revoked token, logged-out session, disabled user: 401.
    assert_eq!(
        call(
            &server,
            Some(&owner),
            "DELETE",
            &format!("/tokens/{token_id}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(&server, Some(&machine), "GET", "/bots", None).await.0,
        401
    );
    assert_eq!(
        call(&server, Some(&agent), "POST", "/auth/logout", None)
            .await
            .0,
        204
    );
    assert_eq!(call(&server, Some(&agent), "GET", "/me", None).await.0, 401);
    let (status, _) = call(
        &server,
        Some(&owner),
        "PATCH",
        &format!("/users/{}", agent_user.id),
        Some(json!({ "disabled": true })),
    )
    .await;
    assert_eq!(status, 200);
    let res = http()
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({ "email": "agent@acme.test", "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 401, "a disabled user cannot log in");
    // The last owner stays.
    let me = User::find_by_email(&mut app.db.get().await.expect("conn"), "owner@acme.test")
        .await
        .expect("q")
        .expect("owner");
    assert_eq!(
        call(
            &server,
            Some(&owner),
            "PATCH",
            &format!("/users/{}", me.id),
            Some(json!({ "role": "agent" }))
        )
        .await
        .0,
        409
    );

    // Guessing passwords: 401 three times, then 429 even with the right one.
    for _ in 0..3 {
        let res = http()
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({ "email": "admin@acme.test", "password": "guess guess" }))
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), 401);
    }
    let res = http()
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({ "email": "admin@acme.test", "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=300).contains(&wait), "Retry-After {wait}");

    // With the session cookie, a change from another site is refused; the
    // same change from the console's origin goes through.
    let cookie = format!("fd_session={owner}");
    let forged = http()
        .post(server.url(&format!("/api/v1/conversations/{conv_id}/notes")))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&json!({ "text": "forged" }))
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status(), 403);
    let own = http()
        .post(server.url(&format!("/api/v1/conversations/{conv_id}/notes")))
        .header("cookie", &cookie)
        .header("origin", format!("http://{}", server.addr))
        .json(&json!({ "text": "from the console" }))
        .send()
        .await
        .expect("post");
    assert_eq!(own.status(), 201);

    // Malformed bodies get the error shape.
    let (status, _) = call(
        &server,
        Some(&owner),
        "POST",
        "/bots",
        Some(json!({ "name": 5 })),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &server,
        Some(&owner),
        "GET",
        "/conversations?limit=100000",
        None,
    )
    .await;
    assert_eq!(status, 400);

    // The OpenAPI document covers the routes.
    let (status, doc) = call(&server, None, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/conversations/{id}/reply"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/bots/{id}/documents"]["post"]["requestBody"].is_object());
    server.stop().await;
}

both_backends! {
    roles_are_enforced_workspaces_isolated_and_changes_audited => roles_scoping_and_audit;
}

/// A websocket client.
pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(server: &TestServer, path: &str, token: Option<&str>) -> Socket {
    let url = format!("ws://{}{}", server.addr, path);
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket");
    socket
}

/// The next JSON text frame (pings are answered by the client library).
pub(crate) async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a frame within 20 s")
            .expect("socket open")
            .expect("frame");
        if let Ws::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON frame");
        }
    }
}

/// Frames until one of `kind` (for `conversation`, if given) arrives.
async fn until(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = next_json(socket).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

const BOT_FILE: &str = r#"
workspace = "shop"
name = "help"
system_prompt = "You help."

[handoff]
min_confidence = 0.35
on_unknown = "fallback_message"
fallback_message = "Let me get a colleague to help you with that."

[[channels]]
kind = "telegram"
id = "shop-tg"
bot_token = "4242:tg-token"
secret_token = "tg-secret"
"#;

/// Two server instances on one database and one Redis, a worker with the
/// real answer pipeline on the first.
struct Pair {
    one: TestServer,
    two: TestServer,
    telegram: FakePlatform,
    _db: TestDb,
}

async fn pair() -> Option<Pair> {
    let db = TestDb::new(Backend::Sqlite).await?;
    db.write_bot("shop.toml", BOT_FILE);
    let url = redis_url();
    if broker::redis::RedisBroker::connect(&url, "fdtest:probe", 2)
        .await
        .is_err()
    {
        missing_service("Redis", &url);
        return None;
    }
    let telegram = FakePlatform::start().await;
    let mut settings = db.settings();
    settings.channels.telegram.api_base = telegram.url.clone();
    settings.worker.debounce_ms = 0;
    settings.redis.url = Some(url.try_into().expect("url"));
    settings.redis.key_prefix = format!("fdtest:{}", uuid::Uuid::new_v4().simple());
    settings.realtime.chat_messages_per_minute = 5;
    let one = TestServer::with_worker(settings.clone(), &[], "w1").await;
    let two = TestServer::start(settings, &[]).await;
    Some(Pair {
        one,
        two,
        telegram,
        _db: db,
    })
}

impl Pair {
    async fn finish(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.one.stop()).await;
        self.two.stop().await;
        self.telegram.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_escalation_reaches_an_agent_on_another_instance_who_takes_over() {
    let Some(p) = pair().await else { return };
    member(&p.one.app, "shop", "agent@shop.test", Role::Agent).await;
    let agent = login(&p.two, "agent@shop.test").await;

    // No token, wrong token: refused before the upgrade.
    let url = format!("ws://{}/ws/agent", p.two.addr);
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err()
    );

    let mut socket = connect(&p.two, "/ws/agent", Some(&agent)).await;
    let hello = next_json(&mut socket).await;
    assert_eq!(hello["type"], "hello");

    // The customer asks for a person on Telegram; the worker on instance one
    // hands off; the agent on instance two hears it.
    telegram_message(
        &p.one.app,
        "shop-tg",
        31,
        1,
        "I want to talk to a human, my order is broken!!",
    )
    .await;
    let created = until(&mut socket, "conversation.created").await;
    let conv = created["conversation_id"].as_str().expect("id").to_owned();
    let handoff = until(&mut socket, "handoff.requested").await;
    assert_eq!(handoff["conversation_id"], conv.as_str());
    assert_eq!(handoff["handoff"]["reason"], "customer_asked");
    assert!(handoff["handoff"]["urgency"].is_string());
    assert!(handoff["seq"].as_i64().expect("seq") > hello["seq"].as_i64().expect("seq"));
    let seen = handoff["seq"].as_i64().expect("seq");

    // Take over and reply on instance two; the reply goes out on Telegram.
    let (status, taken) = call(
        &p.two,
        Some(&agent),
        "POST",
        &format!("/conversations/{conv}/take_over"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{taken}");
    assert_eq!(taken["status"], "agent");
    let (status, reply) = call(
        &p.two,
        Some(&agent),
        "POST",
        &format!("/conversations/{conv}/reply"),
        Some(json!({ "text": "Hi, this is Sam. I'm on it." })),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["delivery_status"], "sent");
    let sent: Vec<String> = p
        .telegram
        .calls("/sendMessage")
        .iter()
        .map(|c| c.body["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        sent.iter().any(|t| t == "Hi, this is Sam. I'm on it."),
        "{sent:?}"
    );

    // The customer writes again: the bot stays silent.
    let before = p.telegram.calls("/sendMessage").len();
    telegram_message(
        &p.one.app,
        "shop-tg",
        31,
        2,
        "thanks, how long will it take?",
    )
    .await;
    until(&mut socket, "message.created").await;
    until_turns_done(&p.one.app).await;
    assert_eq!(
        p.telegram.calls("/sendMessage").len(),
        before,
        "the bot stays silent"
    );

    // Disconnected, the agent misses a note; reconnecting with after= replays it.
    drop(socket);
    let (status, _) = call(
        &p.one,
        Some(&agent),
        "POST",
        &format!("/conversations/{conv}/notes"),
        Some(json!({ "text": "customer is upset" })),
    )
    .await;
    assert_eq!(status, 201);
    let mut socket = connect(&p.two, &format!("/ws/agent?after={seen}"), Some(&agent)).await;
    assert_eq!(next_json(&mut socket).await["type"], "hello");
    let note = until(&mut socket, "note.created").await;
    assert_eq!(note["note"]["body"], "customer is upset");

    // The detail shows messages, the handoff's draft and triage, the note.
    let (_, detail) = call(
        &p.two,
        Some(&agent),
        "GET",
        &format!("/conversations/{conv}"),
        None,
    )
    .await;
    assert_eq!(detail["handoffs"][0]["reason"], "customer_asked");
    assert_eq!(detail["notes"][0]["body"], "customer is upset");
    let authors: Vec<&str> = detail["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["author_kind"].as_str())
        .collect();
    assert!(
        authors.contains(&"agent") && authors.contains(&"customer"),
        "{authors:?}"
    );

    // An oversized frame closes the socket; the server carries on.
    socket
        .send(Ws::text("x".repeat(10_000)))
        .await
        .expect("send");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Ws::Close(reason)) => return reason.map(|r| u16::from(r.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("closed");
    assert_eq!(closed, Some(1009));
    assert_eq!(call(&p.two, Some(&agent), "GET", "/me", None).await.0, 200);

    // Resolve: the conversation leaves the queue.
    let (status, resolved) = call(
        &p.two,
        Some(&agent),
        "POST",
        &format!("/conversations/{conv}/resolve"),
        None,
    )
    .await;
    assert_eq!(
        (status, resolved["status"].as_str()),
        (200, Some("resolved"))
    );
    assert_eq!(
        call(
            &p.two,
            Some(&agent),
            "POST",
            &format!("/conversations/{conv}/resolve"),
            None
        )
        .await
        .0,
        409
    );
    Box::pin(p.finish()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chat_widget_streams_replies_resumes_and_refuses_floods() {
    let Some(p) = pair().await else { return };
    member(&p.one.app, "shop", "agent@shop.test", Role::Agent).await;
    let agent = login(&p.one, "agent@shop.test").await;
    let (_, bots) = call(&p.one, Some(&agent), "GET", "/bots", None).await;
    let bot = bots["items"][0]["id"].as_str().expect("bot").to_owned();

    assert_eq!(
        http()
            .get(p.two.url("/ws/chat/no-such-bot"))
            .send()
            .await
            .expect("get")
            .status(),
        404
    );
    let mut chat = connect(&p.two, &format!("/ws/chat/{bot}"), None).await;
    let session = next_json(&mut chat).await;
    assert_eq!(session["type"], "session");
    let token = session["session"].as_str().expect("token").to_owned();

    // The question is out of scope (no knowledge): the fallback text, and a
    // handoff; the worker runs on instance one, the widget is on two.
    chat.send(Ws::text(
        json!({ "type": "message", "text": "Can I pay with gold bars?", "id": "c1" }).to_string(),
    ))
    .await
    .expect("send");
    let echo = until(&mut chat, "message").await;
    assert_eq!(
        (echo["author"].as_str(), echo["text"].as_str()),
        (Some("customer"), Some("Can I pay with gold bars?"))
    );
    let mut bot_reply = until(&mut chat, "message").await;
    while bot_reply["author"] != "bot" {
        bot_reply = until(&mut chat, "message").await;
    }
    assert!(
        bot_reply["text"]
            .as_str()
            .expect("text")
            .contains("Let me get a colleague"),
        "{bot_reply}"
    );
    let last = bot_reply["seq"].as_i64().expect("seq");

    // An agent answers from the API; the widget shows it. (The handoff is
    // recorded just after the notice is sent: wait for it.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let conv = loop {
        let (_, convs) = call(
            &p.one,
            Some(&agent),
            "GET",
            "/conversations?status=pending_handoff&channel=webchat",
            None,
        )
        .await;
        if let Some(id) = convs["items"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "never escalated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, _) = call(
        &p.one,
        Some(&agent),
        "POST",
        &format!("/conversations/{conv}/reply"),
        Some(json!({ "text": "We take cards only, sorry!" })),
    )
    .await;
    assert_eq!(status, 201);
    let mut frame = until(&mut chat, "message").await;
    while frame["author"] != "agent" {
        frame = until(&mut chat, "message").await;
    }
    assert_eq!(frame["text"], "We take cards only, sorry!");

    // Reconnecting with the session and the last seq seen resumes: what came
    // after it is replayed, nothing before.
    drop(chat);
    let mut chat = connect(
        &p.one,
        &format!("/ws/chat/{bot}?session={token}&after={last}"),
        None,
    )
    .await;
    let again = next_json(&mut chat).await;
    assert_eq!(again["session"], token.as_str());
    assert_eq!(again["conversation_id"], conv.as_str());
    let replayed = until(&mut chat, "message").await;
    assert_eq!(replayed["author"], "agent");

    // The agent resolves: the widget hears that the next message starts a
    // new conversation, and the bot answers that one afresh.
    let (status, _) = call(
        &p.one,
        Some(&agent),
        "POST",
        &format!("/conversations/{conv}/resolve"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let fresh = until(&mut chat, "session").await;
    assert_eq!(fresh["conversation_id"], Value::Null);
    chat.send(Ws::text(
        json!({ "type": "message", "text": "Hello again, do you sell helmets?", "id": "c2" })
            .to_string(),
    ))
    .await
    .expect("send");
    let mut frame = until(&mut chat, "message").await;
    assert_eq!(frame["author"], "customer");
    assert_eq!(frame["seq"], 1, "seqs count per conversation");
    while frame["author"] != "bot" {
        frame = until(&mut chat, "message").await;
    }
    assert!(frame["seq"].as_i64().expect("seq") > 1);

    // Malformed frames get an error; floods close the socket.
    chat.send(Ws::text("not json")).await.expect("send");
    assert_eq!(until(&mut chat, "error").await["code"], "bad_message");
    let mut closed = None;
    for i in 0..10 {
        if chat
            .send(Ws::text(
                json!({ "type": "message", "text": format!("spam {i}") }).to_string(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let wait = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = chat.next().await {
            if let Ok(Ws::Close(reason)) = frame {
                return reason.map(|r| u16::from(r.code));
            }
            if frame.is_err() {
                return None;
            }
        }
        None
    });
    if let Ok(code) = wait.await {
        closed = code;
    }
    assert_eq!(closed, Some(1008), "policy violation close");
    Box::pin(p.finish()).await;
}
