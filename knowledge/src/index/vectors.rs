//! The vector index: vectors quantized to int8, the integer dot product, and
//! dense scoring (a chunk's cosine is the mean over its vectors).

use std::collections::HashMap;

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

fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
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

/// Integer dot product; written so the compiler vectorizes it.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let chunks_a = a.chunks_exact(16);
    let chunks_b = b.chunks_exact(16);
    let (rest_a, rest_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    let tail: i32 = rest_a
        .iter()
        .zip(rest_b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    acc.iter().sum::<i32>() + tail
}

/// A chunk's cosine similarity is the mean over its vectors (an FAQ entry:
/// its question, and its question with the answer). Returns the `limit`
/// best of the `slots` chunk slots.
pub(super) fn dense_scores(
    v: &Vectors,
    slots: usize,
    query: &[f32],
    limit: usize,
) -> HashMap<u32, f32> {
    let (q, q_scale) = quantize(query);
    let mut sums = vec![0f32; slots];
    let mut counts = vec![0u8; slots];
    for i in 0..v.len() {
        let d = dot_i8(&q, &v.codes[i * DIMENSIONS..(i + 1) * DIMENSIONS]);
        let owner = v.owners[i] as usize;
        sums[owner] += d as f32 * q_scale * v.scales[i];
        counts[owner] = counts[owner].saturating_add(1);
    }
    let mut scored: Vec<(f32, u32)> = sums
        .iter()
        .zip(&counts)
        .enumerate()
        .filter(|(_, (_, n))| **n > 0)
        .map(|(slot, (sum, n))| (sum / f32::from(*n), slot as u32))
        .collect();
    if limit < scored.len() {
        scored.select_nth_unstable_by(limit, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(limit);
    }
    scored.into_iter().map(|(s, slot)| (slot, s)).collect()
}

/// The mean cosine of one chunk's vectors, `count` of them from `start`
/// (0 when it has none).
pub(super) fn chunk_cosine(v: &Vectors, (start, count): (u32, u32), query: &[f32]) -> f32 {
    let (q, q_scale) = quantize(query);
    // A chunk's vectors are stored next to each other.
    let scores: Vec<f32> = (start as usize..(start + count) as usize)
        .map(|i| {
            dot_i8(&q, &v.codes[i * DIMENSIONS..(i + 1) * DIMENSIONS]) as f32
                * q_scale
                * v.scales[i]
        })
        .collect();
    if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f32>() / scores.len() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Language;
    use crate::index::tests::{chunk, unit};
    use crate::index::{IndexedChunk, KnowledgeIndex, Retriever};
    use crate::models::MINILM;

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
