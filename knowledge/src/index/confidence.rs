//! How much to trust the top hit of a search.

use super::handle::KnowledgeIndex;
use super::results::{Retriever, SearchHit};

/// How much to trust the top hit, 0–1.
///
/// With vectors, the top hit's cosine similarity mapped linearly from 0.3
/// (unrelated text scores about there with this model) to 0.8 (a paraphrase
/// of the question) — so `min_confidence = 0.35` needs a cosine above about
/// 0.48. Full text alone can only tell how much of the query the top hit
/// covers: the share of the query's terms found in it, scaled down (0.8 at
/// most) because matching words is weaker evidence than matching meaning.
pub fn confidence(
    retriever: Retriever,
    top: Option<&SearchHit>,
    query: &str,
    index: &KnowledgeIndex,
) -> f32 {
    let Some(top) = top else { return 0.0 };
    match (retriever, top.cosine) {
        (Retriever::Hybrid | Retriever::Dense, Some(c)) => ((c - 0.3) / 0.5).clamp(0.0, 1.0),
        _ => {
            let terms = index.query_terms(query);
            if terms.is_empty() {
                return 0.0;
            }
            let matched = index.terms_in_chunk(&top.chunk_id, &terms);
            0.8 * matched as f32 / terms.len() as f32
        }
    }
}
