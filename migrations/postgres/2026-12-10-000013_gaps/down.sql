DROP TABLE knowledge_gaps;
DROP TABLE handoff_vectors;
