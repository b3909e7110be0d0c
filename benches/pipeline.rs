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
//! the model the split at the model: webhook → request at the model
//! (queue, retrieval, prompt) and request at the model → first paragraph
//! at the Bot API (streaming, paragraph cut, storing, sending).
//!
//! The gateway starts through `frontdesk::app::start`, as `frontdesk serve`
//! does; the fakes are the tests' own (`tests/it/common`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/common/mod.rs"]
mod common;

use common::fakes::{FakeLlm, FakePlatform, LlmBehaviour};

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

async fn run(provider: &str, rounds: usize) -> (Vec<Duration>, Vec<Duration>, String) {
    let telegram = FakePlatform::start().await;
    let llm = FakeLlm::start_with_gap(
        LlmBehaviour::Stream(vec![
            "[[ANSWER]] Here is what our documents say about that [1].\n\n".into(),
            "A second paragraph with more detail [1].".into(),
        ]),
        Duration::ZERO,
    )
    .await;
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
    settings.channels.telegram.api_base = telegram.url.clone();
    settings.llm.base_url = Some(llm.url.clone());
    settings.embedding.auto_install = false;
    let startup = frontdesk::app::Startup {
        http: Some(TcpListener::bind("127.0.0.1:0").unwrap()),
        worker: Some("bench".into()),
        knowledge: frontdesk::app::KnowledgeSync::Await,
    };
    let running = frontdesk::app::start(settings, &[], startup).await.unwrap();
    let app = running.app.clone();
    let bot = {
        let mut conn = app.db.get().await.unwrap();
        store::models::bot::Bot::find_by_name(&mut conn, "b")
            .await
            .unwrap()
            .remove(0)
    };
    let search = match app.knowledge.degraded(&bot).await {
        None => "hybrid".to_owned(),
        Some(reason) => format!("bm25 only: {reason}"),
    };
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/webhooks/telegram/bench-tg",
        running.addr.expect("serves HTTP")
    );
    let mut latencies = Vec::new();
    let mut to_model = Vec::new();
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
        let arrived = telegram
            .call(
                "/sendMessage",
                |r| r.body["chat_id"].as_i64() == Some(chat),
                Duration::from_secs(30),
            )
            .await
            .at;
        if i >= 2 {
            latencies.push(arrived.saturating_duration_since(accepted));
            if let Some(&asked) = llm.received().last().filter(|&&at| at >= accepted) {
                to_model.push(asked.saturating_duration_since(accepted));
            }
        }
        // The rest of the answer goes out before the next question.
        common::until_turns_done(&app).await;
    }
    running.stop().await;
    latencies.sort();
    to_model.sort();
    (latencies, to_model, search)
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
            let (latencies, to_model, search) = Box::pin(run(provider, rounds)).await;
            println!(
                "  {provider:<10} search {search}: p50 {}  p95 {}  max {}",
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.95)),
                ms(*latencies.last().unwrap()),
            );
            if provider == "openai" && !to_model.is_empty() {
                let asked50 = percentile(&to_model, 0.5);
                let asked95 = percentile(&to_model, 0.95);
                println!(
                    "  {:<10} webhook → request at the model: p50 {}  p95 {}; request at the model → first paragraph: p50 {}  p95 {}",
                    "",
                    ms(asked50),
                    ms(asked95),
                    ms(percentile(&latencies, 0.5).saturating_sub(asked50)),
                    ms(percentile(&latencies, 0.95).saturating_sub(asked95)),
                );
            }
        }
    });
}
