//! The data model on both backends: dedupe, ordering, races, bot files, keys.

use std::sync::Arc;

use channels::ChannelKind;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use store::db::Db;
use store::db_run;
use store::models::audit::AuditEntry;
use store::models::bot::Bot;
use store::models::channel_account::{AccountStatus, ChannelAccount};
use store::models::conversation::{Conversation, ConversationKey, ConversationStatus};
use store::models::customer::Customer;
use store::models::message::{AuthorKind, Direction, Inserted, Message, NewMessage};
use store::models::workspace::Workspace;
use store::schema::channel_accounts;

use crate::both_backends;
use crate::common::{TestDb, env};

const BOT_FILE: &str = r#"
workspace = "acme"
name = "support"
system_prompt = "You are Acme's support assistant."
language = "de"

[handoff]
min_confidence = 0.5
on_unknown = "silent_handoff"

[[channels]]
kind = "telegram"
id = "acme-tg"
bot_token = "env:ACME_TG_TOKEN"
secret_token = "inline-secret_1"

[[channels]]
kind = "email"
id = "acme-mail"
address = "Support@Acme.example"
signing_key = "key-abc"
"#;

fn bot_env() -> Vec<(String, String)> {
    env(&[("ACME_TG_TOKEN", "424242:AAH-very-secret-token")])
}

/// Opens the app with the standard bot file and returns the telegram account.
async fn open_with_bot(test_db: &TestDb) -> (frontdesk::context::App, ChannelAccount) {
    test_db.write_bot("acme.toml", BOT_FILE);
    let app = frontdesk::app::open(test_db.settings(), &bot_env())
        .await
        .expect("open");
    let mut conn = app.db.get().await.expect("conn");
    let account = ChannelAccount::find_by_public_id(&mut conn, "acme-tg")
        .await
        .expect("query")
        .expect("account exists");
    (app, account)
}

async fn bot_files_are_applied_and_sealed(test_db: TestDb) {
    let (app, account) = open_with_bot(&test_db).await;
    assert_eq!(app.bot_files.bots_changed, 1);
    assert_eq!(app.bot_files.channels_changed, 2);
    assert_eq!(account.kind, ChannelKind::Telegram);
    assert_eq!(account.external_id.as_deref(), Some("424242"));
    assert!(
        !account.credentials.contains("very-secret"),
        "credentials are stored sealed"
    );
    let creds = account.open_credentials(&app.master_key).expect("decrypt");
    assert_eq!(creds["bot_token"].expose(), "424242:AAH-very-secret-token");
    assert_eq!(creds["secret_token"].expose(), "inline-secret_1");

    let mut conn = app.db.get().await.expect("conn");
    let email = ChannelAccount::find_active_by_external_id(
        &mut conn,
        ChannelKind::Email,
        "support@acme.example",
    )
    .await
    .expect("query")
    .expect("address is stored lowercased");
    assert_eq!(email.public_id, "acme-mail");
    let workspace = Workspace::find_by_slug(&mut conn, "acme")
        .await
        .expect("query")
        .expect("workspace created");
    let bot = Bot::find(&mut conn, &workspace.id, "support")
        .await
        .expect("query")
        .expect("bot");
    assert_eq!(bot.language, knowledge::Language::German);
    assert_eq!(bot.min_confidence, 0.5);
    drop(conn);

    // Opening again with the same files changes nothing.
    let again = frontdesk::app::open(test_db.settings(), &bot_env())
        .await
        .expect("reopen");
    assert_eq!(again.bot_files.bots_changed, 0);
    assert_eq!(again.bot_files.channels_changed, 0);

    // Dropping a channel from the file disables it (history stays).
    test_db.write_bot(
        "acme.toml",
        &BOT_FILE[..BOT_FILE
            .find("[[channels]]\nkind = \"email\"")
            .expect("email block")],
    );
    let third = frontdesk::app::open(test_db.settings(), &bot_env())
        .await
        .expect("reopen");
    assert_eq!(third.bot_files.channels_disabled, 1);
    let mut conn = third.db.get().await.expect("conn");
    let email = ChannelAccount::find_by_public_id(&mut conn, "acme-mail")
        .await
        .expect("query")
        .expect("kept");
    assert_eq!(email.status, AccountStatus::Disabled);

    // Every change is audited, without secrets.
    let audit = AuditEntry::recent(&mut conn, &workspace.id, 50)
        .await
        .expect("audit");
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert!(actions.contains(&"bot.create"), "{actions:?}");
    assert!(actions.contains(&"channel_account.create"), "{actions:?}");
    assert!(actions.contains(&"channel_account.disable"), "{actions:?}");
    let dump = format!("{audit:?}");
    assert!(!dump.contains("very-secret") && !dump.contains("key-abc"));
}

async fn wrong_master_key_is_refused(test_db: TestDb) {
    let mut settings = test_db.settings();
    settings.security.master_key = Some("11".repeat(32));
    test_db.write_bot("acme.toml", BOT_FILE);
    let app = frontdesk::app::open(settings.clone(), &bot_env())
        .await
        .expect("open with key A");
    drop(app);
    settings.security.master_key = Some("22".repeat(32));
    let err = frontdesk::app::open(settings, &bot_env())
        .await
        .expect_err("key B must be refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("is not the one that encrypted this database's channel credentials"),
        "{msg}"
    );
}

async fn bad_bot_file_writes_nothing(test_db: TestDb) {
    test_db.write_bot("acme.toml", BOT_FILE);
    let err = frontdesk::app::open(test_db.settings(), &[])
        .await
        .expect_err("missing variable");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(
            "acme.toml: `channels[0].bot_token`: environment variable ACME_TG_TOKEN is not set"
        ),
        "{msg}"
    );
    assert!(
        !test_db.settings().data_dir.exists(),
        "bot files are checked before anything is created"
    );
    let settings = test_db.settings();
    let db = Db::connect(&settings.database).await.expect("connect");
    db.migrate(&settings.database).await.expect("migrate");
    let mut conn = db.get().await.expect("conn");
    let accounts: i64 = db_run!(conn: {
        channel_accounts::table.count().get_result(conn).await.expect("count")
    });
    assert_eq!(accounts, 0, "nothing of a bad bot file is written");
    assert!(
        Workspace::find_by_slug(&mut conn, "acme")
            .await
            .expect("query")
            .is_none()
    );
}

async fn redelivered_messages_are_stored_once_in_order(test_db: TestDb) {
    let (app, account) = open_with_bot(&test_db).await;
    let mut conn = app.db.get().await.expect("conn");
    let bot = Bot::find_by_name(&mut conn, "support")
        .await
        .expect("bot")
        .remove(0);
    let customer = Customer::ensure(
        &mut conn,
        &bot.workspace_id,
        ChannelKind::Telegram,
        "777",
        Some("Ann"),
    )
    .await
    .expect("customer");
    let key = ConversationKey {
        workspace_id: &bot.workspace_id,
        bot_id: &bot.id,
        customer_id: &customer.id,
        channel_account_id: &account.id,
        thread_key: "",
    };
    let conversation = Conversation::open_for(&mut conn, key).await.expect("open");
    let msg = |external, body| inbound(&conversation.id, &account.id, external, body);
    let first = Message::insert(&mut conn, &msg("777:1", "hello"))
        .await
        .expect("insert");
    let again = Message::insert(&mut conn, &msg("777:1", "hello"))
        .await
        .expect("again");
    let second = Message::insert(&mut conn, &msg("777:2", "anyone?"))
        .await
        .expect("second");
    let Inserted::New(first) = first else {
        panic!("first is new")
    };
    assert!(matches!(again, Inserted::Duplicate(ref m) if m.id == first.id));
    let Inserted::New(second) = second else {
        panic!("second is new")
    };
    assert_eq!((first.seq, second.seq), (1, 2));
    let stored = Message::list(&mut conn, &conversation.id)
        .await
        .expect("list");
    assert_eq!(stored.len(), 2);
    // An outbound message with the same platform id is a different message.
    let outbound = NewMessage {
        direction: Direction::Outbound,
        author_kind: AuthorKind::Bot,
        ..msg("777:1", "hi!")
    };
    let Inserted::New(reply) = Message::insert(&mut conn, &outbound).await.expect("reply") else {
        panic!("outbound is new")
    };
    assert_eq!(reply.seq, 3);
    assert_eq!(
        reply.delivery_status,
        Some(store::models::message::DeliveryStatus::Pending)
    );

    // After resolution, the customer's next message opens a new conversation.
    Conversation::set_status(&mut conn, &conversation.id, ConversationStatus::Resolved)
        .await
        .expect("resolve");
    let next = Conversation::open_for(&mut conn, key)
        .await
        .expect("reopen");
    assert_ne!(next.id, conversation.id);
    assert_eq!(next.status, ConversationStatus::Bot);
}

fn inbound<'a>(
    conversation_id: &'a str,
    channel_account_id: &'a str,
    external_id: &'a str,
    body: &'a str,
) -> NewMessage<'a> {
    NewMessage {
        conversation_id,
        channel_account_id,
        direction: Direction::Inbound,
        author_kind: AuthorKind::Customer,
        author_user_id: None,
        body,
        external_id: Some(external_id),
        metadata: None,
    }
}

async fn concurrent_first_messages_open_one_conversation(test_db: TestDb) {
    let (app, account) = open_with_bot(&test_db).await;
    let app = Arc::new(app);
    let account = Arc::new(account);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let app = app.clone();
        let account = account.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = app.db.get().await.expect("conn");
            let bot = Bot::find_by_name(&mut conn, "support")
                .await
                .expect("bot")
                .remove(0);
            let customer = Customer::ensure(
                &mut conn,
                &bot.workspace_id,
                ChannelKind::Telegram,
                "9",
                None,
            )
            .await
            .expect("customer");
            let conversation = Conversation::open_for(
                &mut conn,
                ConversationKey {
                    workspace_id: &bot.workspace_id,
                    bot_id: &bot.id,
                    customer_id: &customer.id,
                    channel_account_id: &account.id,
                    thread_key: "",
                },
            )
            .await
            .expect("open");
            // Every message is delivered twice, concurrently.
            let external = format!("9:{}", i / 2);
            let inserted = Message::insert(
                &mut conn,
                &inbound(&conversation.id, &account.id, &external, "hi"),
            )
            .await
            .expect("insert");
            (conversation.id, matches!(inserted, Inserted::New(_)))
        }));
    }
    let mut conversations = std::collections::BTreeSet::new();
    let mut new = 0;
    for task in tasks {
        let (conversation, was_new) = task.await.expect("task");
        conversations.insert(conversation);
        new += usize::from(was_new);
    }
    assert_eq!(conversations.len(), 1, "one open conversation per customer");
    assert_eq!(new, 8, "each of 8 messages stored once");
    let mut conn = app.db.get().await.expect("conn");
    let id = conversations.iter().next().expect("one");
    let seqs: Vec<i64> = Message::list(&mut conn, id)
        .await
        .expect("list")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>(), "dense, gap-free order");
}

async fn renamed_and_removed_channels_are_handled(test_db: TestDb) {
    open_with_bot(&test_db).await;
    // Same Telegram bot under a new channel id: the old account frees it.
    test_db.write_bot(
        "acme.toml",
        &BOT_FILE.replace("\"acme-tg\"", "\"acme-telegram\""),
    );
    let app = frontdesk::app::open(test_db.settings(), &bot_env())
        .await
        .expect("a renamed channel id must not block start-up");
    let mut conn = app.db.get().await.expect("conn");
    let old = ChannelAccount::find_by_public_id(&mut conn, "acme-tg")
        .await
        .expect("q")
        .expect("kept");
    let new = ChannelAccount::find_by_public_id(&mut conn, "acme-telegram")
        .await
        .expect("q")
        .expect("new");
    assert_eq!(old.status, AccountStatus::Disabled);
    assert_eq!(new.status, AccountStatus::Active);
    drop(conn);

    // The whole file deleted: its channels stop taking traffic.
    std::fs::remove_file(test_db.bots_dir().join("acme.toml")).expect("rm");
    let app = frontdesk::app::open(test_db.settings(), &bot_env())
        .await
        .expect("open");
    assert_eq!(app.bot_files.channels_disabled, 2);
    let mut conn = app.db.get().await.expect("conn");
    let active = ChannelAccount::active_of_kind(&mut conn, ChannelKind::Telegram)
        .await
        .expect("q");
    assert!(active.is_empty(), "{active:?}");
}

both_backends! {
    renamed_and_removed_channels => renamed_and_removed_channels_are_handled;
    bot_files_applied => bot_files_are_applied_and_sealed;
    wrong_master_key => wrong_master_key_is_refused;
    bad_bot_file => bad_bot_file_writes_nothing;
    redelivery => redelivered_messages_are_stored_once_in_order;
    concurrent_first_messages => concurrent_first_messages_open_one_conversation;
}
