//! The index directory on disk: the lock that makes writers in several
//! processes take turns, and opening or resetting the tantivy index and
//! `state.bin` inside it.

use std::fs;
use std::path::Path;

use std::sync::OnceLock;

use tantivy::{Executor, Index, IndexReader, ReloadPolicy};

use super::error::{IndexError, io_err};
use super::schema::{ANALYZER, analyzer, schema};
use super::state::{State, write_state};
use crate::Language;

/// Wipes `dir` and creates an empty index at generation 0.
pub(super) fn reset_dir(
    dir: &Path,
    language: Language,
    model: &str,
) -> Result<(Index, State), IndexError> {
    let tantivy_dir = dir.join("tantivy");
    let _ = fs::remove_dir_all(&tantivy_dir);
    let _ = fs::remove_file(dir.join("state.bin"));
    super::ann::remove_all_but(dir, None);
    fs::create_dir_all(&tantivy_dir).map_err(io_err(&tantivy_dir))?;
    let (schema, _) = schema();
    let mut index = Index::create_in_dir(&tantivy_dir, schema)?;
    index.tokenizers().register(ANALYZER, analyzer(language));
    index.set_executor(search_pool());
    let mut state = State::default();
    write_state(dir, language, model, &mut state)?;
    Ok((index, state))
}

/// The tantivy index in `dir`, if it is there with the expected schema.
pub(super) fn open_tantivy(dir: &Path, language: Language) -> Result<Option<Index>, IndexError> {
    let tantivy_dir = dir.join("tantivy");
    if !tantivy_dir.join("meta.json").is_file() {
        return Ok(None);
    }
    let mut index = Index::open_in_dir(&tantivy_dir)?;
    if index.schema() != schema().0 {
        return Ok(None);
    }
    index.tokenizers().register(ANALYZER, analyzer(language));
    index.set_executor(search_pool());
    Ok(Some(index))
}

/// The threads a full-text search spreads its segments over, one per core,
/// shared by every bot's index in the process. A large index has several
/// segments (tantivy merges them by size as it grows): at a million chunks
/// on 2 cores, BM25 p95 went from 20.3 ms on one thread to the figure in
/// the README on two.
fn search_pool() -> Executor {
    static POOL: OnceLock<Executor> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        if threads < 2 {
            return Executor::single_thread();
        }
        Executor::multi_thread(threads, "knowledge-search-").unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no thread pool for full-text search; searching segments one by one");
            Executor::single_thread()
        })
    })
    .clone()
}

pub(super) fn reader_of(index: &Index) -> Result<IndexReader, IndexError> {
    Ok(index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?)
}

/// An exclusive lock on the index directory, across processes.
pub(super) struct DirLock(fs::File);

impl DirLock {
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, IndexError> {
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
