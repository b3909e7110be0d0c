//! What a search is asked for and what it returns: the [`Retriever`] and the
//! ranked [`SearchHit`]s with a confidence.

/// Which retrievers to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retriever {
    /// BM25 and vectors, fused.
    Hybrid,
    /// BM25 only.
    FullText,
    /// Vectors only.
    Dense,
}

impl Retriever {
    /// `hybrid`, `bm25` or `dense`.
    pub fn as_str(self) -> &'static str {
        match self {
            Retriever::Hybrid => "hybrid",
            Retriever::FullText => "bm25",
            Retriever::Dense => "dense",
        }
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub chunk_id: String,
    pub doc_ref: String,
    /// The ranking score (hybrid, BM25-normalized or cosine, by retriever).
    pub score: f32,
    /// Raw BM25 score, when BM25 found the chunk.
    pub bm25: Option<f32>,
    /// Cosine similarity, when vectors were searched.
    pub cosine: Option<f32>,
}

/// Ranked results and how much to trust the best one.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// 0–1: how likely the top hit answers the query (see [`confidence`]).
    ///
    /// [`confidence`]: fn@super::confidence
    pub confidence: f32,
    /// The retriever actually used (hybrid falls back to full text when the
    /// query has no vector or the index has none).
    pub retriever: Retriever,
}
