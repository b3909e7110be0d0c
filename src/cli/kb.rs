//! `frontdesk kb …`: ingest, list, delete, search and evaluate a bot's
//! knowledge from the terminal (`kb eval` is in `kb/eval.rs`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use knowledge::index::Retriever;

use crate::context::App;
use crate::kb::{FileError, FileOutcome, Progress};
use store::models::bot::Bot;
use store::models::knowledge::Document;
use store::models::workspace::Workspace;

/// `frontdesk kb …`
#[derive(Debug, Subcommand)]
pub enum KbCommand {
    /// Ingest files, folders (recursively) or websites into a bot's
    /// knowledge. Unchanged files and pages are skipped; a folder is mirrored
    /// (documents whose files are gone are deleted), and so is a site (pages
    /// gone are deleted). A file or URL that cannot be read is reported and
    /// skipped; the exit status is 1 if any failed.
    Ingest {
        /// The bot: NAME, or WORKSPACE/NAME when several workspaces have one.
        #[arg(long)]
        bot: String,
        /// Files and folders (.pdf .docx .html .md .txt, FAQ .csv and .jsonl),
        /// and http(s) URLs: a sitemap.xml (or sitemap index) ingests its
        /// pages; a page is ingested with the pages, PDFs and DOCX files it
        /// links to on the same site, breadth-first.
        #[arg(required = true, value_name = "PATH_OR_URL")]
        sources: Vec<String>,
        /// Most documents fetched from each URL.
        #[arg(long, default_value_t = 200)]
        max_pages: usize,
        /// Most links followed from each URL's page.
        #[arg(long, default_value_t = 3)]
        depth: usize,
    },
    /// List the documents of one bot, or of every bot.
    List {
        #[arg(long)]
        bot: Option<String>,
    },
    /// Delete documents by source path or by file name.
    Delete {
        #[arg(long)]
        bot: String,
        #[arg(required = true)]
        documents: Vec<String>,
    },
    /// Search a bot's knowledge: ranked chunks with scores, or with
    /// --queries one JSON line per query:
    /// {"query_id","results":[{"doc_id","score"}…]}.
    Search {
        #[arg(long)]
        bot: String,
        /// The question.
        #[arg(required_unless_present = "queries", conflicts_with = "queries")]
        query: Option<String>,
        /// BEIR queries file: one {"_id","text"} JSON object per line.
        #[arg(long, value_name = "FILE.jsonl")]
        queries: Option<PathBuf>,
        /// Results per query (documents with --queries, chunks otherwise).
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = RetrieverArg::Hybrid)]
        retriever: RetrieverArg,
    },
    /// Score retrieval against judgements: nDCG, Recall and MRR at --k for
    /// BM25 alone, vectors alone and hybrid.
    Eval {
        #[arg(long)]
        bot: String,
        /// BEIR queries file ({"_id","text"} per line).
        #[arg(long, value_name = "FILE.jsonl")]
        queries: PathBuf,
        /// BEIR qrels TSV (query-id, corpus-id, score).
        #[arg(long, value_name = "FILE.tsv")]
        qrels: PathBuf,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Questions the knowledge cannot answer ({"_id","text"} per line):
        /// the answer-level figures count how many are handed off.
        #[arg(long, value_name = "FILE.jsonl")]
        out_of_scope: Option<PathBuf>,
        /// Write what retrieval measured about each query's candidates, one
        /// JSON line per query, for refitting the calibration.
        #[arg(long, value_name = "FILE.jsonl")]
        features: Option<PathBuf>,
    },
}

/// Which retriever `kb search` uses.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RetrieverArg {
    Hybrid,
    Bm25,
    Dense,
}

impl From<RetrieverArg> for Retriever {
    fn from(r: RetrieverArg) -> Self {
        match r {
            RetrieverArg::Hybrid => Retriever::Hybrid,
            RetrieverArg::Bm25 => Retriever::FullText,
            RetrieverArg::Dense => Retriever::Dense,
        }
    }
}

/// Runs a `kb` command on an opened app. Returns the exit status.
pub async fn run(app: &App, command: KbCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        KbCommand::Ingest {
            bot,
            sources,
            max_pages,
            depth,
        } => {
            let options = crate::kb::CrawlOptions {
                max_pages,
                depth,
                public_only: false,
            };
            ingest(app, &bot, &sources, options).await
        }
        KbCommand::List { bot } => list(app, bot.as_deref())
            .await
            .map(|()| std::process::ExitCode::SUCCESS),
        KbCommand::Delete { bot, documents } => delete(app, &bot, &documents).await,
        KbCommand::Search {
            bot,
            query,
            queries,
            limit,
            retriever,
        } => {
            let bot = resolve_bot(app, &bot).await?;
            warn_if_degraded(app, &bot).await;
            match (query, queries) {
                (_, Some(file)) => batch_search(app, &bot, &file, limit, retriever.into()).await?,
                (Some(q), None) => show_search(app, &bot, &q, limit, retriever.into()).await?,
                (None, None) => bail!("give a query, or --queries FILE.jsonl"),
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        KbCommand::Eval {
            bot,
            queries,
            qrels,
            k,
            out_of_scope,
            features,
        } => {
            let bot = resolve_bot(app, &bot).await?;
            warn_if_degraded(app, &bot).await;
            let files = EvalFiles {
                queries,
                qrels,
                out_of_scope,
                features,
            };
            eval(app, &bot, &files, k)
                .await
                .map(|()| std::process::ExitCode::SUCCESS)
        }
    }
}

async fn warn_if_degraded(app: &App, bot: &Bot) {
    if let Some(why) = app.knowledge.degraded(bot).await {
        eprintln!("warning: {why}");
    }
}

/// `NAME` or `WORKSPACE/NAME`.
pub async fn resolve_bot(app: &App, spec: &str) -> anyhow::Result<Bot> {
    let mut conn = app.db.get().await?;
    if let Some((workspace, name)) = spec.split_once('/') {
        let Some(ws) = Workspace::find_by_slug(&mut conn, workspace).await? else {
            bail!("no workspace `{workspace}`");
        };
        return Bot::find(&mut conn, &ws.id, name)
            .await?
            .with_context(|| format!("no bot `{name}` in workspace `{workspace}`"));
    }
    let mut bots = Bot::find_by_name(&mut conn, spec).await?;
    match bots.len() {
        0 => bail!("no bot named `{spec}` (bots come from config/bots/*.toml or the API)"),
        1 => Ok(bots.remove(0)),
        n => bail!("{n} workspaces have a bot named `{spec}`; say which: --bot WORKSPACE/{spec}"),
    }
}

/// Progress bars: files, chunks, embeddings; per-file results above them.
struct Bars {
    multi: MultiProgress,
    files: ProgressBar,
    chunks: ProgressBar,
    embeddings: ProgressBar,
    plain: bool,
}

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::new();
        let style = |template: &str| {
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
        };
        let files = multi.add(
            ProgressBar::new(0).with_style(style("files      [{bar:30}] {pos}/{len} {wide_msg}")),
        );
        let chunks = multi.add(ProgressBar::new(0).with_style(style("chunks     {pos} stored")));
        let embeddings = multi.add(ProgressBar::new(0).with_style(style(
            "embeddings [{bar:30}] {pos}/{len} texts {per_sec} eta {eta}",
        )));
        let plain = multi.is_hidden();
        Bars {
            multi,
            files,
            chunks,
            embeddings,
            plain,
        }
    }

    fn line(&self, text: &str) {
        if self.plain {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }
}

impl Progress for Bars {
    fn files(&self, total: usize) {
        self.files.inc_length(total as u64);
    }
    fn found(&self, n: usize) {
        self.files.inc_length(n as u64);
    }
    fn file_started(&self, source: &str) {
        self.files.set_message(short(source));
    }
    fn chunked(&self, _source: &str, _chunks: usize, to_embed: usize) {
        self.embeddings.inc_length(to_embed as u64);
    }
    fn embedded(&self, n: usize) {
        self.embeddings.inc(n as u64);
    }
    fn file_done(&self, source: &str, result: &Result<FileOutcome, FileError>) {
        self.files.inc(1);
        match result {
            Ok(FileOutcome::Ingested {
                chunks,
                embedded,
                reused,
                pages,
            }) => {
                self.chunks.inc(*chunks as u64);
                let loss = pages
                    .and_then(|p| p.loss())
                    .map(|l| format!("; {l}"))
                    .unwrap_or_default();
                self.line(&format!(
                    "ok        {source}: {chunks} chunks ({embedded} texts embedded, {reused} chunks unchanged){loss}"
                ));
            }
            Ok(FileOutcome::Unchanged) => self.line(&format!("unchanged {source}")),
            Err(e) => self.line(&format!("FAILED    {source}: {e}")),
        }
    }
    fn skipped(&self, path: &Path, reason: &str) {
        self.line(&format!("skipped   {}: {reason}", path.display()));
    }
}

fn short(source: &str) -> String {
    Path::new(source)
        .file_name()
        .map_or_else(|| source.to_owned(), |n| n.to_string_lossy().into_owned())
}

async fn ingest(
    app: &App,
    bot: &str,
    sources: &[String],
    options: crate::kb::CrawlOptions,
) -> anyhow::Result<std::process::ExitCode> {
    let bot = resolve_bot(app, bot).await?;
    let (urls, paths): (Vec<String>, Vec<String>) =
        sources.iter().cloned().partition(|s| crate::kb::is_url(s));
    let paths: Vec<PathBuf> = paths.into_iter().map(PathBuf::from).collect();
    for path in &paths {
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
    }
    warn_if_degraded(app, &bot).await;
    let bars = Bars::new();
    let started = std::time::Instant::now();
    let mut report = crate::kb::IngestReport::default();
    if !paths.is_empty() {
        report = app
            .knowledge
            .ingest_paths(&app.db, &bot, &paths, &bars)
            .await?;
    }
    if !urls.is_empty() {
        let crawled = app
            .knowledge
            .ingest_urls(&app.db, &bot, &urls, options, &bars)
            .await?;
        report.merge(crawled);
    }
    bars.files.finish_and_clear();
    bars.chunks.finish_and_clear();
    bars.embeddings.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let lost = match report.pages_without_text {
        0 => String::new(),
        1 => "; 1 page without text".to_owned(),
        n => format!("; {n} pages without text"),
    };
    println!(
        "bot {}: {} file(s) ingested ({} chunks; {} texts embedded, {} chunks reused{lost}), {} unchanged, {} failed, {} skipped, {} removed in {:.1} s",
        bot.name,
        report.ingested,
        report.chunks,
        report.embedded,
        report.reused,
        report.unchanged,
        report.failed.len(),
        report.skipped,
        report.removed,
        secs
    );
    for (source, loss) in &report.losses {
        println!("lost: {source}: {loss}");
    }
    for (source, error) in &report.failed {
        eprintln!("failed: {source}: {error}");
    }
    // A bot whose model changed is re-embedded here, not left to a server.
    match app
        .knowledge
        .change_model(&app.db, &bot, &crate::kb::Quiet)
        .await
    {
        Ok(crate::kb::ModelChange::Current) => {}
        Ok(crate::kb::ModelChange::Switched { model, embedded }) => {
            println!(
                "bot {}: knowledge re-embedded for {model} ({embedded} chunks)",
                bot.name
            );
        }
        Err(e) => eprintln!("warning: the bot's knowledge is not yet embedded by its model: {e}"),
    }
    Ok(if report.failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

async fn list(app: &App, bot: Option<&str>) -> anyhow::Result<()> {
    let bots = match bot {
        Some(spec) => vec![resolve_bot(app, spec).await?],
        None => {
            let mut conn = app.db.get().await?;
            Bot::all(&mut conn).await?
        }
    };
    let mut out = std::io::stdout().lock();
    for bot in bots {
        let docs = {
            let mut conn = app.db.get().await?;
            Document::list(&mut conn, &bot.id).await?
        };
        let chunks: i64 = docs.iter().map(|d| i64::from(d.chunk_count)).sum();
        writeln!(
            out,
            "{} ({} documents, {} chunks)",
            bot.name,
            docs.len(),
            chunks
        )?;
        for d in docs {
            let loss = d.loss().map(|l| format!("  ({l})")).unwrap_or_default();
            writeln!(
                out,
                "  {:<10} {:>6} chunks {:>9} bytes  {}  {}{loss}",
                d.format,
                d.chunk_count,
                d.size_bytes,
                d.updated_at.format("%Y-%m-%d %H:%M"),
                d.source
            )?;
        }
    }
    Ok(())
}

async fn delete(
    app: &App,
    bot: &str,
    documents: &[String],
) -> anyhow::Result<std::process::ExitCode> {
    let bot = resolve_bot(app, bot).await?;
    let docs = {
        let mut conn = app.db.get().await?;
        Document::list(&mut conn, &bot.id).await?
    };
    let mut status = std::process::ExitCode::SUCCESS;
    for wanted in documents {
        let canonical = std::fs::canonicalize(wanted)
            .ok()
            .map(|p| p.display().to_string());
        let matches: Vec<&Document> = docs
            .iter()
            .filter(|d| {
                d.source == *wanted || Some(&d.source) == canonical.as_ref() || d.doc_ref == *wanted
            })
            .collect();
        match matches.as_slice() {
            [doc] => {
                app.knowledge.delete(&app.db, &bot, &doc.source).await?;
                println!("deleted {}", doc.source);
            }
            [] => {
                eprintln!(
                    "error: bot {} has no document `{wanted}` (see `frontdesk kb list --bot {}`)",
                    bot.name, bot.name
                );
                status = std::process::ExitCode::FAILURE;
            }
            many => {
                eprintln!(
                    "error: `{wanted}` matches {} documents; give the full source path",
                    many.len()
                );
                status = std::process::ExitCode::FAILURE;
            }
        }
    }
    Ok(status)
}

async fn show_search(
    app: &App,
    bot: &Bot,
    query: &str,
    limit: usize,
    retriever: Retriever,
) -> anyhow::Result<()> {
    let outcome = app
        .knowledge
        .search(&app.db, bot, query, limit, retriever)
        .await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "confidence {:.2} ({})",
        outcome.confidence,
        outcome.retriever.as_str()
    )?;
    if outcome.hits.is_empty() {
        writeln!(out, "no results")?;
    }
    for (i, hit) in outcome.hits.iter().enumerate() {
        let c = &hit.chunk;
        let title = c.title.clone().unwrap_or_else(|| c.heading_path.clone());
        let at = match (c.page, c.line) {
            (Some(p), _) => format!(" (page {p})"),
            (None, Some(l)) => format!(" (line {l})"),
            _ => String::new(),
        };
        let parts: Vec<String> = [
            hit.bm25.map(|b| format!("bm25 {b:.2}")),
            hit.cosine.map(|c| format!("cosine {c:.3}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        writeln!(
            out,
            "{:>2}. {:.3}  {}{}  {}  [{}]",
            i + 1,
            hit.score,
            c.doc_ref,
            at,
            title,
            parts.join(", ")
        )?;
        let snippet: String = c.body.chars().take(240).collect();
        let ellipsis = if c.body.chars().count() > 240 {
            "…"
        } else {
            ""
        };
        writeln!(out, "    {}{}", snippet.replace('\n', " "), ellipsis)?;
    }
    Ok(())
}

/// `(id, text)` of each query in a BEIR queries file.
fn read_queries(file: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    knowledge::eval::parse_queries(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// The best `limit` documents for a query: chunk hits collapsed to their
/// document, keeping its best score.
async fn ranked_documents(
    app: &App,
    bot: &Bot,
    query: &str,
    limit: usize,
    retriever: Retriever,
) -> anyhow::Result<Vec<(String, f32)>> {
    let outcome = app
        .knowledge
        .search(
            &app.db,
            bot,
            query,
            limit.saturating_mul(5).max(50),
            retriever,
        )
        .await?;
    let mut docs: Vec<(String, f32)> = Vec::new();
    for hit in outcome.hits {
        if !docs.iter().any(|(d, _)| *d == hit.chunk.doc_ref) {
            // Reranked hits are scored by their calibrated probability, the
            // rest by retrieval: both fall as the list goes down.
            let score = if hit.rerank.is_some() {
                hit.probability
            } else {
                hit.score
            };
            docs.push((hit.chunk.doc_ref, score));
        }
        if docs.len() == limit {
            break;
        }
    }
    Ok(docs)
}

async fn batch_search(
    app: &App,
    bot: &Bot,
    file: &Path,
    limit: usize,
    retriever: Retriever,
) -> anyhow::Result<()> {
    let queries = read_queries(file)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (id, text) in queries {
        let docs = ranked_documents(app, bot, &text, limit, retriever).await?;
        let results: Vec<serde_json::Value> = docs
            .into_iter()
            .map(|(doc_id, score)| serde_json::json!({ "doc_id": doc_id, "score": score }))
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({ "query_id": id, "results": results })
        )?;
    }
    out.flush()?;
    Ok(())
}

mod eval;

use eval::{EvalFiles, eval};
