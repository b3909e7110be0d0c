//! The write path: [`IndexedChunk`] and [`KnowledgeIndex::apply`] /
//! [`KnowledgeIndex::apply_from`], which delete and re-add chunks in tantivy,
//! compact the chunk list and its vectors, and record the new generation.

use std::collections::{HashMap, HashSet};

use tantivy::{TantivyDocument, Term, doc};

use std::sync::Arc;

use super::ann::{Ann, remove_all_but};
use super::dir::{DirLock, open_tantivy};
use super::error::IndexError;
use super::handle::KnowledgeIndex;
use super::schema::chunk_key;
use super::state::{ChunkMeta, State, write_state};
use crate::chunk::ChunkKind;
use crate::models::DIMENSIONS;

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

impl KnowledgeIndex {
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
        let known = self.current_state()?;
        let Some((_, disk)) =
            Self::open_existing(&self.dir, self.language, &self.model, Some(&known))?
        else {
            return Ok(false);
        };
        if disk.generation != base {
            return Ok(false);
        }
        // Opened afresh under the lock: tantivy's list of its own files is
        // read at open, and another process may have changed it.
        let Some(index) = open_tantivy(&self.dir, self.language)? else {
            return Ok(false);
        };
        // The approximate index is kept current here when it is current now
        // (or saved for this state by the process that wrote it).
        let ann = self.approximate_for(&disk).or_else(|| {
            self.wants_approximate(&disk)
                .then(|| Ann::load(&self.dir, disk.write_id, disk.vectors.len()))
                .flatten()
                .map(Arc::new)
        });
        let (state, ann) = self.write(&index, &disk, ann.as_deref(), removed, added, generation)?;
        let state = Arc::new(state);
        let ann = ann.filter(|_| self.wants_approximate(&state)).map(Arc::new);
        match &ann {
            Some(a) => {
                if let Err(e) = a.save(&self.dir, state.write_id) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "approximate vector index not saved; it is rebuilt at the next start");
                    remove_all_but(&self.dir, None);
                }
            }
            None => remove_all_but(&self.dir, None),
        }
        self.replace_reader(&index)?;
        if let Ok(mut s) = self.state.write() {
            *s = state.clone();
        }
        self.keep_approximate(&state, ann);
        Ok(true)
    }

    /// Writes the change into tantivy and a new `state.bin`; returns the
    /// new state, with `ann` made to follow it.
    fn write(
        &self,
        index: &tantivy::Index,
        disk: &State,
        ann: Option<&Ann>,
        removed: &[String],
        added: &[IndexedChunk],
        generation: u64,
    ) -> Result<(State, Option<Ann>), IndexError> {
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
        let mut state = disk.clone();
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
        let first_new = state.vectors.len();
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
        let ann = ann.map(|a| {
            a.follow(
                &disk.vectors,
                |o| remap.contains_key(&o),
                &state.vectors,
                first_new,
            )
        });
        state.reindex();
        state.generation = generation;
        write_state(&self.dir, self.language, &self.model, &mut state)?;
        Ok((state, ann))
    }
}
