//! Knowledge documents and chunks: the source of truth every node's search
//! index is built from.
//!
//! A document is replaced whole: its old chunks are deleted and the new ones
//! inserted in one transaction that also bumps the bot's
//! `knowledge_generation`, so an index never sees half a document and knows
//! when it is behind.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;

use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::{bots, knowledge_chunks, knowledge_documents};

/// Bumps and returns the bot's knowledge generation, inside a transaction on
/// either backend's connection.
macro_rules! bump {
    ($conn:ident, $bot_id:ident) => {
        diesel::update(bots::table.find($bot_id))
            .set(bots::knowledge_generation.eq(bots::knowledge_generation + 1))
            .returning(bots::knowledge_generation)
            .get_result::<i64>($conn)
            .await
    };
}

/// The bot's chunks that have no vectors of `model`, neither in use nor
/// staged, as a query on either backend.
macro_rules! lacking {
    ($bot_id:expr, $model:expr) => {
        knowledge_chunks::table
            .filter(knowledge_chunks::bot_id.eq($bot_id))
            .filter(
                knowledge_chunks::embedding_model
                    .is_null()
                    .or(knowledge_chunks::embedding_model.ne($model)),
            )
            .filter(
                knowledge_chunks::next_embedding_model
                    .is_null()
                    .or(knowledge_chunks::next_embedding_model.ne($model)),
            )
    };
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = knowledge_documents)]
pub struct Document {
    pub id: String,
    pub bot_id: String,
    /// The path as ingested, or the uploaded file name.
    pub source: String,
    /// The id search results report (the file name).
    pub doc_ref: String,
    /// `pdf`, `docx`, `html`, `markdown`, `text`, `faq-csv`, `faq-jsonl`.
    pub format: String,
    pub title: Option<String>,
    /// sha256 of the file's bytes.
    pub content_hash: String,
    pub size_bytes: i64,
    pub chunk_count: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Pages of a paged document (PDF).
    pub page_count: Option<i32>,
    /// Of those, the pages that paint but gave no text.
    pub pages_without_text: Option<i32>,
}

impl Document {
    /// What was lost in extraction, said for the business (`12 of 40 pages
    /// without text: scanned? needs OCR`); `None` when nothing was.
    pub fn loss(&self) -> Option<String> {
        let lost = u32::try_from(self.pages_without_text?).ok()?;
        let total = u32::try_from(self.page_count?).ok()?;
        (lost > 0).then(|| knowledge::extract::loss_line(lost, total))
    }
}

/// A stored chunk.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = knowledge_chunks)]
pub struct ChunkRow {
    pub id: String,
    pub document_id: String,
    pub bot_id: String,
    pub ordinal: i32,
    /// `faq` or `passage`.
    pub kind: String,
    pub doc_ref: String,
    pub title: Option<String>,
    pub heading_path: String,
    pub body: String,
    pub page: Option<i32>,
    pub line: Option<i32>,
    pub tokens: i32,
    pub content_hash: String,
    /// Little-endian f32 vectors back to back.
    pub embeddings: Option<Vec<u8>>,
    pub embedding_model: Option<String>,
}

/// A stored chunk without its vectors.
#[derive(Queryable, Selectable)]
#[diesel(table_name = knowledge_chunks)]
struct ChunkText {
    id: String,
    document_id: String,
    bot_id: String,
    ordinal: i32,
    kind: String,
    doc_ref: String,
    title: Option<String>,
    heading_path: String,
    body: String,
    page: Option<i32>,
    line: Option<i32>,
    tokens: i32,
    content_hash: String,
    embedding_model: Option<String>,
}

impl ChunkText {
    fn into_row(self) -> ChunkRow {
        ChunkRow {
            id: self.id,
            document_id: self.document_id,
            bot_id: self.bot_id,
            ordinal: self.ordinal,
            kind: self.kind,
            doc_ref: self.doc_ref,
            title: self.title,
            heading_path: self.heading_path,
            body: self.body,
            page: self.page,
            line: self.line,
            tokens: self.tokens,
            content_hash: self.content_hash,
            embeddings: None,
            embedding_model: self.embedding_model,
        }
    }
}

/// A chunk to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub kind: &'static str,
    pub doc_ref: String,
    pub title: Option<String>,
    pub heading_path: String,
    pub body: String,
    pub page: Option<i32>,
    pub line: Option<i32>,
    pub tokens: i32,
    pub content_hash: String,
    pub embeddings: Option<Vec<u8>>,
    pub embedding_model: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = knowledge_chunks, treat_none_as_null = true)]
struct ChunkInsert<'a> {
    id: String,
    document_id: &'a str,
    bot_id: &'a str,
    ordinal: i32,
    kind: &'a str,
    doc_ref: &'a str,
    title: Option<&'a str>,
    heading_path: &'a str,
    body: &'a str,
    page: Option<i32>,
    line: Option<i32>,
    tokens: i32,
    content_hash: &'a str,
    embeddings: Option<&'a [u8]>,
    embedding_model: Option<&'a str>,
}

/// A document to store, with its chunks.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub source: String,
    pub doc_ref: String,
    pub format: String,
    pub title: Option<String>,
    pub content_hash: String,
    pub size_bytes: i64,
    /// Pages of a paged document (PDF), and those that gave no text.
    pub page_count: Option<i32>,
    pub pages_without_text: Option<i32>,
}

/// Packs vectors as little-endian f32, back to back.
pub fn pack_vectors(vectors: &[Vec<f32>]) -> Vec<u8> {
    vectors
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

/// Unpacks [`pack_vectors`]; `None` if the length is not a multiple of `dims`.
pub fn unpack_vectors(bytes: &[u8], dims: usize) -> Option<Vec<Vec<f32>>> {
    let width = dims * 4;
    if width == 0 || !bytes.len().is_multiple_of(width) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(width)
            .map(|v| {
                v.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect(),
    )
}

impl Document {
    /// The bot's document ingested from `source`.
    pub async fn find(
        conn: &mut DbConn,
        bot_id: &str,
        source: &str,
    ) -> Result<Option<Document>, DbError> {
        Ok(db_run!(conn: {
            knowledge_documents::table
                .filter(knowledge_documents::bot_id.eq(bot_id))
                .filter(knowledge_documents::source.eq(source))
                .select(Document::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// The bot's documents, by source.
    pub async fn list(conn: &mut DbConn, bot_id: &str) -> Result<Vec<Document>, DbError> {
        Ok(db_run!(conn: {
            knowledge_documents::table
                .filter(knowledge_documents::bot_id.eq(bot_id))
                .order(knowledge_documents::source.asc())
                .select(Document::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Stores `doc` with `chunks`, replacing the bot's document of the same
    /// source and all its chunks, in one transaction that bumps the bot's
    /// knowledge generation. Returns the new generation.
    pub async fn replace(
        conn: &mut DbConn,
        bot_id: &str,
        doc: &NewDocument,
        chunks: &[NewChunk],
    ) -> Result<i64, DbError> {
        let at = now();
        let chunk_count = i32::try_from(chunks.len()).unwrap_or(i32::MAX);
        Ok(db_run!(conn: {
            conn.transaction(async |conn| {
                diesel::delete(
                    knowledge_documents::table
                        .filter(knowledge_documents::bot_id.eq(bot_id))
                        .filter(knowledge_documents::source.eq(&doc.source)),
                )
                .execute(conn)
                .await?;
                let document_id = new_id();
                diesel::insert_into(knowledge_documents::table)
                    .values((
                        knowledge_documents::id.eq(&document_id),
                        knowledge_documents::bot_id.eq(bot_id),
                        knowledge_documents::source.eq(&doc.source),
                        knowledge_documents::doc_ref.eq(&doc.doc_ref),
                        knowledge_documents::format.eq(&doc.format),
                        knowledge_documents::title.eq(&doc.title),
                        knowledge_documents::content_hash.eq(&doc.content_hash),
                        knowledge_documents::size_bytes.eq(doc.size_bytes),
                        knowledge_documents::chunk_count.eq(chunk_count),
                        knowledge_documents::page_count.eq(doc.page_count),
                        knowledge_documents::pages_without_text.eq(doc.pages_without_text),
                        knowledge_documents::created_at.eq(at),
                        knowledge_documents::updated_at.eq(at),
                    ))
                    .execute(conn)
                    .await?;
                for (batch_no, batch) in chunks.chunks(500).enumerate() {
                    let rows: Vec<ChunkInsert<'_>> = batch
                        .iter()
                        .enumerate()
                        .map(|(i, c)| ChunkInsert {
                            id: new_id(),
                            document_id: &document_id,
                            bot_id,
                            ordinal: i32::try_from(batch_no * 500 + i).unwrap_or(i32::MAX),
                            kind: c.kind,
                            doc_ref: &c.doc_ref,
                            title: c.title.as_deref(),
                            heading_path: &c.heading_path,
                            body: &c.body,
                            page: c.page,
                            line: c.line,
                            tokens: c.tokens,
                            content_hash: &c.content_hash,
                            embeddings: c.embeddings.as_deref(),
                            embedding_model: c.embedding_model.as_deref(),
                        })
                        .collect();
                    // One statement per row: diesel cannot batch-insert
                    // nullable columns on SQLite. Inside one transaction this
                    // costs little next to embedding.
                    for row in &rows {
                        diesel::insert_into(knowledge_chunks::table).values(row).execute(conn).await?;
                    }
                }
                bump!(conn, bot_id)
            })
            .await?
        }))
    }

    /// Deletes the bot's document `source` and its chunks; returns the new
    /// generation, or `None` if there was no such document.
    pub async fn delete(
        conn: &mut DbConn,
        bot_id: &str,
        source: &str,
    ) -> Result<Option<i64>, DbError> {
        Ok(db_run!(conn: {
            conn.transaction(async |conn| {
                let n = diesel::delete(
                    knowledge_documents::table
                        .filter(knowledge_documents::bot_id.eq(bot_id))
                        .filter(knowledge_documents::source.eq(source)),
                )
                .execute(conn)
                .await?;
                if n == 0 {
                    return Ok(None);
                }
                bump!(conn, bot_id).map(Some)
            })
            .await?
        }))
    }
}

impl ChunkRow {
    /// The bot's knowledge generation (0 for an unknown bot).
    pub async fn generation(conn: &mut DbConn, bot_id: &str) -> Result<i64, DbError> {
        Ok(db_run!(conn: {
            bots::table
                .find(bot_id)
                .select(bots::knowledge_generation)
                .first::<i64>(conn)
                .await
                .optional()?
                .unwrap_or(0)
        }))
    }

    /// Ids of all the bot's chunks, each with whether it has vectors from
    /// `model`.
    pub async fn ids(
        conn: &mut DbConn,
        bot_id: &str,
        model: &str,
    ) -> Result<Vec<(String, bool)>, DbError> {
        let rows: Vec<(String, Option<String>)> = db_run!(conn: {
            knowledge_chunks::table
                .filter(knowledge_chunks::bot_id.eq(bot_id))
                .select((knowledge_chunks::id, knowledge_chunks::embedding_model))
                .load(conn)
                .await?
        });
        Ok(with_model_flag(rows, model))
    }

    /// Ids of a document's chunks, each with whether it has vectors from
    /// `model`.
    pub async fn ids_of_document(
        conn: &mut DbConn,
        document_id: &str,
        model: &str,
    ) -> Result<Vec<(String, bool)>, DbError> {
        let rows: Vec<(String, Option<String>)> = db_run!(conn: {
            knowledge_chunks::table
                .filter(knowledge_chunks::document_id.eq(document_id))
                .select((knowledge_chunks::id, knowledge_chunks::embedding_model))
                .load(conn)
                .await?
        });
        Ok(with_model_flag(rows, model))
    }

    /// The bot's chunks with these ids (in no particular order). A chunk of
    /// another bot is never returned.
    pub async fn by_ids(
        conn: &mut DbConn,
        bot_id: &str,
        ids: &[String],
    ) -> Result<Vec<ChunkRow>, DbError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(500) {
            let rows: Vec<ChunkRow> = db_run!(conn: {
                knowledge_chunks::table
                    .filter(knowledge_chunks::bot_id.eq(bot_id))
                    .filter(knowledge_chunks::id.eq_any(batch))
                    .select(ChunkRow::as_select())
                    .load(conn)
                    .await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// The bot's chunks with these ids, without their vectors (`embeddings`
    /// is `None`): what a search shows of its hits, never reading the
    /// vector blobs (1.5 KiB a vector).
    pub async fn texts_by_ids(
        conn: &mut DbConn,
        bot_id: &str,
        ids: &[String],
    ) -> Result<Vec<ChunkRow>, DbError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(500) {
            let rows: Vec<ChunkText> = db_run!(conn: {
                knowledge_chunks::table
                    .filter(knowledge_chunks::bot_id.eq(bot_id))
                    .filter(knowledge_chunks::id.eq_any(batch))
                    .select(ChunkText::as_select())
                    .load(conn)
                    .await?
            });
            out.extend(rows.into_iter().map(ChunkText::into_row));
        }
        Ok(out)
    }

    /// Stored vectors of the bot's chunks with these content hashes and this
    /// model: hash → packed vectors. Lets re-ingestion skip embedding.
    pub async fn embeddings_by_hash(
        conn: &mut DbConn,
        bot_id: &str,
        hashes: &[String],
        model: &str,
    ) -> Result<HashMap<String, Vec<u8>>, DbError> {
        let mut out = HashMap::new();
        for batch in hashes.chunks(500) {
            let rows: Vec<(String, Option<Vec<u8>>)> = db_run!(conn: {
                knowledge_chunks::table
                    .filter(knowledge_chunks::bot_id.eq(bot_id))
                    .filter(knowledge_chunks::content_hash.eq_any(batch))
                    .filter(knowledge_chunks::embedding_model.eq(model))
                    .select((knowledge_chunks::content_hash, knowledge_chunks::embeddings))
                    .load(conn)
                    .await?
            });
            out.extend(rows.into_iter().filter_map(|(h, e)| Some((h, e?))));
        }
        Ok(out)
    }
}

/// Changing a bot's embedding model: vectors of the new model are staged in
/// `next_embeddings` while search keeps using `embeddings`, then swapped in
/// for every chunk at once.
impl ChunkRow {
    /// The model of most of the bot's stored vectors (the one its index
    /// serves), or `None` when it has none.
    pub async fn serving_model(conn: &mut DbConn, bot_id: &str) -> Result<Option<String>, DbError> {
        let counts: Vec<(Option<String>, i64)> = db_run!(conn: {
            knowledge_chunks::table
                .filter(knowledge_chunks::bot_id.eq(bot_id))
                .filter(knowledge_chunks::embedding_model.is_not_null())
                .group_by(knowledge_chunks::embedding_model)
                .select((knowledge_chunks::embedding_model, diesel::dsl::count_star()))
                .load(conn)
                .await?
        });
        Ok(counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            .and_then(|(model, _)| model))
    }

    /// Up to `limit` of the bot's chunks that have no vectors of `model`,
    /// neither in use nor staged.
    pub async fn lacking(
        conn: &mut DbConn,
        bot_id: &str,
        model: &str,
        limit: i64,
    ) -> Result<Vec<ChunkRow>, DbError> {
        Ok(db_run!(conn: {
            lacking!(bot_id, model)
                .order(knowledge_chunks::id)
                .limit(limit)
                .select(ChunkRow::as_select())
                .load(conn)
                .await?
        }))
    }

    /// How many of the bot's chunks search cannot use with `model`: their
    /// vectors in use are of another model, or they have none.
    pub async fn count_not_of(
        conn: &mut DbConn,
        bot_id: &str,
        model: &str,
    ) -> Result<i64, DbError> {
        Ok(db_run!(conn: {
            knowledge_chunks::table
                .filter(knowledge_chunks::bot_id.eq(bot_id))
                .filter(
                    knowledge_chunks::embedding_model
                        .is_null()
                        .or(knowledge_chunks::embedding_model.ne(model)),
                )
                .count()
                .get_result::<i64>(conn)
                .await?
        }))
    }

    /// Stages `model`'s packed vectors for these chunks (id, vectors), in
    /// one transaction. A chunk deleted meanwhile is skipped. Search does
    /// not see them until [`ChunkRow::switch_model`].
    pub async fn stage(
        conn: &mut DbConn,
        model: &str,
        vectors: &[(String, Vec<u8>)],
    ) -> Result<(), DbError> {
        db_run!(conn: {
            conn.transaction(async |conn| {
                for (id, bytes) in vectors {
                    diesel::update(knowledge_chunks::table.find(id))
                        .set((
                            knowledge_chunks::next_embeddings.eq(Some(bytes.as_slice())),
                            knowledge_chunks::next_embedding_model.eq(Some(model)),
                        ))
                        .execute(conn)
                        .await?;
                }
                Ok::<_, diesel::result::Error>(())
            })
            .await?
        });
        Ok(())
    }

    /// Puts the staged vectors of `model` in use for all the bot's chunks
    /// at once, bumping its knowledge generation, if the generation is still
    /// `expected` and no chunk lacks them. Returns the new generation, or
    /// `None` when something changed meanwhile (stage again, then retry).
    pub async fn switch_model(
        conn: &mut DbConn,
        bot_id: &str,
        model: &str,
        expected: i64,
    ) -> Result<Option<i64>, DbError> {
        let switched = db_run!(conn: {
            conn.transaction(async |conn| {
                // Taking the bot's row first also makes a concurrent ingest
                // (which bumps the same row) wait for this transaction.
                let bumped = diesel::update(
                    bots::table
                        .find(bot_id)
                        .filter(bots::knowledge_generation.eq(expected)),
                )
                .set(bots::knowledge_generation.eq(bots::knowledge_generation + 1))
                .returning(bots::knowledge_generation)
                .get_result::<i64>(conn)
                .await
                .optional()?;
                let Some(generation) = bumped else {
                    return Ok(None);
                };
                let lacking = lacking!(bot_id, model)
                    .count()
                    .get_result::<i64>(conn)
                    .await?;
                if lacking > 0 {
                    return Err(diesel::result::Error::RollbackTransaction);
                }
                diesel::update(
                    knowledge_chunks::table
                        .filter(knowledge_chunks::bot_id.eq(bot_id))
                        .filter(knowledge_chunks::next_embedding_model.eq(model)),
                )
                .set((
                    knowledge_chunks::embeddings.eq(knowledge_chunks::next_embeddings),
                    knowledge_chunks::embedding_model.eq(knowledge_chunks::next_embedding_model),
                    knowledge_chunks::next_embeddings.eq(None::<Vec<u8>>),
                    knowledge_chunks::next_embedding_model.eq(None::<String>),
                ))
                .execute(conn)
                .await?;
                Ok(Some(generation))
            })
            .await
        });
        match switched {
            Ok(generation) => Ok(generation),
            Err(diesel::result::Error::RollbackTransaction) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// `(id, embedding model)` rows as `(id, has vectors from model)`.
fn with_model_flag(rows: Vec<(String, Option<String>)>, model: &str) -> Vec<(String, bool)> {
    rows.into_iter()
        .map(|(id, m)| (id, m.as_deref() == Some(model)))
        .collect()
}
