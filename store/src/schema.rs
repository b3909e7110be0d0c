//! Diesel table definitions, shared by both backends.
//!
//! Written by hand to match `migrations/postgres` and `migrations/sqlite`
//! (which `tests/migrations.rs` keeps in step). Only portable SQL types appear
//! here, so every query in `crate::models` compiles for PostgreSQL and SQLite.

diesel::table! {
    instance_meta (key) {
        key -> Text,
        value -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    workspaces (id) {
        id -> Text,
        slug -> Text,
        name -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        display_name -> Text,
        password_hash -> Nullable<Text>,
        disabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    memberships (workspace_id, user_id) {
        workspace_id -> Text,
        user_id -> Text,
        role -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    bots (id) {
        id -> Text,
        workspace_id -> Text,
        name -> Text,
        system_prompt -> Text,
        language -> Text,
        llm_settings -> Text,
        handoff_policy -> Text,
        min_confidence -> Double,
        fallback_message -> Text,
        knowledge_paths -> Text,
        source_file -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        knowledge_generation -> BigInt,
        widget_origins -> Text,
        disclosure -> Nullable<Text>,
    }
}

diesel::table! {
    knowledge_documents (id) {
        id -> Text,
        bot_id -> Text,
        source -> Text,
        doc_ref -> Text,
        format -> Text,
        title -> Nullable<Text>,
        content_hash -> Text,
        size_bytes -> BigInt,
        chunk_count -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        page_count -> Nullable<Integer>,
        pages_without_text -> Nullable<Integer>,
    }
}

diesel::table! {
    knowledge_chunks (id) {
        id -> Text,
        document_id -> Text,
        bot_id -> Text,
        ordinal -> Integer,
        kind -> Text,
        doc_ref -> Text,
        title -> Nullable<Text>,
        heading_path -> Text,
        body -> Text,
        page -> Nullable<Integer>,
        line -> Nullable<Integer>,
        tokens -> Integer,
        content_hash -> Text,
        embeddings -> Nullable<Binary>,
        embedding_model -> Nullable<Text>,
        next_embeddings -> Nullable<Binary>,
        next_embedding_model -> Nullable<Text>,
    }
}

diesel::table! {
    channel_accounts (id) {
        id -> Text,
        public_id -> Text,
        bot_id -> Text,
        kind -> Text,
        external_id -> Nullable<Text>,
        credentials -> Text,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        webhook_set_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    customers (id) {
        id -> Text,
        workspace_id -> Text,
        channel_kind -> Text,
        external_user_id -> Text,
        display_name -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    conversations (id) {
        id -> Text,
        workspace_id -> Text,
        bot_id -> Text,
        customer_id -> Text,
        channel_account_id -> Text,
        status -> Text,
        thread_key -> Text,
        assigned_agent_id -> Nullable<Text>,
        last_seq -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_message_at -> Timestamp,
        resolved_at -> Nullable<Timestamp>,
        answered_seq -> BigInt,
        turn_fence -> BigInt,
    }
}

diesel::table! {
    messages (id) {
        id -> Text,
        conversation_id -> Text,
        channel_account_id -> Text,
        seq -> BigInt,
        direction -> Text,
        author_kind -> Text,
        author_user_id -> Nullable<Text>,
        body -> Text,
        external_id -> Nullable<Text>,
        metadata -> Nullable<Text>,
        delivery_status -> Nullable<Text>,
        delivery_error -> Nullable<Text>,
        created_at -> Timestamp,
        reply_key -> Nullable<Text>,
        delivery_failed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webhook_tokens (signer, token) {
        signer -> Text,
        token -> Text,
        seen_at -> Timestamp,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Text,
        workspace_id -> Nullable<Text>,
        actor_kind -> Text,
        actor_id -> Nullable<Text>,
        action -> Text,
        target_kind -> Text,
        target_id -> Nullable<Text>,
        source_ip -> Nullable<Text>,
        request_id -> Nullable<Text>,
        before_state -> Nullable<Text>,
        after_state -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    handoffs (id) {
        id -> Text,
        workspace_id -> Text,
        conversation_id -> Text,
        reason -> Text,
        detail -> Nullable<Text>,
        question -> Text,
        draft -> Text,
        sources -> Text,
        confidence -> Double,
        category -> Text,
        sentiment -> Text,
        urgency -> Text,
        triage_source -> Text,
        requested_by -> Nullable<Text>,
        created_at -> Timestamp,
        closed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        workspace_id -> Text,
        source_ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
        expires_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        workspace_id -> Text,
        name -> Text,
        role -> Text,
        token_hash -> Text,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        expires_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    notes (id) {
        id -> Text,
        workspace_id -> Text,
        conversation_id -> Text,
        author_id -> Nullable<Text>,
        body -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    events (seq) {
        seq -> BigInt,
        workspace_id -> Text,
        kind -> Text,
        payload -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    handoff_vectors (handoff_id) {
        handoff_id -> Text,
        bot_id -> Text,
        model -> Text,
        vector -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    model_usage (id) {
        id -> Text,
        workspace_id -> Text,
        bot_id -> Text,
        conversation_id -> Text,
        message_id -> Nullable<Text>,
        provider -> Text,
        model -> Nullable<Text>,
        calls -> Integer,
        prompt_tokens -> BigInt,
        completion_tokens -> BigInt,
        estimated -> Bool,
        latency_ms -> BigInt,
        cost -> Nullable<Double>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    knowledge_gaps (id) {
        id -> Text,
        workspace_id -> Text,
        bot_id -> Text,
        question -> Text,
        model -> Text,
        vector -> Binary,
        examples -> Text,
        count -> BigInt,
        first_seen -> Timestamp,
        last_seen -> Timestamp,
        answered_at -> Nullable<Timestamp>,
        answered_by -> Nullable<Text>,
        document_id -> Nullable<Text>,
    }
}

diesel::joinable!(memberships -> workspaces (workspace_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(bots -> workspaces (workspace_id));
diesel::joinable!(knowledge_documents -> bots (bot_id));
diesel::joinable!(knowledge_chunks -> knowledge_documents (document_id));
diesel::joinable!(channel_accounts -> bots (bot_id));
diesel::joinable!(customers -> workspaces (workspace_id));
diesel::joinable!(conversations -> customers (customer_id));
diesel::joinable!(conversations -> channel_accounts (channel_account_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(handoffs -> conversations (conversation_id));
diesel::joinable!(handoff_vectors -> handoffs (handoff_id));
diesel::joinable!(notes -> conversations (conversation_id));
diesel::joinable!(sessions -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    instance_meta,
    workspaces,
    users,
    memberships,
    bots,
    channel_accounts,
    customers,
    conversations,
    messages,
    webhook_tokens,
    audit_log,
    knowledge_documents,
    knowledge_chunks,
    handoffs,
    sessions,
    api_tokens,
    notes,
    events,
    handoff_vectors,
    knowledge_gaps,
    model_usage,
);
