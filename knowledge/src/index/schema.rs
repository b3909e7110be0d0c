//! The tantivy side's fixed parts: the schema and its field handles, the
//! analyzer per language, and the numeric key that ties a tantivy document
//! to its chunk.

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};

use crate::Language;

/// The name the analyzer is registered under in each tantivy index.
pub(super) const ANALYZER: &str = "frontdesk";

/// Handles of the schema's fields.
pub(super) struct Fields {
    pub(super) key: Field,
    pub(super) title: Field,
    pub(super) text: Field,
}

/// The tantivy key of a chunk id.
pub(super) fn chunk_key(id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

fn stemmer_language(language: Language) -> tantivy::tokenizer::Language {
    use tantivy::tokenizer::Language as T;
    match language {
        Language::Arabic => T::Arabic,
        Language::Danish => T::Danish,
        Language::Dutch => T::Dutch,
        Language::English => T::English,
        Language::Finnish => T::Finnish,
        Language::French => T::French,
        Language::German => T::German,
        Language::Greek => T::Greek,
        Language::Hungarian => T::Hungarian,
        Language::Italian => T::Italian,
        Language::Norwegian => T::Norwegian,
        Language::Portuguese => T::Portuguese,
        Language::Romanian => T::Romanian,
        Language::Russian => T::Russian,
        Language::Spanish => T::Spanish,
        Language::Swedish => T::Swedish,
        Language::Tamil => T::Tamil,
        Language::Turkish => T::Turkish,
    }
}

/// The analyzer for a language: Unicode word split, lowercase, stop words
/// (where tantivy has a list), stemming.
pub fn analyzer(language: Language) -> TextAnalyzer {
    let lang = stemmer_language(language);
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(lang) {
        Some(stop) => builder.filter(stop).filter(Stemmer::new(lang)).build(),
        None => builder.filter(Stemmer::new(lang)).build(),
    }
}

pub(super) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let key = b.add_u64_field("key", INDEXED | FAST | STORED);
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text_options = TextOptions::default().set_indexing_options(indexing);
    let title = b.add_text_field("title", text_options.clone());
    let text = b.add_text_field("text", text_options);
    (b.build(), Fields { key, title, text })
}
