//! The business's admin console: the "try a question" route
//! (`POST /bots/{id}/ask`) on the real pipeline, the audit log's filters,
//! the admin script and the console's policy, and, in a real browser, an
//! owner who uploads a document and asks it a question while an agent sees
//! no admin views.

use fantoccini::Locator;
use serde_json::{Value, json};

use crate::agents::{PASSWORD, call, http, login, member};
use crate::both_backends;
use crate::common::chrome::{browser, sign_in, start_driver, wait_for};
use crate::common::{Backend, TestDb, TestServer};
use store::models::bot::Bot;
use store::models::user::Role;
use store::models::workspace::Workspace;

const BOT_FILE: &str = r#"
workspace = "bikes"
name = "help"
system_prompt = "You help."
language = "en"
"#;

const RETURNS: &str = "# Returns\n\n\
Bicycles can be returned within 45 days of delivery for a full refund. \
The return label is free and the refund reaches your card within five working days.\n\n\
# Warranty\n\n\
Frames carry a ten-year warranty against manufacturing defects.\n";

const QUESTION: &str = "How many days do I have to return a bicycle?";

/// A server for the `bikes` workspace with its bot and the installed
/// embedding models, no worker.
pub(crate) async fn bikes(db: &TestDb, models: std::path::PathBuf) -> (TestServer, Bot) {
    db.write_bot("bikes.toml", BOT_FILE);
    let mut settings = db.settings();
    settings.embedding.model_dir = models;
    let server = TestServer::start(settings, &[]).await;
    let mut conn = server.app.db.get().await.expect("conn");
    let workspace = Workspace::ensure(&mut conn, "bikes")
        .await
        .expect("workspace");
    let bot = Bot::find(&mut conn, &workspace.id, "help")
        .await
        .expect("query")
        .expect("bot");
    (server, bot)
}

/// A multipart/form-data body with one `file` part per `(name, bytes)`.
fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----frontdesk-test-boundary";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub(crate) async fn upload(
    server: &TestServer,
    token: &str,
    bot: &Bot,
    files: &[(&str, &[u8])],
) -> Value {
    let (content_type, body) = multipart(files);
    let res = http()
        .post(server.url(&format!("/api/v1/bots/{}/documents", bot.id)))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status(), 201, "upload");
    res.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trying_a_question_runs_the_real_pipeline_and_stores_nothing() {
    let Some(models) = crate::knowledge::model_dir() else {
        return;
    };
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let (server, bot) = bikes(&db, models).await;
    member(&server.app, "bikes", "owner@bikes.test", Role::Owner).await;
    member(&server.app, "bikes", "agent@bikes.test", Role::Agent).await;
    member(&server.app, "other", "owner@other.test", Role::Owner).await;
    let owner = login(&server, "owner@bikes.test").await;
    let uploaded = upload(&server, &owner, &bot, &[("returns.md", RETURNS.as_bytes())]).await;
    assert_eq!(uploaded["ingested"], 1, "{uploaded}");
    let ask = format!("/bots/{}/ask", bot.id);

    let (status, known) = call(
        &server,
        Some(&owner),
        "POST",
        &ask,
        Some(json!({ "question": QUESTION })),
    )
    .await;
    assert_eq!(status, 200, "{known}");
    assert_eq!(known["decision"], "answered", "{known}");
    assert_eq!(known["retriever"], "hybrid", "{known}");
    assert!(
        known["handoff"].is_null() && known["choices"].is_null(),
        "{known}"
    );
    let paragraphs: Vec<&str> = known["paragraphs"]
        .as_array()
        .expect("paragraphs")
        .iter()
        .map(|p| p.as_str().expect("text"))
        .collect();
    assert!(!paragraphs.is_empty(), "{known}");
    assert_eq!(known["answer"], paragraphs.join("\n\n"), "{known}");
    assert!(
        known["answer"]
            .as_str()
            .is_some_and(|a| a.contains("45 days")),
        "{known}"
    );
    assert_eq!(known["sources"][0]["doc_ref"], "returns.md", "{known}");
    assert_eq!(known["sources"][0]["cited"], true, "{known}");
    for key in ["label", "score"] {
        assert!(!known["sources"][0][key].is_null(), "{key}: {known}");
    }
    let confidence = known["confidence"].as_f64().expect("confidence");
    assert!(confidence >= bot.min_confidence, "{known}");

    let (status, unknown) = call(
        &server,
        Some(&owner),
        "POST",
        &ask,
        Some(json!({ "question": "Do you sell pizza with extra cheese?" })),
    )
    .await;
    assert_eq!(status, 200, "{unknown}");
    assert_eq!(unknown["decision"], "handoff", "{unknown}");
    assert_eq!(unknown["handoff"]["reason"], "low_confidence", "{unknown}");
    assert_eq!(unknown["answer"], bot.fallback_message, "{unknown}");

    // Nobody was written to and nothing was stored as a conversation.
    let (_, conversations) = call(&server, Some(&owner), "GET", "/conversations", None).await;
    assert_eq!(conversations["items"], json!([]), "{conversations}");
    let (_, report) = call(&server, Some(&owner), "GET", "/analytics", None).await;
    assert_eq!(report["totals"]["conversations"], 0, "{report}");
    assert_eq!(report["totals"]["customer_messages"], 0, "{report}");

    // Bad questions, other roles and workspaces.
    for (body, needle) in [
        (json!({ "question": "   " }), "question must not be empty"),
        (
            json!({ "question": "x".repeat(2001) }),
            "question must be at most 2000",
        ),
        (json!({}), "question"),
        (json!({ "question": QUESTION, "history": [] }), "history"),
    ] {
        let (status, error) = call(&server, Some(&owner), "POST", &ask, Some(body)).await;
        assert_eq!(status, 400, "{error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let agent = login(&server, "agent@bikes.test").await;
    let (status, _) = call(
        &server,
        Some(&agent),
        "POST",
        &ask,
        Some(json!({ "question": QUESTION })),
    )
    .await;
    assert_eq!(status, 403);
    let stranger = login(&server, "owner@other.test").await;
    let (status, _) = call(
        &server,
        Some(&stranger),
        "POST",
        &ask,
        Some(json!({ "question": QUESTION })),
    )
    .await;
    assert_eq!(status, 404);
    let (_, doc) = call(&server, None, "GET", "/openapi.json", None).await;
    assert!(
        doc["paths"]["/api/v1/bots/{id}/ask"]["post"].is_object(),
        "in the OpenAPI document"
    );
    server.stop().await;
}

/// `GET /audit` narrowed by actor, target kind and target; blank
/// parameters (an empty form field) filter nothing.
async fn audit_filters(db: TestDb) {
    let server = TestServer::start(db.settings(), &[]).await;
    let owner_user = member(&server.app, "acme", "owner@acme.test", Role::Owner).await;
    let admin_user = member(&server.app, "acme", "admin@acme.test", Role::Admin).await;
    let owner = login(&server, "owner@acme.test").await;
    let admin = login(&server, "admin@acme.test").await;
    let (_, first) = call(
        &server,
        Some(&owner),
        "POST",
        "/bots",
        Some(json!({ "name": "first" })),
    )
    .await;
    let (_, second) = call(
        &server,
        Some(&admin),
        "POST",
        "/bots",
        Some(json!({ "name": "second" })),
    )
    .await;
    let first_id = first["id"].as_str().expect("id");
    let (status, _) = call(
        &server,
        Some(&admin),
        "PATCH",
        &format!("/bots/{first_id}"),
        Some(json!({ "system_prompt": "Be brief." })),
    )
    .await;
    assert_eq!(status, 200);
    // Sorted: entries of one millisecond may come in either order.
    let actions = |page: &Value| -> Vec<(String, String)> {
        let mut found: Vec<_> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or_default().to_owned(),
                    e["target_id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        found.sort();
        found
    };
    let (status, page) = call(
        &server,
        Some(&owner),
        "GET",
        &format!("/audit?target_id={first_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        actions(&page),
        [
            ("bot.create".to_owned(), first_id.to_owned()),
            ("bot.update".to_owned(), first_id.to_owned())
        ]
    );
    let (_, page) = call(
        &server,
        Some(&owner),
        "GET",
        &format!("/audit?actor_id={}&target_kind=bot", admin_user.id),
        None,
    )
    .await;
    let second_id = second["id"].as_str().expect("id").to_owned();
    assert_eq!(
        actions(&page),
        [
            ("bot.create".to_owned(), second_id),
            ("bot.update".to_owned(), first_id.to_owned())
        ]
    );
    let (_, page) = call(
        &server,
        Some(&owner),
        "GET",
        &format!(
            "/audit?actor_id={}&action=bot.create&target_id=",
            owner_user.id
        ),
        None,
    )
    .await;
    assert_eq!(
        actions(&page),
        [("bot.create".to_owned(), first_id.to_owned())]
    );
    let (_, page) = call(&server, Some(&owner), "GET", "/audit?actor_id=nobody", None).await;
    assert_eq!(page["items"], json!([]));
    server.stop().await;
}

both_backends! {
    the_audit_log_filters_by_action_actor_and_target => audit_filters;
}

#[tokio::test]
async fn the_admin_script_is_served_and_the_console_policy_holds() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let server = TestServer::start(db.settings(), &[]).await;
    let res = http()
        .get(server.url("/admin.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    let header = |res: &reqwest::Response, name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        header(&res, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    assert!(
        header(&res, "access-control-allow-origin").is_empty(),
        "same origin only"
    );
    assert!(
        res.text()
            .await
            .expect("body")
            .contains("window.FrontdeskConsole")
    );

    let res = http().get(server.url("/")).send().await.expect("get");
    let csp = header(&res, "content-security-policy");
    assert!(csp.contains("script-src 'self' 'sha256-"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let page = res.text().await.expect("body");
    assert!(page.contains(r#"<script src="/admin.js"></script>"#));
    server.stop().await;
}

/// Violations of the console's CSP, recorded from now on.
const WATCH_CSP: &str = "window.cspViolations = []; \
    document.addEventListener('securitypolicyviolation', e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || ''))); \
    return true;";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_uploads_a_document_and_tries_a_question_in_the_console() {
    let Some(models) = crate::knowledge::model_dir() else {
        return;
    };
    let Some(driver) = start_driver() else { return };
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let (server, bot) = bikes(&db, models).await;
    // A question the bot could not answer, as a handoff leaves it.
    let gap_id = {
        let mut conn = server.app.db.get().await.expect("conn");
        let mut vector = vec![0.0f32; knowledge::models::DIMENSIONS];
        vector[0] = 1.0;
        store::models::gap::Gap::open(
            &mut conn,
            &bot.workspace_id,
            &bot.id,
            "Do you rent out tandem bicycles?",
            server.app.knowledge.model_for(&bot).id,
            &vector,
        )
        .await
        .expect("gap")
    };
    member(&server.app, "bikes", "owner@bikes.test", Role::Owner).await;
    member(&server.app, "bikes", "agent@bikes.test", Role::Agent).await;
    let files = tempfile::tempdir().expect("tempdir");
    let returns = files.path().join("returns.md");
    std::fs::write(&returns, RETURNS).expect("write");
    let broken = files.path().join("broken.pdf");
    std::fs::write(&broken, b"%PDF-1.7 this is not a PDF").expect("write");

    let owner = browser(&driver).await;
    sign_in(&owner, &server.url("/"), "owner@bikes.test", PASSWORD).await;
    owner.execute(WATCH_CSP, vec![]).await.expect("watch");
    wait_for(
        &owner,
        "the admin nav",
        "return !document.getElementById('admin-nav').hidden;",
    )
    .await;
    owner
        .find(Locator::Css("#admin-nav button[data-view=knowledge]"))
        .await
        .expect("Knowledge")
        .click()
        .await
        .expect("click");
    let input = owner
        .wait()
        .for_element(Locator::Css("#kb-files"))
        .await
        .expect("file input");
    // Two files at once, as a drop would give them: one line each.
    input
        .send_keys(&format!("{}\n{}", returns.display(), broken.display()))
        .await
        .expect("choose files");
    let lines = wait_for(
        &owner,
        "the upload's result lines",
        "const l = [...document.querySelectorAll('#kb-uploads li.result')].map(li => li.textContent); \
         return l.length === 2 ? l : null;",
    )
    .await;
    let lines: Vec<String> = serde_json::from_value(lines).expect("lines");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("✓ returns.md") && l.contains(" chunk")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("✗ broken.pdf — ")),
        "{lines:?}"
    );
    let row = wait_for(
        &owner,
        "the document in the list",
        "const r = document.querySelector('#kb-docs tr[data-source=\"returns.md\"]'); return r && r.textContent;",
    )
    .await;
    assert!(
        row.as_str().unwrap_or_default().contains("indexed"),
        "{row}"
    );
    wait_for(
        &owner,
        "the failed file in the list, with its error",
        "const r = document.querySelector('#kb-docs tr[data-failed=\"broken.pdf\"]'); return r && r.textContent.includes('failed');",
    )
    .await;

    owner
        .find(Locator::Css("#kb-question"))
        .await
        .expect("question box")
        .send_keys(QUESTION)
        .await
        .expect("type");
    owner
        .find(Locator::Css("#kb-ask"))
        .await
        .expect("ask")
        .click()
        .await
        .expect("click");
    let answer = wait_for(
        &owner,
        "the answer",
        "const a = document.querySelector('#kb-answer .answer-text'); return a && a.textContent;",
    )
    .await;
    assert!(
        answer.as_str().unwrap_or_default().contains("45 days"),
        "{answer}"
    );
    let shown = owner
        .execute(
            "return [document.getElementById('kb-decision').textContent, \
                     document.getElementById('kb-confidence').textContent, \
                     document.querySelector('#kb-answer table').textContent];",
            vec![],
        )
        .await
        .expect("details");
    assert_eq!(shown[0], "answered", "{shown}");
    assert!(
        shown[1].as_str().unwrap_or_default().parse::<f64>().is_ok(),
        "{shown}"
    );
    assert!(
        shown[2].as_str().unwrap_or_default().contains("returns.md"),
        "{shown}"
    );

    // The other views render without a CSP violation, the parallel APIs
    // present or not.
    let shown = "const e = document.querySelector('#admin-main .error:not([hidden]), #admin-main .unavailable'); \
                 if (e) return e.textContent;";
    for (view, done) in [
        ("bots", "return !!document.getElementById('bot-prompt');"),
        (
            "channels",
            "return !!document.querySelector('#channel-rows tr');",
        ),
        (
            "team",
            "return !!document.querySelector('#token-rows tr') && !!document.querySelector('#team-members tr');",
        ),
        (
            "audit",
            "return !!document.querySelector('#audit-rows tr');",
        ),
        (
            "analytics",
            "return !!document.querySelector('#analytics-out svg.chart');",
        ),
        (
            "gaps",
            "return !!document.querySelector('#gap-list .panel');",
        ),
        (
            "usage",
            "return !!document.querySelector('#usage-out .cards');",
        ),
    ] {
        owner
            .find(Locator::Css(&format!(
                "#admin-nav button[data-view={view}]"
            )))
            .await
            .expect("nav")
            .click()
            .await
            .expect("click");
        let result = wait_for(&owner, view, &format!("{shown} {done}")).await;
        // Gaps and usage come from APIs built beside this one: without
        // them, the view says so.
        if let Some(error) = result.as_str() {
            assert!(
                ["gaps", "usage"].contains(&view) && error.contains("not available on this server"),
                "{view}: {error}"
            );
        }
    }
    // A knowledge gap answered with one click: an FAQ document at once.
    owner
        .find(Locator::Css("#admin-nav button[data-view=gaps]"))
        .await
        .expect("nav")
        .click()
        .await
        .expect("click");
    wait_for(
        &owner,
        "the gap",
        "return [...document.querySelectorAll('#gap-list .panel')].some(p => p.textContent.includes('tandem'));",
    )
    .await;
    owner
        .execute(
            "const t = document.querySelector('#gap-list textarea');              t.value = 'Yes: tandems rent for 40 euros a day.';              [...document.querySelectorAll('#gap-list button')].find(b => b.textContent === 'Add to knowledge').click();              return true;",
            vec![],
        )
        .await
        .expect("answer");
    wait_for(
        &owner,
        "the answered gap",
        "const d = document.querySelector('#gap-list .ok:not([hidden])'); return d && d.textContent;",
    )
    .await;
    let token = login(&server, "owner@bikes.test").await;
    let (_, answered) = call(
        &server,
        Some(&token),
        "GET",
        "/knowledge/gaps?status=answered",
        None,
    )
    .await;
    assert_eq!(answered["items"][0]["id"], json!(gap_id), "{answered}");
    let answer = server
        .app
        .knowledge
        .search(
            &server.app.db,
            &bot,
            "Do you rent out tandem bicycles?",
            1,
            knowledge::index::Retriever::Hybrid,
        )
        .await
        .expect("search");
    assert!(
        answer.hits[0].chunk.body.contains("40 euros"),
        "the answer is searchable"
    );

    // The CSV export: made in the browser from the report, one row a bucket.
    owner
        .find(Locator::Css("#admin-nav button[data-view=analytics]"))
        .await
        .expect("nav")
        .click()
        .await
        .expect("click");
    wait_for(
        &owner,
        "the report",
        "const b = document.getElementById('analytics-csv'); return b && !b.disabled;",
    )
    .await;
    owner
        .execute(
            "const make = URL.createObjectURL; \
             URL.createObjectURL = (blob) => { blob.text().then(t => { window.csvText = t; }); return make(blob); }; \
             document.getElementById('analytics-csv').click(); return true;",
            vec![],
        )
        .await
        .expect("export");
    let csv = wait_for(&owner, "the CSV", "return window.csvText;").await;
    let csv = csv.as_str().unwrap_or_default();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("start,conversations,customer_messages,answered_by_bot,handed_off,"),
        "{csv}"
    );
    assert!(
        rows[0].contains(",first_response_seconds.p50,first_response_seconds.p90,"),
        "{csv}"
    );
    // The last 30 days, by day: 30 or 31 buckets, each with zero conversations.
    assert!((31..=32).contains(&rows.len()), "{csv}");
    assert!(
        rows[1..].iter().all(|r| r.split(',').nth(1) == Some("0")),
        "{csv}"
    );
    let violations = owner
        .execute("return window.cspViolations;", vec![])
        .await
        .expect("csp");
    assert_eq!(violations, json!([]), "no CSP violation");
    owner.close().await.expect("close");

    let agent = browser(&driver).await;
    sign_in(&agent, &server.url("/"), "agent@bikes.test", PASSWORD).await;
    let nav_hidden = agent
        .execute(
            "return document.getElementById('admin-nav').hidden && document.getElementById('admin-main').hidden \
             && !document.querySelector('main.layout').hidden;",
            vec![],
        )
        .await
        .expect("nav");
    assert_eq!(
        nav_hidden,
        json!(true),
        "an agent sees the console as before"
    );
    agent.close().await.expect("close");
    server.stop().await;
}
