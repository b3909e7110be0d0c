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
                    // sets, from two messages up.
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

/// The smallest batch SQLite stores as sets: a lone message takes the
/// message-by-message statements, which need no JSON.
const SQLITE_SETS_FROM: usize = 2;

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
///
/// Each set goes in as one JSON array bound to a statement of fixed text
/// (`json_each`), so every statement is prepared once per connection and
/// cached, whatever the batch's size. The writes are `OR FAIL`: a failure
/// rolls the whole batch back anyway, so SQLite need not undo the failed
/// statement alone first. (No pragma is set per batch: SQLite re-prepares
/// every cached statement after a pragma that changes a flag.)
fn store_sqlite_chats(
    conn: &mut SqliteConnection,
    batch: &[NewInbound],
) -> QueryResult<Vec<StoredInbound>> {
    use diesel::sql_types::{BigInt, Nullable, Text};
    use std::collections::{HashMap, HashSet};

    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = Text)]
        account: String,
        #[diesel(sql_type = Text)]
        external_id: String,
        #[diesel(sql_type = Text)]
        conversation: String,
    }
    #[derive(QueryableByName)]
    struct Known {
        #[diesel(sql_type = Text)]
        workspace: String,
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = Text)]
        sender: String,
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Nullable<Text>)]
        name: Option<String>,
    }
    #[derive(QueryableByName)]
    struct Open {
        #[diesel(sql_type = Text)]
        account: String,
        #[diesel(sql_type = Text)]
        customer: String,
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = BigInt)]
        last_seq: i64,
    }

    // Redeliveries, and repeats within the batch (the first one counts).
    let keys: Vec<(&str, &str)> = batch
        .iter()
        .map(|new| (new.account_id.as_str(), new.external_id.as_str()))
        .collect();
    let mut stored: HashMap<(String, String), String> = HashMap::new();
    let found: Vec<Stored> = JsonSet::new(SQLITE_STORED, &keys)?.load(conn)?;
    for row in found {
        stored.insert((row.account, row.external_id), row.conversation);
    }
    let mut fresh = Vec::new();
    let mut firsts = HashSet::new();
    for (i, (account, external)) in keys.iter().enumerate() {
        let key = ((*account).to_owned(), (*external).to_owned());
        if !stored.contains_key(&key) && firsts.insert(key) {
            fresh.push(i);
        }
    }
    let fresh_rows: Vec<&NewInbound> = fresh.iter().map(|&i| &batch[i]).collect();

    // Customers: the known ones in one statement.
    let senders: Vec<(&str, &str, &str)> = fresh_rows
        .iter()
        .map(|new| {
            (
                new.workspace_id.as_str(),
                new.channel_kind,
                new.sender.as_str(),
            )
        })
        .collect();
    let mut customer_of: HashMap<(String, String, String), (String, Option<String>)> =
        HashMap::new();
    let known: Vec<Known> = JsonSet::new(SQLITE_CUSTOMERS, &senders)?.load(conn)?;
    for row in known {
        customer_of.insert((row.workspace, row.kind, row.sender), (row.id, row.name));
    }
    let customer_key = |new: &NewInbound| {
        (
            new.workspace_id.clone(),
            new.channel_kind.to_owned(),
            new.sender.clone(),
        )
    };
    let mut customers = Vec::with_capacity(fresh_rows.len());
    for new in &fresh_rows {
        let customer = match customer_of.get_mut(&customer_key(new)) {
            Some((id, name)) => {
                if rename_customer(conn, id, name.as_deref(), new)? {
                    name.clone_from(&new.display_name);
                }
                id.clone()
            }
            None => {
                insert_customer(conn, new)?;
                customer_of.insert(
                    customer_key(new),
                    (new.new_customer_id.clone(), new.display_name.clone()),
                );
                new.new_customer_id.clone()
            }
        };
        customers.push(customer);
    }

    // Open conversations in one statement; new ones opened at seq 0.
    let owners: Vec<(&str, &str)> = fresh_rows
        .iter()
        .zip(&customers)
        .map(|(new, customer)| (new.account_id.as_str(), customer.as_str()))
        .collect();
    let mut conversation_of: HashMap<(String, String), (String, i64)> = HashMap::new();
    let open: Vec<Open> = JsonSet::new(SQLITE_OPEN, &owners)?.load(conn)?;
    for row in open {
        conversation_of.insert((row.account, row.customer), (row.id, row.last_seq));
    }
    let mut placed = Vec::with_capacity(owners.len());
    let mut opened = Vec::new();
    for (new, (account, customer)) in fresh_rows.iter().zip(&owners) {
        let key = ((*account).to_owned(), (*customer).to_owned());
        let (conversation, last_seq) = conversation_of.entry(key).or_insert_with(|| {
            opened.push((*new, *customer));
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
    let bumps: Vec<(&str, i64, String)> = newest
        .iter()
        .map(|(id, (seq, at))| (*id, *seq, sqlite_time(*at)))
        .collect();
    if !bumps.is_empty() {
        JsonSet::new(SQLITE_BUMP, &bumps)?.execute(conn)?;
    }

    // The messages, then their events, one statement each.
    let rows: Vec<_> = placed
        .iter()
        .map(|(m, seq)| {
            (
                m.id.as_str(),
                m.conversation_id.as_str(),
                m.channel_account_id.as_str(),
                *seq,
                m.body.as_str(),
                m.external_id.as_deref(),
                m.metadata.as_deref(),
                sqlite_time(m.created_at),
            )
        })
        .collect();
    JsonSet::new(SQLITE_MESSAGES, &rows)?.execute(conn)?;
    // `(message's place, its new row, kind, payload)`, in log order.
    let mut logged: Vec<(usize, &NewInbound, &str, String)> = Vec::new();
    for (n, ((message, seq), new)) in placed.iter().zip(&fresh_rows).enumerate() {
        for (kind, template) in events_of(new, *seq) {
            logged.push((n, new, kind, fill(template, &message.conversation_id, *seq)));
        }
    }
    let log: Vec<_> = logged
        .iter()
        .map(|(_, new, kind, payload)| {
            (
                new.workspace_id.as_str(),
                *kind,
                payload.as_str(),
                sqlite_time(new.at),
            )
        })
        .collect();
    JsonSet::new(SQLITE_EVENTS, &log)?.execute(conn)?;
    let last: i64 = diesel::select(last_insert_rowid()).get_result(conn)?;
    let first = last - logged.len() as i64 + 1;
    let mut events_by_row: Vec<Vec<(i64, String)>> = vec![Vec::new(); placed.len()];
    for (offset, (n, _, _, payload)) in logged.into_iter().enumerate() {
        events_by_row[n].push((first + offset as i64, payload));
    }

    // Answers, in the batch's order; a repeat within the batch answers
    // with its first's conversation.
    let mut answers: Vec<Option<StoredInbound>> = vec![None; batch.len()];
    for ((&i, (message, _)), events) in fresh.iter().zip(placed).zip(events_by_row) {
        let key = (batch[i].account_id.clone(), batch[i].external_id.clone());
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
                    .get(&(new.account_id.clone(), new.external_id.clone()))
                    .cloned()
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// Stored inbound messages among `[[account, external id], …]`:
/// `(account, external id, conversation)`.
const SQLITE_STORED: &str = "SELECT m.channel_account_id AS account, \
     m.external_id AS external_id, m.conversation_id AS conversation FROM json_each(?) AS j \
     JOIN messages AS m ON m.channel_account_id = j.value ->> 0 \
     AND m.direction = 'inbound' AND m.external_id = j.value ->> 1";

/// Known customers among `[[workspace, kind, sender], …]`.
const SQLITE_CUSTOMERS: &str = "SELECT c.workspace_id AS workspace, c.channel_kind AS kind, \
     c.external_user_id AS sender, c.id AS id, c.display_name AS name \
     FROM json_each(?) AS j JOIN customers AS c ON c.workspace_id = j.value ->> 0 \
     AND c.channel_kind = j.value ->> 1 AND c.external_user_id = j.value ->> 2";

/// Open chat conversations among `[[account, customer], …]`.
const SQLITE_OPEN: &str = "SELECT c.channel_account_id AS account, c.customer_id AS customer, \
     c.id AS id, c.last_seq AS last_seq FROM json_each(?) AS j \
     JOIN conversations AS c ON c.channel_account_id = j.value ->> 0 \
     AND c.customer_id = j.value ->> 1 AND c.thread_key = '' AND c.status <> 'resolved'";

/// `[[conversation, last_seq, at], …]`: each conversation's newest seq and time.
const SQLITE_BUMP: &str = "UPDATE OR FAIL conversations SET last_seq = j.value ->> 1, \
     last_message_at = j.value ->> 2, updated_at = j.value ->> 2 \
     FROM json_each(?) AS j WHERE conversations.id = j.value ->> 0";

/// `[[id, conversation, account, seq, body, external id, metadata, at], …]`.
const SQLITE_MESSAGES: &str = "INSERT OR FAIL INTO messages (id, conversation_id, \
     channel_account_id, seq, direction, author_kind, body, external_id, metadata, created_at) \
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, 'inbound', 'customer', \
     j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 7 FROM json_each(?) AS j";

/// `[[workspace, kind, payload, at], …]`, logged in order.
const SQLITE_EVENTS: &str = "INSERT OR FAIL INTO events (workspace_id, kind, payload, created_at) \
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM json_each(?) AS j";

/// A statement of fixed text whose one bind is a set as a JSON array (for
/// `json_each`). Unlike `sql_query`, which diesel never caches, its
/// prepared statement is cached by its text.
#[derive(Debug)]
struct JsonSet {
    sql: &'static str,
    json: String,
}

impl JsonSet {
    fn new<T: Serialize>(sql: &'static str, rows: &T) -> QueryResult<Self> {
        let json = serde_json::to_string(rows)
            .map_err(|e| diesel::result::Error::SerializationError(e.into()))?;
        Ok(Self { sql, json })
    }
}

impl diesel::query_builder::QueryId for JsonSet {
    type QueryId = ();
    // Cached by its SQL text, which is fixed.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite> for JsonSet {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        // The one `?` of the text is where the bind goes.
        let (before, after) = self.sql.split_once('?').unwrap_or((self.sql, ""));
        out.push_sql(before);
        out.push_bind_param::<diesel::sql_types::Text, _>(&self.json)?;
        out.push_sql(after);
        Ok(())
    }
}

impl diesel::query_builder::Query for JsonSet {
    type SqlType = diesel::sql_types::Untyped;
}

impl RunQueryDsl<SqliteConnection> for JsonSet {}

/// A time as diesel stores it in SQLite (`%F %T%.f`), so rows written
/// through JSON read back like any other.
fn sqlite_time(at: NaiveDateTime) -> String {
    at.format("%F %T%.f").to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, DbConn};
    use crate::settings::{DatabaseSettings, DatabaseUrl};
    use std::sync::Arc;

    fn message(n: u32, sender: &str, external_id: &str, name: Option<&str>) -> NewInbound {
        let at = chrono::DateTime::from_timestamp(1_800_000_000 + i64::from(n), n * 1_000)
            .expect("time")
            .naive_utc();
        NewInbound {
            id: format!("m{n}"),
            new_customer_id: format!("cu{n}"),
            new_conversation_id: format!("co{n}"),
            at,
            account_id: "acct".into(),
            workspace_id: "ws".into(),
            bot_id: "bot".into(),
            channel_kind: "telegram",
            sender: sender.into(),
            display_name: name.map(str::to_owned),
            external_id: external_id.into(),
            body: format!("question {n}: \"quoted\" \\ ünïcode 🚲\nline"),
            metadata: format!("{{\"n\":{n}}}"),
            thread: None,
            conversation_event: format!(
                "{{\"type\":\"conversation.created\",{CONVERSATION_BLANK}}}"
            ),
            message_event: format!(
                "{{\"type\":\"message.created\",{CONVERSATION_BLANK},\"message\":{{{SEQ_BLANK}{CONVERSATION_BLANK}}}}}"
            ),
        }
    }

    async fn database(dir: &std::path::Path, name: &str) -> (Db, DbConn) {
        let settings = DatabaseSettings {
            url: DatabaseUrl::Sqlite(dir.join(name)),
            pool_size: 1,
            connect_timeout_secs: 5,
            sqlite_busy_timeout_ms: 1000,
        };
        let db = Db::connect(&settings).await.expect("connect");
        db.migrate(&settings).await.expect("migrate");
        let mut conn = db.get().await.expect("conn");
        // The batch alone: no workspace, bot or account rows to point at.
        sqlite_only(&mut conn, "PRAGMA foreign_keys = OFF")
            .await
            .expect("pragma");
        (db, conn)
    }

    /// Every stored row, with the SQLite type of each typed column.
    async fn dump(conn: &mut DbConn) -> String {
        #[derive(QueryableByName)]
        struct Dump {
            #[diesel(sql_type = diesel::sql_types::Text)]
            rows: String,
        }
        let DbConn::Sqlite(conn) = conn else {
            unreachable!("SQLite only")
        };
        conn.spawn_blocking(|conn| {
            diesel::sql_query(
                "SELECT (SELECT json_group_array(json_array(id, conversation_id, channel_account_id, \
                 seq, typeof(seq), direction, author_kind, body, external_id, metadata, created_at, \
                 typeof(created_at))) FROM (SELECT * FROM messages ORDER BY id)) \
                 || (SELECT json_group_array(json_array(seq, workspace_id, kind, payload, created_at)) \
                 FROM (SELECT * FROM events ORDER BY seq)) \
                 || (SELECT json_group_array(json_array(id, customer_id, status, last_seq, \
                 typeof(last_seq), last_message_at, updated_at, created_at)) \
                 FROM (SELECT * FROM conversations ORDER BY id)) \
                 || (SELECT json_group_array(json_array(id, external_user_id, display_name, updated_at)) \
                 FROM (SELECT * FROM customers ORDER BY id)) AS rows",
            )
            .get_result::<Dump>(conn)
        })
        .await
        .expect("dump")
        .rows
    }

    /// The set statements store exactly what the message-by-message ones
    /// do, and answer the same: new customers and conversations, a known
    /// customer renamed, repeats within the batch, redeliveries of what an
    /// earlier batch stored.
    #[test]
    fn sets_store_what_one_by_one_stores() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let (_a, mut sets) = database(dir.path(), "sets.db").await;
            let (_b, mut single) = database(dir.path(), "single.db").await;
            let first: Vec<NewInbound> = vec![
                message(1, "ann", "e1", Some("Ann")),
                message(2, "bob", "e2", None),
                message(3, "ann", "e3", Some("Ann")),
            ];
            let second: Vec<NewInbound> = vec![
                message(4, "cy", "e4", Some("Cy")),
                message(5, "ann", "e1", Some("Ann")),
                message(6, "bob", "e6", Some("Robert")),
                message(7, "cy", "e4", Some("Cy")),
                message(8, "ann", "e8", None),
                message(9, "dee", "e9", None),
                message(10, "bob", "e10", Some("Robert")),
            ];
            let mut answers = (Vec::new(), Vec::new());
            for batch in [first, second] {
                let whole: Arc<[NewInbound]> = batch.clone().into();
                answers
                    .0
                    .extend(store_batch(&mut sets, whole).await.expect("sets"));
                for new in batch {
                    let alone: Arc<[NewInbound]> = vec![new].into();
                    answers
                        .1
                        .extend(store_batch(&mut single, alone).await.expect("single"));
                }
            }
            assert_eq!(answers.0, answers.1);
            let duplicates = answers
                .0
                .iter()
                .filter(|a| matches!(a, StoredInbound::Duplicate { .. }))
                .count();
            assert_eq!(duplicates, 2, "e1 redelivered, e4 repeated");
            let (sets, single) = (dump(&mut sets).await, dump(&mut single).await);
            assert_eq!(sets, single);
            assert!(
                sets.contains("\"integer\""),
                "seqs stored as integers: {sets}"
            );
            assert!(sets.contains("Robert"), "bob renamed: {sets}");
        });
    }
}
