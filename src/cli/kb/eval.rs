//! `frontdesk kb eval`: retrieval scores on a BEIR set, and what the bot
//! would do with each question at its own settings.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use knowledge::index::Retriever;

use super::read_queries;
use crate::context::App;
use store::models::bot::Bot;

/// The files of `kb eval`.
pub(super) struct EvalFiles {
    pub(super) queries: PathBuf,
    pub(super) qrels: PathBuf,
    pub(super) out_of_scope: Option<PathBuf>,
    pub(super) features: Option<PathBuf>,
}

/// What the bot would do with one question, by the answer pipeline's own
/// decision at a given `min_confidence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Answered from a relevant document.
    Right,
    /// Answered from another document.
    Wrong,
    /// Offered choices, one of them relevant.
    ChoicesHit,
    /// Offered choices, none relevant.
    ChoicesMiss,
    /// Handed off.
    HandOff,
}

/// One question as the pipeline would see it: the documents of its best
/// passages and their probabilities.
struct Judged {
    docs: Vec<String>,
    probabilities: Vec<f32>,
    relevant: Vec<String>,
}

impl Judged {
    fn outcome(&self, min_confidence: f64) -> Outcome {
        let relevant = |i: &usize| self.docs.get(*i).is_some_and(|d| self.relevant.contains(d));
        match answer::decision::decide(&self.probabilities, min_confidence) {
            answer::decision::Decision::Answer if relevant(&0) => Outcome::Right,
            answer::decision::Decision::Answer => Outcome::Wrong,
            answer::decision::Decision::Choose(picks) if picks.iter().any(relevant) => {
                Outcome::ChoicesHit
            }
            answer::decision::Decision::Choose(_) => Outcome::ChoicesMiss,
            answer::decision::Decision::HandOff => Outcome::HandOff,
        }
    }
}

pub(super) async fn eval(app: &App, bot: &Bot, files: &EvalFiles, k: usize) -> anyhow::Result<()> {
    let queries = read_queries(&files.queries)?;
    let qrels = knowledge::eval::parse_qrels(
        &std::fs::read_to_string(&files.qrels)
            .with_context(|| format!("cannot read {}", files.qrels.display()))?,
    );
    println!(
        "{:<8} {:>9} {:>10} {:>8} {:>8} {:>8}",
        "",
        format!("nDCG@{k}"),
        format!("Recall@{k}"),
        format!("MRR@{k}"),
        "R@1",
        "queries"
    );
    for retriever in [Retriever::FullText, Retriever::Dense, Retriever::Hybrid] {
        let mut run = HashMap::new();
        let mut used = retriever;
        for (id, text) in &queries {
            let (results, _) = app
                .knowledge
                .search_index(&app.db, bot, text, k.saturating_mul(5).max(50), retriever)
                .await?;
            used = results.retriever;
            let mut docs: Vec<String> = Vec::new();
            for hit in results.hits {
                if !docs.contains(&hit.doc_ref) {
                    docs.push(hit.doc_ref);
                }
            }
            run.insert(id.clone(), docs);
        }
        let note = if used == retriever {
            String::new()
        } else {
            format!("  (fell back to {})", used.as_str())
        };
        print_scores(retriever.as_str(), &qrels, &run, k, &note);
    }
    // The product's ranking: hybrid, reranked, calibrated.
    let passages = app.settings.answer.passages.max(1);
    let mut run = HashMap::new();
    let mut judged = Vec::new();
    let mut dump = match &files.features {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => None,
    };
    let started = std::time::Instant::now();
    let mut reranked = false;
    let mut timings = Vec::new();
    let mut all: Vec<(String, String, bool)> = queries
        .iter()
        .map(|(id, text)| (id.clone(), text.clone(), true))
        .collect();
    if let Some(file) = &files.out_of_scope {
        all.extend(
            read_queries(file)?
                .into_iter()
                .map(|(id, text)| (format!("oos:{id}"), text, false)),
        );
    }
    for (id, text, in_scope) in &all {
        let asked = std::time::Instant::now();
        let outcome = app
            .knowledge
            .search(
                &app.db,
                bot,
                text,
                k.saturating_mul(5).max(50),
                Retriever::Hybrid,
            )
            .await?;
        timings.push(asked.elapsed());
        reranked |= outcome.hits.iter().any(|h| h.rerank.is_some());
        let relevant: Vec<String> = qrels
            .get(id)
            .map(|r| {
                r.iter()
                    .filter(|(_, g)| **g > 0)
                    .map(|(d, _)| d.clone())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(out) = dump.as_mut() {
            let index = app.knowledge.index(&app.db, bot).await?;
            let terms = index.query_terms(text);
            let features = crate::kb::features(&outcome.hits, &terms, &index);
            let hits: Vec<serde_json::Value> = outcome
                .hits
                .iter()
                .zip(&features)
                .take(5)
                .map(|(h, f)| {
                    serde_json::json!({
                        "doc_id": h.chunk.doc_ref,
                        "relevant": relevant.contains(&h.chunk.doc_ref),
                        "cosine": f.cosine, "bm25": f.bm25, "rerank": h.rerank,
                        "cosine_lead": f.cosine_lead,
                        "agree": f.agree, "coverage": f.coverage,
                        "probability": h.probability,
                    })
                })
                .collect();
            writeln!(
                out,
                "{}",
                serde_json::json!({ "query_id": id, "in_scope": in_scope, "hits": hits })
            )?;
        }
        let top: Vec<_> = outcome.hits.iter().take(passages).collect();
        judged.push((
            *in_scope,
            Judged {
                docs: top.iter().map(|h| h.chunk.doc_ref.clone()).collect(),
                probabilities: top.iter().map(|h| h.probability).collect(),
                relevant,
            },
        ));
        if *in_scope {
            let mut docs: Vec<String> = Vec::new();
            for hit in outcome.hits {
                if !docs.contains(&hit.chunk.doc_ref) {
                    docs.push(hit.chunk.doc_ref);
                }
            }
            run.insert(id.clone(), docs);
        }
    }
    if let Some(mut out) = dump {
        out.flush()?;
    }
    let label = if reranked { "reranked" } else { "product" };
    print_scores(label, &qrels, &run, k, "  (what kb search and answers use)");
    timings.sort();
    let p = |q: f64| {
        timings
            .get(((timings.len() as f64 * q) as usize).min(timings.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "search time per question: p50 {:.0} ms, p95 {:.0} ms ({} questions in {:.1} s)",
        p(0.5),
        p(0.95),
        timings.len(),
        started.elapsed().as_secs_f64()
    );
    print_answer_levels(bot, &judged);
    Ok(())
}

fn print_scores(
    label: &str,
    qrels: &knowledge::eval::Qrels,
    run: &HashMap<String, Vec<String>>,
    k: usize,
    note: &str,
) {
    let s = knowledge::eval::evaluate(qrels, run, k);
    let at1 = knowledge::eval::evaluate(qrels, run, 1);
    println!(
        "{:<8} {:>9.3} {:>10.3} {:>8.3} {:>8.3} {:>8}{note}",
        label, s.ndcg, s.recall, s.mrr, at1.recall, s.queries
    );
}

/// Answer-level figures at the bot's `min_confidence`, then the curve a
/// business picks its `min_confidence` from.
fn print_answer_levels(bot: &Bot, judged: &[(bool, Judged)]) {
    let count = |min: f64, scope: bool, what: &[Outcome]| {
        judged
            .iter()
            .filter(|(s, j)| *s == scope && what.contains(&j.outcome(min)))
            .count()
    };
    let in_scope = judged.iter().filter(|(s, _)| *s).count();
    let out_scope = judged.len() - in_scope;
    let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    let min = bot.min_confidence;
    println!();
    println!("answers at this bot's min_confidence {min:.2} ({in_scope} answerable questions):");
    for (name, what) in [
        ("answered right", &[Outcome::Right][..]),
        ("answered wrong", &[Outcome::Wrong][..]),
        (
            "offered choices, right one among them",
            &[Outcome::ChoicesHit][..],
        ),
        ("offered choices, none right", &[Outcome::ChoicesMiss][..]),
        ("handed off", &[Outcome::HandOff][..]),
    ] {
        let n = count(min, true, what);
        println!("  {name:<40} {n:>5}  {:>5.1}%", pct(n, in_scope));
    }
    if out_scope > 0 {
        let n = count(min, false, &[Outcome::HandOff]);
        println!(
            "  {:<40} {n:>5}  {:>5.1}% of {out_scope}",
            "unanswerable questions handed off",
            pct(n, out_scope)
        );
    }
    println!();
    println!("precision and coverage by min_confidence:");
    println!(
        "{:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "min_conf", "right", "wrong", "choices", "handoff", "precision", "oos_handoff"
    );
    for step in 1..=19 {
        let t = f64::from(step) * 0.05;
        let right = count(t, true, &[Outcome::Right]);
        let wrong = count(t, true, &[Outcome::Wrong]);
        let choices = count(t, true, &[Outcome::ChoicesHit, Outcome::ChoicesMiss]);
        let handoff = count(t, true, &[Outcome::HandOff]);
        let oos = count(t, false, &[Outcome::HandOff]);
        println!(
            "{t:>8.2} {:>8.1}% {:>8.1}% {:>8.1}% {:>8.1}% {:>8.1}% {:>10}",
            pct(right, in_scope),
            pct(wrong, in_scope),
            pct(choices, in_scope),
            pct(handoff, in_scope),
            pct(right, right + wrong),
            if out_scope > 0 {
                format!("{:.1}%", pct(oos, out_scope))
            } else {
                "-".into()
            }
        );
    }
}
