//! One bot's search index on disk: a tantivy full-text index and a vector
//! index, both derived from the chunks the caller stores in SQL.
//!
//! # Layout
//!
//! Each sub-module has one job; they are listed bottom-up, and each uses
//! only those above it in this list.
//!
//! - `error` — [`IndexError`], why the index could not be used.
//! - `schema` — the tantivy schema and its field handles, the [`analyzer`]
//!   per language, and the numeric key of a chunk.
//! - `vectors` — the vector index: int8 quantization, the integer dot
//!   product, and dense scoring (a chunk's cosine is its vectors' mean).
//! - `ann` — the approximate vector index of a large bot (an inverted file
//!   over the int8 codes): built, kept current, saved and loaded; it
//!   proposes candidates that are then scored exactly.
//! - `state` — the chunk list with its vectors, in memory and in
//!   `state.bin`.
//! - `dir` — the directory: the cross-process lock, and opening or
//!   resetting the tantivy index and the state inside it.
//! - `handle` — [`KnowledgeIndex`] itself: [`open`], [`snapshot`], and
//!   what it holds (generation, chunk ids, sizes).
//! - `write` — the write path: [`IndexedChunk`], [`apply`] and
//!   [`apply_from`].
//! - `fulltext` — the BM25 retriever: query terms, the boosted title and
//!   text query, and which query terms a chunk contains.
//! - `results` — [`Retriever`], [`SearchHit`] and [`SearchResults`].
//! - `confidence` — [`confidence`], how much to trust the top hit.
//! - `search` — [`search`]: both retrievers side by side and their fusion
//!   ([`FUSION_BM25_WEIGHT`]).
//!
//! # On disk
//!
//! `dir/tantivy/` holds the full-text index (one document per chunk: a
//! numeric key, the title — an FAQ question or the heading path — and the
//! text, analyzed for the bot's language). `dir/state.bin` holds the chunk
//! list (id, source document) and the vectors, quantized to int8 with one
//! scale per vector, plus the *generation* of the SQL data they reflect and
//! a *write id*, new on every write. From `approximate_from` chunks
//! (200k by default), `dir/ann-<write id>.ivf` holds the approximate
//! vector index of the state written under that id (any other is stale).
//!
//! # Keeping current
//!
//! The caller compares [`KnowledgeIndex::generation`] with its own and hands
//! the difference to [`KnowledgeIndex::apply`]: chunk ids to remove and chunks
//! to add. Re-adding a chunk deletes it first, so a crash between the tantivy
//! commit and the state file never leaves duplicates. A missing, damaged or
//! outdated directory (other language, other format) opens empty, and the
//! same `apply` rebuilds it from SQL. Writers in several processes take
//! turns through a file lock; a sync starts from [`KnowledgeIndex::snapshot`]
//! (what is on disk now) and [`KnowledgeIndex::apply_from`] refuses a
//! difference computed against a state that another process has since changed.
//!
//! # Search
//!
//! BM25 over title and text (title boosted) and cosine similarity over the
//! vectors (an FAQ entry has two: its question alone, and question with
//! answer; a chunk scores their mean). The vectors are scanned exactly, or,
//! for a large bot whose approximate index is current, the chunks it
//! proposes are scored exactly; while it is missing or being built, the
//! exact scan answers. The hybrid score adds to the cosine a
//! small share of the BM25 score divided by the query's best BM25 score; see
//! [`FUSION_BM25_WEIGHT`] for why and what was measured.
//!
//! [`open`]: KnowledgeIndex::open
//! [`snapshot`]: KnowledgeIndex::snapshot
//! [`apply`]: KnowledgeIndex::apply
//! [`apply_from`]: KnowledgeIndex::apply_from
//! [`search`]: KnowledgeIndex::search
//! [`confidence`]: fn@confidence

mod ann;
mod confidence;
mod dir;
mod error;
mod fulltext;
mod handle;
mod results;
mod schema;
mod search;
mod state;
mod vectors;
mod write;

pub use ann::APPROXIMATE_FROM;
pub use confidence::confidence;
pub use error::IndexError;
pub use handle::KnowledgeIndex;
pub use results::{Retriever, SearchHit, SearchResults};
pub use schema::analyzer;
pub use search::{
    FUSION_BM25_WEIGHT, FUSION_BM25_WEIGHT_MULTILINGUAL, FUSION_BM25_WEIGHT_OTHER_LANGUAGES,
    fusion_bm25_weight,
};
pub use write::IndexedChunk;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Language;
    use crate::chunk::ChunkKind;
    use crate::models::{DIMENSIONS, MINILM, MULTILINGUAL_E5};

    /// A unit vector that differs with `seed`.
    pub(super) fn unit(seed: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIMENSIONS)
            .map(|i| ((i * 31 + seed * 17) % 97) as f32 - 48.0)
            .collect();
        crate::embed::normalize(&mut v);
        v
    }

    /// A passage chunk of document `doc-{id}`.
    pub(super) fn chunk(id: &str, title: &str, text: &str, vectors: Vec<Vec<f32>>) -> IndexedChunk {
        IndexedChunk {
            id: id.into(),
            doc_ref: format!("doc-{id}"),
            kind: ChunkKind::Passage,
            title: title.into(),
            text: text.into(),
            vectors,
        }
    }

    #[test]
    fn full_text_is_stemmed_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = KnowledgeIndex::open(dir.path(), Language::English, MINILM.id).expect("open");
        assert_eq!(index.generation(), 0);
        index
            .apply(
                &[],
                &[
                    chunk(
                        "a",
                        "Returns",
                        "Parcels can be returned within thirty days.",
                        vec![],
                    ),
                    chunk(
                        "b",
                        "Shipping",
                        "We ship to every country in Europe.",
                        vec![],
                    ),
                ],
                3,
            )
            .expect("apply");
        let r = index
            .search("returning a parcel", None, 5, Retriever::Hybrid)
            .expect("search");
        assert_eq!(r.retriever, Retriever::FullText);
        assert_eq!(r.hits[0].chunk_id, "a");
        assert!(r.confidence > 0.5, "{}", r.confidence);
        drop(index);

        let index = KnowledgeIndex::open(dir.path(), Language::English, MINILM.id).expect("reopen");
        assert_eq!(index.generation(), 3);
        assert_eq!(
            index
                .search("europe", None, 5, Retriever::FullText)
                .expect("search")
                .hits[0]
                .doc_ref,
            "doc-b"
        );
        index.apply(&["b".into()], &[], 4).expect("delete");
        assert!(
            index
                .search("europe", None, 5, Retriever::FullText)
                .expect("search")
                .hits
                .is_empty()
        );

        // Another embedding model: rebuilt empty, never mixing vectors.
        drop(index);
        let other = KnowledgeIndex::open(dir.path(), Language::English, MULTILINGUAL_E5.id)
            .expect("open for another model");
        assert_eq!(other.generation(), 0);
        assert!(other.is_empty());
        assert_eq!(other.model(), MULTILINGUAL_E5.id);
        drop(other);

        // Another language: rebuilt empty.
        let german =
            KnowledgeIndex::open(dir.path(), Language::German, MINILM.id).expect("open de");
        assert_eq!(german.generation(), 0);
        assert!(german.is_empty());
    }
}
