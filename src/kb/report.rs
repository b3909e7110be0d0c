//! What an ingest tells its caller: each file's outcome or error as it
//! goes ([`Progress`]), and the totals at the end ([`IngestReport`]).

use std::path::Path;

use knowledge::extract::{ExtractError, PageCount};

use super::KbError;

/// Why one file was not ingested. The ingest goes on with the others.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Kb(#[from] KbError),
    /// A URL that could not be fetched or read: why.
    #[error("{0}")]
    Fetch(String),
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Stored: `chunks` chunks, `embedded` texts embedded now, `reused`
    /// chunks whose vectors were already stored; `pages` of a paged
    /// document, with those that gave no text.
    Ingested {
        chunks: usize,
        embedded: usize,
        reused: usize,
        pages: Option<PageCount>,
    },
    /// Same bytes as the stored version: nothing to do.
    Unchanged,
}

/// Receives progress events; the CLI draws bars, the server logs.
pub trait Progress: Send + Sync {
    /// Files found under the paths.
    fn files(&self, _total: usize) {}
    /// `n` more pages found by a crawl.
    fn found(&self, _n: usize) {}
    /// A file is being read.
    fn file_started(&self, _source: &str) {}
    /// A file produced `chunks` chunks; `to_embed` texts will be embedded.
    fn chunked(&self, _source: &str, _chunks: usize, _to_embed: usize) {}
    /// `n` more texts were embedded.
    fn embedded(&self, _n: usize) {}
    /// A file is done, one way or the other.
    fn file_done(&self, _source: &str, _result: &Result<FileOutcome, FileError>) {}
    /// A file was skipped (unsupported type, hidden).
    fn skipped(&self, _path: &Path, _reason: &str) {}
}

/// Progress as log lines (the server's start-up sync).
#[derive(Debug)]
pub struct LogProgress;
impl Progress for LogProgress {
    fn file_done(&self, source: &str, result: &Result<FileOutcome, FileError>) {
        match result {
            Ok(FileOutcome::Ingested {
                chunks,
                embedded,
                reused,
                pages,
            }) => match pages.and_then(|p| p.loss()) {
                None => {
                    tracing::info!(source, chunks, embedded, reused, "knowledge file ingested");
                }
                Some(loss) => tracing::warn!(
                    source,
                    chunks,
                    embedded,
                    reused,
                    loss,
                    "knowledge file ingested, with pages lost"
                ),
            },
            Ok(FileOutcome::Unchanged) => tracing::debug!(source, "knowledge file unchanged"),
            Err(error) => tracing::error!(source, %error, "knowledge file not ingested"),
        }
    }
    fn skipped(&self, path: &Path, reason: &str) {
        tracing::warn!(path = %path.display(), reason, "knowledge file skipped");
    }
}

/// Progress that goes nowhere.
#[derive(Debug)]
pub struct Quiet;
impl Progress for Quiet {}

/// Totals of one ingest.
#[derive(Debug, Default, Clone)]
pub struct IngestReport {
    pub ingested: usize,
    pub unchanged: usize,
    pub failed: Vec<(String, String)>,
    pub skipped: usize,
    pub removed: usize,
    pub chunks: usize,
    pub embedded: usize,
    pub reused: usize,
    /// Pages that gave no text, over all ingested files.
    pub pages_without_text: u32,
    /// Files ingested with losses, each with what was lost.
    pub losses: Vec<(String, String)>,
}

impl IngestReport {
    /// Adds another ingest's totals to these.
    pub fn merge(&mut self, other: IngestReport) {
        self.ingested += other.ingested;
        self.unchanged += other.unchanged;
        self.failed.extend(other.failed);
        self.skipped += other.skipped;
        self.removed += other.removed;
        self.chunks += other.chunks;
        self.embedded += other.embedded;
        self.reused += other.reused;
        self.pages_without_text += other.pages_without_text;
        self.losses.extend(other.losses);
    }

    /// Adds one file's result.
    pub fn add(&mut self, source: &str, result: Result<FileOutcome, FileError>) {
        match result {
            Ok(FileOutcome::Ingested {
                chunks,
                embedded,
                reused,
                pages,
            }) => {
                self.ingested += 1;
                self.chunks += chunks;
                self.embedded += embedded;
                self.reused += reused;
                if let Some(pages) = pages
                    && let Some(loss) = pages.loss()
                {
                    self.pages_without_text += pages.without_text;
                    self.losses.push((source.to_owned(), loss));
                }
            }
            Ok(FileOutcome::Unchanged) => self.unchanged += 1,
            Err(e) => self.failed.push((source.to_owned(), e.to_string())),
        }
    }
}
