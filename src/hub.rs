//! This node's event subscriptions: one broker subscription per workspace,
//! fanned out to every websocket of this node that watches it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::Broker;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::context::App;

/// A published event, parsed once per node for all its sockets.
#[derive(Debug)]
pub struct Published {
    /// The JSON text, as sent to agents.
    pub payload: String,
    /// Its `seq` (absent for unlogged events such as `typing`).
    pub seq: Option<i64>,
    /// Its `conversation_id`, if any.
    pub conversation_id: Option<String>,
    /// The parsed event.
    pub value: Value,
}

/// What the hub hands to sockets: an event, or word that events may have
/// been lost (the socket replays from the log).
#[derive(Debug, Clone)]
pub enum Feed {
    /// A published event.
    Event(Arc<Published>),
    /// The broker subscription was re-established: replay.
    Resync,
}

/// One broker subscription per workspace, shared by this node's sockets.
#[derive(Debug, Clone)]
pub struct Hub {
    app: App,
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Feed>>>>,
}

impl Hub {
    /// A hub over `app`'s broker.
    pub fn new(app: App) -> Self {
        Self {
            app,
            topics: Arc::default(),
        }
    }

    /// The workspace's feed; subscribes to the broker on first use.
    pub fn subscribe(&self, workspace_id: &str) -> broadcast::Receiver<Feed> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = topics.get(workspace_id) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(4096);
        topics.insert(workspace_id.to_owned(), tx.clone());
        let hub = self.clone();
        let workspace = workspace_id.to_owned();
        tokio::spawn(async move { hub.pump(workspace, tx).await });
        rx
    }

    /// Forwards the broker's messages to the local feed until no socket
    /// listens; resubscribes (and tells sockets to replay) when the broker
    /// connection drops.
    async fn pump(self, workspace: String, tx: broadcast::Sender<Feed>) {
        let topic = crate::events::topic(&workspace);
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            match self.app.broker.subscribe(&topic).await {
                Ok(mut subscription) => {
                    backoff = Duration::from_millis(100);
                    if !first {
                        let _ = tx.send(Feed::Resync);
                    }
                    first = false;
                    loop {
                        tokio::select! {
                            payload = subscription.recv() => match payload {
                                Some(payload) => {
                                    let value: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                                    let published = Published {
                                        seq: value["seq"].as_i64(),
                                        conversation_id: value["conversation_id"].as_str().map(str::to_owned),
                                        payload,
                                        value,
                                    };
                                    let _ = tx.send(Feed::Event(Arc::new(published)));
                                }
                                None => break,
                            },
                            () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        }
                        if tx.receiver_count() == 0 && self.retire(&workspace, &tx) {
                            return;
                        }
                    }
                    tracing::warn!(%workspace, "event subscription ended; resubscribing");
                }
                Err(error) => {
                    tracing::warn!(%workspace, %error, "cannot subscribe to events; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if tx.receiver_count() == 0 && self.retire(&workspace, &tx) {
                return;
            }
        }
    }

    /// Drops the workspace's feed if still unused; `true` when dropped.
    fn retire(&self, workspace: &str, tx: &broadcast::Sender<Feed>) -> bool {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if tx.receiver_count() == 0 {
            topics.remove(workspace);
            true
        } else {
            false
        }
    }
}
