ALTER TABLE knowledge_documents DROP COLUMN pages_without_text;
ALTER TABLE knowledge_documents DROP COLUMN page_count;
