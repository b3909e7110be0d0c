//! Knowledge benchmark: `cargo bench --bench knowledge`.
//!
//! Prints:
//! 1. search latency p50/p95 (hybrid, BM25 only, vectors only) at 10k, 100k
//!    and 1M chunks of one bot, with build time, the index's memory and
//!    disk size, the bare int8 scan beside it, and recall@10 of dense
//!    search against the exact scan (from `knowledge.approximate_from`
//!    chunks, 200k, an approximate index serves it);
//! 2. with the embedding model installed: the bare embedding rate (texts/s
//!    through the model alone) and end-to-end ingestion (Markdown files →
//!    extract → chunk → embed → SQLite → index), in chunks/s.
//!
//! The large indexes use synthetic text (words drawn from a Zipf-like
//! vocabulary) and synthetic unit vectors: latency depends on sizes, not on
//! meaning. The vectors are clustered like sentence embeddings of a help
//! centre: topics of about 200 chunks, each vector its topic's direction
//! plus noise (`normalize(topic + 0.6 g / √384)`, g standard normal), so
//! a vector's nearest neighbour has a cosine of about 0.77. (Independent
//! random vectors have no neighbours worth the name: their ten nearest are
//! near-ties at a cosine of about 0.2, which no approximate index tells
//! apart, and which no real question asks for.) `BENCH_SIZES=10000,100000` overrides the sizes (default
//! 10000,100000,1000000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use knowledge::chunk::ChunkKind;
use knowledge::index::{IndexedChunk, KnowledgeIndex, Retriever};
use knowledge::models::DIMENSIONS;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A standard normal draw (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }

    /// A random unit direction.
    fn direction(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIMENSIONS).map(|_| self.normal() as f32).collect();
        knowledge::embed::normalize(&mut v);
        v
    }

    /// A vector of the topic `topic`: its direction plus noise.
    fn vector(&mut self, topic: &[f32]) -> Vec<f32> {
        let noise = 0.6 / (DIMENSIONS as f64).sqrt();
        let mut v: Vec<f32> = topic
            .iter()
            .map(|t| t + (self.normal() * noise) as f32)
            .collect();
        knowledge::embed::normalize(&mut v);
        v
    }
}

fn vocabulary(n: usize, rng: &mut Rng) -> Vec<String> {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ser", "ten", "vo", "dra", "pel", "qu", "ri", "son", "ta", "ul", "ver",
        "bri", "cor", "den", "fa", "gus", "hol", "in", "jor", "mar", "nex",
    ];
    (0..n)
        .map(|_| {
            let len = 2 + (rng.next() % 3) as usize;
            (0..len)
                .map(|_| SYLLABLES[(rng.next() % 24) as usize])
                .collect()
        })
        .collect()
}

/// Zipf-like draw: low ranks are frequent.
fn word<'a>(vocab: &'a [String], rng: &mut Rng) -> &'a str {
    let r = rng.unit();
    let i = ((vocab.len() as f64).powf(r) - 1.0) as usize;
    &vocab[i.min(vocab.len() - 1)]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_bytes(&p)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn search_latency(size: usize) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ size as u64);
    let vocab = vocabulary(20_000, &mut rng);
    let dir = tempfile::tempdir().unwrap();
    let rss_before = rss_kib();
    let open = || {
        KnowledgeIndex::open(
            dir.path(),
            knowledge::Language::English,
            knowledge::models::MINILM.id,
        )
        .unwrap()
    };
    let index = open();
    let topics: Vec<Vec<f32>> = (0..(size / 200).max(50)).map(|_| rng.direction()).collect();
    let started = Instant::now();
    let mut vectors = Vec::with_capacity(1_000);
    // Each apply rewrites the chunk list: large bots come in large batches.
    let per_apply = (size / 20).max(10_000);
    for batch in 0..size.div_ceil(per_apply) {
        let chunks: Vec<IndexedChunk> = (batch * per_apply..((batch + 1) * per_apply).min(size))
            .map(|i| {
                let words: Vec<&str> = (0..120).map(|_| word(&vocab, &mut rng)).collect();
                let topic = &topics[(rng.next() % topics.len() as u64) as usize];
                let v = rng.vector(topic);
                if vectors.len() < 1_000 {
                    vectors.push(v.clone());
                }
                IndexedChunk {
                    id: format!("chunk-{i}"),
                    doc_ref: format!("doc-{}", i / 20),
                    kind: ChunkKind::Passage,
                    title: words[..6].join(" "),
                    text: words.join(" "),
                    vectors: vec![v],
                }
            })
            .collect();
        index.apply(&[], &chunks, batch as u64 + 1).unwrap();
    }
    let build = started.elapsed();
    let approximate = index.wait_for_approximate();
    let approximate_build = started.elapsed() - build;
    let rss_after = rss_kib();
    let disk = dir_bytes(dir.path());
    println!(
        "{size} chunks: built in {:.1} s{}; on disk {:.1} MiB; chunk list + int8 vectors in memory {:.1} MiB{}; process resident +{:.1} MiB",
        build.as_secs_f64(),
        if approximate {
            format!(
                " + approximate index {:.1} s after the last write",
                approximate_build.as_secs_f64()
            )
        } else {
            String::new()
        },
        disk as f64 / 1_048_576.0,
        index.memory_bytes() as f64 / 1_048_576.0,
        if approximate {
            format!(
                ", approximate index {:.1} MiB",
                index.approximate_memory_bytes() as f64 / 1_048_576.0
            )
        } else {
            String::new()
        },
        rss_after.saturating_sub(rss_before) as f64 / 1024.0
    );
    if approximate {
        // A restart: what is on disk and current is loaded, not rebuilt.
        drop(index);
        let t = Instant::now();
        let reopened = open();
        println!(
            "  reopened in {:.2} s, approximate index {}",
            t.elapsed().as_secs_f64(),
            if reopened.approximate_ready() {
                "loaded from disk"
            } else {
                "missing: rebuilding"
            }
        );
        // Searches are timed with no build beside them.
        reopened.wait_for_approximate();
        search_figures(&reopened, &vectors, &vocab, &mut rng, approximate);
    } else {
        search_figures(&index, &vectors, &vocab, &mut rng, approximate);
    }
}

/// The query: a few words, and a stored chunk's vector nudged.
fn query(vectors: &[Vec<f32>], vocab: &[String], rng: &mut Rng, q: usize) -> (String, Vec<f32>) {
    let text: Vec<&str> = (0..6).map(|_| word(vocab, rng)).collect();
    let mut qv = vectors[q % vectors.len()].clone();
    for x in &mut qv {
        *x += (rng.unit() as f32 - 0.5) * 0.05;
    }
    knowledge::embed::normalize(&mut qv);
    (text.join(" "), qv)
}

fn search_figures(
    index: &KnowledgeIndex,
    vectors: &[Vec<f32>],
    vocab: &[String],
    rng: &mut Rng,
    approximate: bool,
) {
    let size = index.len().0;
    println!(
        "  full-text segments {} (searched across the cores)",
        index.full_text_segments()
    );
    // The bare limit: a plain pass of int8 dot products over the same
    // vectors on the same threads, nothing ranked.
    let mut bare = Vec::new();
    for q in 0..300 {
        let qv = &vectors[q % vectors.len()];
        let t = Instant::now();
        std::hint::black_box(index.bare_vector_pass(qv));
        bare.push(t.elapsed());
    }
    bare.sort();
    let bare_p95 = percentile(&bare, 0.95);
    println!(
        "  {:<9} p50 {:>6.2} ms  p95 {:>6.2} ms  (int8 dot products over {:.1} MiB of vectors, no ranking)",
        "bare scan",
        percentile(&bare, 0.5).as_secs_f64() * 1e3,
        bare_p95.as_secs_f64() * 1e3,
        (size * knowledge::models::DIMENSIONS) as f64 / 1_048_576.0
    );
    for retriever in [Retriever::Hybrid, Retriever::FullText, Retriever::Dense] {
        let mut times = Vec::new();
        for q in 0..300 {
            let (text, qv) = query(vectors, vocab, rng, q);
            let t = Instant::now();
            let r = index.search(&text, Some(&qv), 10, retriever).unwrap();
            times.push(t.elapsed());
            assert!(!r.hits.is_empty());
        }
        times.sort();
        let p95 = percentile(&times, 0.95);
        println!(
            "  {:<9} p50 {:>6.2} ms  p95 {:>6.2} ms{}",
            format!("{retriever:?}"),
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            if retriever == Retriever::Dense {
                format!(
                    "  ({:.2}× the bare scan)",
                    p95.as_secs_f64() / bare_p95.as_secs_f64().max(1e-9)
                )
            } else {
                String::new()
            }
        );
    }
    // Recall@10: how many of the exact scan's best ten dense search returns.
    let queries = 200;
    let mut found = 0;
    for q in 0..queries {
        let (_, qv) = query(vectors, vocab, rng, q * 7 + 1);
        let exact = index.exact_nearest(&qv, 10);
        let got = index.search("", Some(&qv), 10, Retriever::Dense).unwrap();
        found += got
            .hits
            .iter()
            .filter(|h| exact.contains(&h.chunk_id))
            .count();
    }
    println!(
        "  recall@10 {:.3} ({} against the exact scan, {queries} queries)",
        found as f64 / (queries * 10) as f64,
        if approximate {
            "approximate index"
        } else {
            "exact scan"
        }
    );
}

async fn ingestion() {
    let Some(model_dir) = knowledge::embed::default_model_dir().filter(|d| {
        knowledge::models::ModelPaths::new(d)
            .missing(&knowledge::models::MINILM)
            .is_empty()
    }) else {
        println!("ingestion: skipped, no embedding model (run `frontdesk models install`)");
        return;
    };
    // 20 Markdown files of 6 sections × 3 paragraphs of real-looking prose.
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let sentence = |i: usize, j: usize| {
        format!(
            "Orders placed before {j} pm ship the same day from warehouse {i}, and tracking details arrive by email within an hour of dispatch."
        )
    };
    for f in 0..20 {
        let mut md = format!("# Handbook {f}\n\n");
        for s in 0..6 {
            md.push_str(&format!("## Topic {s}\n\n"));
            for p in 0..3 {
                let para: Vec<String> = (0..4).map(|k| sentence(f * 100 + s * 10 + p, k)).collect();
                md.push_str(&para.join(" "));
                md.push_str("\n\n");
            }
        }
        std::fs::write(docs.join(format!("handbook-{f}.md")), md).unwrap();
    }
    let bots = dir.path().join("bots");
    std::fs::create_dir_all(&bots).unwrap();
    std::fs::write(
        bots.join("b.toml"),
        "workspace = \"w\"\nname = \"b\"\nsystem_prompt = \"x\"\nlanguage = \"en\"\n",
    )
    .unwrap();
    let mut settings = frontdesk::config::Settings::defaults(&[]);
    settings.data_dir = dir.path().join("data");
    settings.bots.dir = bots;
    settings.database.url = frontdesk::config::DatabaseUrl::Sqlite(dir.path().join("db.sqlite"));
    settings.embedding.model_dir = model_dir.clone();
    let app = frontdesk::app::open(settings, &[]).await.unwrap();
    let bot = {
        let mut conn = app.db.get().await.unwrap();
        store::models::bot::Bot::find_by_name(&mut conn, "b")
            .await
            .unwrap()
            .remove(0)
    };
    let embedder = app
        .knowledge
        .embedder(&knowledge::models::MINILM)
        .await
        .unwrap();
    let started = Instant::now();
    let report = app
        .knowledge
        .ingest_paths(&app.db, &bot, &[docs], &frontdesk::kb::Quiet)
        .await
        .unwrap();
    let end_to_end = started.elapsed().as_secs_f64();
    // The same texts through the model alone.
    let texts: Vec<String> = {
        let mut conn = app.db.get().await.unwrap();
        let ids: Vec<String> = store::models::knowledge::ChunkRow::ids(&mut conn, &bot.id, "")
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        store::models::knowledge::ChunkRow::by_ids(&mut conn, &bot.id, &ids)
            .await
            .unwrap()
            .into_iter()
            .map(|c| format!("{}\n{}", c.heading_path, c.body))
            .collect()
    };
    let started = Instant::now();
    let bare = tokio::task::spawn_blocking(move || {
        embedder.embed(&texts).unwrap();
        texts.len()
    })
    .await
    .unwrap();
    let bare_secs = started.elapsed().as_secs_f64();
    println!(
        "ingestion: {} files, {} chunks in {:.1} s end to end = {:.1} chunks/s; the model alone embeds the same texts at {:.1} texts/s ({:.0}% of end-to-end time is embedding)",
        report.ingested,
        report.chunks,
        end_to_end,
        report.chunks as f64 / end_to_end,
        bare as f64 / bare_secs,
        100.0 * bare_secs / end_to_end
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    for size in sizes {
        tokio::task::spawn_blocking(move || search_latency(size))
            .await
            .unwrap();
    }
    ingestion().await;
}
