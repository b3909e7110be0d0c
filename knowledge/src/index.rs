//! One bot's search index on disk: a tantivy full-text index and a vector
//! index, both derived from the chunks the caller stores in SQL.
//!
//! # Layout
//!
//! `dir/tantivy/` holds the full-text index (one document per chunk: a
//! numeric key, the title — an FAQ question or the heading path — and the
//! text, analyzed for the bot's language). `dir/state.bin` holds the chunk
//! list (id, source document) and the vectors, quantized to int8 with one
//! scale per vector, plus the *generation* of the SQL data they reflect.
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
//! answer; a chunk scores their mean). The hybrid score adds to the cosine a
//! small share of the BM25 score divided by the query's best BM25 score; see
//! [`FUSION_BM25_WEIGHT`] for why and what was measured.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term, doc};

use crate::Language;
use crate::chunk::ChunkKind;
use crate::models::{DIMENSIONS, MODEL_ID};

/// Bumped when the on-disk layout or analysis changes: old directories are
/// rebuilt.
const FORMAT_VERSION: u32 = 1;
const STATE_MAGIC: &[u8; 8] = b"FDKNOW01";
const ANALYZER: &str = "frontdesk";

/// The hybrid score is `cosine + FUSION_BM25_WEIGHT × bm25 / best bm25`.
/// Measured on the covid-faq benchmark (nDCG@10, see the README): rank
/// fusion (RRF, k = 60, any weight from 0.6 to 0.8) scores 0.82–0.83, no
/// better than vectors alone (0.83), because ranks throw away how much
/// better the best vector match is; this score-aware sum reaches 0.85, and
/// its optimum is flat between 0.1 and 0.2 — BM25 mostly breaks ties among
/// close vector matches.
pub const FUSION_BM25_WEIGHT: f32 = 0.15;
/// In hybrid search, a chunk without vectors (ingested while the model was
/// missing) scores this share of its normalized BM25 in place of a cosine.
const NO_VECTOR_WEIGHT: f32 = 0.6;
/// The question of an FAQ entry weighs more than the answer's words: the
/// title field is boosted this much in BM25.
const TITLE_BOOST: f32 = 2.5;
/// How many hits each retriever contributes to fusion.
const CANDIDATES: usize = 100;

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index I/O at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("full-text index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("vector of {0} dimensions, expected {DIMENSIONS}")]
    Dimensions(usize),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A chunk as the index needs it.
#[derive(Debug, Clone)]
pub struct IndexedChunk {
    /// The caller's id for the chunk (unique across the bot).
    pub id: String,
    /// The id reported for the source document (a file name, an FAQ
    /// entry's own id).
    pub doc_ref: String,
    pub kind: ChunkKind,
    /// The FAQ question, or the heading path.
    pub title: String,
    pub text: String,
    /// Unit vectors; empty while the model is not installed.
    pub vectors: Vec<Vec<f32>>,
}

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
    pub confidence: f32,
    /// The retriever actually used (hybrid falls back to full text when the
    /// query has no vector or the index has none).
    pub retriever: Retriever,
}

struct Fields {
    key: Field,
    title: Field,
    text: Field,
}

#[derive(Debug, Clone)]
struct ChunkMeta {
    id: String,
    doc_ref: String,
    key: u64,
}

/// Vectors quantized to int8 (`code = round(x / scale)`), one scale each.
#[derive(Debug, Default, Clone)]
struct Vectors {
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// The chunk slot each vector belongs to.
    owners: Vec<u32>,
}

impl Vectors {
    fn len(&self) -> usize {
        self.scales.len()
    }

    fn push(&mut self, owner: u32, v: &[f32]) {
        let (codes, scale) = quantize(v);
        self.codes.extend_from_slice(&codes);
        self.scales.push(scale);
        self.owners.push(owner);
    }

    fn retain_owners(&mut self, keep: impl Fn(u32) -> bool) {
        let mut out = Vectors::default();
        for i in 0..self.len() {
            if keep(self.owners[i]) {
                out.codes
                    .extend_from_slice(&self.codes[i * DIMENSIONS..(i + 1) * DIMENSIONS]);
                out.scales.push(self.scales[i]);
                out.owners.push(self.owners[i]);
            }
        }
        *self = out;
    }

    fn remap_owners(&mut self, map: &HashMap<u32, u32>) {
        for o in &mut self.owners {
            if let Some(n) = map.get(o) {
                *o = *n;
            }
        }
    }
}

fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max <= f32::EPSILON {
        return (vec![0; v.len()], 0.0);
    }
    let scale = max / 127.0;
    (
        v.iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
            .collect(),
        scale,
    )
}

/// Integer dot product; written so the compiler vectorizes it.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let chunks_a = a.chunks_exact(16);
    let chunks_b = b.chunks_exact(16);
    let (rest_a, rest_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    let tail: i32 = rest_a
        .iter()
        .zip(rest_b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    acc.iter().sum::<i32>() + tail
}

#[derive(Debug, Default, Clone)]
struct State {
    generation: u64,
    /// Chunk slots; `None` after removal until the next compaction.
    chunks: Vec<ChunkMeta>,
    by_id: HashMap<String, u32>,
    by_key: HashMap<u64, u32>,
    vectors: Vectors,
    /// Per chunk slot: its first vector and how many it has.
    vector_ranges: Vec<(u32, u32)>,
}

impl State {
    fn reindex(&mut self) {
        self.by_id = self
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i as u32))
            .collect();
        self.by_key = self
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key, i as u32))
            .collect();
        self.vector_ranges = vec![(0, 0); self.chunks.len()];
        for (i, owner) in self.vectors.owners.iter().enumerate() {
            if let Some(range) = self.vector_ranges.get_mut(*owner as usize) {
                if range.1 == 0 {
                    range.0 = i as u32;
                }
                range.1 += 1;
            }
        }
    }
}

/// One bot's index. Share it behind an `Arc`; searches run concurrently,
/// `apply` serializes.
pub struct KnowledgeIndex {
    dir: PathBuf,
    language: Language,
    /// Replaced whenever the directory was rebuilt (by this process or
    /// another).
    reader: RwLock<IndexReader>,
    fields: Fields,
    state: RwLock<State>,
}

impl std::fmt::Debug for KnowledgeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeIndex")
            .field("dir", &self.dir)
            .field("language", &self.language)
            .finish()
    }
}

fn chunk_key(id: &str) -> u64 {
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

fn schema() -> (Schema, Fields) {
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

impl KnowledgeIndex {
    /// Opens the index in `dir`, or creates it empty (generation 0) when it
    /// is missing, damaged, or built for another language or format.
    pub fn open(dir: &Path, language: Language) -> Result<KnowledgeIndex, IndexError> {
        let _lock = DirLock::acquire(dir)?;
        let (index, state) = match Self::open_existing(dir, language) {
            Ok(Some(found)) => found,
            Ok(None) => reset_dir(dir, language)?,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "knowledge index unreadable; rebuilding it from the database");
                reset_dir(dir, language)?
            }
        };
        let (_, fields) = schema();
        Ok(KnowledgeIndex {
            dir: dir.to_path_buf(),
            language,
            reader: RwLock::new(reader_of(&index)?),
            fields,
            state: RwLock::new(state),
        })
    }

    /// The tantivy index and state on disk, if both are there and current.
    fn open_existing(dir: &Path, language: Language) -> Result<Option<(Index, State)>, IndexError> {
        let Some(state) = read_state(dir, language)? else {
            return Ok(None);
        };
        match open_tantivy(dir, language)? {
            Some(index) => Ok(Some((index, state))),
            None => Ok(None),
        }
    }

    pub fn language(&self) -> Language {
        self.language
    }

    /// The generation of the data this index reflects (0: empty, never
    /// synced).
    pub fn generation(&self) -> u64 {
        self.state.read().map_or(0, |s| s.generation)
    }

    /// Ids of the chunks in the index, each with whether it has vectors.
    pub fn chunk_ids(&self) -> HashMap<String, bool> {
        let Ok(s) = self.state.read() else {
            return HashMap::new();
        };
        let with_vectors: HashSet<u32> = s.vectors.owners.iter().copied().collect();
        s.chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), with_vectors.contains(&(i as u32))))
            .collect()
    }

    /// How many chunks and vectors the index holds.
    pub fn len(&self) -> (usize, usize) {
        self.state
            .read()
            .map_or((0, 0), |s| (s.chunks.len(), s.vectors.len()))
    }

    /// Bytes held in memory by the chunk list and the vectors (the tantivy
    /// index is memory-mapped from disk and paged in by the OS).
    pub fn memory_bytes(&self) -> usize {
        let Ok(s) = self.state.read() else { return 0 };
        let chunks: usize = s
            .chunks
            .iter()
            .map(|c| c.id.len() + c.doc_ref.len() + 56)
            .sum();
        // Both maps hold a key and a slot per chunk, at about twice the
        // entries for hashbrown's load factor.
        let maps: usize = s
            .chunks
            .iter()
            .map(|c| 2 * (c.id.len() + 24 + 8 + 4) + 2 * 12)
            .sum();
        chunks + maps + s.vectors.codes.len() + s.vectors.len() * 8 + s.vector_ranges.len() * 8
    }

    /// Whether the index holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.len().0 == 0
    }

    /// The starting point of a sync: under the directory lock, makes this
    /// process's view equal to what is on disk (another process may have
    /// written; a missing or damaged directory is reset to empty at
    /// generation 0) and returns that generation with the chunk ids (each
    /// with whether it has vectors). Diff against these, then [`apply_from`].
    ///
    /// [`apply_from`]: KnowledgeIndex::apply_from
    pub fn snapshot(&self) -> Result<(u64, HashMap<String, bool>), IndexError> {
        let _lock = DirLock::acquire(&self.dir)?;
        let state = match Self::open_existing(&self.dir, self.language)? {
            Some((index, state)) => {
                self.replace_reader(&index)?;
                state
            }
            None => {
                tracing::warn!(dir = %self.dir.display(), "knowledge index missing or damaged; rebuilding it from the database");
                let (index, state) = reset_dir(&self.dir, self.language)?;
                self.replace_reader(&index)?;
                state
            }
        };
        let generation = state.generation;
        if let Ok(mut s) = self.state.write() {
            *s = state;
        }
        Ok((generation, self.chunk_ids()))
    }

    fn replace_reader(&self, index: &Index) -> Result<(), IndexError> {
        let reader = reader_of(index)?;
        if let Ok(mut r) = self.reader.write() {
            *r = reader;
        }
        Ok(())
    }

    /// Removes chunks by id and adds (or replaces) chunks, then records
    /// `generation`, starting from whatever is on disk. Durable when it
    /// returns. (Syncs from a database use [`snapshot`] and [`apply_from`].)
    ///
    /// [`snapshot`]: KnowledgeIndex::snapshot
    /// [`apply_from`]: KnowledgeIndex::apply_from
    pub fn apply(
        &self,
        removed: &[String],
        added: &[IndexedChunk],
        generation: u64,
    ) -> Result<(), IndexError> {
        loop {
            let (base, _) = self.snapshot()?;
            if self.apply_from(base, removed, added, generation.max(base))? {
                return Ok(());
            }
        }
    }

    /// Applies a difference computed against the [`snapshot`] at `base`:
    /// removes chunks by id, adds (or replaces) chunks, records `generation`.
    /// Returns `false`, changing nothing, when the disk is no longer at
    /// `base` (another process wrote meanwhile): take a new snapshot.
    ///
    /// [`snapshot`]: KnowledgeIndex::snapshot
    pub fn apply_from(
        &self,
        base: u64,
        removed: &[String],
        added: &[IndexedChunk],
        generation: u64,
    ) -> Result<bool, IndexError> {
        for chunk in added {
            if let Some(v) = chunk.vectors.iter().find(|v| v.len() != DIMENSIONS) {
                return Err(IndexError::Dimensions(v.len()));
            }
        }
        let _lock = DirLock::acquire(&self.dir)?;
        let Some((index, mut state)) = Self::open_existing(&self.dir, self.language)? else {
            return Ok(false);
        };
        if state.generation != base {
            return Ok(false);
        }
        // Opened afresh under the lock: tantivy's list of its own files is
        // read at open, and another process may have changed it.
        let mut writer = index.writer_with_num_threads::<TantivyDocument>(1, 32 * 1024 * 1024)?;
        let gone: HashSet<&str> = removed
            .iter()
            .map(String::as_str)
            .chain(added.iter().map(|c| c.id.as_str()))
            .collect();
        for id in &gone {
            writer.delete_term(Term::from_field_u64(self.fields.key, chunk_key(id)));
        }
        for chunk in added {
            writer.add_document(doc!(
                self.fields.key => chunk_key(&chunk.id),
                self.fields.title => chunk.title.as_str(),
                self.fields.text => chunk.text.as_str(),
            ))?;
        }
        writer.commit()?;
        // Let the merges the commit started finish, under the lock.
        writer.wait_merging_threads()?;

        // Drop removed and replaced chunks, compacting slots.
        let mut remap = HashMap::new();
        let mut kept = Vec::with_capacity(state.chunks.len());
        for (old, meta) in state.chunks.drain(..).enumerate() {
            if !gone.contains(meta.id.as_str()) {
                remap.insert(old as u32, kept.len() as u32);
                kept.push(meta);
            }
        }
        state.vectors.retain_owners(|o| remap.contains_key(&o));
        state.vectors.remap_owners(&remap);
        state.chunks = kept;
        for chunk in added {
            let slot = state.chunks.len() as u32;
            state.chunks.push(ChunkMeta {
                id: chunk.id.clone(),
                doc_ref: chunk.doc_ref.clone(),
                key: chunk_key(&chunk.id),
            });
            for v in &chunk.vectors {
                state.vectors.push(slot, v);
            }
        }
        state.reindex();
        state.generation = generation;
        write_state(&self.dir, self.language, &state)?;
        self.replace_reader(&index)?;
        if let Ok(mut s) = self.state.write() {
            *s = state;
        }
        Ok(true)
    }

    /// Searches for `query` (and its vector, when the model is loaded);
    /// returns the best `limit` chunks.
    pub fn search(
        &self,
        query: &str,
        query_vector: Option<&[f32]>,
        limit: usize,
        retriever: Retriever,
    ) -> Result<SearchResults, IndexError> {
        let state = self.state.read().map_err(|_| IndexError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("index state lock poisoned"),
        })?;
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
        // The two retrievers run side by side: on two cores a hybrid query
        // takes about as long as the slower of the two.
        let (bm25, dense) = match (retriever, query_vector) {
            (Retriever::FullText, _) | (_, None) => {
                (self.bm25(state_ref, query, candidates)?, HashMap::new())
            }
            (Retriever::Dense, Some(q)) => (Vec::new(), dense_scores(state_ref, q, candidates)),
            (Retriever::Hybrid, Some(q)) => std::thread::scope(|scope| {
                let dense = scope.spawn(|| dense_scores(state_ref, q, candidates));
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
                let q = query_vector.unwrap_or_default();
                candidates
                    .into_iter()
                    .map(|slot| {
                        let b = bm25_of.get(&slot).copied();
                        let b_norm = b.map_or(0.0, |b| b / max_bm25.max(f32::EPSILON));
                        let has_vectors = state
                            .vector_ranges
                            .get(slot as usize)
                            .is_some_and(|(_, n)| *n > 0);
                        if !has_vectors {
                            // Stored while the model was missing: its words
                            // stand in for its meaning, so it still ranks.
                            let score = NO_VECTOR_WEIGHT * b_norm + FUSION_BM25_WEIGHT * b_norm;
                            return hit(&state, slot, score, b, None);
                        }
                        let cosine = dense
                            .get(&slot)
                            .copied()
                            .unwrap_or_else(|| chunk_cosine(&state, slot, q));
                        let score = cosine + FUSION_BM25_WEIGHT * b_norm;
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

    /// BM25 hits as (slot, score), best first.
    fn bm25(
        &self,
        state: &State,
        query: &str,
        limit: usize,
    ) -> Result<Vec<(u32, f32)>, IndexError> {
        let terms = self.query_terms(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in &terms {
            for (field, boost) in [(self.fields.title, TITLE_BOOST), (self.fields.text, 1.0)] {
                let q = TermQuery::new(
                    Term::from_field_text(field, term),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost))));
            }
        }
        let query = BooleanQuery::new(clauses);
        let searcher = match self.reader.read() {
            Ok(r) => r.searcher(),
            Err(_) => return Ok(Vec::new()),
        };
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let keys = searcher
                .segment_reader(address.segment_ord)
                .fast_fields()
                .u64("key")?;
            if let Some(slot) = keys
                .first(address.doc_id)
                .and_then(|k| state.by_key.get(&k))
            {
                out.push((*slot, score));
            }
        }
        Ok(out)
    }

    /// The distinct analyzed terms of `text`.
    pub fn query_terms(&self, text: &str) -> Vec<String> {
        let mut analyzer = analyzer(self.language);
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        while stream.advance() {
            let t = stream.token().text.clone();
            if !terms.contains(&t) {
                terms.push(t);
            }
        }
        terms
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

/// A chunk's cosine similarity is the mean over its vectors (an FAQ entry:
/// its question, and its question with the answer). Returns the `limit`
/// best chunks.
fn dense_scores(state: &State, query: &[f32], limit: usize) -> HashMap<u32, f32> {
    let (q, q_scale) = quantize(query);
    let v = &state.vectors;
    let mut sums = vec![0f32; state.chunks.len()];
    let mut counts = vec![0u8; state.chunks.len()];
    for i in 0..v.len() {
        let d = dot_i8(&q, &v.codes[i * DIMENSIONS..(i + 1) * DIMENSIONS]);
        let owner = v.owners[i] as usize;
        sums[owner] += d as f32 * q_scale * v.scales[i];
        counts[owner] = counts[owner].saturating_add(1);
    }
    let mut scored: Vec<(f32, u32)> = sums
        .iter()
        .zip(&counts)
        .enumerate()
        .filter(|(_, (_, n))| **n > 0)
        .map(|(slot, (sum, n))| (sum / f32::from(*n), slot as u32))
        .collect();
    if limit < scored.len() {
        scored.select_nth_unstable_by(limit, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(limit);
    }
    scored.into_iter().map(|(s, slot)| (slot, s)).collect()
}

/// The mean cosine of one chunk's vectors (0 when it has none).
fn chunk_cosine(state: &State, slot: u32, query: &[f32]) -> f32 {
    let (q, q_scale) = quantize(query);
    let v = &state.vectors;
    // A chunk's vectors are stored next to each other.
    let (start, count) = state
        .vector_ranges
        .get(slot as usize)
        .copied()
        .unwrap_or((0, 0));
    let scores: Vec<f32> = (start as usize..(start + count) as usize)
        .map(|i| {
            dot_i8(&q, &v.codes[i * DIMENSIONS..(i + 1) * DIMENSIONS]) as f32
                * q_scale
                * v.scales[i]
        })
        .collect();
    if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f32>() / scores.len() as f32
    }
}

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

impl KnowledgeIndex {
    /// How many of `terms` occur in the chunk `chunk_id` (title or text).
    fn terms_in_chunk(&self, chunk_id: &str, terms: &[String]) -> usize {
        let key = Term::from_field_u64(self.fields.key, chunk_key(chunk_id));
        let Ok(searcher) = self.reader.read().map(|r| r.searcher()) else {
            return 0;
        };
        terms
            .iter()
            .filter(|t| {
                let q = BooleanQuery::new(vec![
                    (
                        Occur::Must,
                        Box::new(TermQuery::new(key.clone(), IndexRecordOption::Basic))
                            as Box<dyn Query>,
                    ),
                    (
                        Occur::Must,
                        Box::new(BooleanQuery::new(vec![
                            (
                                Occur::Should,
                                Box::new(TermQuery::new(
                                    Term::from_field_text(self.fields.title, t),
                                    IndexRecordOption::Basic,
                                )) as Box<dyn Query>,
                            ),
                            (
                                Occur::Should,
                                Box::new(TermQuery::new(
                                    Term::from_field_text(self.fields.text, t),
                                    IndexRecordOption::Basic,
                                )),
                            ),
                        ])),
                    ),
                ]);
                searcher
                    .search(&q, &tantivy::collector::Count)
                    .is_ok_and(|n| n > 0)
            })
            .count()
    }
}

/// Wipes `dir` and creates an empty index at generation 0.
fn reset_dir(dir: &Path, language: Language) -> Result<(Index, State), IndexError> {
    let tantivy_dir = dir.join("tantivy");
    let _ = fs::remove_dir_all(&tantivy_dir);
    let _ = fs::remove_file(dir.join("state.bin"));
    fs::create_dir_all(&tantivy_dir).map_err(io_err(&tantivy_dir))?;
    let (schema, _) = schema();
    let index = Index::create_in_dir(&tantivy_dir, schema)?;
    index.tokenizers().register(ANALYZER, analyzer(language));
    let state = State::default();
    write_state(dir, language, &state)?;
    Ok((index, state))
}

/// The tantivy index in `dir`, if it is there with the expected schema.
fn open_tantivy(dir: &Path, language: Language) -> Result<Option<Index>, IndexError> {
    let tantivy_dir = dir.join("tantivy");
    if !tantivy_dir.join("meta.json").is_file() {
        return Ok(None);
    }
    let index = Index::open_in_dir(&tantivy_dir)?;
    if index.schema() != schema().0 {
        return Ok(None);
    }
    index.tokenizers().register(ANALYZER, analyzer(language));
    Ok(Some(index))
}

fn reader_of(index: &Index) -> Result<IndexReader, IndexError> {
    Ok(index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?)
}

/// An exclusive lock on the index directory, across processes.
struct DirLock(fs::File);

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, IndexError> {
        // The directory may have been deleted under a running process.
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.lock().map_err(io_err(&path))?;
        Ok(DirLock(file))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn write_state(dir: &Path, language: Language, state: &State) -> Result<(), IndexError> {
    let mut buf = Vec::with_capacity(
        64 + state.chunks.len() * 64 + state.vectors.codes.len() + state.vectors.len() * 8,
    );
    buf.extend_from_slice(STATE_MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    put_str(&mut buf, language.code());
    put_str(&mut buf, MODEL_ID);
    buf.extend_from_slice(&state.generation.to_le_bytes());
    buf.extend_from_slice(&(state.chunks.len() as u64).to_le_bytes());
    for c in &state.chunks {
        put_str(&mut buf, &c.id);
        put_str(&mut buf, &c.doc_ref);
    }
    buf.extend_from_slice(&(state.vectors.len() as u64).to_le_bytes());
    for i in 0..state.vectors.len() {
        buf.extend_from_slice(&state.vectors.owners[i].to_le_bytes());
        buf.extend_from_slice(&state.vectors.scales[i].to_le_bytes());
    }
    buf.extend(state.vectors.codes.iter().map(|c| *c as u8));
    let path = dir.join("state.bin");
    let tmp = dir.join("state.bin.tmp");
    let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&buf).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Reads `state.bin`; `None` when missing, damaged, or for another
/// language, model or format.
fn read_state(dir: &Path, language: Language) -> Result<Option<State>, IndexError> {
    let path = dir.join("state.bin");
    let mut bytes = Vec::new();
    match fs::File::open(&path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(io_err(&path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IndexError::Io { path, source: e }),
    };
    Ok(parse_state(&bytes, language))
}

fn parse_state(bytes: &[u8], language: Language) -> Option<State> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(8)? != STATE_MAGIC
        || r.u32()? != FORMAT_VERSION
        || r.str()? != language.code()
        || r.str()? != MODEL_ID
    {
        return None;
    }
    let generation = r.u64()?;
    let n = usize::try_from(r.u64()?).ok()?;
    let mut chunks = Vec::with_capacity(n.min(bytes.len() / 8));
    for _ in 0..n {
        let id = r.str()?.to_owned();
        let doc_ref = r.str()?.to_owned();
        chunks.push(ChunkMeta {
            key: chunk_key(&id),
            id,
            doc_ref,
        });
    }
    let m = usize::try_from(r.u64()?).ok()?;
    let mut vectors = Vectors::default();
    for _ in 0..m.min(bytes.len() / 8) {
        let owner = r.u32()?;
        if owner as usize >= chunks.len() {
            return None;
        }
        vectors.owners.push(owner);
        vectors
            .scales
            .push(f32::from_le_bytes(r.take(4)?.try_into().ok()?));
    }
    if vectors.owners.len() != m {
        return None;
    }
    vectors.codes = r
        .take(m.checked_mul(DIMENSIONS)?)?
        .iter()
        .map(|b| *b as i8)
        .collect();
    if r.pos != bytes.len() {
        return None;
    }
    let mut state = State {
        generation,
        chunks,
        vectors,
        ..State::default()
    };
    state.reindex();
    Some(state)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIMENSIONS)
            .map(|i| ((i * 31 + seed * 17) % 97) as f32 - 48.0)
            .collect();
        crate::embed::normalize(&mut v);
        v
    }

    fn chunk(id: &str, title: &str, text: &str, vectors: Vec<Vec<f32>>) -> IndexedChunk {
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
        let index = KnowledgeIndex::open(dir.path(), Language::English).expect("open");
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

        let index = KnowledgeIndex::open(dir.path(), Language::English).expect("reopen");
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

        // Another language: rebuilt empty.
        drop(index);
        let german = KnowledgeIndex::open(dir.path(), Language::German).expect("open de");
        assert_eq!(german.generation(), 0);
        assert!(german.is_empty());
    }

    #[test]
    fn damaged_state_opens_empty_and_replacing_never_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = KnowledgeIndex::open(dir.path(), Language::English).expect("open");
        let c = chunk("a", "T", "alpha beta", vec![unit(1)]);
        index
            .apply(&[], std::slice::from_ref(&c), 1)
            .expect("apply");
        index.apply(&[], &[c], 2).expect("apply again");
        let r = index
            .search("alpha", Some(&unit(1)), 10, Retriever::Hybrid)
            .expect("search");
        assert_eq!(r.hits.len(), 1, "{:?}", r.hits);
        assert_eq!(index.len(), (1, 1));
        drop(index);
        fs::write(dir.path().join("state.bin"), b"garbage").expect("write");
        let index = KnowledgeIndex::open(dir.path(), Language::English).expect("reopen");
        assert_eq!(index.generation(), 0);
        assert!(
            index
                .search("alpha", None, 10, Retriever::FullText)
                .expect("search")
                .hits
                .is_empty()
        );
    }

    #[test]
    fn dense_search_ranks_by_cosine_and_quantization_is_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = KnowledgeIndex::open(dir.path(), Language::English).expect("open");
        let chunks: Vec<IndexedChunk> = (0..50)
            .map(|i| chunk(&format!("c{i}"), "", &format!("text {i}"), vec![unit(i)]))
            .collect();
        index.apply(&[], &chunks, 1).expect("apply");
        let r = index
            .search("nothing matches", Some(&unit(7)), 3, Retriever::Dense)
            .expect("search");
        assert_eq!(r.hits[0].chunk_id, "c7");
        let c = r.hits[0].cosine.expect("cosine");
        assert!((c - 1.0).abs() < 0.01, "{c}");
        let exact = crate::embed::dot(&unit(7), &unit(8));
        let (a, sa) = quantize(&unit(7));
        let (b, sb) = quantize(&unit(8));
        assert!((dot_i8(&a, &b) as f32 * sa * sb - exact).abs() < 0.01);
    }

    #[test]
    fn another_process_writes_and_a_deleted_directory_are_picked_up_by_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reader = KnowledgeIndex::open(dir.path(), Language::English).expect("open");
        let writer = KnowledgeIndex::open(dir.path(), Language::English).expect("open 2");
        writer
            .apply(&[], &[chunk("a", "", "kiwi fruit", vec![])], 5)
            .expect("apply");
        assert!(
            reader
                .search("kiwi", None, 5, Retriever::FullText)
                .expect("search")
                .hits
                .is_empty()
        );
        let (generation, ids) = reader.snapshot().expect("snapshot");
        assert_eq!((generation, ids.len()), (5, 1));
        assert_eq!(
            reader
                .search("kiwi", None, 5, Retriever::FullText)
                .expect("search")
                .hits
                .len(),
            1
        );
        // A diff against an old snapshot is refused, not applied.
        assert!(!reader.apply_from(4, &[], &[], 6).expect("apply_from"));
        // The directory deleted under a running process: reset, then rebuilt.
        std::fs::remove_dir_all(dir.path()).expect("rm");
        let (generation, ids) = reader.snapshot().expect("snapshot after rm");
        assert_eq!((generation, ids.len()), (0, 0));
        assert!(
            reader
                .apply_from(0, &[], &[chunk("a", "", "kiwi fruit", vec![])], 7)
                .expect("rebuild")
        );
        assert_eq!(
            reader
                .search("kiwi", None, 5, Retriever::FullText)
                .expect("search")
                .hits
                .len(),
            1
        );
    }
}
