DROP INDEX messages_delivery_failed;
ALTER TABLE messages DROP COLUMN delivery_failed_at;
ALTER TABLE channel_accounts DROP COLUMN webhook_set_at;
