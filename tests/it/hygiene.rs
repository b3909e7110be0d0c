//! Bounded costs for anonymous callers and account hygiene: logins counted
//! at the door (across nodes through Redis), password changes and resets,
//! API tokens that answer to their creator, the chat widget's limits and
//! origins, the metrics token, what `/readyz` tells strangers, and the
//! pages' Content-Security-Policy.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::agents::{PASSWORD, call, http, login, member, next_json};
use crate::common::{Backend, TestDb, TestServer, missing_service, redis_url};
use store::models::user::Role;

const BOT_FILE: &str = r#"
workspace = "shop"
name = "help"
system_prompt = "You help."
"#;

/// `n` logins at once with a wrong password for `email`, spread over
/// `servers`; how many got each status.
async fn wrong_logins(servers: &[&TestServer], email: &str, n: usize) -> Vec<(u16, Option<u64>)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = servers[i % servers.len()].url("/api/v1/auth/login");
            let email = email.to_owned();
            tokio::spawn(async move {
                let res = http()
                    .post(url)
                    .json(&json!({ "email": email, "password": "wrong wrong wrong" }))
                    .send()
                    .await
                    .expect("login");
                let wait = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                (res.status().as_u16(), wait)
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("joined"));
    }
    out
}

fn count(outcomes: &[(u16, Option<u64>)], status: u16) -> usize {
    outcomes.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_are_counted_when_they_start_on_every_node() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let url = redis_url();
    if broker::redis::RedisBroker::connect(&url, "fdtest:probe", 2)
        .await
        .is_err()
    {
        missing_service("Redis", &url);
        return;
    }
    let mut settings = db.settings();
    settings.redis.url = Some(url.try_into().expect("url"));
    settings.redis.key_prefix = format!("fdtest:{}", uuid::Uuid::new_v4().simple());
    settings.auth.login_attempts = 10;
    // One password check at a time and a short queue: most wait or get 429.
    settings.auth.password_checks = 1;
    settings.auth.login_queue = 4;
    let one = TestServer::start(settings.clone(), &[]).await;
    let two = TestServer::start(settings, &[]).await;
    member(&one.app, "shop", "ann@shop.test", Role::Agent).await;

    // 60 at once on two nodes: exactly the allowance is checked; the rest
    // are 429 with Retry-After, whichever node they reached.
    let outcomes = wrong_logins(&[&one, &two], "ann@shop.test", 60).await;
    assert_eq!(
        count(&outcomes, 401) + count(&outcomes, 429),
        60,
        "{outcomes:?}"
    );
    assert!(count(&outcomes, 401) <= 10, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, wait)| wait.is_some_and(|w| w >= 1)),
        "{outcomes:?}"
    );
    // The right password is refused too until the window passes.
    let res = http()
        .post(one.url("/api/v1/auth/login"))
        .json(&json!({ "email": "ann@shop.test", "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 429);

    // Many accounts at once (a spray): never a 5xx, and /healthz stays up.
    let spray: Vec<_> = (0..40)
        .map(|i| {
            let url = one.url("/api/v1/auth/login");
            tokio::spawn(async move {
                http()
                    .post(url)
                    .json(
                        &json!({ "email": format!("u{i}@shop.test"), "password": "x".repeat(12) }),
                    )
                    .send()
                    .await
                    .expect("login")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let health = http()
        .get(two.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    for task in spray {
        let status = task.await.expect("joined");
        assert!(matches!(status, 401 | 429), "{status}");
    }
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_tokens_and_what_strangers_see() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    db.write_bot("shop.toml", BOT_FILE);
    let mut settings = db.settings();
    settings.security.metrics_token = Some("scrape-me-please".into());
    settings.server.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    let server = TestServer::start(settings, &[]).await;
    let app = &server.app;
    let owner_user = member(app, "shop", "owner@shop.test", Role::Owner).await;
    member(app, "shop", "second@shop.test", Role::Owner).await;
    let agent_user = member(app, "shop", "agent@shop.test", Role::Agent).await;
    let owner = login(&server, "owner@shop.test").await;
    let agent = login(&server, "agent@shop.test").await;
    let agent_again = login(&server, "agent@shop.test").await;

    // A user changes their own password: the current one is required, the
    // other sessions end, this one stays.
    let change = |current: &str, new: &str| json!({ "current": current, "new": new });
    let (status, _) = call(
        &server,
        Some(&agent),
        "POST",
        "/me/password",
        Some(change("nope nope nope", "brand new secret")),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &server,
        Some(&agent),
        "POST",
        "/me/password",
        Some(change(PASSWORD, "short")),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = call(
        &server,
        Some(&agent),
        "POST",
        "/me/password",
        Some(change(PASSWORD, "brand new secret")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions_ended"], 1);
    assert_eq!(call(&server, Some(&agent), "GET", "/me", None).await.0, 200);
    assert_eq!(
        call(&server, Some(&agent_again), "GET", "/me", None)
            .await
            .0,
        401
    );
    let old = http()
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({ "email": "agent@shop.test", "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(old.status(), 401);

    // An owner resets a member's password: all their sessions end.
    let path = format!("/users/{}/password", agent_user.id);
    let (status, _) = call(
        &server,
        Some(&agent),
        "POST",
        &path,
        Some(json!({ "password": "owner picked this" })),
    )
    .await;
    assert_eq!(status, 403, "agents cannot");
    let (status, body) = call(
        &server,
        Some(&owner),
        "POST",
        &path,
        Some(json!({ "password": "owner picked this" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(call(&server, Some(&agent), "GET", "/me", None).await.0, 401);
    let (status, _) = call(
        &server,
        Some(&owner),
        "POST",
        &format!("/users/{}/password", owner_user.id),
        Some(json!({ "password": "my own new one" })),
    )
    .await;
    assert_eq!(status, 403, "an owner's own password needs the current one");

    // An API token answers to its creator: disabled, it stops; enabled,
    // it works again; removed, it is revoked for good.
    let (status, created) = call(
        &server,
        Some(&owner),
        "POST",
        "/tokens",
        Some(json!({ "name": "ci", "role": "admin" })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().expect("token").to_owned();
    assert_eq!(
        call(&server, Some(&token), "GET", "/bots", None).await.0,
        200
    );
    let second_token = login(&server, "second@shop.test").await;
    let toggle = |disabled: bool| json!({ "disabled": disabled });
    let owner_path = format!("/users/{}", owner_user.id);
    assert_eq!(
        call(
            &server,
            Some(&second_token),
            "PATCH",
            &owner_path,
            Some(toggle(true))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&server, Some(&token), "GET", "/bots", None).await.0,
        401
    );
    let (_, tokens) = call(&server, Some(&second_token), "GET", "/tokens", None).await;
    let listed = &tokens["items"][0];
    assert_eq!(listed["owned_by"], "creator", "{tokens}");
    assert_eq!(listed["acting_role"], Value::Null, "{tokens}");
    assert!(listed["inactive"].is_string(), "{tokens}");
    assert_eq!(
        call(
            &server,
            Some(&second_token),
            "PATCH",
            &owner_path,
            Some(toggle(false))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&server, Some(&token), "GET", "/bots", None).await.0,
        200
    );
    assert_eq!(
        call(&server, Some(&second_token), "DELETE", &owner_path, None)
            .await
            .0,
        204
    );
    {
        let mut conn = app.db.get().await.expect("conn");
        let shop = store::models::workspace::Workspace::ensure(&mut conn, "shop")
            .await
            .expect("workspace");
        store::models::user::User::set_role(&mut conn, &owner_user.id, &shop.id, Role::Owner)
            .await
            .expect("back in");
    }
    assert_eq!(
        call(&server, Some(&token), "GET", "/bots", None).await.0,
        401,
        "revoked for good"
    );

    // Secure cookies whenever the request came over HTTPS (here through a
    // trusted proxy); not over plain HTTP.
    let cookie_of = |res: &reqwest::Response| {
        res.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    let login_as = |proto: Option<&'static str>| {
        let mut req = http()
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({ "email": "second@shop.test", "password": PASSWORD }));
        if let Some(proto) = proto {
            req = req
                .header("x-forwarded-proto", proto)
                .header("x-forwarded-for", "203.0.113.9");
        }
        req.send()
    };
    let plain = login_as(None).await.expect("login");
    assert!(
        !cookie_of(&plain).contains("Secure"),
        "{}",
        cookie_of(&plain)
    );
    let https = login_as(Some("https")).await.expect("login");
    assert!(
        cookie_of(&https).contains("Secure"),
        "{}",
        cookie_of(&https)
    );

    // /metrics wants the token; /readyz tells strangers only yes or no.
    let metrics = |token: Option<&str>| {
        let mut req = http().get(server.url("/metrics"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    assert_eq!(metrics(None).await.expect("get").status(), 401);
    assert_eq!(metrics(Some("wrong")).await.expect("get").status(), 401);
    let scraped = metrics(Some("scrape-me-please")).await.expect("get");
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped
            .text()
            .await
            .expect("text")
            .contains("http_requests_total")
    );
    let readyz = |forwarded: bool| {
        let mut req = http().get(server.url("/readyz"));
        if forwarded {
            req = req.header("x-forwarded-for", "203.0.113.9");
        }
        req.send()
    };
    let local: Value = readyz(false)
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let remote: Value = readyz(true).await.expect("get").json().await.expect("json");
    assert_eq!(
        local["checks"]["database"]["ok"],
        remote["checks"]["database"]["ok"]
    );
    assert!(local["checks"]["bot_files"]["files"].is_number(), "{local}");
    assert!(
        remote["checks"]["bot_files"].get("files").is_none(),
        "{remote}"
    );

    // The pages carry a Content-Security-Policy without unsafe scripts.
    for page in ["/", "/demo"] {
        let res = http().get(server.url(page)).send().await.expect("page");
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(csp.contains("script-src 'self' 'sha256-"), "{page}: {csp}");
        assert!(
            !csp.contains("unsafe-eval") && csp.contains("object-src 'none'"),
            "{csp}"
        );
    }
    server.stop().await;
}

/// Opens the widget's socket for `bot` from `origin`; the HTTP status of a
/// refusal, or `None` when it opened.
async fn open_widget(
    server: &TestServer,
    bot: &str,
    origin: Option<&str>,
) -> Result<crate::agents::Socket, u16> {
    let mut request = format!("ws://{}/ws/chat/{bot}", server.addr)
        .into_client_request()
        .expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_keeps_to_its_origins_and_limits() {
    use futures_util::SinkExt;
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    db.write_bot("shop.toml", BOT_FILE);
    let mut settings = db.settings();
    settings.realtime.chat_sessions_per_ip_per_minute = 3;
    settings.realtime.chat_messages_per_ip_per_minute = 2;
    let server = TestServer::start(settings, &[]).await;
    member(&server.app, "other", "boss@other.test", Role::Owner).await;
    let boss = login(&server, "boss@other.test").await;
    let (status, bot) = call(
        &server,
        Some(&boss),
        "POST",
        "/bots",
        Some(json!({ "name": "desk", "widget_origins": ["https://shop.example"] })),
    )
    .await;
    assert_eq!(status, 201, "{bot}");
    let bot_id = bot["id"].as_str().expect("id").to_owned();
    assert_eq!(bot["widget_origins"], json!(["https://shop.example"]));
    let (status, _) = call(
        &server,
        Some(&boss),
        "POST",
        "/bots",
        Some(json!({ "name": "bad", "widget_origins": ["shop.example/path"] })),
    )
    .await;
    assert_eq!(status, 400);

    assert_eq!(
        open_widget(&server, &bot_id, Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(open_widget(&server, &bot_id, None).await.err(), Some(403));
    let mut socket = open_widget(&server, &bot_id, Some("https://shop.example"))
        .await
        .expect("opens");
    assert_eq!(next_json(&mut socket).await["type"], "session");
    // Two more sessions from this address this minute, then 429.
    for _ in 0..2 {
        open_widget(&server, &bot_id, Some("https://shop.example"))
            .await
            .expect("opens");
    }
    assert_eq!(
        open_widget(&server, &bot_id, Some("https://shop.example"))
            .await
            .err(),
        Some(429)
    );

    // Two messages a minute from this address; the third gets an error
    // frame and the socket stays open.
    for i in 0..3 {
        let frame =
            json!({ "type": "message", "text": format!("question {i}"), "id": format!("m{i}") });
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(
                frame.to_string(),
            ))
            .await
            .expect("send");
    }
    let limited = loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), next_json(&mut socket))
            .await
            .expect("a frame");
        if frame["type"] == "error" {
            break frame;
        }
    };
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    assert!(
        limited["retry_after_secs"].as_u64().is_some_and(|s| s >= 1),
        "{limited}"
    );
    server.stop().await;
}
