-- The webhook door's group commit: the customer messages of many webhooks
-- stored in one call, so one round trip and one commit per batch. The same
-- steps, in the same order, as the SQLite path in
-- store/src/models/inbound.rs; see there for the input and the answers.
--
-- For each message, in order: a redelivery (same account, direction and
-- external id) answers {"conversation"} and writes nothing. Otherwise the
-- customer is found or created (its name kept current), an email joins the
-- thread of a stored ancestor or starts its own, the open conversation is
-- found or opened, its last_seq bumped (the durable turn), the message
-- inserted, and the events logged from the caller's templates. The answer is
-- {"conversation", "seq", "events": [event seq, ...]}.
--
-- Also: bot replies alone carry a reply_key, so its unique index leaves the
-- customer's messages out (NULLs never collided anyway), one index write
-- less per message.
CREATE FUNCTION frontdesk_store_inbound(batch jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    m jsonb;
    at timestamp;
    answers jsonb := '[]'::jsonb;
    found_conversation text;
    customer text;
    customer_name text;
    thread text;
    conversation text;
    seq bigint;
    event_seq bigint;
    logged jsonb;
BEGIN
    FOR m IN SELECT value FROM jsonb_array_elements(batch) LOOP
        at := (m->>'at')::timestamp;
        SELECT conversation_id INTO found_conversation FROM messages
            WHERE channel_account_id = m->>'account_id'
              AND direction = 'inbound'
              AND external_id = m->>'external_id';
        IF FOUND THEN
            answers := answers || jsonb_build_array(
                jsonb_build_object('conversation', found_conversation));
            CONTINUE;
        END IF;

        -- A known customer first (one statement), else a new one.
        SELECT id, display_name INTO customer, customer_name FROM customers
            WHERE workspace_id = m->>'workspace_id'
              AND channel_kind = m->>'channel_kind'
              AND external_user_id = m->>'sender';
        IF NOT FOUND THEN
            INSERT INTO customers (id, workspace_id, channel_kind, external_user_id,
                                   display_name, created_at, updated_at)
                VALUES (m->>'new_customer_id', m->>'workspace_id', m->>'channel_kind',
                        m->>'sender', m->>'display_name', at, at)
                ON CONFLICT (workspace_id, channel_kind, external_user_id) DO NOTHING;
            SELECT id, display_name INTO customer, customer_name FROM customers
                WHERE workspace_id = m->>'workspace_id'
                  AND channel_kind = m->>'channel_kind'
                  AND external_user_id = m->>'sender';
        END IF;
        IF m->>'display_name' IS NOT NULL
           AND customer_name IS DISTINCT FROM m->>'display_name' THEN
            UPDATE customers SET display_name = m->>'display_name', updated_at = at
                WHERE id = customer;
        END IF;

        thread := '';
        IF jsonb_typeof(m->'thread') = 'object' THEN
            SELECT c.thread_key INTO thread FROM messages AS msg
                JOIN conversations AS c ON c.id = msg.conversation_id
                WHERE msg.channel_account_id = m->>'account_id'
                  AND msg.external_id IN (
                      SELECT jsonb_array_elements_text(m->'thread'->'ancestors'))
                  AND c.customer_id = customer
                ORDER BY msg.created_at DESC
                LIMIT 1;
            IF NOT FOUND THEN
                thread := m->'thread'->>'message_id';
            END IF;
        END IF;

        -- The open conversation gets its next seq (one statement); else it
        -- is opened with this message as seq 1; if another transaction
        -- opened it meanwhile, that one gets the next seq.
        UPDATE conversations AS c
            SET last_seq = c.last_seq + 1, last_message_at = at, updated_at = at
            WHERE c.channel_account_id = m->>'account_id'
              AND c.customer_id = customer
              AND c.thread_key = thread
              AND c.status <> 'resolved'
            RETURNING c.id, c.last_seq INTO conversation, seq;
        IF NOT FOUND THEN
            INSERT INTO conversations (id, workspace_id, bot_id, customer_id,
                                       channel_account_id, status, thread_key, last_seq,
                                       created_at, updated_at, last_message_at)
                VALUES (m->>'new_conversation_id', m->>'workspace_id', m->>'bot_id',
                        customer, m->>'account_id', 'bot', thread, 1, at, at, at)
                ON CONFLICT DO NOTHING
                RETURNING id, last_seq INTO conversation, seq;
            IF NOT FOUND THEN
                UPDATE conversations AS c
                    SET last_seq = c.last_seq + 1, last_message_at = at, updated_at = at
                    WHERE c.channel_account_id = m->>'account_id'
                      AND c.customer_id = customer
                      AND c.thread_key = thread
                      AND c.status <> 'resolved'
                    RETURNING c.id, c.last_seq INTO conversation, seq;
            END IF;
        END IF;

        INSERT INTO messages (id, conversation_id, channel_account_id, seq, direction,
                              author_kind, body, external_id, metadata, created_at)
            VALUES (m->>'id', conversation, m->>'account_id', seq, 'inbound',
                    'customer', m->>'body', m->>'external_id', m->>'metadata', at);

        -- The templates' blanks filled by plain replacement, as fill() in
        -- inbound.rs does: the same bytes on both backends.
        logged := '[]'::jsonb;
        IF seq = 1 THEN
            INSERT INTO events (workspace_id, kind, payload, created_at)
                VALUES (m->>'workspace_id', 'conversation.created',
                        replace(m->>'conversation_event', '"conversation_id":""',
                                '"conversation_id":"' || conversation || '"'),
                        at)
                RETURNING events.seq INTO event_seq;
            logged := logged || to_jsonb(event_seq);
        END IF;
        INSERT INTO events (workspace_id, kind, payload, created_at)
            VALUES (m->>'workspace_id', 'message.created',
                    replace(replace(m->>'message_event', '"conversation_id":""',
                                    '"conversation_id":"' || conversation || '"'),
                            '"seq":0,', '"seq":' || seq || ','),
                    at)
            RETURNING events.seq INTO event_seq;
        logged := logged || to_jsonb(event_seq);

        answers := answers || jsonb_build_array(jsonb_build_object(
            'conversation', conversation, 'seq', seq, 'events', logged));
    END LOOP;
    RETURN answers;
END
$$;

DROP INDEX messages_reply_key;
CREATE UNIQUE INDEX messages_reply_key ON messages (conversation_id, reply_key)
    WHERE reply_key IS NOT NULL;

-- Every query of a conversation's messages filters on (conversation_id, seq),
-- which the unique index serves; this one only cost a write per message.
DROP INDEX messages_conversation_direction;
