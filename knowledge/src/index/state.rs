//! The chunk list and its vectors, in memory and in `state.bin`.
//!
//! `state.bin` holds a magic, the format version, the write id (random,
//! new on every write: what the approximate index file is stamped with,
//! and how a process sees that another one wrote), the language, the model
//! id, the generation, the chunks (id, source document) and the vectors
//! (owner slot and scale each, then all int8 codes). A file for another
//! language, model or format, or one that does not parse to its last byte,
//! reads as missing.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use super::error::{IndexError, io_err};
use super::schema::chunk_key;
use super::vectors::Vectors;
use crate::Language;
use crate::models::DIMENSIONS;

/// Bumped when the on-disk layout or analysis changes: old directories are
/// rebuilt.
const FORMAT_VERSION: u32 = 2;
const STATE_MAGIC: &[u8; 8] = b"FDKNOW01";

#[derive(Debug, Clone)]
pub(super) struct ChunkMeta {
    pub(super) id: String,
    pub(super) doc_ref: String,
    pub(super) key: u64,
}

#[derive(Debug, Default, Clone)]
pub(super) struct State {
    pub(super) generation: u64,
    /// Set by [`write_state`]: which write of `state.bin` this is.
    pub(super) write_id: u64,
    /// Chunk slots; `None` after removal until the next compaction.
    pub(super) chunks: Vec<ChunkMeta>,
    pub(super) by_id: HashMap<String, u32>,
    pub(super) by_key: HashMap<u64, u32>,
    pub(super) vectors: Vectors,
    /// Per chunk slot: its first vector and how many it has.
    pub(super) vector_ranges: Vec<(u32, u32)>,
}

impl State {
    pub(super) fn reindex(&mut self) {
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

/// A write id no other write has: random per process, then counted.
fn new_write_id() -> u64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new()
        .hash_one((std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)))
}

/// Writes `state.bin` durably under a new write id, which it sets in
/// `state`.
pub(super) fn write_state(
    dir: &Path,
    language: Language,
    model: &str,
    state: &mut State,
) -> Result<(), IndexError> {
    state.write_id = new_write_id();
    let mut buf = Vec::with_capacity(
        64 + state.chunks.len() * 64 + state.vectors.codes.len() + state.vectors.len() * 8,
    );
    buf.extend_from_slice(STATE_MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&state.write_id.to_le_bytes());
    put_str(&mut buf, language.code());
    put_str(&mut buf, model);
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

/// The write id of `state.bin`, from its first bytes; `None` when it is
/// missing or of another format.
pub(super) fn read_write_id(dir: &Path) -> Option<u64> {
    let mut head = [0u8; 20];
    fs::File::open(dir.join("state.bin"))
        .and_then(|mut f| f.read_exact(&mut head))
        .ok()?;
    let mut r = Reader {
        bytes: &head,
        pos: 0,
    };
    if r.take(8)? != STATE_MAGIC || r.u32()? != FORMAT_VERSION {
        return None;
    }
    r.u64()
}

/// Reads `state.bin`; `None` when missing, damaged, or for another
/// language, model or format.
pub(super) fn read_state(
    dir: &Path,
    language: Language,
    model: &str,
) -> Result<Option<State>, IndexError> {
    let path = dir.join("state.bin");
    let mut bytes = Vec::new();
    match fs::File::open(&path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(io_err(&path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IndexError::Io { path, source: e }),
    };
    Ok(parse_state(&bytes, language, model))
}

fn parse_state(bytes: &[u8], language: Language, model: &str) -> Option<State> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(8)? != STATE_MAGIC || r.u32()? != FORMAT_VERSION {
        return None;
    }
    let write_id = r.u64()?;
    if r.str()? != language.code() || r.str()? != model {
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
        write_id,
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
    use std::fs;

    use crate::Language;
    use crate::index::tests::{chunk, unit};
    use crate::index::{KnowledgeIndex, Retriever};
    use crate::models::MINILM;

    #[test]
    fn damaged_state_opens_empty_and_replacing_never_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = KnowledgeIndex::open(dir.path(), Language::English, MINILM.id).expect("open");
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
        let index = KnowledgeIndex::open(dir.path(), Language::English, MINILM.id).expect("reopen");
        assert_eq!(index.generation(), 0);
        assert!(
            index
                .search("alpha", None, 10, Retriever::FullText)
                .expect("search")
                .hits
                .is_empty()
        );
    }
}
