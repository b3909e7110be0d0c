//! The vector index: vectors quantized to int8, the integer dot product
//! (SimSIMD, dispatched at run time to the CPU's vector instructions), and
//! the exact dense scan (a chunk's cosine is the mean over its vectors): one
//! pass over the codes, split across cores for large indexes, each part
//! keeping its best chunks in a bounded heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::models::DIMENSIONS;

/// Vectors quantized to int8 (`code = round(x / scale)`), one scale each.
#[derive(Debug, Default, Clone)]
pub(super) struct Vectors {
    pub(super) codes: Vec<i8>,
    pub(super) scales: Vec<f32>,
    /// The chunk slot each vector belongs to.
    pub(super) owners: Vec<u32>,
}

impl Vectors {
    pub(super) fn len(&self) -> usize {
        self.scales.len()
    }

    pub(super) fn push(&mut self, owner: u32, v: &[f32]) {
        let (codes, scale) = quantize(v);
        self.codes.extend_from_slice(&codes);
        self.scales.push(scale);
        self.owners.push(owner);
    }

    pub(super) fn retain_owners(&mut self, keep: impl Fn(u32) -> bool) {
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

    pub(super) fn remap_owners(&mut self, map: &HashMap<u32, u32>) {
        for o in &mut self.owners {
            if let Some(n) = map.get(o) {
                *o = *n;
            }
        }
    }
}

pub(super) fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
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

/// Integer dot product of two int8 vectors, through SimSIMD: its kernels
/// are picked at run time for the CPU (AVX2, AVX-512 VNNI on x86-64; NEON,
/// SVE on ARM), with a portable fallback. The sum of 384 products of int8
/// fits an f64 exactly.
pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    use simsimd::SpatialSimilarity;
    <i8 as SpatialSimilarity>::dot(a, b).map_or(0, |d| d as i32)
}

/// Below this many vectors one thread scans them all: spreading a scan
/// over threads costs tens of microseconds, the scan of 32k vectors about
/// a millisecond.
pub(super) const PARALLEL_FROM: usize = 32_768;

/// A score and its chunk slot, ordered by score (then slot, so that ties
/// rank the same on every run).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// The best `limit` scores seen, in a bounded min-heap: a push costs
/// O(log limit), and nothing else of the scan is kept.
struct TopK {
    limit: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

impl TopK {
    fn new(limit: usize) -> Self {
        TopK {
            limit,
            heap: BinaryHeap::with_capacity(limit + 1),
        }
    }

    fn push(&mut self, scored: Scored) {
        if self.heap.len() < self.limit {
            self.heap.push(Reverse(scored));
        } else if self.heap.peek().is_some_and(|Reverse(min)| scored > *min) {
            self.heap.pop();
            self.heap.push(Reverse(scored));
        }
    }

    fn merge(mut self, other: TopK) -> TopK {
        for Reverse(scored) in other.heap {
            self.push(scored);
        }
        self
    }
}

/// Where to cut `0..v.len()` into about `parts` runs of vectors, never
/// inside one chunk's vectors (they are stored next to each other).
fn cuts(v: &Vectors, parts: usize) -> Vec<usize> {
    let n = v.len();
    let mut cuts = vec![0];
    for p in 1..parts {
        let mut at = n * p / parts;
        while at < n && at > 0 && v.owners[at] == v.owners[at - 1] {
            at += 1;
        }
        if at > *cuts.last().unwrap_or(&0) && at < n {
            cuts.push(at);
        }
    }
    cuts.push(n);
    cuts
}

/// How many threads scan `n` vectors, leaving `spare` cores to other work.
fn threads_for(n: usize, spare: usize) -> usize {
    if n < PARALLEL_FROM {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(spare)
        .min(n / (PARALLEL_FROM / 2))
        .clamp(1, 16)
}

/// Runs `work` on the runs of vectors [`cuts`] gives, on one thread per
/// run (on this one when there is a single run), leaving `spare` cores.
fn in_parts<T: Send>(v: &Vectors, spare: usize, work: impl Fn(usize, usize) -> T + Sync) -> Vec<T> {
    let cuts = cuts(v, threads_for(v.len(), spare));
    if cuts.len() <= 2 {
        return vec![work(0, v.len())];
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = cuts
            .windows(2)
            .map(|w| {
                let (from, to, work) = (w[0], w[1], &work);
                scope.spawn(move || work(from, to))
            })
            .collect();
        parts.into_iter().filter_map(|p| p.join().ok()).collect()
    })
}

/// Vectors whose dot products a scan computes in one go, before scoring
/// their chunks: the dot products then run as a tight loop, as in
/// [`bare_pass`].
const BLOCK: usize = 256;

/// Scores the chunks of the vectors `from..to`: each chunk's run of
/// vectors, averaged.
fn scan(v: &Vectors, q: &[i8], q_scale: f32, from: usize, to: usize, limit: usize) -> TopK {
    let mut top = TopK::new(limit);
    let mut dots = [0i32; BLOCK];
    // The chunk being summed: its slot, sum and count of vectors.
    let mut current: Option<(u32, f32, u32)> = None;
    let mut at = from;
    while at < to {
        let end = (at + BLOCK).min(to);
        let rows = v.codes[at * DIMENSIONS..end * DIMENSIONS].chunks_exact(DIMENSIONS);
        for (d, row) in dots.iter_mut().zip(rows) {
            *d = dot_i8(q, row);
        }
        let owners = &v.owners[at..end];
        let scales = &v.scales[at..end];
        for ((owner, scale), d) in owners.iter().zip(scales).zip(&dots) {
            let score = *d as f32 * scale;
            current = match current {
                Some((slot, sum, n)) if slot == *owner => Some((slot, sum + score, n + 1)),
                done => {
                    if let Some((slot, sum, n)) = done {
                        top.push(Scored(sum * q_scale / n as f32, slot));
                    }
                    Some((*owner, score, 1))
                }
            };
        }
        at = end;
    }
    if let Some((slot, sum, n)) = current {
        top.push(Scored(sum * q_scale / n as f32, slot));
    }
    top
}

/// A chunk's cosine similarity is the mean over its vectors (an FAQ entry:
/// its question, and its question with the answer). Returns the `limit`
/// best chunk slots: one exact pass over the int8 codes, across cores when
/// the index is large (but `spare` of them, busy with the full-text search
/// of a hybrid query), keeping only a bounded heap per thread.
pub(super) fn dense_scores(
    v: &Vectors,
    query: &[f32],
    limit: usize,
    spare: usize,
) -> HashMap<u32, f32> {
    if v.len() == 0 || limit == 0 {
        return HashMap::new();
    }
    let (q, q_scale) = quantize(query);
    let top = in_parts(v, spare, |from, to| scan(v, &q, q_scale, from, to, limit))
        .into_iter()
        .fold(TopK::new(limit), TopK::merge);
    top.heap
        .into_iter()
        .map(|Reverse(Scored(score, slot))| (slot, score))
        .collect()
}

/// The memory-bandwidth baseline of [`dense_scores`]: the same pass over
/// the same codes, on the same threads, with no scoring around the dot
/// products. Returns their sum (so that nothing is optimized away).
pub(super) fn bare_pass(v: &Vectors, query: &[f32]) -> i64 {
    let (q, _) = quantize(query);
    in_parts(v, 0, |from, to| -> i64 {
        v.codes[from * DIMENSIONS..to * DIMENSIONS]
            .chunks_exact(DIMENSIONS)
            .map(|row| i64::from(dot_i8(&q, row)))
            .sum()
    })
    .into_iter()
    .sum()
}

/// A query quantized once, for [`chunk_cosine`] over many chunks.
pub(super) struct QuantizedQuery(Vec<i8>, f32);

impl QuantizedQuery {
    pub(super) fn new(query: &[f32]) -> Self {
        let (codes, scale) = quantize(query);
        QuantizedQuery(codes, scale)
    }

    pub(super) fn codes(&self) -> &[i8] {
        &self.0
    }
}

/// The mean cosine of one chunk's vectors, `count` of them from `start`
/// (0 when it has none).
pub(super) fn chunk_cosine(v: &Vectors, (start, count): (u32, u32), query: &QuantizedQuery) -> f32 {
    let QuantizedQuery(q, q_scale) = query;
    // A chunk's vectors are stored next to each other.
    let range = start as usize..(start + count) as usize;
    if range.is_empty() {
        return 0.0;
    }
    // Summed in the order and with the roundings of `scan`, so that a
    // chunk scores the same bits either way.
    let mut sum = 0f32;
    for i in range {
        sum += dot_i8(q, &v.codes[i * DIMENSIONS..(i + 1) * DIMENSIONS]) as f32 * v.scales[i];
    }
    sum * q_scale / count as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Language;
    use crate::index::tests::{chunk, unit};
    use crate::index::{IndexedChunk, KnowledgeIndex, Retriever};
    use crate::models::MINILM;

    fn random_vectors(n: usize, per_chunk: usize) -> (Vectors, Vec<Vec<f32>>) {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 20_000) as f32 / 10_000.0 - 1.0
        };
        let mut v = Vectors::default();
        let mut all = Vec::new();
        for i in 0..n {
            let mut x: Vec<f32> = (0..DIMENSIONS).map(|_| next()).collect();
            crate::embed::normalize(&mut x);
            v.push((i / per_chunk) as u32, &x);
            all.push(x);
        }
        (v, all)
    }

    #[test]
    fn the_parallel_scan_finds_what_one_thread_finds() {
        // Two vectors a chunk, enough of them to split across threads.
        let (v, all) = random_vectors(PARALLEL_FROM * 2 + 7, 2);
        let query = &all[12_345];
        let (q, q_scale) = quantize(query);
        let one = scan(&v, &q, q_scale, 0, v.len(), 10);
        let mut one: Vec<(u32, f32)> = one
            .heap
            .into_iter()
            .map(|Reverse(Scored(s, slot))| (slot, s))
            .collect();
        one.sort_by(|a, b| b.1.total_cmp(&a.1));
        let parallel = dense_scores(&v, query, 10, 0);
        assert_eq!(parallel.len(), 10);
        for (slot, score) in &one {
            assert_eq!(parallel.get(slot), Some(score), "slot {slot}");
        }
        // The query's own chunk is first.
        assert_eq!(one[0].0, 12_345 / 2);
        // Cuts never split a chunk's vectors.
        assert_eq!(threads_for(v.len(), 64), 1);
        for cut in cuts(&v, 3) {
            assert!(cut == 0 || cut == v.len() || v.owners[cut] != v.owners[cut - 1]);
        }
        assert_ne!(bare_pass(&v, query), 0);
        assert!(dense_scores(&Vectors::default(), query, 10, 0).is_empty());
    }

    #[test]
    fn the_bounded_heap_keeps_the_best_and_breaks_ties_by_slot() {
        let mut top = TopK::new(3);
        for (score, slot) in [(0.1, 1), (0.9, 2), (0.5, 3), (0.9, 0), (0.2, 4), (0.7, 5)] {
            top.push(Scored(score, slot));
        }
        let mut kept: Vec<Scored> = top.heap.into_iter().map(|Reverse(s)| s).collect();
        kept.sort_by(|a, b| b.cmp(a));
        assert_eq!(kept, [Scored(0.9, 0), Scored(0.9, 2), Scored(0.7, 5)]);
    }

    #[test]
    fn dense_search_ranks_by_cosine_and_quantization_is_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = KnowledgeIndex::open(dir.path(), Language::English, MINILM.id).expect("open");
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
}
