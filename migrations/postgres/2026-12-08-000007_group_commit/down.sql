DROP FUNCTION frontdesk_store_inbound(jsonb);
