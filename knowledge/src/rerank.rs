//! A cross-encoder reranker: reads the question and a candidate passage
//! together and scores how well the passage answers it (a logit: above 0
//! relevant, below 0 not). Much better at putting the right entry first
//! than comparing two separately computed vectors, and much slower, so it
//! only scores the best few candidates of a hybrid search.
//!
//! The model is cross-encoder/ms-marco-MiniLM-L-12-v2 (int8), installed by
//! `frontdesk models install` ([`crate::models`]). Like [`crate::embed`],
//! everything here blocks.

use std::sync::Mutex;

use fastembed::{
    RerankInitOptionsUserDefined, TextRerank, TokenizerFiles, UserDefinedRerankingModel,
};

use crate::embed::{EmbedError, load_runtime};
use crate::models::{ModelPaths, RERANKER_ID};

/// Longest input (question and passage together), in tokens: passages are
/// cut past it. The candidates are chunks sized for the embedding model
/// (256 tokens at most), so little is lost.
pub const MAX_TOKENS: usize = 320;
/// Pairs per ONNX run.
const BATCH: usize = 16;

/// The loaded reranker. One inference at a time.
pub struct Reranker {
    model: Mutex<TextRerank>,
}

impl std::fmt::Debug for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reranker")
            .field("model", &RERANKER_ID)
            .finish()
    }
}

impl Reranker {
    /// Loads the runtime and the reranker from `paths`.
    pub fn load(paths: &ModelPaths, threads: Option<usize>) -> Result<Reranker, EmbedError> {
        let missing = paths.missing_reranker();
        if !missing.is_empty() {
            return Err(EmbedError::NotInstalled {
                missing: format!(
                    "the reranker: {} of its files missing in {}",
                    missing.len(),
                    paths.dir.display()
                ),
            });
        }
        load_runtime(paths)?;
        let read = |name: &str| {
            std::fs::read(paths.reranker_file(name))
                .map_err(|e| EmbedError::Model(format!("reranker {name}: {e}")))
        };
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let model = UserDefinedRerankingModel::new(read("model.onnx")?, tokenizer_files);
        let mut options = RerankInitOptionsUserDefined::new().with_max_length(MAX_TOKENS);
        if let Some(threads) = threads {
            options = options.with_intra_threads(threads);
        }
        let model = TextRerank::try_new_from_user_defined(model, options)
            .map_err(|e| EmbedError::Model(format!("reranker: {e}")))?;
        Ok(Reranker {
            model: Mutex::new(model),
        })
    }

    /// The logit of each passage for `query`, in the passages' order.
    pub fn score<S: AsRef<str> + Send + Sync>(
        &self,
        query: &str,
        passages: &[S],
    ) -> Result<Vec<f32>, EmbedError> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let docs: Vec<&str> = passages.iter().map(AsRef::as_ref).collect();
        let results = {
            let mut model = self
                .model
                .lock()
                .map_err(|_| EmbedError::Inference("reranker lock poisoned".into()))?;
            model
                .rerank(query, &docs, false, Some(BATCH))
                .map_err(|e| EmbedError::Inference(e.to_string()))?
        };
        let mut scores = vec![f32::NEG_INFINITY; passages.len()];
        for r in results {
            if let Some(slot) = scores.get_mut(r.index) {
                *slot = r.score;
            }
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::default_model_dir;

    #[test]
    fn the_answering_passage_scores_above_the_others() {
        let Some(dir) = std::env::var_os("FRONTDESK_TEST_MODEL_DIR")
            .map(std::path::PathBuf::from)
            .or_else(default_model_dir)
        else {
            return;
        };
        let reranker = match Reranker::load(&ModelPaths::new(dir), None) {
            Ok(r) => r,
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI needs the reranker: {e}"
                );
                eprintln!("\n!!! SKIPPING reranker test: {e}\n");
                return;
            }
        };
        let scores = reranker
            .score(
                "how long do refunds take?",
                &[
                    "We ship to every country in Europe within five working days.",
                    "Refunds reach your account within 3 to 5 business days after we receive the parcel.",
                    "Our shop in Lyon opens at nine.",
                ],
            )
            .expect("score");
        assert_eq!(scores.len(), 3);
        assert!(scores[1] > 0.0, "{scores:?}");
        assert!(
            scores[1] > scores[0] + 3.0 && scores[1] > scores[2] + 3.0,
            "{scores:?}"
        );
        assert!(
            reranker
                .score("q", &[] as &[&str])
                .expect("empty")
                .is_empty()
        );
    }
}
