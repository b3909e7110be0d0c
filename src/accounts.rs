//! Channel accounts in memory: a webhook finds its account, the account's
//! decrypted credentials and its workspace without a query.
//!
//! Each node holds a snapshot of every active account, loaded in one query
//! and decrypted once. An unknown id is answered from the snapshot too, so
//! an anonymous caller naming random accounts costs no query. Whatever
//! changes an account (the bot files, the API, the widget's first use) calls
//! [`Accounts::changed`], which drops this node's snapshot and announces the
//! change on [`ACCOUNT_CHANGES_TOPIC`], so every node drops its own; the next
//! lookup reloads. A snapshot older than [`MAX_AGE`] is reloaded as well: a
//! node that missed an announcement (the broker restarted) catches up.
//!
//! The tenancy checks stay with the callers: a route's account must be of
//! the route's kind, and messages are stored under the account's own bot
//! and workspace, both read from the same row.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use broker::{AnyBroker, Broker};
use channels::{ChannelKind, Secrets};
use store::crypto::MasterKey;
use store::db::{Db, DbError};
use store::models::channel_account::{AccountSecrets, ChannelAccount};

/// Topic on which account changes are announced.
pub const ACCOUNT_CHANGES_TOPIC: &str = "accounts.changed";

/// The oldest a snapshot may be before a lookup reloads it.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// An active account, ready to verify and store webhooks.
#[derive(Debug)]
pub struct Route {
    /// The account.
    pub account: ChannelAccount,
    /// Its bot's workspace.
    pub workspace_id: String,
    /// Its credentials, decrypted; `None` when they do not decrypt (logged
    /// once per load; such an account answers 500).
    pub secrets: Option<AccountSecrets>,
}

/// This node's accounts. Cheap to share; see the module documentation.
#[derive(Debug, Default)]
pub struct Accounts {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    reload: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

#[derive(Debug)]
struct Snapshot {
    by_public_id: HashMap<String, Arc<Route>>,
    by_external_id: HashMap<(ChannelKind, String), Arc<Route>>,
    /// Subscribe handshakes: (kind, verify token) → account.
    by_verify_token: HashMap<(ChannelKind, String), Arc<Route>>,
    loaded: Instant,
    generation: u64,
}

impl Accounts {
    /// The active account with this public id (the `{account}` of a route).
    pub async fn by_public_id(
        &self,
        db: &Db,
        key: &MasterKey,
        public_id: &str,
    ) -> Result<Option<Arc<Route>>, DbError> {
        Ok(self
            .snapshot(db, key)
            .await?
            .by_public_id
            .get(public_id)
            .cloned())
    }

    /// The active account of `kind` with this platform id (a page id).
    pub async fn by_external_id(
        &self,
        db: &Db,
        key: &MasterKey,
        kind: ChannelKind,
        external_id: &str,
    ) -> Result<Option<Arc<Route>>, DbError> {
        Ok(self
            .snapshot(db, key)
            .await?
            .by_external_id
            .get(&(kind, external_id.to_owned()))
            .cloned())
    }

    /// The active account of `kind` whose verify token is `token` (a
    /// subscribe handshake): one hash lookup, nothing decrypted.
    pub async fn by_verify_token(
        &self,
        db: &Db,
        key: &MasterKey,
        kind: ChannelKind,
        token: &str,
    ) -> Result<Option<Arc<Route>>, DbError> {
        Ok(self
            .snapshot(db, key)
            .await?
            .by_verify_token
            .get(&(kind, token.to_owned()))
            .cloned())
    }

    /// Drops this node's snapshot; the next lookup reloads.
    pub fn forget(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Call after changing any account: drops the snapshot here and, through
    /// the broker, on every node.
    pub async fn changed(&self, broker: &AnyBroker) {
        self.forget();
        if let Err(error) = broker.publish(ACCOUNT_CHANGES_TOPIC, "*").await {
            tracing::warn!(%error, "account change not announced; other nodes see it within 30 s");
        }
    }

    /// Drops the snapshot whenever any node announces a change.
    pub async fn watch(self: &Arc<Self>, broker: &AnyBroker) {
        let mut changes = match broker.subscribe(ACCOUNT_CHANGES_TOPIC).await {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(%error, "cannot watch account changes; accounts are reloaded every 30 s");
                return;
            }
        };
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                let Some(me) = me.upgrade() else { break };
                me.forget();
            }
        });
    }

    async fn snapshot(&self, db: &Db, key: &MasterKey) -> Result<Arc<Snapshot>, DbError> {
        if let Some(snapshot) = self.current() {
            return Ok(snapshot);
        }
        // One reload at a time; those who waited find it done.
        let _reloading = self.reload.lock().await;
        if let Some(snapshot) = self.current() {
            return Ok(snapshot);
        }
        // Taken before the query: a change announced while loading makes
        // this snapshot stale at once.
        let generation = self.generation.load(Ordering::SeqCst);
        let mut conn = db.get().await?;
        let rows = ChannelAccount::all_active(&mut conn).await?;
        drop(conn);
        let snapshot = Arc::new(Snapshot::new(rows, key, generation));
        if let Ok(mut slot) = self.snapshot.write() {
            *slot = Some(snapshot.clone());
        }
        Ok(snapshot)
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        let slot = self.snapshot.read().ok()?;
        let snapshot = slot.as_ref()?;
        (snapshot.generation == self.generation.load(Ordering::SeqCst)
            && snapshot.loaded.elapsed() < MAX_AGE)
            .then(|| snapshot.clone())
    }
}

impl Snapshot {
    fn new(rows: Vec<(ChannelAccount, String)>, key: &MasterKey, generation: u64) -> Self {
        let mut by_public_id = HashMap::with_capacity(rows.len());
        let mut by_external_id = HashMap::new();
        let mut by_verify_token = HashMap::new();
        for (account, workspace_id) in rows {
            let secrets = match account.secrets(key) {
                Ok(secrets) => Some(secrets),
                Err(error) => {
                    tracing::error!(account = %account.public_id, %error, "cannot decrypt channel credentials");
                    None
                }
            };
            let route = Arc::new(Route {
                account,
                workspace_id,
                secrets,
            });
            if let Some(token) = route.secrets.as_ref().and_then(|s| s.get("verify_token"))
                && !token.is_empty()
            {
                by_verify_token.insert((route.account.kind, token.to_owned()), route.clone());
            }
            if let Some(external_id) = &route.account.external_id {
                by_external_id.insert((route.account.kind, external_id.clone()), route.clone());
            }
            by_public_id.insert(route.account.public_id.clone(), route);
        }
        Snapshot {
            by_public_id,
            by_external_id,
            by_verify_token,
            loaded: Instant::now(),
            generation,
        }
    }
}
