-- Knowledge: documents and their chunks, the source of truth for every
-- node's search index (tantivy and vectors are rebuilt from these rows).

-- Bumped in the same transaction as any change to a bot's chunks; a node's
-- index records the generation it reflects and catches up when it differs.
ALTER TABLE bots ADD COLUMN knowledge_generation BIGINT NOT NULL DEFAULT 0;

CREATE TABLE knowledge_documents (
    id TEXT PRIMARY KEY,
    bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    -- Where it came from: the path as ingested, or the uploaded file name.
    source TEXT NOT NULL,
    -- The id search results report for it (the file name).
    doc_ref TEXT NOT NULL,
    format TEXT NOT NULL,
    title TEXT,
    -- sha256 of the file's bytes: an unchanged file is skipped.
    content_hash TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    chunk_count INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (bot_id, source)
);

CREATE TABLE knowledge_chunks (
    id TEXT PRIMARY KEY,
    document_id TEXT NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('faq', 'passage')),
    -- The document id reported in results: the FAQ entry's own id, else the
    -- document's.
    doc_ref TEXT NOT NULL,
    -- FAQ question.
    title TEXT,
    -- Headings above the chunk, joined with ' › '.
    heading_path TEXT NOT NULL,
    body TEXT NOT NULL,
    page INTEGER,
    line INTEGER,
    tokens INTEGER NOT NULL,
    -- sha256 over model, kind, title and text: equal hash, equal vectors.
    content_hash TEXT NOT NULL,
    -- Little-endian f32 vectors, 384 each, back to back (an FAQ entry has
    -- two: question and answer, then question alone); NULL until embedded.
    embeddings BYTEA,
    embedding_model TEXT,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX knowledge_chunks_bot ON knowledge_chunks (bot_id);
CREATE INDEX knowledge_chunks_hash ON knowledge_chunks (bot_id, content_hash);
