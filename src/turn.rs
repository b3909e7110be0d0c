//! The contract between the worker and whatever answers a turn.
//!
//! The worker hands a [`Responder`] a [`TurnInput`] and a [`Replies`]
//! sender; the responder streams [`Reply`]s (paragraphs) as each is ready
//! and returns a [`Verdict`]. The answer pipeline
//! ([`Answerer`](crate::answerer::Answerer)) is the responder in production;
//! [`Acknowledger`] stands in for tests and benchmarks of the queue. The
//! contract sits below both the worker and the answerer, so neither knows
//! the other.

use std::future::Future;
use std::pin::Pin;

use channels::ChannelKind;
use store::models::conversation::Conversation;
use store::models::message::Message;
use tokio::sync::mpsc;

/// The inbound messages a turn answers, and their conversation.
#[derive(Debug, Clone)]
pub struct TurnInput {
    /// The conversation (as read at the start of the turn).
    pub conversation: Conversation,
    /// The customer's messages not yet answered, oldest first.
    pub messages: Vec<Message>,
    /// The channel the conversation happens on.
    pub channel: ChannelKind,
    /// Whether no bot reply was sent in this conversation before.
    pub first_reply: bool,
}

/// A boxed future, so responders can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message of a reply (a paragraph, when answers stream).
pub use answer::Paragraph as Reply;

/// Where a responder sends its replies, as soon as each is ready: the
/// worker stores, publishes and delivers each one while the next is made.
#[derive(Debug, Clone)]
pub struct Replies(pub mpsc::Sender<Reply>);

impl Replies {
    /// Hands a reply to the worker; `false` when the worker stopped taking
    /// them (an agent took over): the responder should stop.
    pub async fn send(&self, reply: Reply) -> bool {
        self.0.send(reply).await.is_ok()
    }

    /// Whether the worker stopped taking replies.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// What a responder decided besides its replies.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Hand the conversation to people, after the replies.
    pub handoff: Option<answer::handoff::Request>,
}

/// Produces the replies of a turn. The answer pipeline plugs in here.
pub trait Responder: Send + Sync + 'static {
    /// Sends the turn's replies into `out`, in order, as each is ready
    /// (adapters split long ones), and says what else to do. An error fails
    /// the turn (it is retried; replies already sent stay sent).
    fn respond<'a>(
        &'a self,
        turn: &'a TurnInput,
        out: Replies,
    ) -> BoxFuture<'a, Result<Verdict, String>>;
}

/// A minimal responder: acknowledges the customer's messages, quoting them,
/// and says a person will reply. For tests and benchmarks of the queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acknowledger;

impl Responder for Acknowledger {
    fn respond<'a>(
        &'a self,
        turn: &'a TurnInput,
        out: Replies,
    ) -> BoxFuture<'a, Result<Verdict, String>> {
        Box::pin(async move {
            let quoted: Vec<String> = turn
                .messages
                .iter()
                .map(|m| m.body.trim())
                .filter(|b| !b.is_empty())
                .map(|b| {
                    let short: String = b.chars().take(200).collect();
                    if short.len() < b.len() {
                        format!("“{short}…”")
                    } else {
                        format!("“{short}”")
                    }
                })
                .collect();
            let text = if quoted.is_empty() {
                "Thanks, we received your message. A member of our team will reply here.".to_owned()
            } else {
                format!(
                    "Thanks, we received: {}. A member of our team will reply here.",
                    quoted.join(" · ")
                )
            };
            out.send(Reply {
                text,
                metadata: None,
            })
            .await;
            Ok(Verdict::default())
        })
    }
}
