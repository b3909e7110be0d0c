//! [`KnowledgeIndex`] itself: opening a directory, taking a snapshot of what
//! is on disk, and what the index holds. Writing is in `write`, searching in
//! `search`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use tantivy::{Index, IndexReader};

use super::ann::{APPROXIMATE_FROM, Ann};
use super::dir::{DirLock, open_tantivy, reader_of, reset_dir};
use super::error::IndexError;
use super::schema::{Fields, schema};
use super::state::{State, read_state, read_write_id};
use crate::Language;
use crate::models::DIMENSIONS;

/// The tantivy index (when it had to be opened) and the state on disk.
pub(super) type OnDisk = (Option<Index>, Arc<State>);

/// The approximate index of the state written under `write_id`.
#[derive(Debug, Clone)]
pub(super) struct CurrentAnn {
    pub(super) write_id: u64,
    pub(super) ann: Arc<Ann>,
}

/// A build of the approximate index running in the background: it answers
/// the lists and the state they are for.
#[derive(Debug)]
pub(super) struct Build {
    cancel: Arc<AtomicBool>,
    handle: JoinHandle<Option<(Arc<State>, Arc<Ann>)>>,
}

/// `ann`, made for the state `from`, carried over to the state `to`: a row
/// of `to` whose chunk `from` holds with the same codes keeps its list; any
/// other goes to its nearest.
fn carried(ann: &Ann, from: &State, to: &State) -> Ann {
    ann.carry(&to.vectors, |row| {
        let owner = *to.vectors.owners.get(row)? as usize;
        let (start, _) = *to.vector_ranges.get(owner)?;
        let old_slot = *from.by_key.get(&to.chunks.get(owner)?.key)? as usize;
        let (old_start, old_count) = *from.vector_ranges.get(old_slot)?;
        let nth = row.checked_sub(start as usize)?;
        let old_row = old_start as usize + nth;
        let same = nth < old_count as usize
            && from
                .vectors
                .codes
                .get(old_row * DIMENSIONS..(old_row + 1) * DIMENSIONS)
                == to
                    .vectors
                    .codes
                    .get(row * DIMENSIONS..(row + 1) * DIMENSIONS);
        same.then_some(old_row)
    })
}

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
    /// Replaced whole by every apply or snapshot that changes it; a search
    /// holds the one it started with.
    pub(super) state: Arc<RwLock<Arc<State>>>,
    /// From how many chunks the approximate index serves dense search.
    pub(super) approximate_from: usize,
    /// The approximate index, current when its write id is the state's.
    pub(super) ann: RwLock<Option<CurrentAnn>>,
    pub(super) build: Mutex<Option<Build>>,
}

impl Drop for KnowledgeIndex {
    fn drop(&mut self) {
        if let Ok(Some(build)) = self.build.get_mut().map(Option::take) {
            build.cancel.store(true, Ordering::Relaxed);
        }
    }
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
        Self::open_with(dir, language, model, APPROXIMATE_FROM)
    }

    /// [`open`](KnowledgeIndex::open), with an approximate index (lists)
    /// serving dense search from `approximate_from` chunks on (an exact
    /// scan below; 0 never).
    pub fn open_with(
        dir: &Path,
        language: Language,
        model: &str,
        approximate_from: usize,
    ) -> Result<KnowledgeIndex, IndexError> {
        let _lock = DirLock::acquire(dir)?;
        let found = match Self::open_existing(dir, language, model, None) {
            Ok(Some((Some(index), state))) => Some((index, state)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "knowledge index unreadable; rebuilding it from the database");
                None
            }
        };
        let (index, state) = match found {
            Some(found) => found,
            None => {
                let (index, state) = reset_dir(dir, language, model)?;
                (index, Arc::new(state))
            }
        };
        let (_, fields) = schema();
        let handle = KnowledgeIndex {
            dir: dir.to_path_buf(),
            language,
            model: model.to_owned(),
            reader: RwLock::new(reader_of(&index)?),
            fields,
            state: Arc::new(RwLock::new(state.clone())),
            approximate_from: if approximate_from == 0 {
                usize::MAX
            } else {
                approximate_from
            },
            ann: RwLock::new(None),
            build: Mutex::new(None),
        };
        handle.keep_approximate(&state, None);
        Ok(handle)
    }

    /// The tantivy index and state on disk, if both are there and current.
    /// When `known` (this process's state) is what is on disk, it is
    /// returned as it is, and the tantivy index is not opened (`None`).
    pub(super) fn open_existing(
        dir: &Path,
        language: Language,
        model: &str,
        known: Option<&Arc<State>>,
    ) -> Result<Option<OnDisk>, IndexError> {
        if let Some(known) = known
            && read_write_id(dir) == Some(known.write_id)
            && dir.join("tantivy").join("meta.json").is_file()
        {
            return Ok(Some((None, known.clone())));
        }
        let Some(state) = read_state(dir, language, model)? else {
            return Ok(None);
        };
        match open_tantivy(dir, language)? {
            Some(index) => Ok(Some((Some(index), Arc::new(state)))),
            None => Ok(None),
        }
    }

    /// The state searches use now.
    pub(super) fn current_state(&self) -> Result<Arc<State>, IndexError> {
        self.state
            .read()
            .map(|s| s.clone())
            .map_err(|_| IndexError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("index state lock poisoned"),
            })
    }

    /// Whether `state` is large enough for an approximate index.
    pub(super) fn wants_approximate(&self, state: &State) -> bool {
        state.chunks.len() >= self.approximate_from && state.vectors.len() > 0
    }

    /// The approximate index, if it is current for `state` (a finished
    /// background build is taken in first).
    pub(super) fn approximate_for(&self, state: &State) -> Option<Arc<Ann>> {
        if !self.wants_approximate(state) {
            return None;
        }
        self.take_finished_build();
        self.approximate_for_now(state)
    }

    fn take_finished_build(&self) {
        let Ok(mut build) = self.build.try_lock() else {
            return;
        };
        if build.as_ref().is_some_and(|b| b.handle.is_finished())
            && let Some(done) = build.take()
        {
            self.install(&mut build, done);
        }
    }

    /// Installs what a finished build made, if it is for the current state;
    /// else (a write landed since its last look) starts another pass that
    /// carries the lists over to the current state. Called with the build
    /// slot locked, which `apply_from` also takes after replacing the state.
    fn install(&self, slot: &mut Option<Build>, done: Build) {
        let Ok(Some((state, ann))) = done.handle.join() else {
            return;
        };
        let Ok(current) = self.current_state() else {
            return;
        };
        if state.write_id == current.write_id {
            // Lists carried over from a much smaller bot are retrained.
            let outgrown = ann.outgrown();
            if let Ok(mut a) = self.ann.write() {
                *a = Some(CurrentAnn {
                    write_id: state.write_id,
                    ann,
                });
            }
            if outgrown && self.wants_approximate(&current) {
                *slot = Some(self.spawn_build(None));
            }
        } else if self.wants_approximate(&current) && self.approximate_for_now(&current).is_none() {
            *slot = Some(self.spawn_build(Some((state, ann))));
        }
    }

    /// The approximate index if it is current for `state`, as it is now.
    fn approximate_for_now(&self, state: &State) -> Option<Arc<Ann>> {
        self.ann
            .read()
            .ok()?
            .as_ref()
            .filter(|a| a.write_id == state.write_id)
            .map(|a| a.ann.clone())
    }

    /// Makes the approximate index follow `state`: none below the
    /// threshold; `ann` when given (kept current by the caller); else the
    /// file saved for this state, when it loads; else a build in the
    /// background, the exact scan answering meanwhile. A build already
    /// running goes on: when done, it carries its lists over to the state
    /// of that moment.
    pub(super) fn keep_approximate(&self, state: &Arc<State>, ann: Option<Arc<Ann>>) {
        let Ok(mut build) = self.build.lock() else {
            return;
        };
        let ann = if self.wants_approximate(state) {
            ann.or_else(|| Ann::load(&self.dir, state.write_id, state.vectors.len()).map(Arc::new))
        } else {
            None
        };
        // Retrained in the background once outgrown, serving meanwhile.
        let outgrown = ann.as_ref().is_some_and(|a| a.outgrown());
        let current = ann.map(|ann| CurrentAnn {
            write_id: state.write_id,
            ann,
        });
        let missing = (current.is_none() || outgrown) && self.wants_approximate(state);
        if let Ok(mut a) = self.ann.write() {
            *a = current;
        }
        if missing && build.is_none() {
            *build = Some(self.spawn_build(None));
        }
    }

    /// Builds the lists for the current state (or starts from `from`: lists
    /// made for an older state), then carries them over to each state
    /// written meanwhile, until they are current; saves them while the disk
    /// still holds that state.
    fn spawn_build(&self, from: Option<(Arc<State>, Arc<Ann>)>) -> Build {
        let cancel = Arc::new(AtomicBool::new(false));
        let dir = self.dir.clone();
        let states = self.state.clone();
        let stop = cancel.clone();
        let handle = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let latest = || states.read().ok().map(|s| s.clone());
            let (mut state, mut ann) = match from {
                Some(from) => from,
                None => {
                    let state = latest()?;
                    match Ann::build(&state.vectors, &stop) {
                        Ok(ann) => (state, Arc::new(ann)),
                        Err(e) => {
                            if !stop.load(Ordering::Relaxed) {
                                tracing::warn!(dir = %dir.display(), error = %e, "approximate vector index not built; the exact scan answers");
                            }
                            return None;
                        }
                    }
                }
            };
            loop {
                let now = latest()?;
                if now.write_id == state.write_id || stop.load(Ordering::Relaxed) {
                    break;
                }
                ann = Arc::new(carried(&ann, &state, &now));
                state = now;
            }
            // Saved only while the disk still holds the state it is for.
            let saved = DirLock::acquire(&dir).ok().and_then(|_lock| {
                (!stop.load(Ordering::Relaxed) && read_write_id(&dir) == Some(state.write_id))
                    .then(|| ann.save(&dir, state.write_id))
            });
            if let Some(Err(e)) = saved {
                tracing::warn!(dir = %dir.display(), error = %e, "approximate vector index not saved; it is rebuilt at the next start");
            }
            tracing::info!(
                dir = %dir.display(),
                vectors = ann.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "approximate vector index ready"
            );
            Some((state, ann))
        });
        Build { cancel, handle }
    }

    /// Whether an approximate index serves dense search now.
    pub fn approximate_ready(&self) -> bool {
        self.current_state()
            .is_ok_and(|s| self.approximate_for(&s).is_some())
    }

    /// Waits until no background build of the approximate index is running;
    /// `true` when an approximate index then serves dense search. (For
    /// benchmarks and tests: searches never wait for it.)
    pub fn wait_for_approximate(&self) -> bool {
        loop {
            let Ok(mut slot) = self.build.lock() else {
                return false;
            };
            let Some(running) = slot.take() else {
                break;
            };
            if running.handle.is_finished() {
                self.install(&mut slot, running);
            } else {
                *slot = Some(running);
                drop(slot);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        self.approximate_ready()
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

    /// Bytes held in memory by the approximate index (its centroids and
    /// each vector's list; the codes are the scan's); 0 without one.
    pub fn approximate_memory_bytes(&self) -> usize {
        self.current_state()
            .ok()
            .and_then(|s| self.approximate_for(&s))
            .map_or(0, |a| a.memory_bytes())
    }

    /// Bytes held in memory by the chunk list and the vectors (the tantivy
    /// index is memory-mapped from disk and paged in by the OS; the
    /// approximate index is [`approximate_memory_bytes`]).
    ///
    /// [`approximate_memory_bytes`]: KnowledgeIndex::approximate_memory_bytes
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

    /// How many segments the full-text index has (each is searched on its
    /// own; tantivy merges them as they accumulate).
    pub fn full_text_segments(&self) -> usize {
        self.reader
            .read()
            .map_or(0, |r| r.searcher().segment_readers().len())
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
        let known = self.current_state()?;
        let state = match Self::open_existing(&self.dir, self.language, &self.model, Some(&known))?
        {
            Some((None, state)) => state,
            Some((Some(index), state)) => {
                self.replace_reader(&index)?;
                state
            }
            None => {
                tracing::warn!(dir = %self.dir.display(), "knowledge index missing or damaged; rebuilding it from the database");
                let (index, state) = reset_dir(&self.dir, self.language, &self.model)?;
                self.replace_reader(&index)?;
                Arc::new(state)
            }
        };
        let generation = state.generation;
        if state.write_id != known.write_id {
            if let Ok(mut s) = self.state.write() {
                *s = state.clone();
            }
            self.keep_approximate(&state, None);
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
