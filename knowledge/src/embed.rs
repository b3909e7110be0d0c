//! Local sentence embeddings through fastembed on a dynamically loaded ONNX
//! Runtime, with any model of [`crate::models::EMBEDDING_MODELS`].
//!
//! Everything here blocks: call it from `spawn_blocking` or a worker thread,
//! never from an async task.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use fastembed::{
    InitOptionsUserDefined, Pooling, QuantizationMode, TextEmbedding, TokenizerFiles,
    UserDefinedEmbeddingModel,
};

use crate::models::{DIMENSIONS, EmbeddingModel, MINILM, ModelPaths, Role};

/// Texts per ONNX run. Inputs are sorted by length first, so a batch pads to
/// similar lengths.
const BATCH: usize = 32;

/// Why embeddings are unavailable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "the embedding model is not installed ({missing}); run `frontdesk models install` to fetch it; until then search uses full-text (BM25) only"
    )]
    NotInstalled { missing: String },
    #[error(
        "cannot load the ONNX Runtime from {path}: {reason}; run `frontdesk models install` to repair it"
    )]
    Runtime { path: PathBuf, reason: String },
    #[error("cannot load the embedding model: {0}; run `frontdesk models install` to repair it")]
    Model(String),
    #[error("embedding failed: {0}")]
    Inference(String),
}

/// The loaded model. Cheap to share (`Arc`); one inference runs at a time,
/// using every core ONNX Runtime is given.
pub struct Embedder {
    model: Mutex<TextEmbedding>,
    which: &'static EmbeddingModel,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.which.id)
            .finish()
    }
}

/// ONNX Runtime can be loaded once per process; remember how that went.
static RUNTIME: OnceLock<Result<(), String>> = OnceLock::new();

pub(crate) fn load_runtime(paths: &ModelPaths) -> Result<(), EmbedError> {
    let path = paths.runtime();
    RUNTIME
        .get_or_init(|| ort::init_from(&path).map(|_| ()).map_err(|e| e.to_string()))
        .clone()
        .map_err(|reason| EmbedError::Runtime { path, reason })
}

impl Embedder {
    /// Loads the runtime and `model` from `paths` (about half a second).
    /// `threads` caps ONNX Runtime's intra-op threads (`None`: all cores).
    pub fn load(
        paths: &ModelPaths,
        model: &'static EmbeddingModel,
        threads: Option<usize>,
    ) -> Result<Embedder, EmbedError> {
        let which = model;
        let missing = paths.missing(model);
        if !missing.is_empty() {
            let missing = format!(
                "{}: {} of its files missing in {}",
                model.id,
                missing.len(),
                paths.dir.display()
            );
            return Err(EmbedError::NotInstalled { missing });
        }
        load_runtime(paths)?;
        let read = |name: &str| {
            std::fs::read(paths.model_file(model, name))
                .map_err(|e| EmbedError::Model(format!("{}/{name}: {e}", model.id)))
        };
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        // The int8 export quantizes weights statically; batches do not change
        // a text's vector beyond float noise (tested below).
        let model = UserDefinedEmbeddingModel::new(read("model.onnx")?, tokenizer_files)
            .with_pooling(Pooling::Mean)
            .with_quantization(QuantizationMode::Static);
        let mut options = InitOptionsUserDefined::new().with_max_length(which.max_tokens);
        if let Some(threads) = threads {
            options = options.with_intra_threads(threads);
        }
        let model = TextEmbedding::try_new_from_user_defined(model, options)
            .map_err(|e| EmbedError::Model(e.to_string()))?;
        Ok(Embedder {
            model: Mutex::new(model),
            which,
        })
    }

    /// Which model this is.
    pub fn model(&self) -> &'static EmbeddingModel {
        self.which
    }

    /// The unit-length vector of one question. Blocks.
    pub fn embed_query(&self, question: &str) -> Result<Vec<f32>, EmbedError> {
        let text = self.which.input(Role::Query, question);
        self.embed(&[text])?
            .pop()
            .ok_or_else(|| EmbedError::Inference("no vector for the question".into()))
    }

    /// Unit-length vectors for `texts`, in order, read as the model's
    /// inputs: give each its [`EmbeddingModel::input`] prefix first. Blocks.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Sort by length so each batch pads little, then restore the order.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].as_ref().len());
        let sorted: Vec<&str> = order.iter().map(|&i| texts[i].as_ref()).collect();
        let vectors = {
            let mut model = self
                .model
                .lock()
                .map_err(|_| EmbedError::Inference("model lock poisoned".into()))?;
            model
                .embed(&sorted, Some(BATCH))
                .map_err(|e| EmbedError::Inference(e.to_string()))?
        };
        if vectors.len() != texts.len() {
            return Err(EmbedError::Inference(format!(
                "{} vectors for {} texts",
                vectors.len(),
                texts.len()
            )));
        }
        let mut out = vec![Vec::new(); texts.len()];
        for (slot, mut v) in order.into_iter().zip(vectors) {
            if v.len() != DIMENSIONS {
                return Err(EmbedError::Inference(format!(
                    "vector of {} dimensions, expected {DIMENSIONS}",
                    v.len()
                )));
            }
            normalize(&mut v);
            out[slot] = v;
        }
        Ok(out)
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Counts tokens the way the embedding model does, to size chunks. Without
/// the installed tokenizer it estimates (words × 4/3), which only shifts
/// chunk boundaries.
#[derive(Debug)]
pub enum TokenCounter {
    Exact(Box<tokenizers::Tokenizer>),
    Estimate,
}

impl TokenCounter {
    /// MiniLM's tokenizer if installed, else the estimate. Chunks are sized
    /// in its tokens whatever model embeds them, to fit a 256-token window.
    pub fn load(paths: &ModelPaths) -> TokenCounter {
        match tokenizers::Tokenizer::from_file(paths.model_file(&MINILM, "tokenizer.json")) {
            Ok(mut t) => {
                // Count every token, not the model's truncated window.
                let _ = t.with_truncation(None);
                t.with_padding(None);
                TokenCounter::Exact(Box::new(t))
            }
            Err(_) => TokenCounter::Estimate,
        }
    }

    /// Tokens in `text`, without the special tokens the model adds.
    pub fn count(&self, text: &str) -> usize {
        match self {
            TokenCounter::Exact(t) => match t.encode_fast(text, false) {
                Ok(enc) => enc.len(),
                Err(_) => estimate(text),
            },
            TokenCounter::Estimate => estimate(text),
        }
    }
}

/// About one token per short word, more for long ones; additive over
/// words, so parts never sum to more than their whole.
fn estimate(text: &str) -> usize {
    text.split_whitespace()
        .map(|w| 1 + w.chars().count() / 8)
        .sum()
}

/// Where tests find the model: `FRONTDESK_TEST_MODEL_DIR`, else the default
/// `embedding.model_dir` (`$XDG_CACHE_HOME` or `~/.cache`, `frontdesk/models`).
pub fn default_model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("frontdesk/models"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/frontdesk/models"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::models::Role;
    use std::sync::Arc;

    /// The installed model, or `None` with a loud message (a failure in CI).
    pub(crate) fn test_embedder() -> Option<Arc<Embedder>> {
        static SHARED: OnceLock<Option<Arc<Embedder>>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let dir = std::env::var_os("FRONTDESK_TEST_MODEL_DIR")
                    .map(PathBuf::from)
                    .or_else(default_model_dir)?;
                match Embedder::load(&ModelPaths::new(dir), &MINILM, None) {
                    Ok(e) => Some(Arc::new(e)),
                    Err(e) => {
                        assert!(
                            std::env::var("CI").as_deref() != Ok("true"),
                            "CI needs the embedding model: {e}"
                        );
                        eprintln!("\n!!! SKIPPING embedding tests: {e}\n");
                        None
                    }
                }
            })
            .clone()
    }

    #[test]
    fn similar_sentences_are_closer_and_batches_do_not_change_vectors() {
        let Some(embedder) = test_embedder() else {
            return;
        };
        let texts = [
            "How do I return a parcel?",
            "What is your returns policy for packages?",
            "The capital of France is Paris, a city on the Seine with many museums and bridges.",
        ];
        let v = embedder.embed(&texts).expect("embed");
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|v| v.len() == DIMENSIONS));
        assert!(
            dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.2,
            "{} vs {}",
            dot(&v[0], &v[1]),
            dot(&v[0], &v[2])
        );
        let alone = embedder.embed(&[texts[0]]).expect("embed");
        assert!(
            dot(&alone[0], &v[0]) > 0.999,
            "batching changed the vector: {}",
            dot(&alone[0], &v[0])
        );
    }

    #[test]
    fn the_multilingual_model_matches_swedish_questions() {
        let Some(dir) = std::env::var_os("FRONTDESK_TEST_MODEL_DIR")
            .map(PathBuf::from)
            .or_else(default_model_dir)
        else {
            return;
        };
        let model = &crate::models::MULTILINGUAL_E5;
        let embedder = match Embedder::load(&ModelPaths::new(dir), model, None) {
            Ok(e) => e,
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI needs the multilingual model: {e}"
                );
                eprintln!("\n!!! SKIPPING the multilingual model's test: {e}\n");
                return;
            }
        };
        let passages: Vec<String> = [
            "Alla vattenkokare har två års garanti mot fabrikationsfel.",
            "Vi skickar till alla länder i Europa inom tre arbetsdagar.",
            "Returer ska skickas inom trettio dagar efter leveransen.",
        ]
        .iter()
        .map(|p| model.input(Role::Passage, p))
        .collect();
        let v = embedder.embed(&passages).expect("embed");
        assert!(v.iter().all(|v| v.len() == DIMENSIONS));
        let best = |q: &str| {
            let q = embedder.embed_query(q).expect("query");
            (0..v.len())
                .max_by(|&a, &b| dot(&q, &v[a]).total_cmp(&dot(&q, &v[b])))
                .expect("best")
        };
        assert_eq!(best("Hur lång är garantin på vattenkokaren?"), 0);
        assert_eq!(best("Levererar ni till Frankrike?"), 1);
        assert_eq!(
            best("Hur länge kan jag ångra mitt köp och skicka tillbaka varan?"),
            2
        );
        let alone = embedder.embed(&passages[..1]).expect("embed");
        assert!(dot(&alone[0], &v[0]) > 0.999, "batching changed the vector");
    }

    /// Customer questions written for this test (not from any benchmark):
    /// pairs that ask the same thing in other words, and pairs that do not
    /// (some on the same topic). Each model's `same_question` bar must
    /// keep them apart, and its `similar_case` bar must keep the related
    /// pairs above it.
    #[test]
    fn questions_of_one_meaning_meet_the_bar() {
        let Some(dir) = std::env::var_os("FRONTDESK_TEST_MODEL_DIR")
            .map(PathBuf::from)
            .or_else(default_model_dir)
        else {
            return;
        };
        let same = [
            (
                "Do you deliver wedding cakes to Malmö?",
                "Can you deliver a wedding cake to Malmö?",
            ),
            (
                "How do I reset my password?",
                "I forgot my password, how can I change it?",
            ),
            (
                "Are you open on Sundays?",
                "What are your opening hours on Sunday?",
            ),
            ("Can I pay with PayPal?", "Do you accept PayPal payments?"),
            (
                "Is there a student discount?",
                "Do students get a discount?",
            ),
            (
                "How long does the battery last?",
                "What is the battery life?",
            ),
            (
                "Where is my order?",
                "My order hasn't arrived yet, where is it?",
            ),
            (
                "Can I cancel my subscription?",
                "How do I cancel my subscription?",
            ),
        ];
        let different = [
            (
                "Do you deliver wedding cakes to Malmö?",
                "Can I pay with an invoice for my company order?",
            ),
            ("How do I reset my password?", "Are you open on Sundays?"),
            (
                "Is there a student discount?",
                "How long does the battery last?",
            ),
            (
                "Do you ship to Canada?",
                "How long does shipping to Germany take?",
            ),
            (
                "Can I return a used item?",
                "Can I exchange a gift without the receipt?",
            ),
            (
                "Is there parking for electric cars near your shop?",
                "Do you deliver wedding cakes to Malmö?",
            ),
            (
                "Can I cancel my subscription?",
                "Can I pause my subscription for a month?",
            ),
            (
                "Where is my order?",
                "Can I change the delivery address of my order?",
            ),
        ];
        let related = [
            (
                "Is there parking for electric cars near your shop?",
                "Where can I charge my electric car near the bakery?",
            ),
            (
                "Can I book the bakery for a private party?",
                "Is it possible to rent your shop for a private event?",
            ),
        ];
        for model in crate::models::EMBEDDING_MODELS {
            let embedder = match Embedder::load(&ModelPaths::new(&dir), model, None) {
                Ok(e) => e,
                Err(e) => {
                    assert!(
                        std::env::var("CI").as_deref() != Ok("true"),
                        "CI needs {}: {e}",
                        model.id
                    );
                    eprintln!("\n!!! SKIPPING {}: {e}\n", model.id);
                    continue;
                }
            };
            let cosine = |(a, b): (&str, &str)| {
                let a = embedder.embed_query(a).expect("query");
                let b = embedder.embed_query(b).expect("query");
                dot(&a, &b)
            };
            let same: Vec<f32> = same.iter().map(|p| cosine(*p)).collect();
            let different: Vec<f32> = different.iter().map(|p| cosine(*p)).collect();
            let related: Vec<f32> = related.iter().map(|p| cosine(*p)).collect();
            eprintln!(
                "{}: same {same:.3?}\ndifferent {different:.3?}\nrelated {related:.3?}",
                model.id
            );
            let lowest_same = same.iter().copied().fold(f32::MAX, f32::min);
            let highest_different = different.iter().copied().fold(f32::MIN, f32::max);
            assert!(
                lowest_same >= model.same_question,
                "{}: {lowest_same}",
                model.id
            );
            assert!(
                highest_different < model.same_question,
                "{}: {highest_different}",
                model.id
            );
            for score in related {
                assert!(
                    score >= model.similar_case,
                    "{}: related at {score}",
                    model.id
                );
            }
        }
    }

    #[test]
    fn token_counter_counts_without_truncation() {
        let Some(dir) = default_model_dir() else {
            return;
        };
        let counter = TokenCounter::load(&ModelPaths::new(dir));
        let long = "word ".repeat(1000);
        let n = counter.count(&long);
        assert!(n >= 1000, "{n}");
    }
}
