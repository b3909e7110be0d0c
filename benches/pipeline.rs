//! Answer pipeline benchmark: `cargo bench --bench pipeline`.
//!
//! One process: the real HTTP server, worker and answer pipeline on SQLite
//! with the in-process broker, the demo shop's knowledge (hybrid search
//! when the embedding model is installed, else BM25), a local fake Bot API
//! and a local fake OpenAI-compatible server that streams its answer at
//! once. For each question, on a new conversation, one at a time: from the
//! moment the webhook is answered 200 to the moment the fake Bot API
//! receives the first paragraph. `worker.debounce_ms` is 0 here; the
//! default 800 ms is a deliberate wait for bursts and adds to these figures.
//!
//! Prints p50/p95 for the extractive answerer and for the model, and for
//! the model also its own time to first paragraph (request received →
//! first paragraph written), which the overhead excludes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tokio::sync::mpsc;

const QUESTIONS: &[&str] = &[
    "How many days do I have to return a bike?",
    "How long is the warranty on a frame?",
    "Do you ship to Switzerland?",
    "Can I test-ride a bike before buying?",
    "Which payment methods do you accept?",
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Fake Bot API: reports (chat, arrival) of each sendMessage.
fn fake_telegram(arrivals: mpsc::UnboundedSender<(i64, Instant)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        let arrivals = arrivals.clone();
        App::new().default_service(web::to(
            move |req: HttpRequest, body: web::Json<serde_json::Value>| {
                let arrivals = arrivals.clone();
                async move {
                    if req.path().ends_with("/sendMessage") {
                        let chat = body["chat_id"].as_i64().unwrap_or(-1);
                        let _ = arrivals.send((chat, Instant::now()));
                    }
                    HttpResponse::Ok().json(serde_json::json!({
                        "ok": true,
                        "result": { "message_id": 1, "date": 1, "chat": { "id": 1, "type": "private" } }
                    }))
                }
            },
        ))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    url
}

/// Fake model server: streams two cited paragraphs at once; records its own
/// time to the first paragraph.
fn fake_llm(own: Arc<Mutex<Vec<Duration>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        let own = own.clone();
        App::new().route(
            "/v1/chat/completions",
            web::post().to(move |_body: web::Bytes| {
                let own = own.clone();
                async move {
                    let received = Instant::now();
                    let chunk = |text: &str| {
                        let event = serde_json::json!({
                            "choices": [{ "index": 0, "delta": { "content": text }, "finish_reason": null }]
                        });
                        web::Bytes::from(format!("data: {event}\n\n"))
                    };
                    let first =
                        chunk("[[ANSWER]] Here is what our documents say about that [1].\n\n");
                    own.lock().unwrap().push(received.elapsed());
                    let rest = vec![
                        chunk("A second paragraph with more detail [1]."),
                        web::Bytes::from(
                            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
                        ),
                    ];
                    let body = futures_util::stream::iter(
                        std::iter::once(first)
                            .chain(rest)
                            .map(Ok::<_, std::io::Error>),
                    );
                    HttpResponse::Ok()
                        .content_type("text/event-stream")
                        .streaming(body)
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    url
}

async fn run(provider: &str, rounds: usize) -> (Vec<Duration>, Vec<Duration>, String) {
    let (tx, mut arrivals) = mpsc::unbounded_channel();
    let telegram = fake_telegram(tx);
    let own = Arc::new(Mutex::new(Vec::new()));
    let llm = fake_llm(own.clone());
    let dir = tempfile::tempdir().unwrap();
    let knowledge = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/knowledge/northwind");
    std::fs::create_dir_all(dir.path().join("bots")).unwrap();
    std::fs::write(
        dir.path().join("bots/b.toml"),
        format!(
            "workspace = \"bench\"\nname = \"b\"\nsystem_prompt = \"x\"\nknowledge = [{:?}]\n\
             [handoff]\nmin_confidence = 0.0\non_unknown = \"ai_generate\"\n\
             [llm]\nprovider = \"{provider}\"\nmodel = \"fake\"\n\
             [[channels]]\nkind = \"telegram\"\nid = \"bench-tg\"\nbot_token = \"1:t\"\nsecret_token = \"s\"\n",
            knowledge.display().to_string()
        ),
    )
    .unwrap();
    let env: Vec<(String, String)> = std::env::vars().collect();
    // The real environment: the model directory follows HOME / XDG_CACHE_HOME.
    let mut settings = frontdesk::config::Settings::defaults(&env);
    settings.data_dir = dir.path().join("data");
    settings.bots.dir = dir.path().join("bots");
    settings.database.url = frontdesk::config::DatabaseUrl::Sqlite(dir.path().join("db.sqlite"));
    settings.worker.debounce_ms = 0;
    settings.channels.telegram.api_base = telegram;
    settings.llm.base_url = Some(llm);
    settings.embedding.auto_install = false;
    let app = frontdesk::app::open(settings, &[]).await.unwrap();
    frontdesk::app::sync_bot_knowledge(app.clone()).await;
    let search = match app.knowledge.degraded().await {
        None => "hybrid".to_owned(),
        Some(reason) => format!("bm25 only: {reason}"),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (server, addr) = frontdesk::server::build(app.clone(), listener).unwrap();
    tokio::spawn(server);
    let answerer = Arc::new(frontdesk::answerer::Answerer::new(app.clone(), &[]));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(frontdesk::worker::run(
        app.clone(),
        answerer,
        "bench".into(),
        stopped,
    ));
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/webhooks/telegram/bench-tg");
    let mut latencies = Vec::new();
    // Two warm-up rounds (model load, connection pools), not counted.
    for i in 0..rounds + 2 {
        let chat = 10_000 + i as i64;
        let body = serde_json::json!({
            "update_id": chat,
            "message": {
                "message_id": 1, "date": 1, "text": QUESTIONS[i % QUESTIONS.len()],
                "chat": { "id": chat, "type": "private" }, "from": { "id": chat, "first_name": "B" }
            }
        });
        let response = http
            .post(&url)
            .header("x-telegram-bot-api-secret-token", "s")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let accepted = Instant::now();
        let arrived = loop {
            let (to, at) = tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
                .await
                .expect("no reply within 30 s")
                .unwrap();
            if to == chat {
                break at;
            }
        };
        if i >= 2 {
            latencies.push(arrived.saturating_duration_since(accepted));
        }
        // Let the rest of the answer go out before the next question.
        tokio::time::sleep(Duration::from_millis(30)).await;
        while arrivals.try_recv().is_ok() {}
    }
    latencies.sort();
    let mut own = own.lock().unwrap().clone();
    own.sort();
    (latencies, own, search)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rounds = 100;
    runtime.block_on(async {
        println!("answer pipeline: webhook answered 200 → first paragraph at the fake Bot API ({rounds} questions, one at a time)");
        for provider in ["extractive", "openai"] {
            let (latencies, own, search) = run(provider, rounds).await;
            println!(
                "  {provider:<10} search {search}: p50 {}  p95 {}  max {}",
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.95)),
                ms(*latencies.last().unwrap()),
            );
            if provider == "openai" && !own.is_empty() {
                let own50 = percentile(&own, 0.5);
                let own95 = percentile(&own, 0.95);
                println!(
                    "  {:<10} the model's own time to first paragraph: p50 {}  p95 {}; overhead p50 {}  p95 {}",
                    "",
                    ms(own50),
                    ms(own95),
                    ms(percentile(&latencies, 0.5).saturating_sub(own50)),
                    ms(percentile(&latencies, 0.95).saturating_sub(own95)),
                );
            }
        }
    });
}
