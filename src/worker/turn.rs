//! One turn under the conversation's lock: fence it, read what to answer,
//! stay silent when people have the conversation, resume a turn a dead
//! worker left half done.

use std::time::Duration;

use channels::ChannelKind;

use crate::turn::{Reply, TurnInput};
use broker::{Broker, Lock, TurnJob};
use store::models::bot::{Bot, HandoffPolicy};
use store::models::channel_account::ChannelAccount;
use store::models::conversation::{Conversation, ConversationStatus};
use store::models::message::{DeliveryStatus, Message};

use super::replies::{Ready, Step};
use super::{Outcome, Worker};

impl Worker {
    /// The turn itself, under the lock. `Err` is a failure to retry.
    pub(super) async fn turn(&self, job: &TurnJob, lock: &Lock) -> Result<Outcome, String> {
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
            let held = match channel {
                ChannelKind::Email => self
                    .email_gate(&mut conn, &conversation_id, &last)
                    .await
                    .map_err(|e| e.to_string())?,
                _ => None,
            };
            drop(conn);
            let input = TurnInput {
                conversation: conversation.clone(),
                messages: messages.clone(),
                channel,
                first_reply,
            };
            if let Some((reason, detail)) = held {
                // People answer this one; the bot writes nothing.
                tracing::info!(conversation = %conversation_id, reason = reason.as_str(), %detail, "email held for agents");
                let request = handoff_request(&input, reason, detail);
                return self
                    .conclude(
                        conversation_id,
                        (token, covered),
                        Some(request),
                        messages.len(),
                        0,
                    )
                    .await;
            }
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
    pub(super) async fn close_resumed(
        &self,
        input: &TurnInput,
        replies: &[Message],
        token: i64,
        covered: i64,
        lock: &Lock,
    ) -> Result<Step, String> {
        use crate::handoff::Reason;
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
        let request = handoff_request(input, reason, detail.to_owned());
        crate::handoff::request(&self.app, &input.conversation.id, request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(step)
    }

    /// Why the bot must not answer this email, if it must not: its sender
    /// failed authentication (SPF and DKIM, as Mailgun checked them), or
    /// the bot already wrote `channels.email.max_replies_per_hour` replies
    /// in the conversation this past hour.
    async fn email_gate(
        &self,
        conn: &mut store::db::DbConn,
        conversation_id: &str,
        last: &Message,
    ) -> Result<Option<(crate::handoff::Reason, String)>, store::db::DbError> {
        use crate::handoff::Reason;
        let thread: Option<channels::EmailThread> = last
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .and_then(|m| serde_json::from_value(m["email"].clone()).ok());
        let auth = thread.map(|t| t.auth).unwrap_or_default();
        if !auth.authenticated {
            let verdict = |v: Option<String>| v.unwrap_or_else(|| "none".into());
            return Ok(Some((
                Reason::UnverifiedSender,
                format!(
                    "the sender is not authenticated (SPF {}, DKIM {}): the bot does not answer whoever From claims to be",
                    verdict(auth.spf),
                    verdict(auth.dkim)
                ),
            )));
        }
        let cap = self.app.settings.channels.email.max_replies_per_hour;
        let hour_ago = store::db::now() - chrono::Duration::hours(1);
        let recent = Message::bot_replies_since(conn, conversation_id, Some(hour_ago)).await?;
        if recent >= i64::from(cap) {
            return Ok(Some((
                Reason::ReplyLimit,
                format!(
                    "the bot wrote {recent} replies in this conversation in the past hour (channels.email.max_replies_per_hour = {cap})"
                ),
            )));
        }
        Ok(None)
    }
}

/// A handoff of the turn's customer messages, without a draft.
fn handoff_request(
    input: &TurnInput,
    reason: crate::handoff::Reason,
    detail: String,
) -> crate::handoff::Request {
    let question: Vec<&str> = input
        .messages
        .iter()
        .filter(|m| m.direction == store::models::message::Direction::Inbound)
        .map(|m| m.body.as_str())
        .collect();
    let question = question.join("\n");
    crate::handoff::Request {
        reason,
        detail: Some(detail),
        triage: answer::triage::by_rules(&question, None),
        question,
        draft: String::new(),
        sources: Vec::new(),
        confidence: 0.0,
        requested_by: None,
    }
}
