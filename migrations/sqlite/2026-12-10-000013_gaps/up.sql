-- What the bot could not answer, remembered: every handoff's question as a
-- vector (for similar resolved cases), and the questions handed off for
-- want of knowledge grouped by similarity (knowledge gaps).

CREATE TABLE handoff_vectors (
    handoff_id TEXT PRIMARY KEY REFERENCES handoffs (id) ON DELETE CASCADE,
    bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    -- The embedding model of the vector: vectors of two models never meet.
    model TEXT NOT NULL,
    -- The question's embedding, little-endian f32, unit length.
    vector BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX handoff_vectors_bot ON handoff_vectors (bot_id, model, created_at);

CREATE TABLE knowledge_gaps (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    -- The first question of the group, verbatim; its vector stands for it.
    question TEXT NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    -- JSON array of the group's questions, verbatim, at most 10.
    examples TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    answered_at TIMESTAMP,
    answered_by TEXT,
    -- The FAQ document the answer became.
    document_id TEXT
);
CREATE INDEX knowledge_gaps_bot ON knowledge_gaps (bot_id, answered_at, last_seen);
