DROP INDEX conversations_unanswered;
DROP INDEX messages_reply_key;
ALTER TABLE messages DROP COLUMN reply_key;
ALTER TABLE conversations DROP COLUMN turn_fence;
ALTER TABLE conversations DROP COLUMN answered_seq;
