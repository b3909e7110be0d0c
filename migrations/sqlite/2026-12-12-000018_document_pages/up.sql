-- A paged document's (PDF's) pages, and how many of them paint but gave no
-- text (scanned, or drawn in a font whose text cannot be decoded): the
-- document's status says what was lost. NULL for documents without pages.
ALTER TABLE knowledge_documents ADD COLUMN page_count INTEGER;
ALTER TABLE knowledge_documents ADD COLUMN pages_without_text INTEGER;
