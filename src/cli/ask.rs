//! `frontdesk ask --bot NAME "question"`: the answer pipeline in the
//! terminal. Paragraphs print as they stream; then the sources with their
//! scores and the handoff decision (`--json`: one JSON object instead).

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;
use tokio::sync::mpsc;

use crate::answerer::{Answer, Answerer, Question};
use crate::context::App;
use crate::turn::{Replies, Reply};

/// `frontdesk ask` arguments.
#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// The bot: NAME, or WORKSPACE/NAME when several workspaces have one.
    #[arg(long)]
    bot: String,
    /// Print one JSON object (paragraphs, sources, decision) instead of text.
    #[arg(long)]
    json: bool,
    /// The customer's question.
    question: String,
}

/// Runs `frontdesk ask`.
pub async fn run(app: App, env: &[(String, String)], args: AskArgs) -> anyhow::Result<ExitCode> {
    let bot = super::kb::resolve_bot(&app, &args.bot).await?;
    if args.question.trim().is_empty() {
        anyhow::bail!("the question is empty: give it as the last argument, in quotes");
    }
    if !bot.knowledge_paths.0.is_empty() {
        // What `serve` does at start: the bot file's knowledge, only what changed.
        let paths: Vec<std::path::PathBuf> = bot
            .knowledge_paths
            .0
            .iter()
            .map(std::path::PathBuf::from)
            .collect();
        let report = app
            .knowledge
            .ingest_paths(&app.db, &bot, &paths, &crate::kb::Quiet)
            .await?;
        for (file, error) in &report.failed {
            tracing::warn!(%file, %error, "knowledge file not ingested");
        }
    }
    let answerer = Answerer::new(app, env);
    let (tx, mut rx) = mpsc::channel::<Reply>(16);
    let as_json = args.json;
    let printer = async move {
        let mut paragraphs = Vec::new();
        while let Some(reply) = rx.recv().await {
            if !as_json {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}\n", reply.text);
                let _ = out.flush();
            }
            paragraphs.push(reply.text);
        }
        paragraphs
    };
    let ask = async {
        let out = Replies(tx);
        answerer
            .answer(
                Question {
                    bot: &bot,
                    text: args.question.clone(),
                    history: Vec::new(),
                    first_reply: false,
                },
                &out,
            )
            .await
    };
    let (answer, paragraphs) = tokio::join!(ask, printer);
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", report(&answer, &paragraphs))?;
    } else {
        print_text(&mut out, &answer, &paragraphs)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn decision(answer: &Answer) -> &'static str {
    match (&answer.handoff, answer.low_confidence, &answer.offer) {
        (Some(_), _, _) => "handoff",
        (None, _, Some(_)) => "choices",
        (None, true, None) => "answered_low_confidence",
        (None, false, None) => "answered",
    }
}

fn report(answer: &Answer, paragraphs: &[String]) -> serde_json::Value {
    json!({
        "question": answer.question,
        "paragraphs": paragraphs,
        "provider": answer.provider,
        "retriever": answer.retriever,
        "confidence": answer.confidence,
        "decision": decision(answer),
        "handoff": answer.handoff.as_ref().map(|h| json!({
            "reason": h.reason,
            "detail": h.detail,
            "triage": h.triage,
        })),
        "draft": answer.draft,
        "choices": answer.offer.as_ref().map(|o| o.options.iter().map(|c| c.label.clone()).collect::<Vec<_>>()),
        "sources": answer.sources,
        "first_paragraph_ms": answer.first_paragraph.map(|d| d.as_millis() as u64),
    })
}

fn print_text(out: &mut impl Write, answer: &Answer, paragraphs: &[String]) -> std::io::Result<()> {
    if paragraphs.is_empty() {
        writeln!(out, "(no reply to the customer)\n")?;
    }
    writeln!(
        out,
        "sources (confidence {:.2}, {}, {}):",
        answer.confidence, answer.retriever, answer.provider
    )?;
    if answer.sources.is_empty() {
        writeln!(out, "  none")?;
    }
    for s in &answer.sources {
        writeln!(
            out,
            "{:>3}. p {:.2}  score {:.3}  {}  {}{}",
            s.n,
            s.probability,
            s.score,
            s.doc_ref,
            s.label,
            if s.cited { "  [cited]" } else { "" }
        )?;
    }
    match &answer.handoff {
        None if answer.low_confidence => writeln!(
            out,
            "decision: answered, flagged low-confidence (on_unknown = ai_generate)"
        )?,
        None => match &answer.offer {
            Some(offer) => {
                writeln!(out, "decision: offer choices (did you mean…)")?;
                for (i, o) in offer.options.iter().enumerate() {
                    writeln!(out, "  {}. {}", i + 1, o.label)?;
                }
            }
            None => writeln!(out, "decision: answered")?,
        },
        Some(h) => {
            writeln!(
                out,
                "decision: hand off to a person ({}){}",
                h.reason.as_str(),
                h.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )?;
            let t = serde_json::to_value(&h.triage).unwrap_or_default();
            writeln!(
                out,
                "triage: category {}, sentiment {}, urgency {} (by {})",
                t["category"].as_str().unwrap_or("?"),
                t["sentiment"].as_str().unwrap_or("?"),
                t["urgency"].as_str().unwrap_or("?"),
                t["source"].as_str().unwrap_or("?"),
            )?;
            if !h.draft.is_empty() {
                writeln!(out, "draft for the agent:\n{}", h.draft)?;
            }
        }
    }
    Ok(())
}
