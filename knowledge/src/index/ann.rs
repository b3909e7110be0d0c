//! The approximate vector index of a large bot: an inverted file (IVF)
//! over the same int8 codes as the exact scan.
//!
//! The vectors are split into about √n lists by k-means (trained on a
//! sample), each list holding the vectors nearest its centroid. A query
//! scans only the lists of its [`PROBES`] nearest centroids, exactly, then
//! each chunk found is scored as the exact scan scores it (the mean int8
//! cosine of its vectors), so a hit's cosine never depends on the lists;
//! only which chunks are looked at does. The bench measures how often the
//! best ten differ from the exact scan's (`recall@10`).
//!
//! Why not a graph (HNSW): measured on this 2-core machine, usearch (a
//! well-kept HNSW crate) took 1.1–1.4 ms of CPU per inserted vector (20–30
//! minutes to build a million), kept its own second copy of the codes, and
//! its SIMD kernels added 3 (release) to 9 (debug) minutes of CPU to a
//! clean build. The lists are trained and filled in seconds (18 s for a
//! million), hold 6 bytes a vector beside the codes the exact scan already
//! has, and reuse its dot product (SimSIMD).
//!
//! - **Rows.** Which list each vector row is in, aligned with the state's
//!   rows: an apply keeps the rows the state keeps and assigns new rows to
//!   their nearest centroid, so it stays current without retraining. It is
//!   retrained in the background once the bot has doubled since training.
//!   A build is never abandoned for a newer write: once trained, its lists
//!   are carried over to the state of that moment (rows whose chunk and
//!   codes are unchanged keep their list), however often writes come.
//! - **On disk** it is `ann-<write id>.ivf` beside `state.bin` (centroids
//!   and each row's list, about 2 bytes a vector): current only for the
//!   state written under the same id, so a crash between the two files, or
//!   an old file, is never mistaken for current. A file that does not parse
//!   is rebuilt from the stored vectors, with a warning.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::{IndexError, io_err};
use super::vectors::{Vectors, dot_i8, quantize};
use crate::models::DIMENSIONS;

/// By default a bot gets an approximate index from this many chunks: below
/// it the exact scan takes a few milliseconds (see the README's benchmark).
pub const APPROXIMATE_FROM: usize = 200_000;

/// Lists a query scans: measured in the bench, at a million chunks
/// (1,000 lists), 48 gave recall@10 0.999 at 11 ms p50 and 16 gives the
/// README's figure.
const PROBES: usize = 16;
/// k-means rounds when training.
const ROUNDS: usize = 8;
/// Vectors sampled per list to train on.
const SAMPLE_PER_LIST: usize = 48;
const FILE_MAGIC: &[u8; 8] = b"FDIVF001";

/// See the module documentation.
#[derive(Debug, Clone)]
pub(super) struct Ann {
    /// Unit centroids, quantized like the vectors: `lists × DIMENSIONS`.
    centroids: Vec<i8>,
    /// Per state row: its list.
    list_of_row: Vec<u16>,
    /// Per list: its rows (derived from `list_of_row`).
    lists: Vec<Vec<u32>>,
    /// How many vectors it was trained on.
    trained_on: usize,
}

impl Ann {
    fn lists(&self) -> usize {
        self.centroids.len() / DIMENSIONS
    }

    fn centroid(&self, list: usize) -> &[i8] {
        &self.centroids[list * DIMENSIONS..(list + 1) * DIMENSIONS]
    }

    /// The list whose centroid is nearest `codes`.
    fn nearest(&self, codes: &[i8]) -> u16 {
        let mut best = (i32::MIN, 0u16);
        for list in 0..self.lists() {
            let d = dot_i8(codes, self.centroid(list));
            if d > best.0 {
                best = (d, list as u16);
            }
        }
        best.1
    }

    fn with_rows(centroids: Vec<i8>, list_of_row: Vec<u16>, trained_on: usize) -> Ann {
        let mut lists = vec![Vec::new(); centroids.len() / DIMENSIONS];
        for (row, list) in list_of_row.iter().enumerate() {
            if let Some(l) = lists.get_mut(*list as usize) {
                l.push(row as u32);
            }
        }
        Ann {
            centroids,
            list_of_row,
            lists,
            trained_on,
        }
    }

    /// Trains the lists on a sample of `vectors` and assigns every row, on
    /// every core; stops early (an error) once `cancel` is set.
    pub(super) fn build(vectors: &Vectors, cancel: &AtomicBool) -> Result<Ann, IndexError> {
        let n = vectors.len();
        let lists = ((n as f64).sqrt() as usize).clamp(1, usize::from(u16::MAX));
        // An even spread of rows to train on.
        let sample: Vec<usize> = {
            let want = (lists * SAMPLE_PER_LIST).min(n);
            (0..want).map(|i| i * n / want).collect()
        };
        let row = |i: usize| &vectors.codes[i * DIMENSIONS..(i + 1) * DIMENSIONS];
        let mut ann = Ann {
            centroids: (0..lists)
                .flat_map(|l| row(sample[l * sample.len() / lists]).iter().copied())
                .collect(),
            list_of_row: Vec::new(),
            lists: Vec::new(),
            trained_on: n,
        };
        for _ in 0..ROUNDS {
            if cancel.load(Ordering::Relaxed) {
                return Err(IndexError::Approximate("build cancelled".into()));
            }
            let assigned = in_threads(sample.len(), |i| ann.nearest(row(sample[i])));
            // Each centroid becomes the normalized mean of its vectors; an
            // empty list keeps its centroid.
            let mut sums = vec![0f32; lists * DIMENSIONS];
            for (i, list) in assigned.iter().enumerate() {
                let r = sample[i];
                let scale = vectors.scales[r];
                let sum = &mut sums[*list as usize * DIMENSIONS..(*list as usize + 1) * DIMENSIONS];
                for (s, c) in sum.iter_mut().zip(row(r)) {
                    *s += f32::from(*c) * scale;
                }
            }
            for (l, sum) in sums.chunks_exact_mut(DIMENSIONS).enumerate() {
                let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > f32::EPSILON {
                    sum.iter_mut().for_each(|x| *x /= norm);
                    let (codes, _) = quantize(sum);
                    ann.centroids[l * DIMENSIONS..(l + 1) * DIMENSIONS].copy_from_slice(&codes);
                }
            }
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(IndexError::Approximate("build cancelled".into()));
        }
        let list_of_row = in_threads(n, |i| {
            if i % 4_096 == 0 && cancel.load(Ordering::Relaxed) {
                return 0;
            }
            ann.nearest(row(i))
        });
        if cancel.load(Ordering::Relaxed) {
            return Err(IndexError::Approximate("build cancelled".into()));
        }
        Ok(Ann::with_rows(ann.centroids, list_of_row, n))
    }

    /// The lists of the state `after`, made from `before`'s by an apply:
    /// the rows of `before` whose owner `kept` (their order unchanged),
    /// then `after`'s rows from `first_new` on, each in its nearest list.
    pub(super) fn follow(
        &self,
        before: &Vectors,
        kept: impl Fn(u32) -> bool,
        after: &Vectors,
        first_new: usize,
    ) -> Ann {
        let mut list_of_row: Vec<u16> = before
            .owners
            .iter()
            .zip(&self.list_of_row)
            .filter(|(owner, _)| kept(**owner))
            .map(|(_, list)| *list)
            .collect();
        list_of_row.truncate(first_new);
        list_of_row.extend(
            (first_new..after.len())
                .map(|i| self.nearest(&after.codes[i * DIMENSIONS..(i + 1) * DIMENSIONS])),
        );
        Ann::with_rows(self.centroids.clone(), list_of_row, self.trained_on)
    }

    /// These lists over `to`'s rows: row `r` keeps the list of row
    /// `from_row(r)` of the rows they were made for, or, when `None`, goes
    /// to its nearest list.
    pub(super) fn carry(&self, to: &Vectors, from_row: impl Fn(usize) -> Option<usize>) -> Ann {
        let list_of_row = (0..to.len())
            .map(|row| {
                from_row(row)
                    .and_then(|old| self.list_of_row.get(old).copied())
                    .unwrap_or_else(|| {
                        self.nearest(&to.codes[row * DIMENSIONS..(row + 1) * DIMENSIONS])
                    })
            })
            .collect();
        Ann::with_rows(self.centroids.clone(), list_of_row, self.trained_on)
    }

    /// Whether the bot has grown enough since training to retrain.
    pub(super) fn outgrown(&self) -> bool {
        self.list_of_row.len() > self.trained_on.saturating_mul(2)
    }

    /// The `count` rows nearest the quantized query among the lists of its
    /// nearest centroids, best first.
    pub(super) fn candidates(&self, vectors: &Vectors, query: &[i8], count: usize) -> Vec<u32> {
        let mut nearest: Vec<(i32, usize)> = (0..self.lists())
            .map(|l| (dot_i8(query, self.centroid(l)), l))
            .collect();
        let probes = PROBES.min(nearest.len());
        if probes < nearest.len() {
            nearest.select_nth_unstable_by(probes, |a, b| b.0.cmp(&a.0));
        }
        let mut top: BinaryHeap<Reverse<(u32, u32)>> = BinaryHeap::with_capacity(count + 1);
        for (_, list) in &nearest[..probes] {
            for &row in &self.lists[*list] {
                let r = row as usize;
                let Some(codes) = vectors.codes.get(r * DIMENSIONS..(r + 1) * DIMENSIONS) else {
                    continue;
                };
                // Ranked by cosine: the dot product times the row's scale,
                // as bits that order like the float.
                let score = (dot_i8(query, codes) as f32 * vectors.scales[r]).to_bits();
                let ordered = if score >> 31 == 1 {
                    !score
                } else {
                    score | 0x8000_0000
                };
                let key = (ordered, row);
                if top.len() < count {
                    top.push(Reverse(key));
                } else if top.peek().is_some_and(|Reverse(min)| key > *min) {
                    top.pop();
                    top.push(Reverse(key));
                }
            }
        }
        let mut rows: Vec<(u32, u32)> = top.into_iter().map(|Reverse(k)| k).collect();
        rows.sort_by(|a, b| b.cmp(a));
        rows.into_iter().map(|(_, row)| row).collect()
    }

    /// How many rows it covers.
    pub(super) fn len(&self) -> usize {
        self.list_of_row.len()
    }

    /// Bytes it holds in memory.
    pub(super) fn memory_bytes(&self) -> usize {
        self.centroids.len() + self.list_of_row.len() * 2 + self.list_of_row.len() * 4
    }

    /// Writes it as the approximate index of the state written under
    /// `write_id`, durably, and removes any other.
    pub(super) fn save(&self, dir: &Path, write_id: u64) -> Result<(), IndexError> {
        let path = path(dir, write_id);
        let tmp = path.with_extension("tmp");
        let mut buf = Vec::with_capacity(32 + self.centroids.len() + self.list_of_row.len() * 2);
        buf.extend_from_slice(FILE_MAGIC);
        buf.extend_from_slice(&(self.lists() as u64).to_le_bytes());
        buf.extend_from_slice(&(self.list_of_row.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(self.trained_on as u64).to_le_bytes());
        buf.extend(self.centroids.iter().map(|c| *c as u8));
        for list in &self.list_of_row {
            buf.extend_from_slice(&list.to_le_bytes());
        }
        let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&buf).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        remove_all_but(dir, Some(&path));
        Ok(())
    }

    /// The approximate index saved for the state written under `write_id`,
    /// covering `rows` rows. `None` when there is none; a file that does
    /// not parse or does not match is removed with a warning (it is rebuilt
    /// from the stored vectors).
    pub(super) fn load(dir: &Path, write_id: u64, rows: usize) -> Option<Ann> {
        let path = path(dir, write_id);
        let bytes = fs::read(&path).ok()?;
        let parsed = parse(&bytes, rows);
        if parsed.is_none() {
            tracing::warn!(path = %path.display(), "approximate vector index damaged; rebuilding it from the stored vectors");
            let _ = fs::remove_file(&path);
        }
        parsed
    }
}

fn parse(bytes: &[u8], rows: usize) -> Option<Ann> {
    let u64_at = |at: usize| -> Option<usize> {
        let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(b)).ok()
    };
    if bytes.get(..8)? != FILE_MAGIC {
        return None;
    }
    let (lists, n, trained_on) = (u64_at(8)?, u64_at(16)?, u64_at(24)?);
    if n != rows || lists == 0 || lists > usize::from(u16::MAX) {
        return None;
    }
    let centroids_end = 32 + lists.checked_mul(DIMENSIONS)?;
    if bytes.len() != centroids_end.checked_add(n.checked_mul(2)?)? {
        return None;
    }
    let centroids: Vec<i8> = bytes[32..centroids_end].iter().map(|b| *b as i8).collect();
    let list_of_row: Vec<u16> = bytes[centroids_end..]
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    if list_of_row.iter().any(|l| usize::from(*l) >= lists) {
        return None;
    }
    Some(Ann::with_rows(centroids, list_of_row, trained_on))
}

/// `work(i)` for every `i` in `0..n`, in order, split across the cores.
fn in_threads<T: Send + Default + Clone>(n: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 16);
    let mut out = vec![T::default(); n];
    let per = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (part, slice) in out.chunks_mut(per).enumerate() {
            let work = &work;
            scope.spawn(move || {
                for (j, slot) in slice.iter_mut().enumerate() {
                    *slot = work(part * per + j);
                }
            });
        }
    });
    out
}

fn path(dir: &Path, write_id: u64) -> PathBuf {
    dir.join(format!("ann-{write_id:016x}.ivf"))
}

/// Removes the approximate index files in `dir`, but `keep`.
pub(super) fn remove_all_but(dir: &Path, keep: Option<&Path>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let p = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("ann-") && Some(p.as_path()) != keep {
            let _ = fs::remove_file(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Language;
    use crate::index::tests::chunk;
    use crate::index::{IndexedChunk, KnowledgeIndex, Retriever};
    use crate::models::{DIMENSIONS, MINILM};

    fn noise(seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..DIMENSIONS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    /// A unit vector of one of ten topics (clustered, as embeddings are):
    /// its topic's direction plus noise.
    fn random_unit(seed: u64) -> Vec<f32> {
        let topic = noise(1_000_000 + seed % 10);
        let mut v: Vec<f32> = topic
            .iter()
            .zip(noise(seed))
            .map(|(t, n)| t + 0.5 * n)
            .collect();
        crate::embed::normalize(&mut v);
        v
    }

    fn chunks(range: std::ops::Range<u64>) -> Vec<IndexedChunk> {
        range
            .map(|i| {
                chunk(
                    &format!("c{i}"),
                    "",
                    &format!("text {i}"),
                    vec![random_unit(i)],
                )
            })
            .collect()
    }

    fn ann_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ann-"))
            .collect();
        names.sort();
        names
    }

    fn dense_ids(index: &KnowledgeIndex, q: &[f32]) -> Vec<String> {
        index
            .search("", Some(q), 10, Retriever::Dense)
            .expect("search")
            .hits
            .into_iter()
            .map(|h| h.chunk_id)
            .collect()
    }

    #[test]
    fn an_apply_keeps_each_row_in_its_list_and_files_round_trip() {
        use super::{Ann, parse};
        use crate::index::vectors::Vectors;
        use std::sync::atomic::AtomicBool;

        let mut before = Vectors::default();
        for i in 0..400u64 {
            before.push(i as u32, &random_unit(i));
        }
        let ann = Ann::build(&before, &AtomicBool::new(false)).expect("build");
        assert_eq!((ann.lists(), ann.len()), (20, 400));
        // Owners 5..50 removed, three new rows (slots renumbered as the
        // state does).
        let kept = |o: u32| !(5..50).contains(&o);
        let mut after = before.clone();
        let remap: std::collections::HashMap<u32, u32> = (0..400u32)
            .filter(|o| kept(*o))
            .enumerate()
            .map(|(new, old)| (old, new as u32))
            .collect();
        after.retain_owners(|o| remap.contains_key(&o));
        after.remap_owners(&remap);
        let first_new = after.len();
        for i in 0..3u64 {
            after.push(355 + i as u32, &random_unit(1_000 + i));
        }
        let followed = ann.follow(&before, kept, &after, first_new);
        assert_eq!(followed.len(), after.len());
        for row in 0..after.len() {
            let codes = &after.codes[row * DIMENSIONS..(row + 1) * DIMENSIONS];
            assert_eq!(followed.list_of_row[row], ann.nearest(codes), "row {row}");
        }
        // Every row is in exactly its list.
        let listed: usize = followed.lists.iter().map(Vec::len).sum();
        assert_eq!(listed, after.len());
        // A row's own vector finds it.
        let q = &after.codes[100 * DIMENSIONS..101 * DIMENSIONS];
        assert_eq!(followed.candidates(&after, q, 5)[0], 100);

        // The file round-trips; a truncated or mismatched one is refused.
        let dir = tempfile::tempdir().expect("tempdir");
        followed.save(dir.path(), 7).expect("save");
        let loaded = Ann::load(dir.path(), 7, after.len()).expect("load");
        assert_eq!(loaded.list_of_row, followed.list_of_row);
        assert_eq!(loaded.centroids, followed.centroids);
        assert!(
            Ann::load(dir.path(), 8, after.len()).is_none(),
            "another write"
        );
        let bytes = std::fs::read(dir.path().join(format!("ann-{:016x}.ivf", 7))).expect("read");
        assert!(parse(&bytes[..bytes.len() - 1], after.len()).is_none());
        assert!(parse(&bytes, after.len() + 1).is_none());
        assert!(Ann::load(dir.path(), 7, after.len() + 1).is_none());
        assert!(
            ann_files(dir.path()).is_empty(),
            "a damaged file is removed"
        );
    }

    /// Dense search through the lists returns what the exact scan does.
    fn assert_finds_what_the_scan_finds(index: &KnowledgeIndex, queries: &[u64]) {
        for q in queries {
            assert_eq!(
                dense_ids(index, &random_unit(*q)),
                index.exact_nearest(&random_unit(*q), 10),
                "query {q}"
            );
        }
    }

    #[test]
    fn writes_during_a_build_never_leave_the_bot_without_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index =
            KnowledgeIndex::open_with(dir.path(), Language::English, MINILM.id, 100).expect("open");
        index.apply(&[], &chunks(0..3_000), 1).expect("apply");
        // Writes while the build runs: it carries its lists over to them.
        for (n, at) in [(3_000u64, 2u64), (3_010, 3), (3_020, 4)] {
            index
                .apply(&[format!("c{}", n - 1_000)], &chunks(n..n + 10), at)
                .expect("apply");
        }
        assert!(index.wait_for_approximate(), "current for the last write");
        assert_eq!(ann_files(dir.path()).len(), 1);
        assert_finds_what_the_scan_finds(&index, &[3_025, 17, 2_999]);
        assert!(!dense_ids(&index, &random_unit(2_000)).contains(&"c2000".to_owned()));
    }

    #[test]
    fn built_above_the_threshold_kept_current_saved_and_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            KnowledgeIndex::open_with(dir.path(), Language::English, MINILM.id, 100).expect("open")
        };
        let index = open();
        index.apply(&[], &chunks(0..99), 1).expect("apply");
        assert!(!index.wait_for_approximate(), "below the threshold: none");
        assert!(ann_files(dir.path()).is_empty());

        // Crossing it: built in the background, the exact scan meanwhile.
        index.apply(&[], &chunks(99..400), 2).expect("apply");
        assert_eq!(dense_ids(&index, &random_unit(7))[0], "c7");
        assert!(index.wait_for_approximate());
        assert_eq!(ann_files(dir.path()).len(), 1);
        assert_finds_what_the_scan_finds(&index, &[3, 150, 399]);

        // Kept current on apply, without a build: a removed chunk is gone,
        // a new one is found, and the saved file follows.
        let before = ann_files(dir.path());
        index
            .apply(&["c7".into()], &chunks(400..410), 3)
            .expect("apply");
        assert!(index.approximate_ready(), "current right after the apply");
        assert_ne!(dense_ids(&index, &random_unit(7))[0], "c7");
        assert_eq!(dense_ids(&index, &random_unit(405))[0], "c405");
        let after = ann_files(dir.path());
        assert_eq!(after.len(), 1);
        assert_ne!(after, before);
        drop(index);

        // Reopened: loaded, not rebuilt.
        let index = open();
        assert!(index.approximate_ready(), "loaded at open");
        assert_eq!(dense_ids(&index, &random_unit(405))[0], "c405");
        drop(index);

        // A damaged file: the exact scan answers, and it is rebuilt.
        std::fs::write(dir.path().join(&after[0]), b"not an index").expect("damage");
        let index = open();
        assert_eq!(dense_ids(&index, &random_unit(405))[0], "c405");
        assert!(index.wait_for_approximate());
        assert_eq!(ann_files(dir.path()).len(), 1);
        let hybrid = index
            .search("text 405", Some(&random_unit(405)), 5, Retriever::Hybrid)
            .expect("hybrid");
        assert_eq!(hybrid.hits[0].chunk_id, "c405");

        // Back below the threshold: dropped, and its file removed.
        let gone: Vec<String> = (0..350).map(|i| format!("c{i}")).collect();
        index.apply(&gone, &[], 4).expect("apply");
        assert!(!index.approximate_ready());
        assert!(ann_files(dir.path()).is_empty());
        assert_eq!(dense_ids(&index, &random_unit(405))[0], "c405");
    }
}
