//! Typed, layered configuration.
//!
//! Layers, later ones winning key by key: defaults in code, then
//! `config/frontdesk.toml` (when present), then the file given with
//! `--config`, then `FRONTDESK__SECTION__KEY` environment variables. The
//! environment is passed in as a list so tests never touch the process env.
//!
//! Every key's origin is remembered, so an unknown or ill-typed key stops
//! start-up with a message naming the key and the file or variable it came
//! from. `config/frontdesk.toml` in the repository documents each key; the
//! `///` comments below are the same text.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod load;

pub(crate) use load::location;
pub use load::{ConfigError, Source};
pub use store::models::bot::LlmProvider;
pub use store::settings::{DatabaseSettings, DatabaseUrl, ModelPrice, Prices, redact_url};

/// Prefix of configuration environment variables: `FRONTDESK__SERVER__BIND`.
pub const ENV_PREFIX: &str = "FRONTDESK__";

/// The configuration file read when it exists, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/frontdesk.toml";

/// All of Frontdesk's settings. Held in the application state; never global.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Directory for local state: the generated master key, SQLite database
    /// (by default) and, later, the search indexes. Created when missing.
    pub data_dir: PathBuf,
    /// HTTP server.
    pub server: ServerSettings,
    /// SQL database, the source of truth.
    pub database: DatabaseSettings,
    /// Redis, for running several nodes. Unset: the in-process broker.
    pub redis: RedisSettings,
    /// Secrets at rest.
    pub security: SecuritySettings,
    /// Bot files.
    pub bots: BotsSettings,
    /// Outbound endpoints of the messaging platforms.
    pub channels: ChannelsSettings,
    /// Local embedding model.
    pub embedding: EmbeddingSettings,
    /// Knowledge from websites.
    pub knowledge: KnowledgeSettings,
    /// Answer generation.
    pub llm: LlmSettings,
    /// Answers and handoff: disclosure, history, the customer's ways of asking for a person.
    pub answer: AnswerSettings,
    /// Conversation workers.
    pub worker: WorkerSettings,
    /// Logins, sessions, API tokens.
    pub auth: AuthSettings,
    /// Agent sockets and the chat widget.
    pub realtime: RealtimeSettings,
    /// Logging.
    pub log: LogSettings,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerSettings {
    /// Listen address, `IP:PORT`. Port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Largest accepted request body, in bytes. Larger bodies get 413.
    pub max_body_bytes: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish, in seconds.
    pub shutdown_timeout_secs: u64,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the
    /// client (for login limits and audit entries). Empty: the TCP peer is
    /// the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Webhooks waiting to be stored, at most; beyond this the door answers
    /// 503 with `Retry-After` instead of queueing without bound.
    pub webhook_queue: usize,
    /// The address platforms and browsers reach this gateway at, e.g.
    /// `https://support.example.com` (an absolute http(s) URL, a path
    /// allowed, no query or fragment; a trailing `/` is dropped). Used to
    /// register webhooks (Telegram `setWebhook`) and in the setup
    /// instructions of channels. Unset: channels show paths, and Telegram
    /// webhooks are not registered by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<PublicUrl>,
}

/// A validated `server.public_url`: `http(s)://host[:port][/path]`, without
/// a trailing `/`, so `format!("{url}/webhooks/…")` is the route's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicUrl(String);

impl PublicUrl {
    /// The URL, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether platforms that insist on TLS (Telegram) will accept it.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        let trimmed = raw.trim();
        let url = reqwest::Url::parse(trimmed).map_err(|e| {
            format!("`{trimmed}` is not an absolute URL ({e}), e.g. https://support.example.com")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{trimmed}` must start with https:// (or http://)"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{trimmed}` has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("`{trimmed}` must have no query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry a user name or password".into());
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }
}

impl From<PublicUrl> for String {
    fn from(url: PublicUrl) -> String {
        url.0
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisSettings {
    /// `redis://HOST:PORT/DB` or `rediss://…`. Unset: the in-process broker
    /// (single node).
    pub url: Option<RedisUrl>,
    /// Prefix of every key and channel Frontdesk uses, so several
    /// deployments can share one Redis.
    pub key_prefix: String,
}

/// `[worker]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// Turns processed at once by one process (`serve` or `worker`).
    pub concurrency: usize,
    /// Wait this long after a customer's latest message before answering,
    /// so a burst of short messages gets one answer (milliseconds).
    pub debounce_ms: u64,
    /// How long a conversation lock lives unless renewed (milliseconds). A
    /// worker that dies holds a conversation at most this long.
    pub lock_ttl_ms: u64,
    /// A turn claimed but not finished for this long belongs to a dead
    /// worker and is handed to another (milliseconds; above `lock_ttl_ms`).
    pub reclaim_idle_ms: u64,
    /// Attempts of a failing turn before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay of a failed turn; doubles per attempt (milliseconds).
    pub retry_base_ms: u64,
    /// How often to re-queue conversations with unanswered messages and no
    /// pending turn (seconds); also done at start.
    pub sweep_interval_secs: u64,
}

/// `[security]`
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SecuritySettings {
    /// AES-256-GCM key that encrypts channel credentials at rest: 32 bytes as
    /// 64 hex characters or base64. Unset: read from `DATA_DIR/master.key`,
    /// generated there (mode 0600) on first run. Losing it loses the stored
    /// credentials; a different key is refused at start-up.
    pub master_key: Option<String>,
    /// Keys that open credentials but never seal them, in the same form:
    /// the old key while nodes move to a rotated one (see
    /// `frontdesk keys rotate`), or the coming key before a rotation. A
    /// TOML list, or in an environment variable keys separated by commas.
    #[serde(default, deserialize_with = "store::crypto::deserialize_key_list")]
    pub previous_master_keys: Vec<String>,
    /// Bearer token that `GET /metrics` requires (`Authorization: Bearer
    /// …`). Unset: `/metrics` is open, for a scraper on a private network.
    pub metrics_token: Option<String>,
}

impl fmt::Debug for SecuritySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecuritySettings")
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "previous_master_keys",
                &format_args!("[{} redacted]", self.previous_master_keys.len()),
            )
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// `[bots]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotsSettings {
    /// Directory of bot files (`*.toml`), upserted whenever the database is opened.
    /// A missing directory means no bot files.
    pub dir: PathBuf,
}

/// `[channels]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelsSettings {
    /// `[channels.telegram]`
    pub telegram: TelegramSettings,
    /// `[channels.messenger]`
    pub messenger: MessengerSettings,
    /// `[channels.whatsapp]`: the Cloud API's Graph base.
    pub whatsapp: MessengerSettings,
    /// `[channels.instagram]`: the Graph base for Instagram messaging.
    pub instagram: MessengerSettings,
    /// `[channels.email]`
    pub email: EmailSettings,
}

/// `[channels.telegram]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TelegramSettings {
    /// Base URL of the Telegram Bot API.
    pub api_base: String,
}

/// `[channels.messenger]`, `[channels.whatsapp]`, `[channels.instagram]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessengerSettings {
    /// Base URL of the Graph API, version included.
    pub graph_api_base: String,
}

/// `[channels.email]`
#[derive(Clone, Serialize, Deserialize)]
pub struct EmailSettings {
    /// Outbound SMTP: `smtp://HOST:PORT` (no TLS) or `smtps://USER:PASS@HOST:PORT`.
    /// Unset: email replies cannot be sent.
    pub smtp_url: Option<String>,
    /// Largest inbound email webhook body, in bytes (attachments included;
    /// Mailgun accepts messages up to 25 MB).
    pub max_body_bytes: usize,
    /// Most bot replies in one conversation per hour; past it the
    /// conversation goes to agents (two autoresponders cannot loop).
    pub max_replies_per_hour: u32,
}

impl fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSettings")
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_replies_per_hour", &self.max_replies_per_hour)
            .finish()
    }
}

/// `[embedding]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingSettings {
    /// ONNX Runtime library, model and tokenizer files. Default
    /// `$XDG_CACHE_HOME/frontdesk/models`, else `~/.cache/frontdesk/models`.
    pub model_dir: PathBuf,
    /// When the model is missing at `serve` start-up, fetch it (as `frontdesk
    /// models install` does) before the knowledge sync; search runs on BM25
    /// alone until it is there, or for good if fetching fails.
    pub auto_install: bool,
    /// Rescore the best candidates of each search with the cross-encoder
    /// reranker (installed by `frontdesk models install`). Without it, or
    /// when it is missing, the embedding model and BM25 rank alone (and
    /// `/readyz` says so).
    pub rerank: bool,
    /// The embedding model of every bot (`all-MiniLM-L6-v2-int8` or
    /// `multilingual-e5-small-q4`). Unset: by each bot's language, MiniLM
    /// for English and multilingual-e5 for the others. A change re-embeds
    /// each bot's knowledge in the background while search goes on with the
    /// old vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `[knowledge]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnowledgeSettings {
    /// Hours between crawls of the websites bot files list in `knowledge`
    /// (they are crawled at `serve` start too). 0 turns the refresh off.
    pub refresh_hours: u64,
    /// Let the admin API crawl loopback, link-local and private addresses.
    /// Off: an admin cannot make the server probe its own network. The CLI
    /// and bot files, which are the operator's own, may crawl any address.
    pub allow_private_urls: bool,
    /// From how many chunks a bot's dense search goes through an
    /// approximate index (an inverted file), built in the background, instead of the
    /// exact scan. 0: never.
    pub approximate_from: usize,
}

/// `[llm]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlmSettings {
    /// `extractive` (embedded, no network) or `openai` (any OpenAI-compatible server).
    pub provider: LlmProvider,
    /// For `openai`: server base URL, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: Option<String>,
    /// For `openai`: model name.
    pub model: Option<String>,
    /// For `openai`: name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Sampling temperature (a bot's `[llm]` may override it).
    pub temperature: f32,
    /// Longest answer in tokens (a bot's `[llm]` may override it).
    pub max_tokens: u32,
    /// Seconds to the first token of an answer before the attempt counts as failed.
    pub first_token_timeout_secs: u64,
    /// Longest pause between two chunks of an answer (seconds).
    pub idle_timeout_secs: u64,
    /// Longest whole answer (seconds).
    pub timeout_secs: u64,
    /// Extra attempts of a request that fails before its first token.
    pub retries: u32,
    /// Consecutive failed requests that open the circuit breaker: requests
    /// then fail at once (and the bot's `on_unknown` policy applies).
    pub breaker_failures: u32,
    /// Seconds the open breaker waits before letting one trial request through.
    pub breaker_cooldown_secs: u64,
    /// Price per million prompt and completion tokens, by model name
    /// (`[llm.prices."gpt-4o-mini"]`), for the usage log's cost. A model
    /// without a price has no cost (`null`), never zero.
    pub prices: Prices,
}

/// `[answer]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerSettings {
    /// Opens the first bot reply of every conversation (empty: no disclosure).
    pub disclosure: String,
    /// Tells the customer a person will follow, when they ask for one.
    pub handoff_message: String,
    /// Phrases by which a customer asks for a person, any language; matched
    /// case- and accent-insensitively as whole words in the new messages.
    pub human_phrases: Vec<String>,
    /// Tokens of earlier conversation given to the model, newest first.
    pub history_tokens: usize,
    /// Knowledge passages retrieved per question.
    pub passages: usize,
    /// Longest paragraph sent as one message (characters); longer ones are
    /// cut at a sentence end.
    pub max_paragraph_chars: usize,
    /// Asks which of the offered answers the customer means ("did you
    /// mean…"); the options follow as buttons or a numbered list.
    pub choices_message: String,
    /// The last option of every offer: none fits, hand off to a person.
    pub none_of_these: String,
    /// Said when a customer picks an option that is no longer offered (an
    /// old offer, or the knowledge changed).
    pub stale_choice_message: String,
    /// Longest question, in characters, passed to retrieval and the model;
    /// the rest of a longer one is left out (agents still see all of it).
    pub max_question_chars: usize,
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthSettings {
    /// How long a login lasts, in hours.
    pub session_ttl_hours: u64,
    /// Login attempts allowed per email (five times as many per client
    /// address) in `login_window_secs`; more get 429. Every attempt counts
    /// from its start; a successful one is taken back.
    pub login_attempts: u32,
    /// The window of `login_attempts`, in seconds.
    pub login_window_secs: u64,
    /// Marks the session cookie `Secure` (serve over HTTPS, or behind a
    /// proxy that terminates TLS).
    pub secure_cookie: bool,
    /// Password checks (Argon2, 19 MiB each) running at once; 0: one per core.
    pub password_checks: usize,
    /// Logins waiting for a password check, at most; more get 429.
    pub login_queue: usize,
}

/// `[realtime]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealtimeSettings {
    /// Events an agent socket replays at most after a reconnect.
    pub replay_limit: i64,
    /// Days the event log keeps events for replay.
    pub retention_days: i64,
    /// Seconds between pings; a socket silent for three intervals is closed.
    pub heartbeat_secs: u64,
    /// Largest websocket frame accepted, in bytes; larger ones close the socket.
    pub max_frame_bytes: usize,
    /// Messages one chat widget session may send per minute; more close the socket.
    pub chat_messages_per_minute: u32,
    /// New chat widget sessions per client address per minute; more get 429.
    pub chat_sessions_per_ip_per_minute: u32,
    /// New chat widget sessions per bot per minute (all addresses); more get 429.
    pub chat_sessions_per_bot_per_minute: u32,
    /// Chat widget messages per client address per minute (all its sessions).
    pub chat_messages_per_ip_per_minute: u32,
    /// Chat widget messages per bot per minute (all sessions).
    pub chat_messages_per_bot_per_minute: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogSettings {
    /// `text` (human-readable, coloured on a terminal) or `json` (one object per line).
    /// `--log-format` overrides it.
    pub format: LogFormat,
    /// Which events to log, in `tracing` filter syntax (`info`, `frontdesk=debug,info`).
    /// `RUST_LOG` overrides it.
    pub filter: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// A `redis://` or `rediss://` URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL with its password, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RedisUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        if url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")
        {
            Ok(Self(url))
        } else {
            Err(format!(
                "`{}` is not a redis://, rediss:// or unix:// URL",
                redact_url(&url)
            ))
        }
    }
}

impl From<RedisUrl> for String {
    fn from(url: RedisUrl) -> String {
        url.0
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}
