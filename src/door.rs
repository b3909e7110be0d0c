//! The door: customer messages of concurrent webhooks stored together.
//!
//! Each webhook hands its messages to [`Door::store`] and waits. A writer
//! takes whatever has queued up meanwhile (up to [`MAX_ROWS`] messages) and
//! stores it as one batch ([`store_batch`]): one transaction, one commit and
//! one fsync shared by every webhook in it, one round trip on PostgreSQL.
//! Each webhook then gets its own answer. The busier the door, the bigger
//! the batches; an idle door stores a lone webhook at once.
//!
//! - **A bad message fails only its webhook.** A batch that fails is stored
//!   again webhook by webhook, so the others still go through.
//! - **A redelivery costs no write.** Recently stored platform ids are
//!   remembered ([`Door::seen`]); the database's own check covers the rest
//!   and other nodes.
//! - **Overload is refused, never buffered without bound.** At most
//!   `server.webhook_queue` webhooks wait; beyond that [`Door::store`]
//!   answers
//!   [`DoorError::Busy`] at once (a 503 with `Retry-After`).
//! - **Turns and live events follow the commit.** After a batch commits, its
//!   conversations' turns are queued and its events published on the broker
//!   in one round trip each, off the webhooks' path. Stored is what counts:
//!   if the broker is slow or down, the sweeper queues the turns from the
//!   database, and agents replay the events from the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use broker::{AnyBroker, Broker};
use store::db::{Db, DbConn, DbError};

use crate::metrics::Metrics;
use store::models::inbound::{NewInbound, StoredInbound, become_writer, checkpoint, store_batch};
use tokio::sync::{mpsc, oneshot};

/// The most messages stored in one batch.
pub const MAX_ROWS: usize = 256;

/// Batches waiting for their turns and events to go out on the broker; more
/// are left to the sweeper and the event log.
const ANNOUNCE_QUEUE: usize = 1024;

/// Platform ids remembered per generation (two generations are kept).
const REMEMBERED: usize = 65_536;

/// Why a webhook's messages were not stored.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// Too many webhooks are waiting: retry shortly.
    #[error("too many webhooks are waiting to be stored; retry shortly")]
    Busy,
    /// The database failed; nothing of this webhook was stored.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Door {
    jobs: mpsc::Sender<Job>,
    seen: Mutex<Seen>,
    metrics: Arc<Metrics>,
    /// The broker topic of a workspace's events.
    topic: fn(&str) -> String,
}

#[derive(Debug)]
struct Job {
    rows: Vec<NewInbound>,
    reply: oneshot::Sender<Result<Vec<StoredInbound>, DbError>>,
}

/// What a committed batch tells the broker.
#[derive(Debug, Default)]
struct Announcement {
    /// Conversations with a new message.
    turns: Vec<String>,
    /// `(topic, payload with its seq)`.
    events: Vec<(String, String)>,
}

impl Door {
    /// Opens the door with `writers` concurrent writers (one is right for
    /// SQLite, which has one writer anyway).
    /// At most `queue` webhooks wait (at least one). Events go to the
    /// broker topic `topic` names for their workspace.
    pub fn open(
        db: &Db,
        broker: AnyBroker,
        metrics: Arc<Metrics>,
        (writers, queue): (usize, usize),
        topic: fn(&str) -> String,
    ) -> Arc<Door> {
        let (jobs, queue) = mpsc::channel(queue.max(1));
        let (announce, announcements) = mpsc::channel(ANNOUNCE_QUEUE);
        let door = Arc::new(Door {
            jobs,
            seen: Mutex::new(Seen::default()),
            metrics,
            topic,
        });
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..writers.max(1) {
            tokio::spawn(write(
                db.clone(),
                queue.clone(),
                Arc::downgrade(&door),
                announce.clone(),
            ));
        }
        tokio::spawn(announce_all(broker, announcements));
        if db.backend() == store::db::Backend::Sqlite {
            tokio::spawn(checkpoints(db.clone(), Arc::downgrade(&door)));
        }
        door
    }

    /// Stores `rows` (one webhook's messages) with whatever else is waiting;
    /// one answer per row, in order.
    pub async fn store(&self, rows: Vec<NewInbound>) -> Result<Vec<StoredInbound>, DoorError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        if self.jobs.try_send(Job { rows, reply }).is_err() {
            self.metrics.door_refused.inc();
            return Err(DoorError::Busy);
        }
        let answer = answer.await;
        self.metrics
            .door_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(stored) => Ok(stored?),
            // The writer is gone (shutting down): nothing was stored.
            Err(_) => Err(DoorError::Busy),
        }
    }

    /// The conversation of a message recently stored through this door.
    pub fn seen(&self, account_id: &str, external_id: &str) -> Option<String> {
        let seen = self.seen.lock().ok()?;
        seen.get(account_id, external_id).map(str::to_owned)
    }

    fn remember(&self, stored: &[StoredInbound]) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        for outcome in stored {
            if let StoredInbound::New { message, .. } = outcome
                && let Some(external_id) = &message.external_id
            {
                seen.insert(
                    &message.channel_account_id,
                    external_id,
                    &message.conversation_id,
                );
            }
        }
    }
}

/// One writer: takes what is waiting, stores it as one batch, answers each
/// webhook, hands the rest to the announcer.
async fn write(
    db: Db,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    door: std::sync::Weak<Door>,
    announce: mpsc::Sender<Announcement>,
) {
    // Kept across batches: its page cache stays warm.
    let mut conn = None;
    loop {
        let jobs = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut rows = first.rows.len();
            let mut jobs = vec![first];
            while rows < MAX_ROWS {
                match queue.try_recv() {
                    Ok(job) => {
                        rows += job.rows.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        let started = Instant::now();
        let rows: usize = jobs.iter().map(|job| job.rows.len()).sum();
        let stored = commit(&db, &mut conn, jobs).await;
        let Some(door) = door.upgrade() else {
            return;
        };
        if stored.iter().any(|(_, outcome)| outcome.is_err()) {
            // Back to the pool, which checks it before lending it again.
            conn = None;
        }
        door.metrics.door_batch_messages.observe(rows as f64);
        door.metrics
            .door_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut announcement = Announcement::default();
        for (reply, outcome) in stored {
            if let Ok(outcome) = &outcome {
                door.remember(outcome);
                announcement.add(outcome, door.topic);
            }
            // A webhook that gave up waiting (its client left) still had
            // its messages stored; the platform's retry dedupes.
            let _ = reply.send(outcome);
        }
        if !announcement.turns.is_empty() && announce.try_send(announcement).is_err() {
            tracing::warn!("broker announcements are backed up; the sweeper queues these turns");
        }
    }
}

type Answered = (
    oneshot::Sender<Result<Vec<StoredInbound>, DbError>>,
    Result<Vec<StoredInbound>, DbError>,
);

/// Stores the jobs as one batch; when that fails, one by one, so that only
/// the job at fault fails.
async fn commit(db: &Db, conn: &mut Option<DbConn>, jobs: Vec<Job>) -> Vec<Answered> {
    let mut spans = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    let mut rows = Vec::new();
    for job in jobs {
        spans.push(rows.len()..rows.len() + job.rows.len());
        rows.extend(job.rows);
        replies.push(job.reply);
    }
    let rows: Arc<[NewInbound]> = rows.into();
    let writer = match conn.take() {
        Some(kept) => Ok(kept),
        None => match db.get().await {
            Ok(mut fresh) => become_writer(&mut fresh).await.map(|()| fresh),
            Err(error) => Err(error),
        },
    };
    let conn = match writer {
        Ok(writer) => conn.insert(writer),
        Err(error) => {
            let error = error.to_string();
            return replies
                .into_iter()
                .map(|reply| (reply, Err(DbError::Pool(error.clone()))))
                .collect();
        }
    };
    let batch = store_batch(conn, rows.clone()).await;
    match batch {
        Ok(mut stored) => {
            let mut answered = Vec::with_capacity(replies.len());
            // Split from the back so each job takes its own span.
            for (reply, span) in replies.into_iter().zip(spans).rev() {
                answered.push((reply, Ok(stored.split_off(span.start))));
            }
            answered.reverse();
            answered
        }
        Err(error) if replies.len() == 1 && !transient(&error) => {
            let reply = replies.into_iter().next();
            reply.map(|reply| (reply, Err(error))).into_iter().collect()
        }
        Err(error) => {
            if replies.len() > 1 {
                tracing::warn!(%error, webhooks = replies.len(), "a batch failed; storing its webhooks one by one");
            }
            let mut answered = Vec::with_capacity(replies.len());
            for (reply, span) in replies.into_iter().zip(spans) {
                let alone: Arc<[NewInbound]> = rows[span].to_vec().into();
                let mut attempt = 1;
                let outcome = loop {
                    match store_batch(conn, alone.clone()).await {
                        // A concurrent batch (another writer or node) won a
                        // race on the same rows; now it has committed.
                        Err(error) if attempt < RETRIES && transient(&error) => attempt += 1,
                        outcome => break outcome,
                    }
                };
                if let Err(error) = &outcome {
                    tracing::warn!(%error, "a webhook's messages could not be stored");
                }
                answered.push((reply, outcome));
            }
            answered
        }
    }
}

/// Attempts for one webhook's messages after its batch failed.
const RETRIES: usize = 3;

/// A failure that a second attempt may not meet: a race with a concurrent
/// transaction (the same message stored at once, a deadlock, a
/// serialization failure).
fn transient(error: &DbError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        DbError::Query(Error::DatabaseError(kind, info)) => {
            matches!(
                kind,
                DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::SerializationFailure
            ) || info.message().contains("deadlock")
        }
        _ => false,
    }
}

impl Announcement {
    fn add(&mut self, stored: &[StoredInbound], topic: fn(&str) -> String) {
        for outcome in stored {
            let StoredInbound::New {
                message,
                workspace_id,
                events,
            } = outcome
            else {
                continue;
            };
            if !self.turns.contains(&message.conversation_id) {
                self.turns.push(message.conversation_id.clone());
            }
            for (seq, payload) in events {
                // The payload is a JSON object: the seq goes in front.
                let body = payload.strip_prefix('{').unwrap_or(payload);
                let comma = if body.starts_with('}') { "" } else { "," };
                self.events
                    .push((topic(workspace_id), format!("{{\"seq\":{seq}{comma}{body}")));
            }
        }
    }
}

/// How often the SQLite log is copied back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(1000);

/// SQLite: checkpoints beside the writer (see `become_writer`), as long as
/// the door is open.
async fn checkpoints(db: Db, door: std::sync::Weak<Door>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if door.strong_count() == 0 {
            return;
        }
        let done = async {
            let mut conn = db.get().await?;
            checkpoint(&mut conn).await
        };
        if let Err(error) = done.await {
            tracing::warn!(%error, "SQLite checkpoint failed; retrying");
        }
    }
}

/// Queues the turns and publishes the events of committed batches, merging
/// whatever batches have piled up into one round trip each.
async fn announce_all(broker: AnyBroker, mut announcements: mpsc::Receiver<Announcement>) {
    while let Some(mut next) = announcements.recv().await {
        while let Ok(more) = announcements.try_recv() {
            next.turns.extend(more.turns);
            next.events.extend(more.events);
            if next.turns.len() >= MAX_ROWS * 4 {
                break;
            }
        }
        if let Err(error) = broker.enqueue_many(&next.turns).await {
            tracing::warn!(%error, turns = next.turns.len(), "turns not queued; the sweeper will queue them");
        }
        if let Err(error) = broker.publish_many(&next.events).await {
            tracing::warn!(%error, events = next.events.len(), "realtime events not published; agents replay them from the log");
        }
    }
}

/// Platform ids of recently stored messages, in two generations: the newer
/// fills up, then replaces the older.
#[derive(Debug, Default)]
struct Seen {
    current: HashMap<(String, String), String>,
    previous: HashMap<(String, String), String>,
}

impl Seen {
    fn get(&self, account_id: &str, external_id: &str) -> Option<&str> {
        let key = (account_id.to_owned(), external_id.to_owned());
        self.current
            .get(&key)
            .or_else(|| self.previous.get(&key))
            .map(String::as_str)
    }

    fn insert(&mut self, account_id: &str, external_id: &str, conversation_id: &str) {
        if self.current.len() >= REMEMBERED {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(
            (account_id.to_owned(), external_id.to_owned()),
            conversation_id.to_owned(),
        );
    }
}
