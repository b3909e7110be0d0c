//! The broker: carries conversation turns to workers, serializes each
//! conversation with a lock, and fans out realtime events. It knows nothing
//! of the rest of Frontdesk: a turn is a conversation id, an event a string.
//!
//! # Layout
//!
//! - `lib.rs` — the [`Broker`] trait, its types ([`TurnJob`], [`Claimed`],
//!   [`Lock`], [`Subscription`]) and [`AnyBroker`], the one the app holds.
//! - [`redis`] — [`redis::RedisBroker`]: a stream with a consumer group for
//!   turns (`XAUTOCLAIM` takes over turns of dead workers), a sorted set of
//!   delayed turns, per-conversation locks with expiry, a fencing token,
//!   renewal and compare-and-delete release, a dead-letter list, pub/sub.
//!   Every key is under `redis.key_prefix`.
//! - [`memory`] — [`memory::MemoryBroker`]: the same semantics in process,
//!   the embedded default (no `redis.url`).
//! - [`limits`] — rate limits: sliding windows of attempts per key, kept in
//!   process or in Redis sorted sets.
//! - `tests/conformance.rs` — the one suite both must pass.
//!
//! # Data flow
//!
//! Ingest enqueues a conversation → a worker claims the turn, takes the
//! conversation's lock (its fencing token guards the database writes),
//! acks the turn and releases the lock; a turn deferred for debounce or a
//! busy lock is scheduled for later; events published on a workspace's topic
//! reach every node's subscribers.
//!
//! Semantics both keep:
//! - **Coalescing.** A conversation has at most one pending turn (queued or
//!   delayed); enqueueing another is a no-op until a worker claims it.
//! - **At-least-once.** A claimed turn stays pending until acked; a worker
//!   that dies leaves it to be reclaimed after `reclaim_idle`.
//! - **Locks.** `lock` hands out an increasing fencing token; only its holder
//!   renews or releases it, and it expires on its own after its TTL.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod limits;
pub mod memory;
pub mod redis;

pub use limits::Limit;

/// A broker failure (Redis down, a script refused).
#[derive(Debug, Clone, thiserror::Error)]
#[error("broker: {0}")]
pub struct BrokerError(pub String);

/// Broker results.
pub type BrokerResult<T> = Result<T, BrokerError>;

/// What a turn job carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnJob {
    /// The conversation to answer.
    pub conversation_id: String,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempt: u32,
}

impl TurnJob {
    /// A first attempt.
    pub fn new(conversation_id: impl Into<String>) -> Self {
        Self {
            conversation_id: conversation_id.into(),
            attempt: 0,
        }
    }

    /// The wire form.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A claimed job, as stored (the payload may be corrupt; the worker decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Broker id of the entry.
    pub id: String,
    /// Raw payload.
    pub payload: String,
    /// How many times it was handed out (1 the first time).
    pub deliveries: u64,
}

impl Claimed {
    /// The payload parsed.
    pub fn job(&self) -> Result<TurnJob, String> {
        serde_json::from_str(&self.payload).map_err(|e| format!("corrupt turn payload: {e}"))
    }
}

/// A held conversation lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// The conversation.
    pub conversation_id: String,
    /// Fencing token: strictly increasing across all locks of the broker.
    pub token: u64,
}

/// A dead-lettered job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The raw payload.
    pub payload: String,
    /// Why it was given up.
    pub reason: String,
    /// When, as Unix milliseconds.
    pub at_ms: i64,
}

/// Events of a realtime topic.
pub type Subscription = tokio::sync::mpsc::Receiver<String>;

/// Carries turns, locks conversations, fans out events. Both implementations
/// pass `broker/tests/conformance.rs`.
pub trait Broker: Send + Sync + 'static {
    /// Queues a turn for the conversation unless one is pending. Returns
    /// whether a new turn was queued.
    fn enqueue(&self, conversation_id: &str) -> impl Future<Output = BrokerResult<bool>> + Send;

    /// Queues the turns of many conversations at once (one round trip on
    /// Redis), as [`enqueue`](Broker::enqueue) does for each. Returns how many
    /// new turns were queued.
    fn enqueue_many(
        &self,
        conversation_ids: &[String],
    ) -> impl Future<Output = BrokerResult<usize>> + Send;

    /// Queues `job` after `delay` (retries, debounce, a busy conversation);
    /// it counts as the conversation's pending turn meanwhile.
    fn schedule(
        &self,
        job: &TurnJob,
        delay: Duration,
    ) -> impl Future<Output = BrokerResult<()>> + Send;

    /// Hands out the next turn: one due, one left unacked longer than
    /// `reclaim_idle` by a dead worker, or a new one, waiting up to `wait`.
    fn claim(
        &self,
        consumer: &str,
        wait: Duration,
        reclaim_idle: Duration,
    ) -> impl Future<Output = BrokerResult<Option<Claimed>>> + Send;

    /// Done with a claimed turn (answered, rescheduled or dead-lettered).
    fn ack(&self, claimed: &Claimed) -> impl Future<Output = BrokerResult<()>> + Send;

    /// Gives a turn up: recorded with the reason, then acked.
    fn dead_letter(
        &self,
        claimed: &Claimed,
        reason: &str,
    ) -> impl Future<Output = BrokerResult<()>> + Send;

    /// The dead letters, newest first (at most `limit`), and how many there are.
    fn dead_letters(
        &self,
        limit: usize,
    ) -> impl Future<Output = BrokerResult<(Vec<DeadLetter>, u64)>> + Send;

    /// Takes the conversation's lock for `ttl`, or `None` if it is held.
    fn lock(
        &self,
        conversation_id: &str,
        ttl: Duration,
    ) -> impl Future<Output = BrokerResult<Option<Lock>>> + Send;

    /// Extends a held lock; `false` if it expired or another holds it.
    fn renew(&self, lock: &Lock, ttl: Duration) -> impl Future<Output = BrokerResult<bool>> + Send;

    /// Releases a held lock; `false` if it was no longer ours.
    fn unlock(&self, lock: &Lock) -> impl Future<Output = BrokerResult<bool>> + Send;

    /// Publishes a realtime event to every subscriber of `topic`, on every node.
    fn publish(&self, topic: &str, payload: &str) -> impl Future<Output = BrokerResult<()>> + Send;

    /// Publishes many `(topic, payload)` events at once, in order (one round
    /// trip on Redis).
    fn publish_many(
        &self,
        events: &[(String, String)],
    ) -> impl Future<Output = BrokerResult<()>> + Send;

    /// Subscribes to `topic`.
    fn subscribe(&self, topic: &str) -> impl Future<Output = BrokerResult<Subscription>> + Send;

    /// Admits attempt `id` when every limit has room in the last `window`,
    /// counting it against each at once (see [`limits`]); otherwise returns
    /// how long until there is room. Shared by every node on Redis.
    fn admit(
        &self,
        limits: &[Limit],
        id: &str,
        window: Duration,
    ) -> impl Future<Output = BrokerResult<Option<Duration>>> + Send;

    /// Takes attempt `id` back from each key (it succeeded).
    fn forgive(&self, keys: &[String], id: &str) -> impl Future<Output = BrokerResult<()>> + Send;

    /// Whether the broker answers.
    fn ping(&self) -> impl Future<Output = BrokerResult<()>> + Send;
}

/// The configured broker: Redis when `redis.url` is set, else in process.
#[derive(Debug, Clone)]
pub enum AnyBroker {
    /// Redis.
    Redis(redis::RedisBroker),
    /// In process.
    Memory(memory::MemoryBroker),
}

macro_rules! delegate {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            AnyBroker::Redis($b) => $call.await,
            AnyBroker::Memory($b) => $call.await,
        }
    };
}

impl Broker for AnyBroker {
    async fn enqueue(&self, conversation_id: &str) -> BrokerResult<bool> {
        delegate!(self, b => b.enqueue(conversation_id))
    }
    async fn enqueue_many(&self, conversation_ids: &[String]) -> BrokerResult<usize> {
        delegate!(self, b => b.enqueue_many(conversation_ids))
    }
    async fn schedule(&self, job: &TurnJob, delay: Duration) -> BrokerResult<()> {
        delegate!(self, b => b.schedule(job, delay))
    }
    async fn claim(
        &self,
        consumer: &str,
        wait: Duration,
        reclaim_idle: Duration,
    ) -> BrokerResult<Option<Claimed>> {
        delegate!(self, b => b.claim(consumer, wait, reclaim_idle))
    }
    async fn ack(&self, claimed: &Claimed) -> BrokerResult<()> {
        delegate!(self, b => b.ack(claimed))
    }
    async fn dead_letter(&self, claimed: &Claimed, reason: &str) -> BrokerResult<()> {
        delegate!(self, b => b.dead_letter(claimed, reason))
    }
    async fn dead_letters(&self, limit: usize) -> BrokerResult<(Vec<DeadLetter>, u64)> {
        delegate!(self, b => b.dead_letters(limit))
    }
    async fn lock(&self, conversation_id: &str, ttl: Duration) -> BrokerResult<Option<Lock>> {
        delegate!(self, b => b.lock(conversation_id, ttl))
    }
    async fn renew(&self, lock: &Lock, ttl: Duration) -> BrokerResult<bool> {
        delegate!(self, b => b.renew(lock, ttl))
    }
    async fn unlock(&self, lock: &Lock) -> BrokerResult<bool> {
        delegate!(self, b => b.unlock(lock))
    }
    async fn publish(&self, topic: &str, payload: &str) -> BrokerResult<()> {
        delegate!(self, b => b.publish(topic, payload))
    }
    async fn publish_many(&self, events: &[(String, String)]) -> BrokerResult<()> {
        delegate!(self, b => b.publish_many(events))
    }
    async fn subscribe(&self, topic: &str) -> BrokerResult<Subscription> {
        delegate!(self, b => b.subscribe(topic))
    }
    async fn admit(
        &self,
        limits: &[Limit],
        id: &str,
        window: Duration,
    ) -> BrokerResult<Option<Duration>> {
        delegate!(self, b => b.admit(limits, id, window))
    }
    async fn forgive(&self, keys: &[String], id: &str) -> BrokerResult<()> {
        delegate!(self, b => b.forgive(keys, id))
    }
    async fn ping(&self) -> BrokerResult<()> {
        delegate!(self, b => b.ping())
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
