//! The in-process broker: the embedded default, with the Redis broker's
//! semantics (coalescing, at-least-once with reclaim, expiring fenced locks,
//! delayed turns, dead letters, pub/sub) for a single node.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    Broker, BrokerError, BrokerResult, Claimed, DeadLetter, Lock, Subscription, TurnJob, now_ms,
};

/// Most dead letters kept.
const DEAD_LETTER_CAP: usize = 1000;

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    ready: VecDeque<(String, String)>,
    /// Due time → (id, payload).
    delayed: BTreeMap<(Instant, u64), String>,
    /// Claimed, unacked: id → (payload, claimed at, deliveries).
    claimed: HashMap<String, (String, Instant, u64)>,
    /// Conversations with a pending (ready or delayed) turn.
    pending: HashSet<String>,
    locks: HashMap<String, (u64, Instant)>,
    fence: u64,
    dead: VecDeque<DeadLetter>,
    dead_total: u64,
    topics: HashMap<String, Vec<tokio::sync::mpsc::Sender<String>>>,
    limits: crate::limits::Windows,
}

/// The in-process broker. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    notify: Arc<tokio::sync::Notify>,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> BrokerResult<T> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| BrokerError("in-process broker state poisoned".into()))?;
        Ok(f(&mut state))
    }
}

fn conversation_of(payload: &str) -> Option<String> {
    serde_json::from_str::<TurnJob>(payload)
        .ok()
        .map(|j| j.conversation_id)
}

impl State {
    fn push_ready(&mut self, payload: String) {
        self.next_id += 1;
        let id = format!("m-{}", self.next_id);
        self.ready.push_back((id, payload));
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let payload = entry.remove();
            self.push_ready(payload);
        }
    }

    fn next_delay(&self, now: Instant) -> Option<Duration> {
        self.delayed
            .keys()
            .next()
            .map(|(due, _)| due.saturating_duration_since(now))
    }
}

impl Broker for MemoryBroker {
    async fn enqueue(&self, conversation_id: &str) -> BrokerResult<bool> {
        let queued = self.with(|s| {
            if !s.pending.insert(conversation_id.to_owned()) {
                return false;
            }
            s.push_ready(TurnJob::new(conversation_id).encode());
            true
        })?;
        if queued {
            self.notify.notify_one();
        }
        Ok(queued)
    }

    async fn enqueue_many(&self, conversation_ids: &[String]) -> BrokerResult<usize> {
        let mut queued = 0;
        for id in conversation_ids {
            queued += usize::from(self.enqueue(id).await?);
        }
        Ok(queued)
    }

    async fn schedule(&self, job: &TurnJob, delay: Duration) -> BrokerResult<()> {
        self.with(|s| {
            s.pending.insert(job.conversation_id.clone());
            s.next_id += 1;
            let key = (Instant::now() + delay, s.next_id);
            s.delayed.insert(key, job.encode());
        })?;
        self.notify.notify_one();
        Ok(())
    }

    async fn claim(
        &self,
        _consumer: &str,
        wait: Duration,
        reclaim_idle: Duration,
    ) -> BrokerResult<Option<Claimed>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let (claimed, next_due) = self.with(|s| {
                let now = Instant::now();
                s.promote_due(now);
                // A turn left unacked too long: its worker died.
                let stale = s
                    .claimed
                    .iter()
                    .filter(|(_, (_, at, _))| now.duration_since(*at) >= reclaim_idle)
                    .min_by_key(|(_, (_, at, _))| *at)
                    .map(|(id, _)| id.clone());
                if let Some(id) = stale
                    && let Some((payload, at, deliveries)) = s.claimed.get_mut(&id)
                {
                    *at = now;
                    *deliveries += 1;
                    return (
                        Some(Claimed {
                            id,
                            payload: payload.clone(),
                            deliveries: *deliveries,
                        }),
                        None,
                    );
                }
                if let Some((id, payload)) = s.ready.pop_front() {
                    if let Some(conversation) = conversation_of(&payload) {
                        s.pending.remove(&conversation);
                    }
                    s.claimed.insert(id.clone(), (payload.clone(), now, 1));
                    return (
                        Some(Claimed {
                            id,
                            payload,
                            deliveries: 1,
                        }),
                        None,
                    );
                }
                (None, s.next_delay(now))
            })?;
            if claimed.is_some() {
                return Ok(claimed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut sleep = deadline - now;
            if let Some(due) = next_due {
                sleep = sleep.min(due);
            }
            // Also wake to reclaim turns of dead workers.
            sleep = sleep.min(reclaim_idle.max(Duration::from_millis(10)));
            let _ = tokio::time::timeout(sleep, notified).await;
        }
    }

    async fn ack(&self, claimed: &Claimed) -> BrokerResult<()> {
        self.with(|s| {
            s.claimed.remove(&claimed.id);
        })
    }

    async fn dead_letter(&self, claimed: &Claimed, reason: &str) -> BrokerResult<()> {
        self.with(|s| {
            s.claimed.remove(&claimed.id);
            s.dead.push_front(DeadLetter {
                payload: claimed.payload.clone(),
                reason: reason.to_owned(),
                at_ms: now_ms(),
            });
            s.dead.truncate(DEAD_LETTER_CAP);
            s.dead_total += 1;
        })
    }

    async fn dead_letters(&self, limit: usize) -> BrokerResult<(Vec<DeadLetter>, u64)> {
        self.with(|s| (s.dead.iter().take(limit).cloned().collect(), s.dead_total))
    }

    async fn lock(&self, conversation_id: &str, ttl: Duration) -> BrokerResult<Option<Lock>> {
        self.with(|s| {
            let now = Instant::now();
            if let Some((_, expires)) = s.locks.get(conversation_id)
                && *expires > now
            {
                return None;
            }
            s.fence += 1;
            s.locks
                .insert(conversation_id.to_owned(), (s.fence, now + ttl));
            Some(Lock {
                conversation_id: conversation_id.to_owned(),
                token: s.fence,
            })
        })
    }

    async fn renew(&self, lock: &Lock, ttl: Duration) -> BrokerResult<bool> {
        self.with(|s| match s.locks.get_mut(&lock.conversation_id) {
            Some((token, expires)) if *token == lock.token && *expires > Instant::now() => {
                *expires = Instant::now() + ttl;
                true
            }
            _ => false,
        })
    }

    async fn unlock(&self, lock: &Lock) -> BrokerResult<bool> {
        self.with(|s| match s.locks.get(&lock.conversation_id) {
            Some((token, _)) if *token == lock.token => {
                s.locks.remove(&lock.conversation_id);
                true
            }
            _ => false,
        })
    }

    async fn publish(&self, topic: &str, payload: &str) -> BrokerResult<()> {
        self.with(|s| {
            if let Some(subscribers) = s.topics.get_mut(topic) {
                // A full or closed subscriber loses the event, never blocks others.
                subscribers.retain(|tx| !tx.is_closed());
                for tx in subscribers.iter() {
                    let _ = tx.try_send(payload.to_owned());
                }
            }
        })
    }

    async fn publish_many(&self, events: &[(String, String)]) -> BrokerResult<()> {
        for (topic, payload) in events {
            self.publish(topic, payload).await?;
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> BrokerResult<Subscription> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        self.with(|s| s.topics.entry(topic.to_owned()).or_default().push(tx))?;
        Ok(rx)
    }

    async fn admit(
        &self,
        limits: &[crate::Limit],
        id: &str,
        window: Duration,
    ) -> BrokerResult<Option<Duration>> {
        let now = Instant::now();
        self.with(|s| s.limits.admit(limits, id, window, now))
    }

    async fn forgive(&self, keys: &[String], id: &str) -> BrokerResult<()> {
        self.with(|s| s.limits.forgive(keys, id))
    }

    async fn ping(&self) -> BrokerResult<()> {
        self.with(|_| ())
    }
}
