-- Turns: which inbound messages a turn has answered, fencing of turns, and
-- idempotent replies (a turn resumed after a crash finds its replies).

-- Inbound messages with seq <= answered_seq are handled (answered, or seen
-- while an agent owned the conversation).
ALTER TABLE conversations ADD COLUMN answered_seq BIGINT NOT NULL DEFAULT 0;
-- The fencing token of the newest turn that started on this conversation;
-- a turn holding an older token may not write.
ALTER TABLE conversations ADD COLUMN turn_fence BIGINT NOT NULL DEFAULT 0;
-- `<answered seq>:<part>` of a bot reply: one reply per turn and part.
ALTER TABLE messages ADD COLUMN reply_key TEXT;
CREATE UNIQUE INDEX messages_reply_key ON messages (conversation_id, reply_key);
CREATE INDEX conversations_unanswered ON conversations (status, answered_seq, last_seq);
