//! Knowledge bases: ingesting documents into SQL, and keeping this node's
//! search index of each bot current with SQL.
//!
//! Ingesting a file: read → hash (an unchanged file is skipped) → extract and
//! chunk (off the async threads) → reuse stored vectors of unchanged chunks
//! (same content hash) → embed the rest in batches → replace the document and
//! its chunks in one transaction (bumping the bot's knowledge generation) →
//! bring the index up to date. A file that fails leaves nothing behind and the
//! ingest goes on with the next.
//!
//! Searching first makes sure the bot's index is at the database's
//! generation: it reloads what another process wrote, or applies the
//! difference between the chunk ids in SQL and in the index. A deleted index
//! directory is the same case with an empty index. The search itself — the
//! optional reranker and each hit's calibrated probability — is in
//! `search.rs`; which embedding model a bot uses, and re-embedding its
//! knowledge when that changes, in `vectors.rs`; websites as knowledge
//! (crawling) in `crawl.rs`; what an ingest reports in `report.rs`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use knowledge::chunk::{Chunk, ChunkKind, ChunkSizes};
use knowledge::embed::{EmbedError, Embedder, TokenCounter};
use knowledge::extract::{ExtractError, Format, Limits};
use knowledge::index::{IndexError, IndexedChunk, KnowledgeIndex, Retriever, SearchResults};
use knowledge::models::{
    DIMENSIONS, EmbeddingModel, ModelPaths, RERANKER_ID, Role, embedding_model,
};
use knowledge::rerank::Reranker;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use store::db::{Db, DbError};
use store::models::bot::Bot;
use store::models::knowledge::{
    ChunkRow, Document, NewChunk, NewDocument, pack_vectors, unpack_vectors,
};

/// Texts embedded per blocking call (one progress step).
const EMBED_STEP: usize = 64;
/// Most results one search returns.
pub const MAX_RESULTS: usize = 1_000;
/// Chunks loaded from SQL and applied to the index at a time.
const SYNC_BATCH: usize = 2_000;

/// Why a knowledge operation failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("search index: {0}")]
    Index(#[from] IndexError),
    #[error("embedding: {0}")]
    Embed(#[from] EmbedError),
    #[error("background task failed: {0}")]
    Join(String),
}

mod crawl;
mod report;
mod search;

mod vectors;

pub use crawl::{CrawlOptions, USER_AGENT, check_public, is_public, is_url};
pub use report::{FileError, FileOutcome, IngestReport, LogProgress, Progress, Quiet};
pub use search::{Found, MAX_QUERY_CHARS, RERANK_POOL, SearchOutcome, features, normalize_query};
pub use vectors::{ModelChange, keep_vectors_current};

/// One embedding model, loaded on first use.
type EmbedderCell = Arc<OnceCell<Result<Arc<Embedder>, EmbedError>>>;

/// The knowledge service of one process.
pub struct Knowledge {
    index_root: PathBuf,
    model_paths: ModelPaths,
    /// `embedding.model`: one model for every bot; `None`: by the bot's
    /// language ([`knowledge::models::default_embedding_model`]).
    model: Option<&'static EmbeddingModel>,
    embedders: Mutex<HashMap<&'static str, EmbedderCell>>,
    reranker: OnceCell<Result<Arc<Reranker>, EmbedError>>,
    /// Rerank the best candidates of each search (`embedding.rerank`).
    rerank: bool,
    counter: OnceCell<Arc<TokenCounter>>,
    indexes: Mutex<HashMap<String, Arc<KnowledgeIndex>>>,
    /// One sync at a time in this process (the index's file lock covers other
    /// processes).
    sync: tokio::sync::Mutex<()>,
    /// One crawl at a time per site (origin) in this process, so that a
    /// refresh and an API crawl of the same site never double its load.
    sites: crawl::SiteLocks,
    limits: Limits,
    /// `knowledge.approximate_from`: chunks from which a bot's dense search
    /// goes through an approximate index.
    approximate_from: usize,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge")
            .field("index_root", &self.index_root)
            .finish_non_exhaustive()
    }
}

fn join_err(e: &tokio::task::JoinError) -> KbError {
    KbError::Join(e.to_string())
}

/// sha256 of bytes, hex.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Knowledge {
    /// Indexes live under `data_dir/knowledge/<bot id>/`; the model is read
    /// from `model_dir` on first use.
    pub fn new(data_dir: &Path, model_dir: &Path) -> Knowledge {
        Knowledge {
            index_root: data_dir.join("knowledge"),
            model_paths: ModelPaths::new(model_dir),
            model: None,
            embedders: Mutex::new(HashMap::new()),
            reranker: OnceCell::new(),
            rerank: false,
            counter: OnceCell::new(),
            indexes: Mutex::new(HashMap::new()),
            sync: tokio::sync::Mutex::new(()),
            sites: crawl::SiteLocks::default(),
            limits: Limits::default(),
            approximate_from: knowledge::index::APPROXIMATE_FROM,
        }
    }

    /// Sets `knowledge.approximate_from`: from how many chunks a bot's
    /// dense search goes through an approximate index instead of the
    /// exact scan; 0 never.
    pub fn with_approximate_from(mut self, chunks: usize) -> Self {
        self.approximate_from = chunks;
        self
    }

    /// Turns reranking on (`embedding.rerank = true`): the best candidates
    /// of each search are rescored by the cross-encoder.
    pub fn with_reranker(mut self) -> Self {
        self.rerank = true;
        self
    }

    /// The reranker, loaded once. When it is missing, search ranks without
    /// it and says so once, loudly.
    pub async fn reranker(&self) -> Result<Arc<Reranker>, EmbedError> {
        if !self.rerank {
            return Err(EmbedError::NotInstalled {
                missing: "reranking is turned off (embedding.rerank = false)".into(),
            });
        }
        self.reranker
            .get_or_init(|| {
                let paths = self.model_paths.clone();
                async move {
                    let loaded = tokio::task::spawn_blocking(move || Reranker::load(&paths, None))
                        .await
                        .unwrap_or_else(|e| Err(EmbedError::Model(e.to_string())));
                    match &loaded {
                        Ok(_) => tracing::info!(model = RERANKER_ID, "reranker loaded"),
                        Err(e) => tracing::warn!(
                            error = %e,
                            "RERANKING IS OFF: answers rank by the embedding model and BM25 alone"
                        ),
                    }
                    loaded.map(Arc::new)
                }
            })
            .await
            .clone()
    }

    /// Whether the reranker loaded (`None`: not tried yet, or turned off).
    pub fn reranker_status(&self) -> Option<Result<(), String>> {
        if !self.rerank {
            return None;
        }
        self.reranker
            .get()
            .map(|r| r.as_ref().map(|_| ()).map_err(ToString::to_string))
    }

    /// The tokenizer that sizes chunks (MiniLM's, or an estimate when it is
    /// not installed), loaded once; the usage log counts the tokens a model
    /// server did not report with it.
    pub async fn counter(&self) -> Arc<TokenCounter> {
        self.counter
            .get_or_init(|| async {
                let paths = self.model_paths.clone();
                tokio::task::spawn_blocking(move || Arc::new(TokenCounter::load(&paths)))
                    .await
                    .unwrap_or_else(|_| Arc::new(TokenCounter::Estimate))
            })
            .await
            .clone()
    }

    /// Ingests files and folders (recursively) into `bot`'s knowledge. A
    /// folder is mirrored: documents once ingested from under it whose file
    /// is gone are deleted.
    pub async fn ingest_paths(
        &self,
        db: &Db,
        bot: &Bot,
        paths: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<IngestReport, KbError> {
        let mut report = IngestReport::default();
        let mut files = Vec::new();
        let mut folders = Vec::new();
        for path in paths {
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            if path.is_dir() {
                collect_files(&path, &mut files, &mut |p, why| {
                    report.skipped += 1;
                    progress.skipped(p, why);
                });
                folders.push(path);
            } else {
                files.push(path);
            }
        }
        progress.files(files.len());
        let model = self.ingest_model(db, bot).await?;
        for path in &files {
            let source = path.display().to_string();
            progress.file_started(&source);
            let result = self.ingest_file(db, bot, path, model, progress).await;
            progress.file_done(&source, &result);
            report.add(&source, result);
        }
        // Mirror folders: drop documents whose files are gone.
        if !folders.is_empty() {
            let present: HashSet<String> = files.iter().map(|p| p.display().to_string()).collect();
            let mut conn = db.get().await?;
            for doc in Document::list(&mut conn, &bot.id).await? {
                let under = folders
                    .iter()
                    .any(|f| Path::new(&doc.source).starts_with(f));
                if under && !present.contains(&doc.source) && !Path::new(&doc.source).exists() {
                    Document::delete(&mut conn, &bot.id, &doc.source).await?;
                    report.removed += 1;
                }
            }
        }
        // One index update for the whole ingest, not one per file.
        self.index(db, bot).await?;
        Ok(report)
    }

    /// Ingests one file from disk (its canonical path is its source). The
    /// index is brought up to date by the caller.
    async fn ingest_file(
        &self,
        db: &Db,
        bot: &Bot,
        path: &Path,
        model: &'static EmbeddingModel,
        progress: &dyn Progress,
    ) -> Result<FileOutcome, FileError> {
        let limit = self.limits.max_file_bytes;
        let meta = tokio::fs::metadata(path).await.map_err(FileError::Read)?;
        if meta.len() > limit {
            return Err(ExtractError::TooLarge {
                size: meta.len(),
                limit,
            }
            .into());
        }
        let bytes = tokio::fs::read(path).await.map_err(FileError::Read)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let source = path.display().to_string();
        let format = Format::from_file_name(&name).ok_or(ExtractError::Unsupported)?;
        self.store_bytes(
            db, bot, &source, &name, format, bytes, model, progress, false,
        )
        .await
    }

    /// Ingests one file's bytes under `source` (replacing what was stored
    /// under it); `name` is the file name (its extension picks the format,
    /// and it is the document id search results report).
    pub async fn ingest_bytes(
        &self,
        db: &Db,
        bot: &Bot,
        source: &str,
        name: &str,
        bytes: Vec<u8>,
        progress: &dyn Progress,
    ) -> Result<FileOutcome, FileError> {
        let model = self.ingest_model(db, bot).await?;
        let format = Format::from_file_name(name).ok_or(ExtractError::Unsupported)?;
        self.store_bytes(db, bot, source, name, format, bytes, model, progress, true)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_bytes(
        &self,
        db: &Db,
        bot: &Bot,
        source: &str,
        name: &str,
        format: Format,
        bytes: Vec<u8>,
        model: &'static EmbeddingModel,
        progress: &dyn Progress,
        sync_index: bool,
    ) -> Result<FileOutcome, FileError> {
        let content_hash = sha256_hex(&bytes);
        let embedder = self.embedder(model).await.ok();
        {
            let mut conn = db.get().await.map_err(KbError::from)?;
            if let Some(existing) = Document::find(&mut conn, &bot.id, source)
                .await
                .map_err(KbError::from)?
                && existing.content_hash == content_hash
            {
                // Unchanged, unless it was stored without vectors that can now be made.
                let complete = embedder.is_none()
                    || ChunkRow::ids_of_document(&mut conn, &existing.id, model.id)
                        .await
                        .map_err(KbError::from)?
                        .iter()
                        .all(|(_, embedded)| *embedded);
                if complete {
                    return Ok(FileOutcome::Unchanged);
                }
            }
        }
        let counter = self.counter().await;
        let limits = self.limits;
        let size = bytes.len() as i64;
        let (format, title, pages, chunks) = tokio::task::spawn_blocking(move || {
            let doc = knowledge::extract::extract_as(format, &bytes, &limits)?;
            let chunks = knowledge::chunk::chunk(&doc, &counter, ChunkSizes::default());
            Ok::<_, ExtractError>((doc.format, doc.title, doc.pages, chunks))
        })
        .await
        .map_err(|e| KbError::Join(e.to_string()))??;
        if chunks.is_empty() {
            return Err(ExtractError::Empty.into());
        }

        let hashes: Vec<String> = chunks.iter().map(Chunk::content_hash).collect();
        let reusable = {
            let mut conn = db.get().await.map_err(KbError::from)?;
            ChunkRow::embeddings_by_hash(&mut conn, &bot.id, &hashes, model.id)
                .await
                .map_err(KbError::from)?
        };
        let to_embed: Vec<usize> = if embedder.is_some() {
            (0..chunks.len())
                .filter(|&i| !reusable.contains_key(&hashes[i]))
                .collect()
        } else {
            Vec::new()
        };
        let texts: Vec<(usize, String)> = to_embed
            .iter()
            .flat_map(|&i| {
                model_inputs(model, &chunks[i])
                    .into_iter()
                    .map(move |t| (i, t))
            })
            .collect();
        progress.chunked(source, chunks.len(), texts.len());
        let mut fresh: HashMap<usize, Vec<Vec<f32>>> = HashMap::new();
        let mut embedded = 0;
        if let Some(embedder) = &embedder {
            for step in texts.chunks(EMBED_STEP) {
                let batch: Vec<String> = step.iter().map(|(_, t)| t.clone()).collect();
                let model = embedder.clone();
                let vectors = tokio::task::spawn_blocking(move || model.embed(&batch))
                    .await
                    .map_err(|e| KbError::Join(e.to_string()))?
                    .map_err(KbError::from)?;
                for ((i, _), v) in step.iter().zip(vectors) {
                    fresh.entry(*i).or_default().push(v);
                }
                embedded += step.len();
                progress.embedded(step.len());
            }
        }

        let doc_ref = name.to_owned();
        let mut reused = 0;
        let rows: Vec<NewChunk> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let vectors = match fresh.remove(&i) {
                    Some(v) => Some(pack_vectors(&v)),
                    None => reusable.get(&hashes[i]).cloned().inspect(|_| reused += 1),
                };
                NewChunk {
                    kind: c.kind.as_str(),
                    doc_ref: c.entry_id.clone().unwrap_or_else(|| doc_ref.clone()),
                    title: c.title.clone(),
                    heading_path: c.heading_label(),
                    body: c.text.clone(),
                    page: c.location.page.and_then(|p| i32::try_from(p).ok()),
                    line: c.location.line.and_then(|l| i32::try_from(l).ok()),
                    tokens: i32::try_from(c.tokens).unwrap_or(i32::MAX),
                    content_hash: hashes[i].clone(),
                    embedding_model: vectors.as_ref().map(|_| model.id.to_owned()),
                    embeddings: vectors,
                }
            })
            .collect();
        let new_doc = NewDocument {
            source: source.to_owned(),
            doc_ref,
            format: format.name().to_owned(),
            title,
            content_hash,
            size_bytes: size,
            page_count: pages.map(|p| i32::try_from(p.total).unwrap_or(i32::MAX)),
            pages_without_text: pages.map(|p| i32::try_from(p.without_text).unwrap_or(i32::MAX)),
        };
        {
            let mut conn = db.get().await.map_err(KbError::from)?;
            Document::replace(&mut conn, &bot.id, &new_doc, &rows)
                .await
                .map_err(KbError::from)?;
        }
        if sync_index {
            self.index(db, bot).await?;
        }
        Ok(FileOutcome::Ingested {
            chunks: rows.len(),
            embedded,
            reused,
            pages,
        })
    }

    /// Deletes the bot's document `source`; `false` if there was none.
    pub async fn delete(&self, db: &Db, bot: &Bot, source: &str) -> Result<bool, KbError> {
        let deleted = {
            let mut conn = db.get().await?;
            Document::delete(&mut conn, &bot.id, source).await?
        };
        if deleted.is_some() {
            self.index(db, bot).await?;
        }
        Ok(deleted.is_some())
    }

    /// The bot's index, brought up to the database's generation first.
    pub async fn index(&self, db: &Db, bot: &Bot) -> Result<Arc<KnowledgeIndex>, KbError> {
        let generation = self.sql_generation(db, bot).await?;
        if let Some(index) = self.cached_index(bot)
            && index.generation() == generation
        {
            return Ok(index);
        }
        let _one_at_a_time = self.sync.lock().await;
        // Another task may have caught up while this one waited.
        let generation = self.sql_generation(db, bot).await?;
        // The vectors' model changes only with the generation: when the
        // stored vectors are of another model than the index's, the index
        // is rebuilt for theirs.
        let model = match self.serving_model(db, bot).await? {
            Some(id) => id,
            None => self.model_for(bot).id.to_owned(),
        };
        let index = self.open_index(bot, &model).await?;
        for _ in 0..5 {
            let (base, in_index) = {
                let index = index.clone();
                tokio::task::spawn_blocking(move || index.snapshot())
                    .await
                    .map_err(|e| join_err(&e))??
            };
            if base >= generation {
                return Ok(index);
            }
            if self
                .catch_up(db, bot, &index, base, &in_index, generation)
                .await?
            {
                return Ok(index);
            }
        }
        Err(KbError::Index(IndexError::Io {
            path: self.index_root.join(&bot.id),
            source: std::io::Error::other("other processes kept changing the index; try again"),
        }))
    }

    async fn sql_generation(&self, db: &Db, bot: &Bot) -> Result<u64, KbError> {
        let mut conn = db.get().await?;
        Ok(u64::try_from(ChunkRow::generation(&mut conn, &bot.id).await?).unwrap_or(0))
    }

    /// The model new chunks of `bot` are embedded with: the one search uses
    /// now (a change of model is carried out for all chunks at once by
    /// `change_model`), else the bot's own.
    async fn ingest_model(&self, db: &Db, bot: &Bot) -> Result<&'static EmbeddingModel, KbError> {
        let serving = self.serving_model(db, bot).await?;
        Ok(serving
            .as_deref()
            .and_then(embedding_model)
            .unwrap_or(self.model_for(bot)))
    }

    /// The model of most of the bot's stored vectors, if it has any.
    async fn serving_model(&self, db: &Db, bot: &Bot) -> Result<Option<String>, KbError> {
        let mut conn = db.get().await?;
        Ok(ChunkRow::serving_model(&mut conn, &bot.id).await?)
    }

    /// The index this process has open for `bot`, if it is for the bot's
    /// language.
    fn cached_index(&self, bot: &Bot) -> Option<Arc<KnowledgeIndex>> {
        let map = self.indexes.lock().ok()?;
        map.get(&bot.id)
            .filter(|index| index.language() == bot.language)
            .cloned()
    }

    async fn open_index(&self, bot: &Bot, model: &str) -> Result<Arc<KnowledgeIndex>, KbError> {
        if let Some(index) = self.cached_index(bot)
            && index.model() == model
        {
            return Ok(index);
        }
        let dir = self.index_root.join(&bot.id);
        let language = bot.language;
        let model = model.to_owned();
        let approximate_from = self.approximate_from;
        let index = tokio::task::spawn_blocking(move || {
            KnowledgeIndex::open_with(&dir, language, &model, approximate_from)
        })
        .await
        .map_err(|e| join_err(&e))??;
        let index = Arc::new(index);
        if let Ok(mut map) = self.indexes.lock() {
            map.insert(bot.id.clone(), index.clone());
        }
        Ok(index)
    }

    /// Applies the difference between SQL and the index's snapshot at
    /// `base`. `false`: another process changed the index meanwhile.
    async fn catch_up(
        &self,
        db: &Db,
        bot: &Bot,
        index: &Arc<KnowledgeIndex>,
        base: u64,
        in_index: &HashMap<String, bool>,
        generation: u64,
    ) -> Result<bool, KbError> {
        let started = std::time::Instant::now();
        let in_sql: HashMap<String, bool> = {
            let mut conn = db.get().await?;
            ChunkRow::ids(&mut conn, &bot.id, index.model())
                .await?
                .into_iter()
                .collect()
        };
        let removed: Vec<String> = in_index
            .keys()
            .filter(|id| !in_sql.contains_key(*id))
            .cloned()
            .collect();
        // New chunks, and chunks whose vectors appeared or went.
        let mut added: Vec<String> = in_sql
            .iter()
            .filter(|(id, v)| in_index.get(*id) != Some(v))
            .map(|(id, _)| id.clone())
            .collect();
        added.sort();
        let total = added.len();
        let batches: Vec<&[String]> = if added.is_empty() {
            vec![&[]]
        } else {
            added.chunks(SYNC_BATCH).collect()
        };
        let last = batches.len() - 1;
        let mut removed = Some(removed);
        let mut base = base;
        for (n, ids) in batches.into_iter().enumerate() {
            let rows = if ids.is_empty() {
                Vec::new()
            } else {
                let mut conn = db.get().await?;
                ChunkRow::by_ids(&mut conn, &bot.id, ids).await?
            };
            let chunks: Vec<IndexedChunk> = rows
                .into_iter()
                .map(|row| indexed(row, index.model()))
                .collect();
            let gone = removed.take().unwrap_or_default();
            // Until the last batch the index is marked incomplete
            // (generation 0): a crash half-way leaves it stale, not wrong.
            let at = if n == last { generation } else { 0 };
            let index = index.clone();
            let applied =
                tokio::task::spawn_blocking(move || index.apply_from(base, &gone, &chunks, at))
                    .await
                    .map_err(|e| join_err(&e))??;
            if !applied {
                return Ok(false);
            }
            base = at;
        }
        tracing::info!(
            bot = %bot.name,
            generation,
            added = total,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "knowledge index brought up to date"
        );
        Ok(true)
    }
}

/// The texts embedded for a chunk, as `model` reads them: a passage has one
/// vector; an FAQ entry with a question two (question with answer, then the
/// question alone, read as a query: customers' questions are matched
/// against it).
fn model_inputs(model: &EmbeddingModel, chunk: &Chunk) -> Vec<String> {
    let mut texts = vec![model.input(Role::Passage, &chunk.embedding_text())];
    if chunk.kind == ChunkKind::Faq
        && let Some(q) = &chunk.title
    {
        texts.push(model.input(Role::Query, q));
    }
    texts
}

/// A stored chunk as the index takes it, with its vectors if they are of
/// the index's `model`.
fn indexed(row: ChunkRow, model: &str) -> IndexedChunk {
    let kind = if row.kind == "faq" {
        ChunkKind::Faq
    } else {
        ChunkKind::Passage
    };
    let vectors = match (&row.embeddings, row.embedding_model.as_deref()) {
        (Some(bytes), Some(m)) if m == model => {
            unpack_vectors(bytes, DIMENSIONS).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    IndexedChunk {
        id: row.id,
        doc_ref: row.doc_ref,
        kind,
        title: row.title.unwrap_or(row.heading_path),
        text: row.body,
        vectors,
    }
}

/// Files under `dir`, sorted, skipping hidden entries and unsupported types.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut dyn FnMut(&Path, &str)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        skipped(dir, "cannot read the folder");
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out, skipped);
        } else if knowledge::extract::Format::from_file_name(&name).is_some() {
            out.push(path);
        } else {
            skipped(&path, "unsupported file type");
        }
    }
}
