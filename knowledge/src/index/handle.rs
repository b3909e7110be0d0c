//! [`KnowledgeIndex`] itself: opening a directory, taking a snapshot of what
//! is on disk, and what the index holds. Writing is in `write`, searching in
//! `search`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use tantivy::{Index, IndexReader};

use super::dir::{DirLock, open_tantivy, reader_of, reset_dir};
use super::error::IndexError;
use super::schema::{Fields, schema};
use super::state::{State, read_state};
use crate::Language;

/// One bot's index. Share it behind an `Arc`; searches run concurrently,
/// `apply` serializes.
pub struct KnowledgeIndex {
    pub(super) dir: PathBuf,
    pub(super) language: Language,
    /// The embedding model of its vectors.
    pub(super) model: String,
    /// Replaced whenever the directory was rebuilt (by this process or
    /// another).
    pub(super) reader: RwLock<IndexReader>,
    pub(super) fields: Fields,
    pub(super) state: RwLock<State>,
}

impl std::fmt::Debug for KnowledgeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeIndex")
            .field("dir", &self.dir)
            .field("language", &self.language)
            .field("model", &self.model)
            .finish()
    }
}

impl KnowledgeIndex {
    /// Opens the index in `dir`, or creates it empty (generation 0) when it
    /// is missing, damaged, or built for another language, embedding model
    /// (`model`, the id stamped on the vectors it will hold) or format.
    pub fn open(dir: &Path, language: Language, model: &str) -> Result<KnowledgeIndex, IndexError> {
        let _lock = DirLock::acquire(dir)?;
        let (index, state) = match Self::open_existing(dir, language, model) {
            Ok(Some(found)) => found,
            Ok(None) => reset_dir(dir, language, model)?,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "knowledge index unreadable; rebuilding it from the database");
                reset_dir(dir, language, model)?
            }
        };
        let (_, fields) = schema();
        Ok(KnowledgeIndex {
            dir: dir.to_path_buf(),
            language,
            model: model.to_owned(),
            reader: RwLock::new(reader_of(&index)?),
            fields,
            state: RwLock::new(state),
        })
    }

    /// The tantivy index and state on disk, if both are there and current.
    pub(super) fn open_existing(
        dir: &Path,
        language: Language,
        model: &str,
    ) -> Result<Option<(Index, State)>, IndexError> {
        let Some(state) = read_state(dir, language, model)? else {
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

    /// The embedding model whose vectors it holds (and whose query vectors
    /// it must be searched with).
    pub fn model(&self) -> &str {
        &self.model
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
        let state = match Self::open_existing(&self.dir, self.language, &self.model)? {
            Some((index, state)) => {
                self.replace_reader(&index)?;
                state
            }
            None => {
                tracing::warn!(dir = %self.dir.display(), "knowledge index missing or damaged; rebuilding it from the database");
                let (index, state) = reset_dir(&self.dir, self.language, &self.model)?;
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

    pub(super) fn replace_reader(&self, index: &Index) -> Result<(), IndexError> {
        let reader = reader_of(index)?;
        if let Ok(mut r) = self.reader.write() {
            *r = reader;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Retriever;
    use crate::index::tests::chunk;
    use crate::models::MINILM;

    #[test]
    fn another_process_writes_and_a_deleted_directory_are_picked_up_by_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reader = KnowledgeIndex::open(dir.path(), Language::English, MINILM.id).expect("open");
        let writer =
            KnowledgeIndex::open(dir.path(), Language::English, MINILM.id).expect("open 2");
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
