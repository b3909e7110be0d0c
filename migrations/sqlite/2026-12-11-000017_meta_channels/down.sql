DELETE FROM customers WHERE channel_kind IN ('whatsapp', 'instagram');
DELETE FROM channel_accounts WHERE kind IN ('whatsapp', 'instagram');
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, '''email'', ''webchat'', ''whatsapp'', ''instagram'')', '''email'', ''webchat'')')
 WHERE type = 'table' AND name IN ('channel_accounts', 'customers');
PRAGMA writable_schema = OFF;
CREATE TABLE frontdesk_schema_bump (x INTEGER);
DROP TABLE frontdesk_schema_bump;
