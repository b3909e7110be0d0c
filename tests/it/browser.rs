//! The console and the chat widget in a real browser (see
//! [`crate::common::chrome`]). A customer writes in the widget of the demo
//! page, asks for a person; an agent logs in to the console, sees the
//! escalation, takes it over and replies; the customer sees the reply and
//! the bot stays silent.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::json;

use crate::common::chrome::{browser, sign_in, start_driver, wait_for};
use crate::common::{Backend, TestDb, TestServer, until_turns_done};
use store::models::user::{Role, User};
use store::models::workspace::Workspace;

const BOT_FILE: &str = r#"
workspace = "shop"
name = "help"
system_prompt = "You help."
"#;

/// The shop's bot file served with a worker (no debounce): its database,
/// the server, the workspace and the bot.
pub(crate) async fn shop() -> (TestDb, TestServer, Workspace, store::models::bot::Bot) {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    db.write_bot("shop.toml", BOT_FILE);
    let mut settings = db.settings();
    settings.worker.debounce_ms = 0;
    let server = TestServer::with_worker(settings, &[], "w").await;
    let mut conn = server.app.db.get().await.expect("conn");
    let workspace = Workspace::ensure(&mut conn, "shop")
        .await
        .expect("workspace");
    let bot = store::models::bot::Bot::find(&mut conn, &workspace.id, "help")
        .await
        .expect("q")
        .expect("bot");
    drop(conn);
    (db, server, workspace, bot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_escalates_in_the_widget_and_an_agent_answers_from_the_console() {
    let Some(driver) = start_driver() else { return };
    let (_db, server, workspace, bot) = shop().await;
    let app = server.app.clone();
    let mut conn = app.db.get().await.expect("conn");
    let hash = frontdesk::auth::hash_password("agent password 1").expect("hash");
    let agent = User::create(&mut conn, "sam@shop.test", "Sam", Some(&hash))
        .await
        .expect("user");
    User::set_role(&mut conn, &agent.id, &workspace.id, Role::Agent)
        .await
        .expect("role");
    drop(conn);

    // The customer, on the business's page with the widget.
    let customer = browser(&driver).await;
    customer
        .goto(&server.url(&format!("/demo?bot={}", bot.id)))
        .await
        .expect("demo page");
    wait_for(&customer, "the widget", "return !!window.FrontdeskChat").await;
    customer
        .execute(
            "window.FrontdeskChat.open(); return window.FrontdeskChat.send(arguments[0]);",
            vec![json!("I want to talk to a human about my order")],
        )
        .await
        .expect("send");
    let notice = wait_for(
        &customer,
        "the bot's notice",
        "return window.FrontdeskChat.messages().filter(m => m.author === 'bot').map(m => m.text).join('\\n');",
    )
    .await;
    assert!(
        notice.as_str().unwrap_or("").contains("colleague"),
        "{notice}"
    );

    // The agent logs in to the console and sees the escalation.
    let console = browser(&driver).await;
    sign_in(
        &console,
        &server.url("/"),
        "sam@shop.test",
        "agent password 1",
    )
    .await;
    // The queue re-renders as events arrive: find and click in one step.
    let classes = wait_for(
        &console,
        "the escalation in the queue",
        "const r = document.querySelector('#queue-waiting-list li.queue-row'); \
         if (!r) return null; r.click(); return r.className;",
    )
    .await;
    assert!(
        classes.as_str().unwrap_or("").contains("urgency-"),
        "coloured by urgency: {classes}"
    );
    wait_for(
        &console,
        "the conversation",
        "return document.querySelectorAll('#messages li').length > 0;",
    )
    .await;
    console
        .find(Locator::Css("#take-over"))
        .await
        .expect("take over")
        .click()
        .await
        .expect("click");
    wait_for(
        &console,
        "the takeover",
        "const b = document.querySelector('#take-over'); return b && b.disabled;",
    )
    .await;
    let text = console
        .find(Locator::Css("#reply-text"))
        .await
        .expect("reply box");
    text.clear().await.expect("clear");
    text.send_keys("Hi, Sam here. Your order ships tomorrow.")
        .await
        .expect("type");
    console
        .find(Locator::Css("#send-reply"))
        .await
        .expect("send")
        .click()
        .await
        .expect("click");

    // The customer sees the agent's reply, live.
    wait_for(
        &customer,
        "the agent's reply in the widget",
        "return window.FrontdeskChat.messages().some(m => m.author === 'agent' && m.text.includes('ships tomorrow'));",
    )
    .await;

    // The customer writes again: only people answer now.
    let bot_replies =
        "return window.FrontdeskChat.messages().filter(m => m.author === 'bot').length;";
    let before = customer.execute(bot_replies, vec![]).await.expect("count");
    customer
        .execute("return window.FrontdeskChat.send('thank you!');", vec![])
        .await
        .expect("send");
    wait_for(
        &console,
        "the customer's thanks in the console",
        "return [...document.querySelectorAll('#messages li')].some(li => li.textContent.includes('thank you!'));",
    )
    .await;
    until_turns_done(&app).await;
    let after = customer.execute(bot_replies, vec![]).await.expect("count");
    assert_eq!(before, after, "the bot stays silent after the takeover");

    customer.close().await.expect("close");
    console.close().await.expect("close");
    let _ = tokio::time::timeout(Duration::from_secs(10), server.stop()).await;
}

/// "Did you mean…" in the widget: the options show as buttons under the
/// bot's message, and a click answers from the chosen entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_shows_choices_as_buttons_and_a_click_answers_from_the_entry() {
    let Some(driver) = start_driver() else { return };
    let (_db, server, workspace, bot) = shop().await;
    let app = server.app.clone();
    app.knowledge
        .ingest_bytes(
            &app.db,
            &bot,
            "delivery.csv",
            "delivery.csv",
            crate::answer::DELIVERY_FAQ.as_bytes().to_vec(),
            &frontdesk::kb::Quiet,
        )
        .await
        .expect("ingest");

    let customer = browser(&driver).await;
    customer
        .goto(&server.url(&format!("/demo?bot={}", bot.id)))
        .await
        .expect("demo page");
    wait_for(&customer, "the widget", "return !!window.FrontdeskChat").await;
    customer
        .execute(
            "window.FrontdeskChat.open(); return window.FrontdeskChat.send(arguments[0]);",
            vec![json!(crate::answer::AMBIGUOUS)],
        )
        .await
        .expect("send");
    // The bot's reply: the offer, with its options as buttons.
    wait_for(
        &customer,
        "the bot's reply",
        "return window.FrontdeskChat.messages().some(m => m.author === 'bot');",
    )
    .await;
    until_turns_done(&app).await;
    let labels = customer
        .execute(
            "const m = window.FrontdeskChat.messages().find(m => m.author === 'bot' && m.choices.length);\
             return m ? m.choices.map(c => c.label) : window.FrontdeskChat.messages();",
            vec![],
        )
        .await
        .expect("labels");
    let Ok(labels) = serde_json::from_value::<Vec<String>>(labels.clone()) else {
        let mut conn = app.db.get().await.expect("conn");
        let why: Vec<_> = store::models::handoff::Handoff::open_in(&mut conn, &workspace.id)
            .await
            .expect("handoffs")
            .into_iter()
            .map(|h| (h.reason, h.detail))
            .collect();
        panic!("no offer; the widget shows {labels}; handoffs {why:?}");
    };
    assert_eq!(
        labels.last().map(String::as_str),
        Some("None of these"),
        "{labels:?}"
    );
    let norway = labels
        .iter()
        .find(|l| l.contains("Norway"))
        .unwrap_or_else(|| panic!("Norway offered: {labels:?}"))
        .clone();
    // The widget lives in a shadow root; the test hook clicks the button.
    let clicked = customer
        .execute(
            "return window.FrontdeskChat.choose(arguments[0]);",
            vec![json!(norway)],
        )
        .await
        .expect("choose");
    assert_eq!(clicked, json!(true));
    let answer = wait_for(
        &customer,
        "the answer from the chosen entry",
        "const m = window.FrontdeskChat.messages().find(m => m.author === 'bot' && m.text.includes('Source:'));\
         return m ? m.text : null;",
    )
    .await;
    let answer = answer.as_str().unwrap_or_default();
    assert!(answer.contains("four to five working days"), "{answer}");
    customer.close().await.expect("close");
    let _ = tokio::time::timeout(Duration::from_secs(10), server.stop()).await;
}
