//! The context every service takes: settings, database, broker, channel
//! adapters, knowledge and metrics, opened once per process by
//! [`crate::app`] and cloned cheaply (every field is shared).
//!
//! It sits below every service and handler, so none of them needs to know
//! how the process started.

use std::sync::Arc;

use broker::AnyBroker;
use channels::email::Email;
use channels::instagram::Instagram;
use channels::messenger::Messenger;
use channels::telegram::Telegram;
use channels::whatsapp::Whatsapp;
use channels::{HttpClient, RetryPolicy};
use store::crypto::MasterKey;
use store::db::Db;

use crate::botfiles::SyncReport;
use crate::config::{ChannelsSettings, Settings};
use crate::kb::Knowledge;
use crate::metrics::Metrics;

/// Topic on which bot changes are announced, so every node drops its copy.
pub const BOT_CHANGES_TOPIC: &str = "bots.changed";

/// Announced on [`BOT_CHANGES_TOPIC`] when any number of bots changed.
pub const ALL_BOTS: &str = "*";

/// Everything opened: shared by the server, the worker and the commands.
#[derive(Debug, Clone)]
pub struct App {
    /// Settings, fixed for the process's life.
    pub settings: Arc<Settings>,
    /// The database pool.
    pub db: Db,
    /// Seals and opens channel credentials.
    pub master_key: MasterKey,
    /// Turns, locks and realtime events: Redis when `redis.url` is set.
    pub broker: AnyBroker,
    /// Prometheus metrics of this process.
    pub metrics: Arc<Metrics>,
    /// What the bot files changed at start-up.
    pub bot_files: SyncReport,
    /// The channel adapters.
    pub channels: Channels,
    /// Knowledge bases: ingestion and this node's search indexes.
    pub knowledge: Arc<Knowledge>,
    /// Customer messages of concurrent webhooks, stored together.
    pub door: Arc<crate::door::Door>,
    /// Active channel accounts, in memory.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// Set once the bot files' knowledge paths were ingested at start-up
    /// (or when nothing is to be ingested by this process).
    pub knowledge_synced: Arc<std::sync::atomic::AtomicBool>,
}

/// One adapter per platform, configured from `[channels]`.
#[derive(Debug, Clone)]
pub struct Channels {
    /// Telegram.
    pub telegram: Telegram,
    /// Messenger.
    pub messenger: Messenger,
    /// Email.
    pub email: Email,
    /// WhatsApp.
    pub whatsapp: Whatsapp,
    /// Instagram.
    pub instagram: Instagram,
}

impl Channels {
    /// Adapters pointed at the configured API bases.
    pub fn new(settings: &ChannelsSettings) -> Self {
        let http = HttpClient::new(RetryPolicy::default());
        Self {
            telegram: Telegram::new(&settings.telegram.api_base, http.clone()),
            messenger: Messenger::new(&settings.messenger.graph_api_base, http.clone()),
            whatsapp: Whatsapp::new(&settings.whatsapp.graph_api_base, http.clone()),
            instagram: Instagram::new(&settings.instagram.graph_api_base, http),
            email: Email::new(settings.email.smtp_url.clone()),
        }
    }
}
