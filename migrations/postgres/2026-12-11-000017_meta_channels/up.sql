-- WhatsApp and Instagram accounts and customers.
ALTER TABLE channel_accounts DROP CONSTRAINT channel_accounts_kind_check,
    ADD CONSTRAINT channel_accounts_kind_check
    CHECK (kind IN ('messenger', 'telegram', 'email', 'webchat', 'whatsapp', 'instagram'));
ALTER TABLE customers DROP CONSTRAINT customers_channel_kind_check,
    ADD CONSTRAINT customers_channel_kind_check
    CHECK (channel_kind IN ('messenger', 'telegram', 'email', 'webchat', 'whatsapp', 'instagram'));
