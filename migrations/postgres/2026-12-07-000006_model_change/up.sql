-- A change of embedding model: the new model's vectors are staged beside
-- the ones search uses now, chunk by chunk in the background, and swapped in
-- for the whole bot in one transaction once every chunk has them.
ALTER TABLE knowledge_chunks ADD COLUMN next_embeddings BYTEA;
ALTER TABLE knowledge_chunks ADD COLUMN next_embedding_model TEXT;
