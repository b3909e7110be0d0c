//! A new turn's replies: each stored under the turn's key, published and
//! sent as the responder makes it, while the bot still has the
//! conversation; then the verdict.

use std::time::Duration;

use channels::ChannelKind;
use tokio::sync::mpsc;

use crate::delivery::{self, Delivery};
use crate::events::{self, Event};
use crate::turn::{Replies, Reply, TurnInput};
use broker::{Broker, Lock};
use store::models::conversation::{Conversation, ConversationStatus};
use store::models::message::{Message, TurnReply};

use super::{Outcome, Worker};

impl Worker {
    /// A new turn: the responder's replies are stored, published and sent
    /// one by one as they come (email collects them into one message), then
    /// its verdict (a handoff) applies.
    pub(super) async fn stream_turn(
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
        self.conclude(
            conversation_id,
            (token, covered),
            verdict.handoff,
            input.messages.len(),
            sent,
        )
        .await
    }

    /// Ends a turn that answered `answered` messages with `replies`: its
    /// handoff (if any) first, then the turn's fence (`token`, `covered`).
    pub(super) async fn conclude(
        &self,
        conversation_id: String,
        (token, covered): (i64, i64),
        handoff: Option<crate::handoff::Request>,
        answered: usize,
        replies: usize,
    ) -> Result<Outcome, String> {
        let app = &self.app;
        if let Some(request) = handoff {
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
            answered,
            replies,
        })
    }

    /// Checks that the turn may still send, stores `reply` as part `part`,
    /// publishes it, and delivers it.
    pub(super) async fn store_and_send(
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
    pub(super) async fn ready_to_send(
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
    pub(super) async fn deliver(
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

pub(super) enum Ready {
    Yes,
    Stop,
    Fenced,
}

pub(super) enum Step {
    /// Stored; whether the platform accepted it.
    Sent(bool),
    /// Stop the turn with this outcome.
    Stop(Outcome),
}
