//! [`KnowledgeIndex::search`]: runs the full-text and dense retrievers side
//! by side and fuses their scores into one ranking.

use std::collections::{HashMap, HashSet};

use super::ann::Ann;
use super::confidence::confidence;
use super::error::IndexError;
use super::handle::KnowledgeIndex;
use super::results::{Retriever, SearchHit, SearchResults};
use super::state::State;
use super::vectors::{QuantizedQuery, bare_pass, chunk_cosine, dense_scores};

/// The hybrid score is `cosine + FUSION_BM25_WEIGHT × bm25 / best bm25`.
/// Measured on the covid-faq benchmark (nDCG@10, see the README): rank
/// fusion (RRF, k = 60, any weight from 0.6 to 0.8) scores 0.82–0.83, no
/// better than vectors alone (0.83), because ranks throw away how much
/// better the best vector match is; this score-aware sum reaches 0.85, and
/// its optimum is flat between 0.1 and 0.2 — BM25 mostly breaks ties among
/// close vector matches.
pub const FUSION_BM25_WEIGHT: f32 = 0.15;
/// The same weight for knowledge in another language than English. The
/// embedding model is English-only, so words carry more of the meaning:
/// on SweFAQ (Swedish agency FAQs, answers only) nDCG@10 rises from 0.57 at
/// 0.15 to 0.63 at 0.7, the optimum of 0.3–3; on SQuAD-sv from 0.70 to 0.80.
pub const FUSION_BM25_WEIGHT_OTHER_LANGUAGES: f32 = 0.7;

/// The same weight with multilingual-e5-small's vectors, in any language.
/// Its cosines sit in a narrow band (about 0.7–0.9), so a small weight
/// already moves the ranking: on SweFAQ nDCG@10 is 0.713 at 0.02, 0.724 at
/// 0.05, 0.714 at 0.08, 0.694 at 0.15 and 0.674 at 0.5 (vectors alone
/// 0.692); on SQuAD-sv 0.868, 0.886, 0.889, 0.885, 0.857.
pub const FUSION_BM25_WEIGHT_MULTILINGUAL: f32 = 0.05;

/// The BM25 weight of hybrid search for knowledge in `language` whose
/// vectors come from `model`.
pub fn fusion_bm25_weight(language: crate::Language, model: &str) -> f32 {
    if model == crate::models::MULTILINGUAL_E5.id {
        FUSION_BM25_WEIGHT_MULTILINGUAL
    } else if language == crate::Language::English {
        FUSION_BM25_WEIGHT
    } else {
        FUSION_BM25_WEIGHT_OTHER_LANGUAGES
    }
}
/// In hybrid search, a chunk without vectors (ingested while the model was
/// missing) scores this share of its normalized BM25 in place of a cosine.
const NO_VECTOR_WEIGHT: f32 = 0.6;
/// How many hits each retriever contributes to fusion.
const CANDIDATES: usize = 100;

impl KnowledgeIndex {
    /// Searches for `query` (and its vector, when the model is loaded);
    /// returns the best `limit` chunks.
    pub fn search(
        &self,
        query: &str,
        query_vector: Option<&[f32]>,
        limit: usize,
        retriever: Retriever,
    ) -> Result<SearchResults, IndexError> {
        let state = self.current_state()?;
        let has_vectors = query_vector.is_some() && state.vectors.len() > 0;
        let retriever = match retriever {
            Retriever::Dense | Retriever::Hybrid if !has_vectors => Retriever::FullText,
            r => r,
        };
        // A result list longer than the index is pointless (and a huge limit
        // would make tantivy reserve memory for it).
        let limit = limit.clamp(1, state.chunks.len().max(1));
        let candidates = CANDIDATES.max(limit);
        let state_ref: &State = &state;
        let ann = self.approximate_for(state_ref);
        let dense_of = |q: &[f32], spare: usize| match &ann {
            Some(ann) => approximate_scores(state_ref, ann, q, candidates, spare),
            None => dense_scores(&state_ref.vectors, q, candidates, spare),
        };
        // In a hybrid query the two retrievers run side by side, the vector
        // scan leaving one core to the full-text search. Measured at 100k
        // chunks on 2 cores, three runs each way, hybrid p50/p95: one after
        // the other, each on both cores, 3.5–4.2 / 5.1–6.2 ms; side by side
        // with the full-text search on one core, 4.2–4.6 / 6.7–7.3 ms;
        // side by side with its segments across the cores (this),
        // 3.3–3.5 / 4.9–6.0 ms (and 2.6–3.5 / 3.5–6.0 over seven runs).
        let (bm25, dense) = match (retriever, query_vector) {
            (Retriever::FullText, _) | (_, None) => {
                (self.bm25(state_ref, query, candidates)?, HashMap::new())
            }
            (Retriever::Dense, Some(q)) => (Vec::new(), dense_of(q, 0)),
            (Retriever::Hybrid, Some(q)) => std::thread::scope(|scope| {
                let dense = scope.spawn(|| dense_of(q, 1));
                let bm25 = self.bm25(state_ref, query, candidates);
                let dense = dense.join().unwrap_or_default();
                bm25.map(|b| (b, dense))
            })?,
        };
        let max_bm25 = bm25.first().map_or(0.0, |(_, s)| *s);
        let mut hits: Vec<SearchHit> = match retriever {
            Retriever::FullText => bm25
                .iter()
                .map(|&(slot, s)| hit(&state, slot, s / max_bm25.max(f32::EPSILON), Some(s), None))
                .collect(),
            Retriever::Dense => dense
                .iter()
                .map(|(&slot, &c)| hit(&state, slot, c, None, Some(c)))
                .collect(),
            Retriever::Hybrid => {
                let bm25_of: HashMap<u32, f32> = bm25.iter().copied().collect();
                let mut candidates: HashSet<u32> = dense.keys().copied().collect();
                candidates.extend(bm25_of.keys());
                let q = QuantizedQuery::new(query_vector.unwrap_or_default());
                let weight = fusion_bm25_weight(self.language, &self.model);
                candidates
                    .into_iter()
                    .map(|slot| {
                        let b = bm25_of.get(&slot).copied();
                        let b_norm = b.map_or(0.0, |b| b / max_bm25.max(f32::EPSILON));
                        let range = state.vector_ranges.get(slot as usize).copied();
                        let has_vectors = range.is_some_and(|(_, n)| n > 0);
                        if !has_vectors {
                            // Stored while the model was missing: its words
                            // stand in for its meaning, so it still ranks.
                            let score = NO_VECTOR_WEIGHT * b_norm + weight * b_norm;
                            return hit(&state, slot, score, b, None);
                        }
                        let cosine = dense.get(&slot).copied().unwrap_or_else(|| {
                            chunk_cosine(&state.vectors, range.unwrap_or((0, 0)), &q)
                        });
                        let score = cosine + weight * b_norm;
                        hit(&state, slot, score, b, Some(cosine))
                    })
                    .collect()
            }
        };
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.chunk_id.cmp(&b.chunk_id))
        });
        hits.truncate(limit);
        let confidence = confidence(retriever, hits.first(), query, self);
        Ok(SearchResults {
            hits,
            confidence,
            retriever,
        })
    }
}

/// The `limit` best chunks among those the approximate index proposes,
/// each scored exactly (as [`dense_scores`] scores it). An FAQ entry's two
/// vectors may both be proposed, so twice `limit` vectors are asked for.
fn approximate_scores(
    state: &State,
    ann: &Ann,
    query: &[f32],
    limit: usize,
    spare: usize,
) -> HashMap<u32, f32> {
    let q = QuantizedQuery::new(query);
    let slots: HashSet<u32> = ann
        .candidates(&state.vectors, q.codes(), limit * 2)
        .into_iter()
        .filter_map(|row| state.vectors.owners.get(row as usize).copied())
        .collect();
    if slots.is_empty() {
        return dense_scores(&state.vectors, query, limit, spare);
    }
    let mut scored: Vec<(u32, f32)> = slots
        .into_iter()
        .map(|slot| {
            let range = state.vector_ranges.get(slot as usize).copied();
            (
                slot,
                chunk_cosine(&state.vectors, range.unwrap_or((0, 0)), &q),
            )
        })
        .collect();
    best_first(&mut scored);
    scored.truncate(limit);
    scored.into_iter().collect()
}

/// Sorts `(slot, score)` pairs best first, ties by slot.
fn best_first(scored: &mut [(u32, f32)]) {
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

impl KnowledgeIndex {
    /// The bare limit of the vector scan, for benchmarks: one pass of int8
    /// dot products over this index's vectors, on the threads a search
    /// uses, with no scoring or ranking around them. Returns their sum.
    pub fn bare_vector_pass(&self, query: &[f32]) -> i64 {
        match self.state.read() {
            Ok(state) if state.vectors.len() > 0 => bare_pass(&state.vectors, query),
            _ => 0,
        }
    }

    /// The ids of the `limit` chunks nearest to `query` by the exact scan,
    /// best first, whether or not an approximate index serves dense search:
    /// what benchmarks and tests measure its recall against.
    pub fn exact_nearest(&self, query: &[f32], limit: usize) -> Vec<String> {
        let Ok(state) = self.current_state() else {
            return Vec::new();
        };
        let mut scored: Vec<(u32, f32)> = dense_scores(&state.vectors, query, limit, 0)
            .into_iter()
            .collect();
        best_first(&mut scored);
        scored
            .into_iter()
            .map(|(slot, _)| state.chunks[slot as usize].id.clone())
            .collect()
    }
}

fn hit(state: &State, slot: u32, score: f32, bm25: Option<f32>, cosine: Option<f32>) -> SearchHit {
    let meta = &state.chunks[slot as usize];
    SearchHit {
        chunk_id: meta.id.clone(),
        doc_ref: meta.doc_ref.clone(),
        score,
        bm25,
        cosine,
    }
}
