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

use std::sync::Arc;
use std::time::{Duration, Instant};

use channels::ChannelKind;
use tokio::sync::mpsc;

use crate::context::App;
use crate::delivery::{self, Delivery};
use crate::events::{self, Event};
use crate::turn::{Replies, Reply, Responder, TurnInput};
use broker::{Broker, Claimed, Lock, TurnJob};
use store::db::DbError;
use store::models::bot::{Bot, HandoffPolicy};
use store::models::channel_account::ChannelAccount;
use store::models::conversation::{Conversation, ConversationStatus};
use store::models::message::{DeliveryStatus, Message, TurnReply};

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

    /// The turn itself, under the lock. `Err` is a failure to retry.
    async fn turn(&self, job: &TurnJob, lock: &Lock) -> Result<Outcome, String> {
        let app = &self.app;
        let conversation_id = job.conversation_id.clone();
        let mut conn = app.db.get().await.map_err(|e| e.to_string())?;
        // Fence first: from here, turns that started earlier cannot write.
        let Some(token) = Conversation::start_turn(&mut conn, &conversation_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::NothingToDo {
                conversation: conversation_id,
            });
        };
        let Some(conversation) = Conversation::find(&mut conn, &conversation_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::NothingToDo {
                conversation: conversation_id,
            });
        };
        let mut messages = Message::unanswered(&mut conn, &conversation)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = messages.last().cloned() else {
            return Ok(Outcome::NothingToDo {
                conversation: conversation_id,
            });
        };
        // A turn cut short (its worker died after storing replies) is
        // finished first, with the replies it stored: never new ones.
        let unfinished = Message::unfinished_turn(&mut conn, &conversation)
            .await
            .map_err(|e| e.to_string())?;
        let resuming = unfinished.is_some();
        let (covered, replies) = match unfinished {
            Some((covered, replies)) => {
                messages.retain(|m| m.seq <= covered);
                (covered, replies)
            }
            None => (last.seq, Vec::new()),
        };
        let more_waiting = messages.last().is_some_and(|m| m.seq < last.seq);
        if !resuming {
            // Debounce: let a burst arrive before answering it.
            let debounce = chrono::Duration::milliseconds(app.settings.worker.debounce_ms as i64);
            let age = chrono::Utc::now().naive_utc() - last.created_at;
            if age < debounce {
                let wait = (debounce - age).to_std().unwrap_or_default();
                app.broker
                    .schedule(job, wait.max(Duration::from_millis(10)))
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Outcome::Deferred {
                    conversation: conversation_id,
                    reason: "debounce",
                });
            }
            if conversation.status != ConversationStatus::Bot {
                Conversation::finish_turn(&mut conn, &conversation_id, token, covered)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Outcome::Silent {
                    conversation: conversation_id,
                });
            }
            let channel = ChannelAccount::find_by_id(&mut conn, &conversation.channel_account_id)
                .await
                .map_err(|e| e.to_string())?
                .map_or(ChannelKind::Webchat, |a| a.kind);
            let first_reply = !Message::bot_has_replied(&mut conn, &conversation_id)
                .await
                .map_err(|e| e.to_string())?;
            drop(conn);
            let input = TurnInput {
                conversation: conversation.clone(),
                messages: messages.clone(),
                channel,
                first_reply,
            };
            // Boxed: the streaming future is large.
            return Box::pin(self.stream_turn(&input, lock, token, covered)).await;
        }
        let channel = ChannelAccount::find_by_id(&mut conn, &conversation.channel_account_id)
            .await
            .map_err(|e| e.to_string())?
            .map_or(ChannelKind::Webchat, |a| a.kind);
        drop(conn);
        // Resuming a turn cut short: its stored replies go out, never new ones.
        let mut sent = 0;
        let mut stopped = false;
        for reply in &replies {
            // A reply caught mid-send is sent again: the platform may or may
            // not have it, and a duplicate beats a silence.
            if !matches!(
                reply.delivery_status,
                Some(DeliveryStatus::Pending | DeliveryStatus::Sending)
            ) {
                continue;
            }
            match self.ready_to_send(&conversation_id, token, lock).await? {
                Ready::Yes => {}
                Ready::Stop => {
                    stopped = true;
                    break;
                }
                Ready::Fenced => {
                    return Ok(Outcome::Fenced {
                        conversation: conversation_id,
                    });
                }
            }
            if self.deliver(&reply.id, &conversation_id, true).await? {
                sent += 1;
            }
        }
        if !stopped {
            let input = TurnInput {
                conversation: conversation.clone(),
                messages: messages.clone(),
                channel,
                first_reply: false,
            };
            match Box::pin(self.close_resumed(&input, &replies, token, covered, lock)).await? {
                Step::Sent(ok) => sent += usize::from(ok),
                Step::Stop(outcome) => return Ok(outcome),
            }
        }
        let mut conn = app.db.get().await.map_err(|e| e.to_string())?;
        Conversation::finish_turn(&mut conn, &conversation_id, token, covered)
            .await
            .map_err(|e| e.to_string())?;
        if more_waiting {
            // The resumed turn covered only its own messages; the rest get
            // a turn of their own.
            app.broker
                .enqueue(&conversation_id)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Outcome::Answered {
            conversation: conversation_id,
            answered: messages.len(),
            replies: sent,
        })
    }

    /// Ends a resumed turn the way the dead worker meant to. Its stored
    /// replies say how far it got: a notice means it was handing off, so
    /// the handoff is recorded now. Without one the answer may have been
    /// cut mid-stream (an email's single reply is always whole): the
    /// customer is told a person will follow, unless the bot hands off
    /// silently, and people get the conversation. A worker that died in
    /// the instant between a whole answer and the turn's end causes a
    /// needless handoff; a half answer left as is would be worse.
    async fn close_resumed(
        &self,
        input: &TurnInput,
        replies: &[Message],
        token: i64,
        covered: i64,
        lock: &Lock,
    ) -> Result<Step, String> {
        use crate::handoff::{Reason, Request};
        let noticed = replies.iter().find_map(|r| {
            let metadata: serde_json::Value = serde_json::from_str(r.metadata.as_deref()?).ok()?;
            Reason::parse(metadata.get("notice")?.as_str()?)
        });
        let (reason, detail, step) = match noticed {
            Some(reason) => (
                reason,
                "recorded after the worker that answered stopped",
                Step::Sent(false),
            ),
            None if input.channel == ChannelKind::Email => return Ok(Step::Sent(false)),
            None => {
                let mut conn = self.app.db.get().await.map_err(|e| e.to_string())?;
                let bot = Bot::find_by_id(&mut conn, &input.conversation.bot_id)
                    .await
                    .map_err(|e| e.to_string())?;
                drop(conn);
                let notice = match &bot {
                    Some(bot) if bot.handoff_policy == HandoffPolicy::SilentHandoff => None,
                    Some(bot) if !bot.fallback_message.trim().is_empty() => {
                        Some(bot.fallback_message.trim().to_owned())
                    }
                    _ => Some(self.app.settings.answer.handoff_message.trim().to_owned()),
                };
                let reason = Reason::GenerationFailed;
                let part = replies
                    .iter()
                    .filter_map(|r| r.reply_key.as_deref()?.rsplit(':').next()?.parse().ok())
                    .max()
                    .map_or(0, |p: usize| p + 1);
                let step = match notice.filter(|n| !n.is_empty()) {
                    Some(text) => {
                        let reply = Reply {
                            text,
                            metadata: Some(
                                serde_json::json!({ "notice": reason.as_str() }).to_string(),
                            ),
                        };
                        self.store_and_send(input, token, covered, part, &reply, lock)
                            .await?
                    }
                    None => Step::Sent(false),
                };
                (
                    reason,
                    "the worker answering stopped mid-answer; the answer may be incomplete",
                    step,
                )
            }
        };
        if let Step::Stop(_) = step {
            return Ok(step);
        }
        let question: Vec<&str> = input
            .messages
            .iter()
            .filter(|m| m.direction == store::models::message::Direction::Inbound)
            .map(|m| m.body.as_str())
            .collect();
        let question = question.join("\n");
        let request = Request {
            reason,
            detail: Some(detail.to_owned()),
            triage: answer::triage::by_rules(&question, None),
            question,
            draft: String::new(),
            sources: Vec::new(),
            confidence: 0.0,
            requested_by: None,
        };
        crate::handoff::request(&self.app, &input.conversation.id, request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(step)
    }

    /// A new turn: the responder's replies are stored, published and sent
    /// one by one as they come (email collects them into one message), then
    /// its verdict (a handoff) applies.
    async fn stream_turn(
        &self,
        input: &TurnInput,
        lock: &Lock,
        token: i64,
        covered: i64,
    ) -> Result<Outcome, String> {
        let app = &self.app;
        let conversation_id = input.conversation.id.clone();
        let (tx, mut rx) = mpsc::channel::<Reply>(8);
        // Typing shows while the answer is being made, renewed as it fades.
        let typing = {
            let app = app.clone();
            let id = conversation_id.clone();
            tokio::spawn(async move {
                loop {
                    delivery::typing(&app, &id).await;
                    tokio::time::sleep(Duration::from_secs(4)).await;
                }
            })
        };
        let collect = input.channel == ChannelKind::Email;
        let consume = async move {
            let mut part = 0;
            let mut sent = 0;
            let mut collected: Vec<Reply> = Vec::new();
            while let Some(reply) = rx.recv().await {
                if reply.text.trim().is_empty() {
                    continue;
                }
                if collect {
                    collected.push(reply);
                    continue;
                }
                match self
                    .store_and_send(input, token, covered, part, &reply, lock)
                    .await?
                {
                    Step::Sent(ok) => sent += usize::from(ok),
                    Step::Stop(outcome) => return Ok((Some(outcome), sent)),
                }
                part += 1;
            }
            if !collected.is_empty() {
                let metadata = collected.iter().rev().find_map(|r| r.metadata.clone());
                let text: Vec<String> = collected.into_iter().map(|r| r.text).collect();
                let reply = Reply {
                    text: text.join("\n\n"),
                    metadata,
                };
                match self
                    .store_and_send(input, token, covered, 0, &reply, lock)
                    .await?
                {
                    Step::Sent(ok) => sent += usize::from(ok),
                    Step::Stop(outcome) => return Ok((Some(outcome), sent)),
                }
            }
            Ok::<_, String>((None, sent))
        };
        let ttl = self.lock_ttl();
        let keep_lock = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if !app.broker.renew(lock, ttl).await.unwrap_or(false) {
                    break;
                }
            }
        };
        let respond = async {
            let verdict = self.responder.respond(input, Replies(tx)).await;
            // Done thinking: no more typing.
            typing.abort();
            verdict
        };
        let joined = tokio::select! {
            joined = async { tokio::join!(respond, consume) } => joined,
            () = keep_lock => (Err("lost the conversation lock while answering".to_owned()), Err(String::new())),
        };
        typing.abort();
        let (verdict, consumed) = joined;
        let verdict = verdict?;
        let (stopped, sent) = consumed?;
        if let Some(outcome) = stopped {
            return Ok(outcome);
        }
        if let Some(request) = verdict.handoff {
            crate::handoff::request(app, &conversation_id, request)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut conn = app.db.get().await.map_err(|e| e.to_string())?;
        Conversation::finish_turn(&mut conn, &conversation_id, token, covered)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Answered {
            conversation: conversation_id,
            answered: input.messages.len(),
            replies: sent,
        })
    }

    /// Checks that the turn may still send, stores `reply` as part `part`,
    /// publishes it, and delivers it.
    async fn store_and_send(
        &self,
        input: &TurnInput,
        token: i64,
        covered: i64,
        part: usize,
        reply: &Reply,
        lock: &Lock,
    ) -> Result<Step, String> {
        let conversation_id = &input.conversation.id;
        match self.ready_to_send(conversation_id, token, lock).await? {
            Ready::Yes => {}
            Ready::Stop => {
                return Ok(Step::Stop(Outcome::Silent {
                    conversation: conversation_id.clone(),
                }));
            }
            Ready::Fenced => {
                return Ok(Step::Stop(Outcome::Fenced {
                    conversation: conversation_id.clone(),
                }));
            }
        }
        let mut conn = self.app.db.get().await.map_err(|e| e.to_string())?;
        let stored = Message::insert_reply(
            &mut conn,
            &input.conversation,
            token,
            TurnReply {
                covered,
                part,
                text: &reply.text,
                metadata: reply.metadata.as_deref(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        drop(conn);
        let Some(stored) = stored else {
            return Ok(Step::Stop(Outcome::Fenced {
                conversation: conversation_id.clone(),
            }));
        };
        events::publish(
            &self.app,
            &input.conversation.workspace_id,
            &Event::MessageCreated {
                conversation_id,
                message: &stored,
            },
        )
        .await;
        Ok(Step::Sent(
            self.deliver(&stored.id, conversation_id, false).await?,
        ))
    }

    /// Right before a send: the turn still holds the fence, the bot still
    /// has the conversation (an agent may have taken over while it was
    /// thinking), and the lock is renewed.
    async fn ready_to_send(
        &self,
        conversation_id: &str,
        token: i64,
        lock: &Lock,
    ) -> Result<Ready, String> {
        let mut conn = self.app.db.get().await.map_err(|e| e.to_string())?;
        let now = Conversation::find(&mut conn, conversation_id)
            .await
            .map_err(|e| e.to_string())?;
        drop(conn);
        let Some(now) = now else {
            return Ok(Ready::Stop);
        };
        if now.turn_fence != token {
            // A newer turn took over: it sends what is left.
            return Ok(Ready::Fenced);
        }
        if now.status != ConversationStatus::Bot {
            tracing::info!(conversation = %conversation_id, "an agent has the conversation; the bot stops");
            return Ok(Ready::Stop);
        }
        if !self
            .app
            .broker
            .renew(lock, self.lock_ttl())
            .await
            .unwrap_or(false)
        {
            // Lock lost: retry, and the retry resumes with the stored replies.
            return Err("lost the conversation lock mid-turn".into());
        }
        Ok(Ready::Yes)
    }

    /// Delivers a stored reply; whether the platform accepted it.
    async fn deliver(
        &self,
        message_id: &str,
        conversation_id: &str,
        resuming: bool,
    ) -> Result<bool, String> {
        match delivery::deliver(&self.app, message_id, resuming)
            .await
            .map_err(|e| e.to_string())?
        {
            Delivery::Sent(_) => Ok(true),
            Delivery::Failed(reason) => {
                tracing::warn!(conversation = %conversation_id, %reason, "reply failed");
                Ok(false)
            }
            Delivery::NotPending => Ok(false),
        }
    }
}

enum Ready {
    Yes,
    Stop,
    Fenced,
}

enum Step {
    /// Stored; whether the platform accepted it.
    Sent(bool),
    /// Stop the turn with this outcome.
    Stop(Outcome),
}

/// Re-queues conversations with customer messages that no turn answered
/// (their turn was lost: the broker was down at ingest, or Redis restarted
/// empty). Returns how many were queued anew.
pub async fn sweep(app: &App) -> Result<usize, WorkerError> {
    let mut conn = app.db.get().await?;
    // A little grace so turns queued right now are not doubled.
    let cutoff = chrono::Utc::now().naive_utc()
        - chrono::Duration::milliseconds(app.settings.worker.debounce_ms as i64 + 2000);
    let waiting = Conversation::with_unanswered(&mut conn, cutoff).await?;
    drop(conn);
    let mut queued = 0;
    for id in waiting {
        if app.broker.enqueue(&id).await? {
            queued += 1;
        }
    }
    if queued > 0 {
        tracing::warn!(queued, "re-queued conversations with unanswered messages");
    }
    let (_, dead) = app.broker.dead_letters(0).await?;
    app.metrics
        .dead_letters
        .set(i64::try_from(dead).unwrap_or(i64::MAX));
    Ok(queued)
}

/// Runs `concurrency` worker loops and the sweeper until `shutdown` turns
/// true; each loop finishes its current turn first. Broker or database
/// failures back off (100 ms doubling to 5 s) and resume.
pub async fn run(
    app: App,
    responder: Arc<dyn Responder>,
    name: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let concurrency = app.settings.worker.concurrency;
    tracing::info!(concurrency, "workers started");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let worker = Worker::new(app.clone(), responder.clone(), format!("{name}-{i}"));
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !*stop.borrow() {
                match worker.process_next().await {
                    Ok(_) => backoff = Duration::from_millis(100),
                    Err(error) => {
                        tracing::warn!(%error, ?backoff, "worker cannot reach the broker or database; backing off");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }
    let sweeper_app = app.clone();
    let mut sweeper_stop = shutdown.clone();
    tasks.spawn(async move {
        let interval = Duration::from_secs(sweeper_app.settings.worker.sweep_interval_secs.max(1));
        loop {
            if let Err(error) = sweep(&sweeper_app).await {
                tracing::warn!(%error, "sweep failed");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = sweeper_stop.changed() => break,
            }
        }
    });
    let _ = shutdown.changed().await;
    while tasks.join_next().await.is_some() {}
    tracing::info!("workers stopped");
}
