-- Agents: login sessions, API tokens for machines, private notes, and the
-- workspace event log that agent sockets replay after a reconnect.

CREATE TABLE sessions (
    -- SHA-256 (hex) of the token: a stolen table opens no session.
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    source_ip TEXT,
    user_agent TEXT,
    created_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);

CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- owner | admin | agent
    role TEXT NOT NULL,
    -- SHA-256 (hex) of the token, which is shown once.
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    expires_at TIMESTAMP,
    revoked_at TIMESTAMP
);

CREATE INDEX api_tokens_workspace ON api_tokens (workspace_id);

CREATE TABLE notes (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    author_id TEXT,
    body TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE INDEX notes_conversation ON notes (conversation_id, created_at);

CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    -- message.created | handoff.requested | conversation.status | …
    kind TEXT NOT NULL,
    -- The event as agents receive it (JSON), without its seq.
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE INDEX events_workspace ON events (workspace_id, seq);
