//! The hand-off from ingest to answering: which conversations have inbound
//! messages waiting for a turn.
//!
//! This is the in-process hand-off; the broker (Redis Streams or in-process,
//! with per-conversation locks) replaces it. It already has the property the
//! broker keeps: a conversation is queued once however many messages arrive
//! before its turn (turns are coalesced), so the set stays as small as the
//! number of conversations waiting. Nothing depends on it for durability:
//! messages are stored before they are queued.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Conversations waiting for a turn. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Turns {
    pending: Arc<Mutex<BTreeSet<String>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl Turns {
    /// Queues a turn for the conversation (a no-op if one is queued).
    pub fn enqueue(&self, conversation_id: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(conversation_id.to_owned());
        }
        self.notify.notify_one();
    }

    /// Takes every queued conversation.
    pub fn drain(&self) -> Vec<String> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p).into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether a turn is queued for the conversation.
    pub fn is_queued(&self, conversation_id: &str) -> bool {
        self.pending
            .lock()
            .is_ok_and(|p| p.contains(conversation_id))
    }

    /// Waits until something is enqueued.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_coalesce_per_conversation() {
        let turns = Turns::default();
        turns.enqueue("a");
        turns.enqueue("b");
        turns.enqueue("a");
        assert!(turns.is_queued("a"));
        assert_eq!(turns.drain(), vec!["a", "b"]);
        assert!(turns.drain().is_empty());
    }
}
