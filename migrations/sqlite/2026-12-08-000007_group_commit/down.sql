DROP INDEX messages_reply_key;
CREATE UNIQUE INDEX messages_reply_key ON messages (conversation_id, reply_key);
