-- Bot replies alone carry a reply_key, so its unique index leaves the
-- customer's messages out (NULLs never collided anyway): one index write
-- less per stored message. (On PostgreSQL this migration also adds the
-- function that stores a batch of messages in one round trip; SQLite runs
-- the same steps from store/src/models/inbound.rs.)
DROP INDEX messages_reply_key;
CREATE UNIQUE INDEX messages_reply_key ON messages (conversation_id, reply_key)
    WHERE reply_key IS NOT NULL;

-- Every query of a conversation's messages filters on (conversation_id, seq),
-- which the unique index serves; this one only cost a write per message.
DROP INDEX messages_conversation_direction;
