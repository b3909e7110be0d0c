-- When the server last registered this account's webhook with its platform
-- (Telegram setWebhook); NULL when it never did or the account was removed.
ALTER TABLE channel_accounts ADD COLUMN webhook_set_at TIMESTAMP;

-- When delivery of an outbound message was given up (with delivery_error).
-- The console shows each account's latest; the partial index holds failed
-- messages only, so storing and sending messages writes nothing to it.
ALTER TABLE messages ADD COLUMN delivery_failed_at TIMESTAMP;
CREATE INDEX messages_delivery_failed
    ON messages (channel_account_id, delivery_failed_at)
    WHERE delivery_failed_at IS NOT NULL;
