//! The index directory on disk: the lock that makes writers in several
//! processes take turns, and opening or resetting the tantivy index and
//! `state.bin` inside it.

use std::fs;
use std::path::Path;

use tantivy::{Index, IndexReader, ReloadPolicy};

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
    fs::create_dir_all(&tantivy_dir).map_err(io_err(&tantivy_dir))?;
    let (schema, _) = schema();
    let index = Index::create_in_dir(&tantivy_dir, schema)?;
    index.tokenizers().register(ANALYZER, analyzer(language));
    let state = State::default();
    write_state(dir, language, model, &state)?;
    Ok((index, state))
}

/// The tantivy index in `dir`, if it is there with the expected schema.
pub(super) fn open_tantivy(dir: &Path, language: Language) -> Result<Option<Index>, IndexError> {
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
