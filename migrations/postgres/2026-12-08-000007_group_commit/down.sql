DROP FUNCTION frontdesk_store_inbound(jsonb);
DROP INDEX messages_reply_key;
CREATE UNIQUE INDEX messages_reply_key ON messages (conversation_id, reply_key);
CREATE INDEX messages_conversation_direction ON messages (conversation_id, direction, created_at);
