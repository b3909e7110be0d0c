//! The worker: answers conversations one turn at a time, in order.
//!
//! [`Worker::process_next`] does one turn and returns an [`Outcome`]; tests
//! call it to drain the queue deterministically, [`run`] wraps it in
//! `worker.concurrency` loops plus the sweeper.
//!
//! One turn: claim a job → lock its conversation (busy: defer the job) →
//! fence the turn in the database (an older lock holder can no longer
//! write) → read the inbound messages not yet answered, in order → wait out
//! the debounce (defer) → if people have the conversation (`pending_handoff`
//! or `agent`), mark the messages seen and stay silent → ask the
//! [`Responder`], which streams its replies (paragraphs) while a typing
//! indicator shows → for each reply: re-check that the bot still has the
//! conversation and renew the lock, store it under a per-turn key (a turn
//! resumed after a crash finds and sends the same replies instead of new
//! ones), publish it, send it (email collects the replies into one
//! message) → apply the responder's verdict (a handoff) → record what was
//! answered → ack → unlock. A failing turn is retried with backoff, then
//! dead-lettered.
//!
//! Delivery is at-least-once at the platform boundary: a worker killed
//! between a platform's "sent" and the database's record of it leaves that
//! one reply to be sent again by the worker that takes over.

mod replies;
mod run;
mod turn;

pub use run::{run, sweep};

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::App;
use crate::turn::Responder;
use broker::{Broker, Claimed, TurnJob};
use store::db::DbError;
use store::models::conversation::Conversation;

/// What [`Worker::process_next`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No turn was waiting.
    Idle,
    /// Replies sent (or recorded as failed) for `answered` messages.
    Answered {
        /// The conversation.
        conversation: String,
        /// Inbound messages answered.
        answered: usize,
        /// Replies sent.
        replies: usize,
    },
    /// An agent owns the conversation: messages marked seen, no reply.
    Silent {
        /// The conversation.
        conversation: String,
    },
    /// Nothing left to answer (an earlier turn took it).
    NothingToDo {
        /// The conversation.
        conversation: String,
    },
    /// Put back for later: the lock was held, or the debounce not over.
    Deferred {
        /// The conversation.
        conversation: String,
        /// Why.
        reason: &'static str,
    },
    /// Failed; scheduled again.
    Retrying {
        /// The conversation.
        conversation: String,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// Why.
        error: String,
    },
    /// Given up, with the reason.
    DeadLettered {
        /// Why.
        reason: String,
    },
    /// A newer turn took the conversation over (this one's lock expired).
    Fenced {
        /// The conversation.
        conversation: String,
    },
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Answered { .. } => "answered",
            Self::Silent { .. } => "silent",
            Self::NothingToDo { .. } => "nothing_to_do",
            Self::Deferred { .. } => "deferred",
            Self::Retrying { .. } => "retrying",
            Self::DeadLettered { .. } => "dead_lettered",
            Self::Fenced { .. } => "fenced",
        }
    }
}

/// A failure of the worker itself (the broker or database is unreachable);
/// the run loop backs off and tries again.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// One worker: a consumer name, the app, a responder.
#[derive(Clone)]
pub struct Worker {
    app: App,
    responder: Arc<dyn Responder>,
    consumer: String,
    /// How long `process_next` waits for a turn before answering `Idle`.
    pub wait: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Worker({})", self.consumer)
    }
}

impl Worker {
    /// A worker named `consumer` (unique per process and loop).
    pub fn new(app: App, responder: Arc<dyn Responder>, consumer: impl Into<String>) -> Self {
        Self {
            app,
            responder,
            consumer: consumer.into(),
            wait: Duration::from_secs(2),
        }
    }

    fn lock_ttl(&self) -> Duration {
        Duration::from_millis(self.app.settings.worker.lock_ttl_ms)
    }

    /// Claims and processes one turn.
    pub async fn process_next(&self) -> Result<Outcome, WorkerError> {
        let settings = &self.app.settings.worker;
        let Some(claimed) = self
            .app
            .broker
            .claim(
                &self.consumer,
                self.wait,
                Duration::from_millis(settings.reclaim_idle_ms),
            )
            .await?
        else {
            return Ok(Outcome::Idle);
        };
        let started = Instant::now();
        let outcome = self.process(&claimed).await;
        let metrics = &self.app.metrics;
        metrics
            .turn_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Ok(outcome) = &outcome {
            metrics.turns.with_label_values(&[outcome.label()]).inc();
            match outcome {
                Outcome::DeadLettered { reason } => {
                    tracing::error!(payload = %claimed.payload, %reason, "turn dead-lettered");
                }
                Outcome::Retrying {
                    conversation,
                    attempt,
                    error,
                } => {
                    tracing::warn!(%conversation, attempt, %error, "turn failed, will retry");
                }
                Outcome::Answered {
                    conversation,
                    answered,
                    replies,
                } => {
                    tracing::info!(%conversation, answered, replies, "turn answered");
                }
                other => tracing::debug!(outcome = ?other, "turn processed"),
            }
        }
        outcome
    }

    async fn process(&self, claimed: &Claimed) -> Result<Outcome, WorkerError> {
        let broker = &self.app.broker;
        let settings = &self.app.settings.worker;
        let job = match claimed.job() {
            Ok(job) => job,
            Err(reason) => {
                broker.dead_letter(claimed, &reason).await?;
                return Ok(Outcome::DeadLettered { reason });
            }
        };
        // A turn that keeps killing its workers is poison.
        let crash_limit = u64::from(settings.max_attempts) + 1;
        if claimed.deliveries > crash_limit {
            let reason = format!(
                "turn of conversation {} was taken over {} times (its workers died)",
                job.conversation_id, claimed.deliveries
            );
            broker.dead_letter(claimed, &reason).await?;
            return Ok(Outcome::DeadLettered { reason });
        }
        let Some(lock) = broker.lock(&job.conversation_id, self.lock_ttl()).await? else {
            // Busy: the holder answers everything unanswered; look again soon.
            broker.schedule(&job, Duration::from_millis(250)).await?;
            broker.ack(claimed).await?;
            return Ok(Outcome::Deferred {
                conversation: job.conversation_id,
                reason: "conversation locked",
            });
        };
        let result = self.turn(&job, &lock).await;
        let _ = broker.unlock(&lock).await;
        match result {
            Ok(outcome) => {
                broker.ack(claimed).await?;
                Ok(outcome)
            }
            Err(error) => {
                let attempt = job.attempt + 1;
                if attempt >= settings.max_attempts {
                    let reason = format!("failed {attempt} times; last error: {error}");
                    broker.dead_letter(claimed, &reason).await?;
                    // Given up: the sweeper must not bring it back.
                    let mut conn = self.app.db.get().await?;
                    Conversation::give_up_unanswered(&mut conn, &job.conversation_id).await?;
                    return Ok(Outcome::DeadLettered { reason });
                }
                let delay = Duration::from_millis(
                    settings
                        .retry_base_ms
                        .saturating_mul(1 << (attempt - 1).min(16)),
                );
                broker
                    .schedule(
                        &TurnJob {
                            conversation_id: job.conversation_id.clone(),
                            attempt,
                        },
                        delay,
                    )
                    .await?;
                broker.ack(claimed).await?;
                Ok(Outcome::Retrying {
                    conversation: job.conversation_id,
                    attempt,
                    error,
                })
            }
        }
    }
}
