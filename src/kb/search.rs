//! Searching a bot's knowledge: hybrid retrieval, the optional reranker,
//! and a calibrated probability for each hit.

use super::*;

/// A search hit with its chunk.
#[derive(Debug, Clone)]
pub struct Found {
    pub chunk: ChunkRow,
    /// The hybrid (or BM25, or cosine) score.
    pub score: f32,
    pub bm25: Option<f32>,
    pub cosine: Option<f32>,
    /// The reranker's logit, when it ran.
    pub rerank: Option<f32>,
    /// How likely this chunk answers the query, 0–1 (calibrated).
    pub probability: f32,
}

impl Found {
    /// What ranks hits after reranking: the reranker's logit, with the
    /// cosine as a small second opinion (measured on the `eval/` sets).
    fn rank_score(&self) -> f32 {
        match self.rerank {
            Some(r) => r + RERANK_COSINE_WEIGHT * self.cosine.unwrap_or(0.0),
            None => self.score,
        }
    }
}

/// On full text alone, a hit containing every word of the query is this
/// likely to answer it (matching words is weaker evidence than meaning).
const FULL_TEXT_CONFIDENCE: f32 = 0.8;

/// How many hybrid candidates the reranker rescores.
pub const RERANK_POOL: usize = 20;
/// Weight of the cosine beside the reranker's logit when ranking.
const RERANK_COSINE_WEIGHT: f32 = 5.0;
/// Longest query searched, in characters: a pasted essay is cut here (the
/// models read a few hundred tokens at most).
pub const MAX_QUERY_CHARS: usize = 1000;

/// The query as searched: whitespace collapsed, cut to [`MAX_QUERY_CHARS`].
pub fn normalize_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len().min(MAX_QUERY_CHARS));
    for word in query.split_whitespace() {
        if out.chars().count() + word.chars().count() + 1 > MAX_QUERY_CHARS {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.is_empty() {
        // One word longer than the limit: its start.
        out = query.trim().chars().take(MAX_QUERY_CHARS).collect();
    }
    out
}

/// What the reranker reads of a chunk: the FAQ question or headings, then
/// the text.
fn rerank_text(chunk: &ChunkRow) -> String {
    let title = chunk
        .title
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(&chunk.heading_path);
    if title.trim().is_empty() {
        chunk.body.clone()
    } else {
        format!("{title}\n{}", chunk.body)
    }
}

/// Fills each hit's probability from its features
/// ([`knowledge::calibrate`]); `hits` are ranked, best first.
fn calibrate(hits: &mut [Found], terms: &[String], index: &KnowledgeIndex) {
    let features = features(hits, terms, index);
    let weights = knowledge::calibrate::weights_for(index.model());
    for (hit, f) in hits.iter_mut().zip(&features) {
        hit.probability = knowledge::calibrate::probability(weights, f);
    }
}

/// The share of the query's analyzed `terms` found in a chunk, 0–1.
fn coverage(index: &KnowledgeIndex, chunk_id: &str, terms: &[String]) -> f32 {
    if terms.is_empty() {
        0.0
    } else {
        index.terms_in_chunk(chunk_id, terms) as f32 / terms.len() as f32
    }
}

/// What retrieval measured about each hit, for calibration.
pub fn features(
    hits: &[Found],
    terms: &[String],
    index: &KnowledgeIndex,
) -> Vec<knowledge::calibrate::Features> {
    let best_bm25 = hits.iter().filter_map(|h| h.bm25).fold(0f32, f32::max);
    // The margin of each hit over the best of the others.
    let lead = |value: fn(&Found) -> Option<f32>, i: usize| -> f32 {
        let Some(v) = value(&hits[i]) else { return 0.0 };
        let other = hits
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, h)| value(h))
            .fold(f32::MIN, f32::max);
        if other == f32::MIN {
            v.max(0.0)
        } else {
            v - other
        }
    };
    let rank_of = |value: fn(&Found) -> Option<f32>, hit: &Found| {
        let v = value(hit).unwrap_or(f32::MIN);
        hits.iter()
            .filter(|h| value(h).unwrap_or(f32::MIN) > v)
            .count()
    };
    hits.iter()
        .enumerate()
        .take(5)
        .map(|(i, h)| {
            let coverage = coverage(index, &h.chunk.id, terms);
            let agree = h.bm25.is_some()
                && h.cosine.is_some()
                && rank_of(|h| h.bm25, h) < 3
                && rank_of(|h| h.cosine, h) < 3;
            knowledge::calibrate::Features {
                cosine: h.cosine.unwrap_or(0.0),
                bm25: h.bm25.map_or(0.0, |b| b / best_bm25.max(f32::EPSILON)),
                cosine_lead: lead(|h| h.cosine, i),
                agree,
                coverage,
            }
        })
        .chain(std::iter::repeat(knowledge::calibrate::Features::default()))
        .take(hits.len())
        .collect()
}

/// Ranked chunks and how much to trust them.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    pub hits: Vec<Found>,
    pub confidence: f32,
    pub retriever: Retriever,
}

impl Knowledge {
    /// Searches the bot's knowledge. `limit` chunks at most, best first,
    /// each with the probability that it answers the query.
    ///
    /// The hybrid search's best [`RERANK_POOL`] candidates are rescored by
    /// the reranker (when installed and the retriever is hybrid), ranked by
    /// its score, and each gets a calibrated probability
    /// ([`knowledge::calibrate`]) from what the retrievers measured.
    pub async fn search(
        &self,
        db: &Db,
        bot: &Bot,
        query: &str,
        limit: usize,
        retriever: Retriever,
    ) -> Result<SearchOutcome, KbError> {
        let query = normalize_query(query);
        let pool = if retriever == Retriever::Hybrid {
            limit.max(RERANK_POOL)
        } else {
            limit
        };
        let (results, index) = self.search_index(db, bot, &query, pool, retriever).await?;
        let ids: Vec<String> = results.hits.iter().map(|h| h.chunk_id.clone()).collect();
        let rows = {
            let mut conn = db.get().await?;
            ChunkRow::texts_by_ids(&mut conn, &bot.id, &ids).await?
        };
        let mut by_id: HashMap<String, ChunkRow> =
            rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut hits: Vec<Found> = results
            .hits
            .into_iter()
            .filter_map(|h| {
                let chunk = by_id.remove(&h.chunk_id)?;
                Some(Found {
                    chunk,
                    score: h.score,
                    bm25: h.bm25,
                    cosine: h.cosine,
                    rerank: None,
                    probability: 0.0,
                })
            })
            .collect();
        if results.retriever == Retriever::Hybrid
            && !hits.is_empty()
            && let Ok(reranker) = self.reranker().await
        {
            // Only the best few are reranked; the rest keep their order after
            // them (they matter only to long result lists).
            let reranked = hits.len().min(RERANK_POOL);
            let texts: Vec<String> = hits[..reranked]
                .iter()
                .map(|h| rerank_text(&h.chunk))
                .collect();
            let q = query.clone();
            let scored = tokio::task::spawn_blocking(move || reranker.score(&q, &texts))
                .await
                .map_err(|e| join_err(&e))?;
            match scored {
                Ok(scores) => {
                    for (hit, score) in hits.iter_mut().zip(scores) {
                        hit.rerank = Some(score);
                    }
                    hits[..reranked].sort_by(|a, b| {
                        b.rank_score()
                            .total_cmp(&a.rank_score())
                            .then_with(|| a.chunk.id.cmp(&b.chunk.id))
                    });
                }
                Err(error) => tracing::warn!(%error, "reranking failed; ranking without it"),
            }
        }
        let terms = index.query_terms(&query);
        if results.retriever == Retriever::FullText {
            // No vectors (the model is missing, or BM25 was asked for): the
            // calibration does not apply; each hit's share of the query's
            // words stands in, as the full-text confidence does.
            for hit in &mut hits {
                hit.probability = FULL_TEXT_CONFIDENCE * coverage(&index, &hit.chunk.id, &terms);
            }
        } else {
            calibrate(&mut hits, &terms, &index);
        }
        hits.truncate(limit);
        let confidence = hits.first().map_or(0.0, |h| h.probability);
        Ok(SearchOutcome {
            hits,
            confidence,
            retriever: results.retriever,
        })
    }

    /// Searches without loading the chunks: ids, document refs and scores.
    pub async fn search_index(
        &self,
        db: &Db,
        bot: &Bot,
        query: &str,
        limit: usize,
        retriever: Retriever,
    ) -> Result<(SearchResults, Arc<KnowledgeIndex>), KbError> {
        let limit = limit.clamp(1, MAX_RESULTS);
        let index = self.index(db, bot).await?;
        // The question is embedded by the model of the index's vectors, which
        // during a change of model is still the old one.
        let model = knowledge::models::embedding_model(index.model());
        let embedder = match (retriever, model) {
            (Retriever::FullText, _) | (_, None) => None,
            (_, Some(model)) => self.embedder(model).await.ok(),
        };
        let vector = match embedder {
            None => None,
            Some(embedder) => {
                let q = query.to_owned();
                let v = tokio::task::spawn_blocking(move || embedder.embed_query(&q))
                    .await
                    .map_err(|e| join_err(&e))??;
                Some(v)
            }
        };
        let query = query.to_owned();
        let searched = index.clone();
        let results = tokio::task::spawn_blocking(move || {
            searched.search(&query, vector.as_deref(), limit, retriever)
        })
        .await
        .map_err(|e| join_err(&e))??;
        Ok((results, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_collapsed_and_cut_at_a_word() {
        assert_eq!(
            normalize_query("  how\n\tlong   is delivery? "),
            "how long is delivery?"
        );
        assert_eq!(normalize_query(" \n "), "");
        assert_eq!(normalize_query("🙂🙂"), "🙂🙂");
        let long = "refund ".repeat(1000);
        let cut = normalize_query(&long);
        assert!(cut.chars().count() <= MAX_QUERY_CHARS, "{}", cut.len());
        assert!(cut.ends_with("refund"), "cut at a word");
        let one_huge_word = "x".repeat(5000);
        assert_eq!(normalize_query(&one_huge_word).len(), MAX_QUERY_CHARS);
    }
}
