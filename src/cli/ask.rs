//! `frontdesk ask --bot NAME "question"`: the answer pipeline in the
//! terminal. Paragraphs print as they stream; then the sources with their
//! scores and the handoff decision (`--json`: one JSON object instead).

use std::io::Write;
use std::process::ExitCode;

use crate::answerer::{Answer, Answerer};
use crate::context::App;
use crate::rehearsal::rehearse;

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
        // What `serve` does at start: the bot file's knowledge, only what
        // changed; its websites are left to `serve` and `kb ingest` (a
        // crawl per question would be slow and impolite).
        let paths: Vec<std::path::PathBuf> = bot
            .knowledge_paths
            .0
            .iter()
            .filter(|s| !crate::kb::is_url(s))
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
    let as_json = args.json;
    let rehearsal = rehearse(&answerer, &bot, &args.question, |paragraph| {
        if !as_json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{paragraph}\n");
            let _ = out.flush();
        }
    })
    .await;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", rehearsal.report())?;
    } else {
        print_text(&mut out, &rehearsal.answer, &rehearsal.paragraphs)?;
    }
    Ok(ExitCode::SUCCESS)
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
