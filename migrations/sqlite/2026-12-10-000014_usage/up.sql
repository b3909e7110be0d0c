-- Model usage: one row per bot turn, with the model calls it made (the
-- answer, a handoff's triage) summed. Extractive turns are rows of zero
-- calls and zero cost. Bot and conversation are kept as plain ids: the
-- record of what was spent outlives them.

CREATE TABLE model_usage (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    bot_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    -- The newest customer message the turn answered.
    message_id TEXT,
    -- extractive | openai
    provider TEXT NOT NULL,
    -- The model asked; NULL for extractive turns.
    model TEXT,
    -- Requests made to the model server.
    calls INTEGER NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    -- Some call's tokens were counted with the tokenizer, not reported by
    -- the server.
    estimated BOOLEAN NOT NULL,
    -- Time spent waiting on the model, all calls, in milliseconds.
    latency_ms BIGINT NOT NULL,
    -- From llm.prices at the time; NULL when the model had no price.
    cost DOUBLE PRECISION,
    created_at TIMESTAMP NOT NULL
);

CREATE INDEX model_usage_workspace ON model_usage (workspace_id, created_at);
CREATE INDEX model_usage_bot ON model_usage (bot_id, created_at);
