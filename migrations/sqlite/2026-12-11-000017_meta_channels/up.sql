-- WhatsApp and Instagram accounts and customers. SQLite cannot alter a CHECK
-- constraint; loosening one is the schema edit SQLite documents for it
-- (https://sqlite.org/lang_altertable.html#otheralter): no stored row
-- changes meaning, so the table is not rebuilt. The throwaway table bumps
-- the schema cookie so that every open connection re-reads the schema.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, '''email'', ''webchat'')', '''email'', ''webchat'', ''whatsapp'', ''instagram'')')
 WHERE type = 'table' AND name IN ('channel_accounts', 'customers');
PRAGMA writable_schema = OFF;
CREATE TABLE frontdesk_schema_bump (x INTEGER);
DROP TABLE frontdesk_schema_bump;
