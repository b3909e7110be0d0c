//! Where a call's content goes: the caller's channel (`LlmClient::stream`)
//! or a buffer (`LlmClient::complete`), and what either has taken in.

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// Where content goes: the caller's channel, or a buffer for `complete`.
pub(super) enum Sink {
    Channel {
        tx: mpsc::Sender<String>,
        sent: usize,
    },
    Buffer {
        text: String,
        parts: usize,
    },
}

/// What became of one delta.
pub(super) enum Push {
    /// Taken in.
    Sent,
    /// The receiver is gone.
    Gone,
    /// Not taken before the deadline.
    Late,
}

impl Sink {
    /// Whether content is wanted as it arrives.
    pub(super) fn streaming(&self) -> bool {
        matches!(self, Sink::Channel { .. })
    }

    /// Content deltas taken in by this attempt (or call, for the channel).
    pub(super) fn delivered(&self) -> usize {
        match self {
            Sink::Channel { sent, .. } => *sent,
            Sink::Buffer { parts, .. } => *parts,
        }
    }

    /// Deltas someone may already have seen; retries stop once there are any.
    pub(super) fn committed(&self) -> usize {
        match self {
            Sink::Channel { sent, .. } => *sent,
            Sink::Buffer { .. } => 0,
        }
    }

    /// Drops what a failed attempt buffered (what a channel sent stays sent).
    pub(super) fn reset(&mut self) {
        if let Sink::Buffer { text, parts } = self {
            text.clear();
            *parts = 0;
        }
    }

    /// Resolves when the receiver is gone (never, for the buffer).
    pub(super) async fn closed(&self) {
        match self {
            Sink::Channel { tx, .. } => tx.closed().await,
            Sink::Buffer { .. } => std::future::pending().await,
        }
    }

    /// Hands one delta on, waiting for room in the channel until `deadline`.
    pub(super) async fn push(&mut self, delta: String, deadline: Instant) -> Push {
        match self {
            Sink::Channel { tx, sent } => match timeout_at(deadline, tx.send(delta)).await {
                Ok(Ok(())) => {
                    *sent += 1;
                    Push::Sent
                }
                Ok(Err(_)) => Push::Gone,
                Err(_) => Push::Late,
            },
            Sink::Buffer { text, parts } => {
                text.push_str(&delta);
                *parts += 1;
                Push::Sent
            }
        }
    }
}
