DROP TABLE knowledge_chunks;
DROP TABLE knowledge_documents;
ALTER TABLE bots DROP COLUMN knowledge_generation;
