//! Which embedding model a bot uses, loading the models, and keeping a
//! bot's stored vectors of the model it should use.
//!
//! When a bot's embedding model changes (`embedding.model`, or the bot's
//! language, which picks the default model), its chunks are re-embedded in
//! the background while search keeps using the old vectors with the old
//! model: the new vectors are staged beside the old ones in SQL, a batch at
//! a time, and swapped in for every chunk at once in one transaction that
//! bumps the bot's knowledge generation. Every node's index then rebuilds
//! itself for the new model on its next search. Chunks that were stored
//! without vectors (the model was missing then) are filled the same way.
//!
//! Any number of nodes may do this at once: staging the same vectors twice
//! is harmless, and the swap only happens at the generation the staging
//! started from, so an ingest meanwhile sends it round again for the new
//! chunks.

use std::sync::Arc;
use std::time::Duration;

use knowledge::chunk::{Chunk, ChunkKind};
use knowledge::embed::{EmbedError, Embedder};
use knowledge::extract::Location;
use knowledge::models::{EmbeddingModel, default_embedding_model};
use store::db::Db;
use store::models::bot::Bot;
use store::models::knowledge::{ChunkRow, pack_vectors};

use super::{EmbedderCell, KbError, Knowledge, Progress, join_err, model_inputs};

/// Chunks embedded and staged per transaction.
const STAGE_BATCH: i64 = 64;
/// Attempts to swap before giving up until the next round (each failed
/// attempt means the bot's knowledge changed meanwhile).
const SWAP_ATTEMPTS: usize = 5;
/// How often the server looks for bots whose vectors need a change.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// What [`Knowledge::change_model`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChange {
    /// Every chunk already has vectors of the bot's model.
    Current,
    /// `embedded` chunks were embedded with `model`, and the bot's search
    /// now uses it.
    Switched {
        model: &'static str,
        embedded: usize,
    },
}

impl Knowledge {
    /// Uses `model` for every bot (`embedding.model`), whatever its
    /// language.
    pub fn with_model(mut self, model: &'static EmbeddingModel) -> Self {
        self.model = Some(model);
        self
    }

    /// The embedding model `bot` should use. When its stored vectors are of
    /// another model, [`Knowledge::change_model`] re-embeds them.
    pub fn model_for(&self, bot: &Bot) -> &'static EmbeddingModel {
        self.model
            .unwrap_or_else(|| default_embedding_model(bot.language))
    }

    /// An embedding model, loaded once (about half a second). When it is
    /// missing, says so once, loudly, with the command that fetches it.
    pub async fn embedder(
        &self,
        model: &'static EmbeddingModel,
    ) -> Result<Arc<Embedder>, EmbedError> {
        let cell = {
            let mut cells = self
                .embedders
                .lock()
                .map_err(|_| EmbedError::Model("model table lock poisoned".into()))?;
            cells.entry(model.id).or_default().clone()
        };
        cell.get_or_init(|| {
            let paths = self.model_paths.clone();
            async move {
                let loaded =
                    tokio::task::spawn_blocking(move || Embedder::load(&paths, model, None))
                        .await
                        .unwrap_or_else(|e| Err(EmbedError::Model(e.to_string())));
                match &loaded {
                    Ok(_) => tracing::info!(model = model.id, "embedding model loaded"),
                    Err(e) => tracing::error!(
                        model = model.id,
                        error = %e,
                        "SEARCH IS DEGRADED TO FULL TEXT (BM25) ONLY for bots of this model"
                    ),
                }
                loaded.map(Arc::new)
            }
        })
        .await
        .clone()
    }

    /// Whether the embedding models tried so far loaded (`None`: none
    /// tried yet), without waiting: the first failure, if any.
    pub fn embedder_status(&self) -> Option<Result<(), String>> {
        let cells: Vec<EmbedderCell> = self.embedders.lock().ok()?.values().cloned().collect();
        let tried: Vec<Result<(), String>> = cells
            .iter()
            .filter_map(|c| c.get())
            .map(|r| r.as_ref().map(|_| ()).map_err(ToString::to_string))
            .collect();
        if tried.is_empty() {
            return None;
        }
        Some(tried.into_iter().collect())
    }

    /// `None` when `bot`'s vectors work; otherwise why not.
    pub async fn degraded(&self, bot: &Bot) -> Option<String> {
        self.embedder(self.model_for(bot))
            .await
            .err()
            .map(|e| e.to_string())
    }

    /// Gives every chunk of `bot` vectors of [`Knowledge::model_for`] and
    /// puts them in use at once, while search goes on with the vectors it
    /// has. Fails when that model is not installed (search then stays as it
    /// is).
    pub async fn change_model(
        &self,
        db: &Db,
        bot: &Bot,
        progress: &dyn Progress,
    ) -> Result<ModelChange, KbError> {
        let model = self.model_for(bot);
        let mut embedded = 0;
        for _ in 0..SWAP_ATTEMPTS {
            let generation = {
                let mut conn = db.get().await?;
                // Every chunk's vectors in use are of this model (or the bot
                // has no chunks): nothing to do.
                if ChunkRow::count_not_of(&mut conn, &bot.id, model.id).await? == 0 {
                    return Ok(if embedded == 0 {
                        ModelChange::Current
                    } else {
                        // Another node swapped meanwhile.
                        ModelChange::Switched {
                            model: model.id,
                            embedded,
                        }
                    });
                }
                ChunkRow::generation(&mut conn, &bot.id).await?
            };
            let embedder = self.embedder(model).await?;
            loop {
                let rows = {
                    let mut conn = db.get().await?;
                    ChunkRow::lacking(&mut conn, &bot.id, model.id, STAGE_BATCH).await?
                };
                if rows.is_empty() {
                    break;
                }
                if embedded == 0 {
                    tracing::info!(bot = %bot.name, model = model.id, "re-embedding the bot's knowledge for its model; search uses the old vectors until it is done");
                }
                let inputs: Vec<Vec<String>> = rows
                    .iter()
                    .map(|row| model_inputs(model, &chunk_of(row)))
                    .collect();
                let texts: Vec<String> = inputs.iter().flatten().cloned().collect();
                let embedder = embedder.clone();
                let mut vectors = tokio::task::spawn_blocking(move || embedder.embed(&texts))
                    .await
                    .map_err(|e| join_err(&e))??
                    .into_iter();
                let staged: Vec<(String, Vec<u8>)> = rows
                    .iter()
                    .zip(&inputs)
                    .map(|(row, texts)| {
                        let of_row: Vec<Vec<f32>> = vectors.by_ref().take(texts.len()).collect();
                        (row.id.clone(), pack_vectors(&of_row))
                    })
                    .collect();
                let mut conn = db.get().await?;
                ChunkRow::stage(&mut conn, model.id, &staged).await?;
                embedded += rows.len();
                progress.embedded(rows.len());
            }
            let swapped = {
                let mut conn = db.get().await?;
                ChunkRow::switch_model(&mut conn, &bot.id, model.id, generation).await?
            };
            if let Some(generation) = swapped {
                tracing::info!(bot = %bot.name, model = model.id, embedded, generation, "the bot's search now uses its model's vectors");
                self.index(db, bot).await?;
                return Ok(ModelChange::Switched {
                    model: model.id,
                    embedded,
                });
            }
        }
        Err(KbError::Join(format!(
            "the knowledge of bot {} kept changing while it was re-embedded for {}; it is tried again later",
            bot.name, model.id
        )))
    }
}

/// A stored chunk as it was chunked, for embedding it again.
fn chunk_of(row: &ChunkRow) -> Chunk {
    Chunk {
        kind: if row.kind == "faq" {
            ChunkKind::Faq
        } else {
            ChunkKind::Passage
        },
        title: row.title.clone(),
        heading_path: row
            .heading_path
            .split(" › ")
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        text: row.body.clone(),
        location: Location::default(),
        entry_id: None,
        tokens: usize::try_from(row.tokens).unwrap_or(0),
    }
}

/// Runs in the server: now and every minute, gives every bot's knowledge
/// vectors of its model ([`Knowledge::change_model`]). Failures are logged
/// and retried on the next round.
pub async fn keep_vectors_current(knowledge: Arc<Knowledge>, db: Db) {
    loop {
        let bots = match db.get().await {
            Ok(mut conn) => Bot::all(&mut conn).await,
            Err(e) => Err(e),
        };
        match bots {
            Ok(bots) => {
                for bot in &bots {
                    match knowledge.change_model(&db, bot, &super::Quiet).await {
                        Ok(_) => {}
                        // A missing model was reported loudly when it failed
                        // to load; once a minute would be noise.
                        Err(KbError::Embed(error)) => {
                            tracing::debug!(bot = %bot.name, %error, "the bot's model is not available; its vectors wait");
                        }
                        Err(error) => {
                            tracing::warn!(bot = %bot.name, %error, "cannot re-embed the bot's knowledge for its model yet");
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list bots to check their vectors"),
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_chunk_embeds_as_it_was_chunked() {
        let original = Chunk {
            kind: ChunkKind::Passage,
            title: None,
            heading_path: vec!["Returns".into(), "Refunds".into()],
            text: "Refunds take five days.".into(),
            location: Location::default(),
            entry_id: None,
            tokens: 6,
        };
        let row = ChunkRow {
            id: "c".into(),
            document_id: "d".into(),
            bot_id: "b".into(),
            ordinal: 0,
            kind: "passage".into(),
            doc_ref: "doc".into(),
            title: None,
            heading_path: original.heading_label(),
            body: original.text.clone(),
            page: None,
            line: None,
            tokens: 6,
            content_hash: original.content_hash(),
            embeddings: None,
            embedding_model: None,
        };
        let again = chunk_of(&row);
        assert_eq!(again.embedding_text(), original.embedding_text());
        assert_eq!(again.content_hash(), original.content_hash());
    }
}
