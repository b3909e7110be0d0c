-- Handoffs: each time a conversation is passed to a person, why, what the
-- bot would have said, and the triage. The console's escalation queue.

CREATE TABLE handoffs (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- low_confidence | no_information | customer_asked | generation_failed | unsafe_output | requested
    reason TEXT NOT NULL,
    -- Details of the reason (the phrase, the error), for the agent.
    detail TEXT,
    -- The customer's question and the bot's draft answer (maybe empty).
    question TEXT NOT NULL,
    draft TEXT NOT NULL,
    -- JSON array of {n, chunk_id, doc_ref, label, score}.
    sources TEXT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    category TEXT NOT NULL,
    -- negative | neutral | positive
    sentiment TEXT NOT NULL,
    -- low | medium | high
    urgency TEXT NOT NULL,
    -- model | rules
    triage_source TEXT NOT NULL,
    -- The user who asked for it (agent or API requests).
    requested_by TEXT,
    created_at TIMESTAMP NOT NULL,
    -- Set when an agent resolves the conversation or hands it back.
    closed_at TIMESTAMP
);

CREATE INDEX handoffs_open ON handoffs (workspace_id, closed_at, created_at);
CREATE INDEX handoffs_conversation ON handoffs (conversation_id, created_at);
