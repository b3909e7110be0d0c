//! The knowledge base: what a bot knows, and how it finds it.
//!
//! # Layout
//!
//! - `lib.rs` — [`Language`], the analyzer language of a bot's knowledge
//!   (ISO 639-1 codes).
//! - [`extract`] — text extraction: one file (PDF, DOCX, HTML, Markdown,
//!   text, FAQ CSV/JSONL) in, structured blocks or FAQ entries out; one
//!   sub-module per format.
//! - [`chunk`] — structure-aware chunking: blocks grouped into chunks along
//!   their headings, sized in model tokens, with overlap and heading paths.
//! - [`models`] — the embedding runtime and model on disk: where they live,
//!   whether they are there, and how `frontdesk models install` fetches them.
//! - [`embed`] — local sentence embeddings (all-MiniLM-L6-v2, int8, through
//!   fastembed) and the token counter the chunker sizes with.
//! - [`index`] — one bot's search index on disk: tantivy full-text index,
//!   int8 vector index, hybrid search with fused scores and a confidence.
//! - [`rerank`] — the cross-encoder that rescores the best candidates of a
//!   search, reading question and passage together.
//! - [`calibrate`] — how likely each candidate is to answer the question:
//!   a logistic model over what retrieval measured about it.
//! - [`web`] — reading a website for a crawler, without fetching: links,
//!   sitemaps, `robots.txt`, declared charsets.
//! - [`eval`] — retrieval quality: nDCG@k, Recall@k and MRR@k over
//!   BEIR-style judgements.
//!
//! # Data flow
//!
//! A file is extracted ([`extract::extract`]) to an [`extract::Extracted`]
//! document, chunked along its structure ([`chunk::chunk`], sizes counted by
//! [`embed::TokenCounter`]), and each chunk's text is embedded locally
//! ([`embed::Embedder`]) to unit vectors. The caller stores documents and
//! chunks in SQL (the source of truth) and hands them, as
//! [`index::IndexedChunk`]s, to [`index::KnowledgeIndex::apply`]; the
//! index is a rebuildable cache of them. A query runs BM25 and vector search
//! over one bot's chunks side by side ([`index::KnowledgeIndex::search`]) and
//! fuses the two: each hit's score is its cosine plus a small share of its
//! normalized BM25 ([`index::FUSION_BM25_WEIGHT`]), and the results carry a
//! confidence in the top hit ([`index::confidence`]). Without the model,
//! search falls back to full text alone. This crate knows nothing of the
//! database or the channels.

pub mod calibrate;
pub mod chunk;
pub mod embed;
pub mod eval;
pub mod extract;
pub mod index;
pub mod models;
pub mod rerank;
pub mod web;

use std::fmt;
use std::str::FromStr;

/// The language of a bot's knowledge: selects the full-text analyzer
/// (tokenizer and stemmer). Codes are ISO 639-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Language {
    /// `ar`
    Arabic,
    /// `da`
    Danish,
    /// `nl`
    Dutch,
    /// `en`, the default.
    #[default]
    English,
    /// `fi`
    Finnish,
    /// `fr`
    French,
    /// `de`
    German,
    /// `el`
    Greek,
    /// `hu`
    Hungarian,
    /// `it`
    Italian,
    /// `no`
    Norwegian,
    /// `pt`
    Portuguese,
    /// `ro`
    Romanian,
    /// `ru`
    Russian,
    /// `es`
    Spanish,
    /// `sv`
    Swedish,
    /// `ta`
    Tamil,
    /// `tr`
    Turkish,
}

const CODES: [(Language, &str); 18] = [
    (Language::Arabic, "ar"),
    (Language::Danish, "da"),
    (Language::Dutch, "nl"),
    (Language::English, "en"),
    (Language::Finnish, "fi"),
    (Language::French, "fr"),
    (Language::German, "de"),
    (Language::Greek, "el"),
    (Language::Hungarian, "hu"),
    (Language::Italian, "it"),
    (Language::Norwegian, "no"),
    (Language::Portuguese, "pt"),
    (Language::Romanian, "ro"),
    (Language::Russian, "ru"),
    (Language::Spanish, "es"),
    (Language::Swedish, "sv"),
    (Language::Tamil, "ta"),
    (Language::Turkish, "tr"),
];

impl Language {
    /// The ISO 639-1 code.
    pub fn code(self) -> &'static str {
        CODES
            .iter()
            .find(|(l, _)| *l == self)
            .map_or("en", |(_, c)| c)
    }

    /// All supported codes, for error messages.
    pub fn supported_codes() -> impl Iterator<Item = &'static str> {
        CODES.iter().map(|(_, c)| *c)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A language code Frontdesk has no analyzer for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported language `{0}` (supported: {list})", list = Language::supported_codes().collect::<Vec<_>>().join(", "))]
pub struct UnsupportedLanguage(pub String);

impl FromStr for Language {
    type Err = UnsupportedLanguage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let code = s.trim().to_ascii_lowercase();
        // Accept regional variants such as `en-GB` or `pt_BR`.
        let base = code.split(['-', '_']).next().unwrap_or_default();
        CODES
            .iter()
            .find(|(_, c)| *c == base)
            .map(|(l, _)| *l)
            .ok_or_else(|| UnsupportedLanguage(s.to_owned()))
    }
}

impl TryFrom<String> for Language {
    type Error = UnsupportedLanguage;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_accept_regions() {
        for (lang, code) in CODES {
            assert_eq!(code.parse::<Language>(), Ok(lang));
        }
        assert_eq!("en-GB".parse::<Language>(), Ok(Language::English));
        assert_eq!("pt_BR".parse::<Language>(), Ok(Language::Portuguese));
        let err = "xx".parse::<Language>().expect_err("unsupported");
        assert!(err.to_string().contains("supported: ar, da"), "{err}");
    }
}
