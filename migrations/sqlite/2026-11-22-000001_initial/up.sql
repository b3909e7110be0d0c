-- Frontdesk's first schema (SQLite). Keep in step with ../../postgres/: the
-- test `migrations_agree` compares the tables and columns both produce.
-- Portable types only: ids are text UUIDs (v7, time-ordered), JSON is text,
-- timestamps are UTC without zone.

CREATE TABLE instance_meta (
    key TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE workspaces (
    id TEXT NOT NULL PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE users (
    id TEXT NOT NULL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT,
    disabled BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE memberships (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'agent')),
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE bots (
    id TEXT NOT NULL PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    language TEXT NOT NULL,
    llm_settings TEXT NOT NULL,
    handoff_policy TEXT NOT NULL
        CHECK (handoff_policy IN ('fallback_message', 'ai_generate', 'silent_handoff')),
    min_confidence DOUBLE PRECISION NOT NULL,
    fallback_message TEXT NOT NULL,
    knowledge_paths TEXT NOT NULL,
    source_file TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE channel_accounts (
    id TEXT NOT NULL PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('messenger', 'telegram', 'email', 'webchat')),
    external_id TEXT,
    credentials TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX channel_accounts_bot ON channel_accounts (bot_id);
-- One active account per platform identity: a Messenger page id or an inbound
-- address routes to exactly one bot.
CREATE UNIQUE INDEX channel_accounts_active_external
    ON channel_accounts (kind, external_id)
    WHERE status = 'active' AND external_id IS NOT NULL;

CREATE TABLE customers (
    id TEXT NOT NULL PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    channel_kind TEXT NOT NULL CHECK (channel_kind IN ('messenger', 'telegram', 'email', 'webchat')),
    external_user_id TEXT NOT NULL,
    display_name TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (workspace_id, channel_kind, external_user_id)
);

CREATE TABLE conversations (
    id TEXT NOT NULL PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    customer_id TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    channel_account_id TEXT NOT NULL REFERENCES channel_accounts (id) ON DELETE CASCADE,
    status TEXT NOT NULL CHECK (status IN ('bot', 'pending_handoff', 'agent', 'resolved')),
    -- Email threads: the root Message-ID; '' for chat channels.
    thread_key TEXT NOT NULL DEFAULT '',
    assigned_agent_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    last_message_at TIMESTAMP NOT NULL,
    resolved_at TIMESTAMP
);
-- At most one open conversation per customer, channel account and thread:
-- concurrent first messages race on this index and all end up in the same
-- conversation.
CREATE UNIQUE INDEX conversations_one_open
    ON conversations (channel_account_id, customer_id, thread_key)
    WHERE status <> 'resolved';
CREATE INDEX conversations_workspace_status
    ON conversations (workspace_id, status, last_message_at);
CREATE INDEX conversations_customer ON conversations (customer_id);

CREATE TABLE messages (
    id TEXT NOT NULL PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    channel_account_id TEXT NOT NULL REFERENCES channel_accounts (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    author_kind TEXT NOT NULL CHECK (author_kind IN ('customer', 'bot', 'agent', 'system')),
    author_user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    body TEXT NOT NULL,
    external_id TEXT,
    metadata TEXT,
    delivery_status TEXT
        CHECK (delivery_status IN ('pending', 'sending', 'sent', 'delivered', 'read', 'failed')),
    delivery_error TEXT,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (conversation_id, seq),
    -- A platform redelivering a message it already gave us is a no-op. NULLs
    -- are distinct, so messages without a platform id never collide.
    UNIQUE (channel_account_id, direction, external_id)
);

-- Signed webhook tokens already accepted (Mailgun), so a captured request
-- cannot be replayed inside its 5-minute window, on any account signed with
-- the same key (`signer` is a hash of the key). Rows older than the window
-- are deleted as new ones arrive.
CREATE TABLE webhook_tokens (
    signer TEXT NOT NULL,
    token TEXT NOT NULL,
    seen_at TIMESTAMP NOT NULL,
    PRIMARY KEY (signer, token)
);
CREATE INDEX webhook_tokens_seen ON webhook_tokens (seen_at);

CREATE INDEX messages_conversation_direction ON messages (conversation_id, direction, created_at);

CREATE TABLE audit_log (
    id TEXT NOT NULL PRIMARY KEY,
    workspace_id TEXT,
    actor_kind TEXT NOT NULL CHECK (actor_kind IN ('user', 'api_token', 'system')),
    actor_id TEXT,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT,
    source_ip TEXT,
    request_id TEXT,
    before_state TEXT,
    after_state TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_log_workspace_time ON audit_log (workspace_id, created_at);
