ALTER TABLE knowledge_chunks DROP COLUMN next_embedding_model;
ALTER TABLE knowledge_chunks DROP COLUMN next_embeddings;
