//! Customer messages stored in batches: the write side of the webhook door's
//! group commit.
//!
//! [`store_batch`] takes the messages of many webhooks and stores them in one
//! transaction with one commit (one fsync): for each message, in order, the
//! redelivery check on `(account, inbound, external id)`, the customer, the
//! conversation (email replies join their thread), the `last_seq` bump that
//! is the conversation's durable turn, the message row, and the event-log
//! rows agents replay (`conversation.created` for a conversation's first
//! message, `message.created` for every message).
//!
//! - **SQLite** runs the batch in one blocking call on one connection: each
//!   statement is prepared once and cached, and nothing crosses threads per
//!   statement.
//! - **PostgreSQL** runs it as one call of the function
//!   `frontdesk_store_inbound(jsonb)` (migration `…000007_group_commit`):
//!   one round trip per batch, commit included.
//!
//! Both paths take the same input and give the same answers; the backend
//! tests in `tests/it` run the webhooks through both.
//!
//! The event payloads are written by the caller, who owns their format, as
//! compact JSON templates with blanks the batch fills by plain replacement
//! once the conversation and the seq are known ([`fill`]): every
//! [`CONVERSATION_BLANK`] (`conversation_id` at the top, and inside the
//! message of `message.created`) and the one [`SEQ_BLANK`] (the message's
//! seq). Text inside a JSON string has its quotes escaped, so a customer's
//! words can never look like a blank. Both backends store the same bytes.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::conversation::ConversationStatus;
use super::message::{AuthorKind, Direction, Message};
use crate::db::{DbConn, DbError};
use crate::schema::{conversations, customers, events, messages};

/// One customer message to store.
#[derive(Debug, Clone, Serialize)]
pub struct NewInbound {
    /// The message's id, chosen before storing so that its event can be
    /// written ahead.
    pub id: String,
    /// The id a new customer gets (UUID v7, like every id).
    pub new_customer_id: String,
    /// The id a new conversation gets.
    pub new_conversation_id: String,
    /// When it was received (microsecond precision, as both backends store).
    #[serde(serialize_with = "sql_time")]
    pub at: NaiveDateTime,
    /// The channel account it came through.
    pub account_id: String,
    /// The account's workspace.
    pub workspace_id: String,
    /// The account's bot.
    pub bot_id: String,
    /// The channel (`customers.channel_kind`).
    pub channel_kind: &'static str,
    /// The customer's id on the platform.
    pub sender: String,
    /// The customer's name, when the platform gives one.
    pub display_name: Option<String>,
    /// The platform's id of the message: a redelivery is recognised by it.
    pub external_id: String,
    /// The customer's words.
    pub body: String,
    /// Platform details (JSON text).
    pub metadata: String,
    /// Email: the thread to join or start.
    pub thread: Option<Thread>,
    /// `conversation.created`, with `conversation_id` left to fill.
    pub conversation_event: String,
    /// `message.created`, with `conversation_id`, `message.conversation_id`
    /// and `message.seq` left to fill.
    pub message_event: String,
}

/// Where an email belongs.
#[derive(Debug, Clone, Serialize)]
pub struct Thread {
    /// This email's Message-ID: the key of a new thread.
    pub message_id: String,
    /// `In-Reply-To` and `References`: a stored one names the thread to join.
    pub ancestors: Vec<String>,
}

/// What storing one message did.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // answered once per message, moved, never stored in bulk
pub enum StoredInbound {
    /// Stored, with its events as logged.
    New {
        /// The stored message.
        message: Message,
        /// Its workspace.
        workspace_id: String,
        /// `(seq, payload)` of each event logged, in order.
        events: Vec<(i64, String)>,
    },
    /// Already stored: a redelivery. Nothing was written.
    Duplicate {
        /// The conversation holding it.
        conversation_id: String,
    },
}

/// Stores `batch` in one transaction, in order; one answer per message. An
/// error rolls the whole batch back (the caller retries the webhooks one by
/// one, so one bad message fails only its own).
pub async fn store_batch(
    conn: &mut DbConn,
    batch: std::sync::Arc<[NewInbound]>,
) -> Result<Vec<StoredInbound>, DbError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    match conn {
        DbConn::Sqlite(conn) => Ok(conn
            .spawn_blocking(move |conn| {
                conn.immediate_transaction(|conn| {
                    // An email may join the thread of one stored just
                    // before it: message by message. Chat messages: as
                    // sets, once the batch is big enough to repay the
                    // statements the sets cost (a few, prepared afresh).
                    if batch.len() < SQLITE_SETS_FROM
                        || batch.iter().any(|new| new.thread.is_some())
                    {
                        batch.iter().map(|new| store_sqlite(conn, new)).collect()
                    } else {
                        store_sqlite_chats(conn, &batch)
                    }
                })
            })
            .await?),
        DbConn::Postgres(conn) => store_postgres(conn, &batch).await,
    }
}

/// The smallest batch SQLite stores as sets (measured: below this, the
/// message-by-message statements, prepared once, cost less).
const SQLITE_SETS_FROM: usize = 8;

diesel::define_sql_function! {
    /// The rowid this connection inserted last (for `events`, its seq).
    fn last_insert_rowid() -> diesel::sql_types::BigInt;
}

/// Chat messages (no email threads) on SQLite, as sets: a few statements
/// for the whole batch instead of several per message. The transaction
/// holds SQLite's write lock from its start (`BEGIN IMMEDIATE`), so what
/// the batch reads cannot change under it: each conversation's seqs follow
/// from the `last_seq` it read, and the event log's seqs from the rowid
/// its insert ends at (`AUTOINCREMENT` numbers one statement's rows in
/// order).
fn store_sqlite_chats(
    conn: &mut SqliteConnection,
    batch: &[NewInbound],
) -> QueryResult<Vec<StoredInbound>> {
    use std::collections::HashMap;
    // Redeliveries, and repeats within the batch (the first one counts).
    let mut stored: HashMap<(&str, &str), String> = HashMap::new();
    for (account, ids) in group(batch, |new| {
        (new.account_id.as_str(), new.external_id.as_str())
    }) {
        let found: Vec<(Option<String>, String)> = messages::table
            .filter(messages::channel_account_id.eq(account))
            .filter(messages::direction.eq(Direction::Inbound))
            .filter(messages::external_id.eq_any(ids.clone()))
            .select((messages::external_id, messages::conversation_id))
            .load(conn)?;
        for (external_id, conversation) in found {
            if let Some(id) = ids.iter().find(|id| Some(**id) == external_id.as_deref()) {
                stored.insert((account, id), conversation);
            }
        }
    }
    let mut fresh = Vec::new();
    let mut firsts = std::collections::HashSet::new();
    for (i, new) in batch.iter().enumerate() {
        let key = (new.account_id.as_str(), new.external_id.as_str());
        if !stored.contains_key(&key) && firsts.insert(key) {
            fresh.push(i);
        }
    }

    // Customers: the known ones in one query per workspace and channel.
    let mut customer_of: HashMap<(&str, &str, &str), (String, Option<String>)> = HashMap::new();
    let fresh_rows: Vec<&NewInbound> = fresh.iter().map(|&i| &batch[i]).collect();
    for ((workspace, kind), senders) in group(fresh_rows.iter().copied(), |new| {
        (
            (new.workspace_id.as_str(), new.channel_kind),
            new.sender.as_str(),
        )
    }) {
        let found: Vec<(String, String, Option<String>)> = customers::table
            .filter(customers::workspace_id.eq(workspace))
            .filter(customers::channel_kind.eq(kind))
            .filter(customers::external_user_id.eq_any(senders.clone()))
            .select((
                customers::external_user_id,
                customers::id,
                customers::display_name,
            ))
            .load(conn)?;
        for (sender, id, name) in found {
            if let Some(sender) = senders.iter().find(|s| **s == sender) {
                customer_of.insert((workspace, kind, sender), (id, name));
            }
        }
    }
    let mut customers = Vec::with_capacity(fresh_rows.len());
    for new in &fresh_rows {
        let key = (
            new.workspace_id.as_str(),
            new.channel_kind,
            new.sender.as_str(),
        );
        let customer = match customer_of.get_mut(&key) {
            Some((id, name)) => {
                if rename_customer(conn, id, name.as_deref(), new)? {
                    name.clone_from(&new.display_name);
                }
                id.clone()
            }
            None => {
                insert_customer(conn, new)?;
                customer_of.insert(key, (new.new_customer_id.clone(), new.display_name.clone()));
                new.new_customer_id.clone()
            }
        };
        customers.push(customer);
    }

    // Open conversations: one query per account; new ones opened at seq 0.
    let mut conversation_of: HashMap<(&str, &str), (String, i64)> = HashMap::new();
    let pairs: Vec<(&NewInbound, &String)> = fresh_rows.iter().copied().zip(&customers).collect();
    for (account, owners) in group(pairs.iter(), |(new, customer)| {
        (new.account_id.as_str(), customer.as_str())
    }) {
        let found: Vec<(String, String, i64)> = conversations::table
            .filter(conversations::channel_account_id.eq(account))
            .filter(conversations::thread_key.eq(""))
            .filter(conversations::status.ne(ConversationStatus::Resolved))
            .filter(conversations::customer_id.eq_any(owners.clone()))
            .select((
                conversations::customer_id,
                conversations::id,
                conversations::last_seq,
            ))
            .load(conn)?;
        for (customer, id, last_seq) in found {
            if let Some(owner) = owners.iter().find(|o| **o == customer) {
                conversation_of.insert((account, *owner), (id, last_seq));
            }
        }
    }
    let mut placed = Vec::with_capacity(pairs.len());
    let mut opened = Vec::new();
    for (new, customer) in &pairs {
        let key = (new.account_id.as_str(), customer.as_str());
        let (conversation, last_seq) = conversation_of.entry(key).or_insert_with(|| {
            opened.push((*new, customer.as_str()));
            (new.new_conversation_id.clone(), 0)
        });
        *last_seq += 1;
        placed.push((new.message(conversation.clone(), *last_seq), *last_seq));
    }
    for (new, customer) in opened {
        open_conversation(conn, new, customer, "", 0)?;
    }

    // Every conversation's new last_seq in one statement.
    let mut newest: HashMap<&str, (i64, NaiveDateTime)> = HashMap::new();
    for (message, seq) in &placed {
        let entry = newest
            .entry(message.conversation_id.as_str())
            .or_insert((*seq, message.created_at));
        *entry = (entry.0.max(*seq), entry.1.max(message.created_at));
    }
    if !newest.is_empty() {
        use diesel::sql_types::{BigInt, Text, Timestamp};
        let cases = " WHEN ? THEN ?".repeat(newest.len());
        let ids = vec!["?"; newest.len()].join(", ");
        let sql = format!(
            "UPDATE conversations SET last_seq = CASE id{cases} END, \
             last_message_at = CASE id{cases} END, updated_at = CASE id{cases} END \
             WHERE id IN ({ids})"
        );
        let mut query = diesel::sql_query(sql).into_boxed::<diesel::sqlite::Sqlite>();
        for (id, (seq, _)) in &newest {
            query = query.bind::<Text, _>(*id).bind::<BigInt, _>(*seq);
        }
        for _ in 0..2 {
            for (id, (_, at)) in &newest {
                query = query.bind::<Text, _>(*id).bind::<Timestamp, _>(*at);
            }
        }
        for id in newest.keys() {
            query = query.bind::<Text, _>(*id);
        }
        query.execute(conn)?;
    }

    // The messages, then their events, one statement each.
    let rows: Vec<_> = placed
        .iter()
        .map(|(m, seq)| {
            (
                messages::id.eq(&m.id),
                messages::conversation_id.eq(&m.conversation_id),
                messages::channel_account_id.eq(&m.channel_account_id),
                messages::seq.eq(*seq),
                messages::direction.eq(m.direction),
                messages::author_kind.eq(m.author_kind),
                messages::body.eq(&m.body),
                messages::external_id.eq(&m.external_id),
                messages::metadata.eq(&m.metadata),
                messages::created_at.eq(m.created_at),
            )
        })
        .collect();
    diesel::insert_into(messages::table)
        .values(rows)
        .execute(conn)?;
    let mut logged: Vec<(usize, String)> = Vec::new();
    let mut log = Vec::new();
    for (n, ((message, seq), new)) in placed.iter().zip(&fresh_rows).enumerate() {
        for (kind, template) in events_of(new, *seq) {
            let payload = fill(template, &message.conversation_id, *seq);
            log.push((
                events::workspace_id.eq(new.workspace_id.as_str()),
                events::kind.eq(kind),
                events::created_at.eq(new.at),
            ));
            logged.push((n, payload));
        }
    }
    let payloads: Vec<_> = logged.iter().map(|(_, p)| events::payload.eq(p)).collect();
    let rows: Vec<_> = log
        .into_iter()
        .zip(payloads)
        .map(|((w, k, at), p)| (w, k, p, at))
        .collect();
    diesel::insert_into(events::table)
        .values(rows)
        .execute(conn)?;
    let last: i64 = diesel::select(last_insert_rowid()).get_result(conn)?;
    let first = last - logged.len() as i64 + 1;
    let mut events_by_row: Vec<Vec<(i64, String)>> = vec![Vec::new(); placed.len()];
    for (offset, (n, payload)) in logged.into_iter().enumerate() {
        events_by_row[n].push((first + offset as i64, payload));
    }

    // Answers, in the batch's order; a repeat within the batch answers
    // with its first's conversation.
    let mut answers: Vec<Option<StoredInbound>> = vec![None; batch.len()];
    for ((&i, (message, _)), events) in fresh.iter().zip(placed).zip(events_by_row) {
        let key = (batch[i].account_id.as_str(), batch[i].external_id.as_str());
        stored.insert(key, message.conversation_id.clone());
        answers[i] = Some(StoredInbound::New {
            message,
            workspace_id: batch[i].workspace_id.clone(),
            events,
        });
    }
    Ok(batch
        .iter()
        .zip(answers)
        .map(|(new, answer)| {
            answer.unwrap_or_else(|| StoredInbound::Duplicate {
                conversation_id: stored
                    .get(&(new.account_id.as_str(), new.external_id.as_str()))
                    .cloned()
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// `(key, values)` in the order keys first appear.
fn group<T, K: PartialEq, V>(
    items: impl IntoIterator<Item = T>,
    split: impl Fn(&T) -> (K, V),
) -> Vec<(K, Vec<V>)> {
    let mut groups: Vec<(K, Vec<V>)> = Vec::new();
    for item in items {
        let (key, value) = split(&item);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value),
            None => groups.push((key, vec![value])),
        }
    }
    groups
}

/// Inserts the customer of `new` unless one exists; rows inserted.
fn insert_customer(conn: &mut SqliteConnection, new: &NewInbound) -> QueryResult<usize> {
    diesel::insert_into(customers::table)
        .values((
            customers::id.eq(&new.new_customer_id),
            customers::workspace_id.eq(&new.workspace_id),
            customers::channel_kind.eq(new.channel_kind),
            customers::external_user_id.eq(&new.sender),
            customers::display_name.eq(&new.display_name),
            customers::created_at.eq(new.at),
            customers::updated_at.eq(new.at),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
}

/// Keeps the customer's name current: the platform's name in `new`, when
/// it gives one that differs from `name`. Returns whether it changed.
fn rename_customer(
    conn: &mut SqliteConnection,
    customer: &str,
    name: Option<&str>,
    new: &NewInbound,
) -> QueryResult<bool> {
    if new.display_name.is_none() || name == new.display_name.as_deref() {
        return Ok(false);
    }
    diesel::update(customers::table.find(customer))
        .set((
            customers::display_name.eq(&new.display_name),
            customers::updated_at.eq(new.at),
        ))
        .execute(conn)?;
    Ok(true)
}

/// Opens the conversation of `new` at `last_seq` unless one is open on
/// this account, customer and thread; rows inserted.
fn open_conversation(
    conn: &mut SqliteConnection,
    new: &NewInbound,
    customer: &str,
    thread_key: &str,
    last_seq: i64,
) -> QueryResult<usize> {
    diesel::insert_into(conversations::table)
        .values((
            conversations::id.eq(&new.new_conversation_id),
            conversations::workspace_id.eq(&new.workspace_id),
            conversations::bot_id.eq(&new.bot_id),
            conversations::customer_id.eq(customer),
            conversations::channel_account_id.eq(&new.account_id),
            conversations::status.eq(ConversationStatus::Bot),
            conversations::thread_key.eq(thread_key),
            conversations::last_seq.eq(last_seq),
            conversations::created_at.eq(new.at),
            conversations::updated_at.eq(new.at),
            conversations::last_message_at.eq(new.at),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
}

/// One message on SQLite, inside the batch's transaction.
fn store_sqlite(conn: &mut SqliteConnection, new: &NewInbound) -> QueryResult<StoredInbound> {
    let existing: Option<String> = messages::table
        .filter(messages::channel_account_id.eq(&new.account_id))
        .filter(messages::direction.eq(Direction::Inbound))
        .filter(messages::external_id.eq(&new.external_id))
        .select(messages::conversation_id)
        .first(conn)
        .optional()?;
    if let Some(conversation_id) = existing {
        return Ok(StoredInbound::Duplicate { conversation_id });
    }
    // The common case first: a customer we know, one statement.
    let find_customer = |conn: &mut SqliteConnection| {
        customers::table
            .filter(customers::workspace_id.eq(&new.workspace_id))
            .filter(customers::channel_kind.eq(new.channel_kind))
            .filter(customers::external_user_id.eq(&new.sender))
            .select((customers::id, customers::display_name))
            .first::<(String, Option<String>)>(conn)
            .optional()
    };
    let (customer, name) = match find_customer(conn)? {
        Some(found) => found,
        None => {
            insert_customer(conn, new)?;
            find_customer(conn)?.ok_or(diesel::result::Error::NotFound)?
        }
    };
    rename_customer(conn, &customer, name.as_deref(), new)?;
    let thread_key = match &new.thread {
        None => String::new(),
        Some(thread) => messages::table
            .inner_join(conversations::table)
            .filter(messages::channel_account_id.eq(&new.account_id))
            .filter(messages::external_id.eq_any(&thread.ancestors))
            .filter(conversations::customer_id.eq(&customer))
            .order(messages::created_at.desc())
            .select(conversations::thread_key)
            .first::<String>(conn)
            .optional()?
            .unwrap_or_else(|| thread.message_id.clone()),
    };
    // The common case first: the open conversation gets its next seq, one
    // statement. Else it is opened with this message as seq 1; if another
    // writer opened it meanwhile, that one gets the next seq.
    let bump = |conn: &mut SqliteConnection| {
        diesel::update(
            conversations::table
                .filter(conversations::channel_account_id.eq(&new.account_id))
                .filter(conversations::customer_id.eq(&customer))
                .filter(conversations::thread_key.eq(&thread_key))
                .filter(conversations::status.ne(ConversationStatus::Resolved)),
        )
        .set((
            conversations::last_seq.eq(conversations::last_seq + 1),
            conversations::last_message_at.eq(new.at),
            conversations::updated_at.eq(new.at),
        ))
        .returning((conversations::id, conversations::last_seq))
        .get_result::<(String, i64)>(conn)
        .optional()
    };
    let (conversation, seq) = match bump(conn)? {
        Some(bumped) => bumped,
        None => {
            let opened = open_conversation(conn, new, &customer, &thread_key, 1)?;
            if opened == 1 {
                (new.new_conversation_id.clone(), 1)
            } else {
                bump(conn)?.ok_or(diesel::result::Error::NotFound)?
            }
        }
    };
    let message = new.message(conversation, seq);
    diesel::insert_into(messages::table)
        .values((
            messages::id.eq(&message.id),
            messages::conversation_id.eq(&message.conversation_id),
            messages::channel_account_id.eq(&message.channel_account_id),
            messages::seq.eq(seq),
            messages::direction.eq(message.direction),
            messages::author_kind.eq(message.author_kind),
            messages::body.eq(&message.body),
            messages::external_id.eq(&message.external_id),
            messages::metadata.eq(&message.metadata),
            messages::created_at.eq(message.created_at),
        ))
        .execute(conn)?;
    let mut logged = Vec::with_capacity(2);
    for (kind, template) in events_of(new, seq) {
        let payload = fill(template, &message.conversation_id, seq);
        let event_seq = diesel::insert_into(events::table)
            .values((
                events::workspace_id.eq(&new.workspace_id),
                events::kind.eq(kind),
                events::payload.eq(&payload),
                events::created_at.eq(new.at),
            ))
            .returning(events::seq)
            .get_result(conn)?;
        logged.push((event_seq, payload));
    }
    Ok(StoredInbound::New {
        message,
        workspace_id: new.workspace_id.clone(),
        events: logged,
    })
}

/// The batch on PostgreSQL: one statement, so one round trip that commits.
async fn store_postgres(
    conn: &mut diesel_async::AsyncPgConnection,
    batch: &[NewInbound],
) -> Result<Vec<StoredInbound>, DbError> {
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Outcome {
        #[diesel(sql_type = Text)]
        outcome: String,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        conversation: String,
        seq: Option<i64>,
        #[serde(default)]
        events: Vec<i64>,
    }

    // Concurrent batches (two writers, several nodes) take their locks in
    // one order, customer by customer, so they wait for each other instead
    // of deadlocking. The sort is stable: one customer's messages keep theirs.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| {
        (&batch[a].account_id, &batch[a].sender).cmp(&(&batch[b].account_id, &batch[b].sender))
    });
    let sorted: Vec<&NewInbound> = order.iter().map(|&i| &batch[i]).collect();
    let input = serde_json::to_string(&sorted).map_err(serialization)?;
    let query = diesel::sql_query("SELECT frontdesk_store_inbound($1::jsonb)::text AS outcome")
        .bind::<Text, _>(input);
    let row: Outcome = diesel_async::RunQueryDsl::get_result(query, conn).await?;
    let answers: Vec<Answer> = serde_json::from_str(&row.outcome).map_err(serialization)?;
    if answers.len() != batch.len() {
        return Err(serialization(format!(
            "{} answers for {} messages",
            answers.len(),
            batch.len()
        )));
    }
    let mut stored: Vec<(usize, StoredInbound)> = order
        .into_iter()
        .zip(answers)
        .map(|(i, answer)| {
            let new = &batch[i];
            let outcome = match answer.seq {
                Some(seq) => StoredInbound::New {
                    // The payloads as the function filled them.
                    events: events_of(new, seq)
                        .zip(answer.events)
                        .map(|((_, template), event_seq)| {
                            (event_seq, fill(template, &answer.conversation, seq))
                        })
                        .collect(),
                    message: new.message(answer.conversation, seq),
                    workspace_id: new.workspace_id.clone(),
                },
                None => StoredInbound::Duplicate {
                    conversation_id: answer.conversation,
                },
            };
            (i, outcome)
        })
        .collect();
    stored.sort_by_key(|(i, _)| *i);
    Ok(stored.into_iter().map(|(_, outcome)| outcome).collect())
}

impl NewInbound {
    /// The row as stored in `conversation` at `seq`.
    pub fn message(&self, conversation_id: String, seq: i64) -> Message {
        Message {
            id: self.id.clone(),
            conversation_id,
            channel_account_id: self.account_id.clone(),
            seq,
            direction: Direction::Inbound,
            author_kind: AuthorKind::Customer,
            author_user_id: None,
            body: self.body.clone(),
            external_id: Some(self.external_id.clone()),
            metadata: Some(self.metadata.clone()),
            delivery_status: None,
            delivery_error: None,
            created_at: self.at,
            reply_key: None,
        }
    }
}

/// Makes `conn` the batch writer's connection. On SQLite its commits no
/// longer copy the write-ahead log back into the database when the log
/// grows (the automatic checkpoint, which syncs the database file inside
/// a commit and holds up every webhook waiting on it): [`checkpoint`] does
/// that on another connection, beside the writer. Nothing changes on
/// PostgreSQL.
pub async fn become_writer(conn: &mut DbConn) -> Result<(), DbError> {
    sqlite_only(conn, "PRAGMA wal_autocheckpoint = 0").await
}

/// On SQLite, copies what the write-ahead log holds back into the database
/// without waiting for or blocking the writer (`PASSIVE`); see
/// [`become_writer`]. Nothing on PostgreSQL.
pub async fn checkpoint(conn: &mut DbConn) -> Result<(), DbError> {
    sqlite_only(conn, "PRAGMA wal_checkpoint(PASSIVE)").await
}

/// Runs `sql` on a SQLite connection; nothing on PostgreSQL.
async fn sqlite_only(conn: &mut DbConn, sql: &'static str) -> Result<(), DbError> {
    if let DbConn::Sqlite(conn) = conn {
        conn.spawn_blocking(move |conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute(sql)
        })
        .await?;
    }
    Ok(())
}

/// In a template, the blank for the conversation's id: `"conversation_id":""`.
pub const CONVERSATION_BLANK: &str = "\"conversation_id\":\"\"";

/// In a template, the blank for the message's seq: `"seq":0,`.
pub const SEQ_BLANK: &str = "\"seq\":0,";

/// Fills an event template's blanks (see the module documentation). The
/// PostgreSQL function does the same with `replace`.
pub fn fill(template: &str, conversation_id: &str, seq: i64) -> String {
    template
        .replace(
            CONVERSATION_BLANK,
            &format!("\"conversation_id\":\"{conversation_id}\""),
        )
        .replacen(SEQ_BLANK, &format!("\"seq\":{seq},"), 1)
}

/// The kinds and templates of the events a stored message logs, in order.
fn events_of(new: &NewInbound, seq: i64) -> impl Iterator<Item = (&'static str, &str)> {
    let opened = (seq == 1).then_some(("conversation.created", new.conversation_event.as_str()));
    opened
        .into_iter()
        .chain([("message.created", new.message_event.as_str())])
}

fn sql_time<S: serde::Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&at.format("%Y-%m-%d %H:%M:%S%.6f"))
}

fn serialization(error: impl std::fmt::Display) -> DbError {
    DbError::Query(diesel::result::Error::SerializationError(
        format!("inbound batch: {error}").into(),
    ))
}
