//! Channel adapters: the gateway's front door to each messaging platform.
//!
//! # Layout
//!
//! - `lib.rs` — what every channel shares: [`ChannelKind`], the normalized
//!   [`InboundEvent`] / [`InboundMessage`] and [`OutboundMessage`], the
//!   [`Channel`] trait (verify, parse, send, limits), errors, and
//!   [`split_text`] which cuts long replies at paragraph, then sentence
//!   boundaries.
//! - `telegram.rs`, `messenger.rs`, `whatsapp.rs`, `instagram.rs`,
//!   `email.rs`, `webchat.rs` — one file per platform (the web chat widget
//!   has no webhook: its socket is the channel).
//! - `meta.rs` — what Meta's three platforms share: the `X-Hub-Signature-256`
//!   check, the subscribe handshake, Graph API errors, and the messaging
//!   window ([`Reach`]).
//! - `http.rs` — the outbound HTTP client with bounded retries (5xx, 429,
//!   `retry_after`), shared by the HTTP platforms.
//! - `form.rs` — `application/x-www-form-urlencoded` and `multipart/form-data`
//!   bodies (Mailgun posts either).
//! - `split.rs` — [`split_text`], and [`sentence_ends`]: where sentences end,
//!   the one rule shared with the answer stream's paragraph cuts.
//!
//! # Data flow
//!
//! A webhook handler hands an adapter a [`WebhookRequest`]: the raw body
//! bytes, headers and query. The adapter verifies the signature over those
//! exact bytes (constant-time), then parses the platform's JSON or MIME into
//! [`RoutedEvent`]s. Nothing after an adapter sees platform formats. Outbound,
//! an adapter splits a reply within the platform's limits and sends it. This
//! crate knows nothing of the database or the queue: it is tested alone
//! against recorded payloads and local servers.

pub mod choices;
pub mod email;
mod form;
mod http;
pub mod instagram;
pub mod messenger;
pub mod meta;
mod split;
pub mod telegram;
pub mod webchat;
pub mod whatsapp;

pub use http::{HttpClient, RetryPolicy};
pub use split::{sentence_ends, split_text};

use std::fmt;
use std::str::FromStr;

/// The messaging platforms Frontdesk speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Facebook Messenger, through a page.
    Messenger,
    /// A Telegram bot.
    Telegram,
    /// Inbound email (Mailgun routes), replies over SMTP.
    Email,
    /// The web chat widget served by Frontdesk itself.
    Webchat,
    /// WhatsApp Business, through the Cloud API (a phone number).
    Whatsapp,
    /// Instagram messaging, through a professional account.
    Instagram,
}

impl ChannelKind {
    /// Every kind, in a stable order.
    pub const ALL: [ChannelKind; 6] = [
        ChannelKind::Messenger,
        ChannelKind::Telegram,
        ChannelKind::Email,
        ChannelKind::Webchat,
        ChannelKind::Whatsapp,
        ChannelKind::Instagram,
    ];

    /// The name used in URLs, bot files and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messenger => "messenger",
            Self::Telegram => "telegram",
            Self::Email => "email",
            Self::Webchat => "webchat",
            Self::Whatsapp => "whatsapp",
            Self::Instagram => "instagram",
        }
    }

    /// The platform's name as people write it (`WhatsApp`, `Email`, …).
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Messenger => "Messenger",
            Self::Telegram => "Telegram",
            Self::Email => "Email",
            Self::Webchat => "Web chat",
            Self::Whatsapp => "WhatsApp",
            Self::Instagram => "Instagram",
        }
    }

    /// Whether replies are bound by a messaging window after the customer's
    /// last message (Meta's platforms: see [`meta::window`]).
    pub fn has_window(self) -> bool {
        matches!(self, Self::Messenger | Self::Whatsapp | Self::Instagram)
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no channel kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown channel kind `{0}` (expected messenger, telegram, email, webchat, whatsapp or instagram)"
)]
pub struct UnknownChannelKind(pub String);

impl FromStr for ChannelKind {
    type Err = UnknownChannelKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownChannelKind(s.to_owned()))
    }
}

impl TryFrom<String> for ChannelKind {
    type Error = UnknownChannelKind;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A webhook as received: raw bytes, never re-serialized (signatures are over
/// the exact bytes).
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// The raw query string, without `?`.
    pub query: String,
    /// The raw body.
    pub body: bytes::Bytes,
    /// When it arrived (for timestamp windows).
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl WebhookRequest {
    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where an adapter looks up an account's secrets by name (`bot_token`,
/// `app_secret`, …). Implemented by the caller over its decrypted credentials.
pub trait Secrets {
    /// The secret, if the account has it.
    fn get(&self, name: &str) -> Option<&str>;

    /// The secret, or an error naming it.
    fn require(&self, name: &'static str) -> Result<&str, VerifyError> {
        self.get(name).ok_or(VerifyError::MissingSecret(name))
    }
}

impl Secrets for std::collections::BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::BTreeMap::get(self, name).map(String::as_str)
    }
}

/// The person on the other side, as the platform identifies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Telegram user id, page-scoped id (PSID), or email address (lowercased).
    pub external_id: String,
    /// Name as the platform gives it.
    pub display_name: Option<String>,
}

/// How a customer produced a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Origin {
    /// Typed text.
    Text,
    /// A caption of a photo, video or document.
    Caption,
    /// A quick-reply button; `text` is the button title.
    QuickReply {
        /// The developer payload.
        payload: String,
    },
    /// A persistent-menu or template button; `text` is its title.
    Postback {
        /// The developer payload.
        payload: String,
    },
    /// A Telegram inline-keyboard button; `text` is the button's text when
    /// the update shows the keyboard, else its data.
    Callback {
        /// The button's `callback_data`.
        payload: String,
    },
    /// An email.
    Email,
    /// Kept for the record and shown to agents, never answered by the bot:
    /// a sticker, a type the platform does not pass on.
    Unanswered {
        /// Why the bot leaves it.
        reason: String,
    },
}

impl Origin {
    /// The developer payload of a button the customer pressed.
    pub fn payload(&self) -> Option<&str> {
        match self {
            Origin::QuickReply { payload }
            | Origin::Postback { payload }
            | Origin::Callback { payload } => Some(payload),
            _ => None,
        }
    }
}

/// A file or media item, kept as metadata (never downloaded here).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attachment {
    /// `image`, `video`, `audio`, `file`, `location`, `sticker`, …; a
    /// location's `url` is its `geo:` URI (RFC 5870) and its `name` the
    /// place's name and address.
    pub kind: String,
    /// Where the platform serves it, if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Platform file id (Telegram).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// File name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// MIME type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Email threading headers and subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmailThread {
    /// `Message-ID`, without angle brackets.
    pub message_id: String,
    /// `In-Reply-To` ids.
    pub in_reply_to: Vec<String>,
    /// `References` ids, oldest first.
    pub references: Vec<String>,
    /// `Subject`.
    pub subject: String,
    /// `Reply-To`, when the sender asks for replies elsewhere. Used only
    /// when it is on the authenticated `From`'s domain; otherwise agents see
    /// it and nobody writes to it automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Whether the sender is who `From` says (SPF and DKIM, as Mailgun
    /// checked them).
    #[serde(default)]
    pub auth: SenderAuth,
}

/// What the receiving side verified of an email's sender. `From` counts as
/// authenticated when DKIM passed for a signing domain aligned with its
/// domain, or SPF passed for an envelope sender aligned with it (DMARC's
/// relaxed alignment, without the public-suffix list: one domain equal to or
/// under the other).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SenderAuth {
    /// The SPF verdict (`pass`, `fail`, `softfail`, `neutral`, `none`, …),
    /// lowercased; `None` when none was given.
    #[serde(default)]
    pub spf: Option<String>,
    /// The DKIM verdict (`pass`, `fail`, …), lowercased.
    #[serde(default)]
    pub dkim: Option<String>,
    /// The envelope sender SPF checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_from: Option<String>,
    /// The domains of the message's DKIM signatures (`d=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dkim_domains: Vec<String>,
    /// Whether `From` is authenticated (see the type).
    #[serde(default)]
    pub authenticated: bool,
}

impl SenderAuth {
    /// Whether these verdicts authenticate `from`: DKIM passed and every
    /// signing domain is aligned with `from`'s (Mailgun gives one verdict
    /// for all signatures, so an unaligned one could be the one that
    /// passed), or SPF passed for an envelope sender aligned with it.
    pub fn is_aligned(&self, from: &str) -> bool {
        let Some(domain) = email_domain(from) else {
            return false;
        };
        let dkim = self.dkim.as_deref() == Some("pass")
            && !self.dkim_domains.is_empty()
            && self
                .dkim_domains
                .iter()
                .all(|d| domains_aligned(d, &domain));
        let spf = self.spf.as_deref() == Some("pass")
            && self
                .envelope_from
                .as_deref()
                .and_then(email_domain)
                .is_some_and(|d| domains_aligned(&d, &domain));
        dkim || spf
    }
}

/// The domain of an address (`a@Shop.Example` → `shop.example`).
pub fn email_domain(address: &str) -> Option<String> {
    let domain = address.trim().trim_matches(['<', '>']).rsplit_once('@')?.1;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// Whether two domains are aligned: equal, or one under the other.
pub fn domains_aligned(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    let under = |sub: &str, parent: &str| {
        sub.strip_suffix(parent)
            .is_some_and(|head| head.ends_with('.'))
    };
    !a.is_empty() && (a == b || under(&a, &b) || under(&b, &a))
}

/// A customer's message, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The platform's id for it, unique within the account (Telegram ids are
    /// prefixed with the chat id, since they are only unique per chat).
    pub external_id: String,
    /// Who wrote it.
    pub sender: Sender,
    /// The customer's words. May be empty when only attachments came.
    pub text: String,
    /// How it was produced.
    pub origin: Origin,
    /// Media and files.
    pub attachments: Vec<Attachment>,
    /// When the platform says it was sent.
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The platform id of the message it replies to, if any.
    pub reply_to: Option<String>,
    /// Email only.
    pub email: Option<EmailThread>,
}

/// Who controls a Messenger conversation after a handover event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Another app (e.g. the Page inbox) took or was passed control.
    ToOtherApp,
    /// Control came back to this app.
    ToUs,
    /// Another app asks for control; informational.
    Requested,
}

/// One normalized thing that happened on a platform.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // short-lived, a few per webhook
pub enum InboundEvent {
    /// A new customer message.
    Message(InboundMessage),
    /// The customer edited an earlier message.
    Edit {
        /// The edited message's id (same form as [`InboundMessage::external_id`]).
        external_id: String,
        /// Who.
        sender: Sender,
        /// The new text.
        text: String,
    },
    /// Outbound messages reached the customer's device.
    Delivered {
        /// The customer.
        customer: String,
        /// Platform ids of the delivered messages, when listed.
        message_ids: Vec<String>,
        /// Everything sent before this instant is delivered.
        watermark: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// The customer read everything sent before `watermark`.
    Read {
        /// The customer.
        customer: String,
        /// Read up to here.
        watermark: chrono::DateTime<chrono::Utc>,
    },
    /// Conversation control moved between apps (Messenger handover protocol).
    Handover {
        /// The customer.
        customer: String,
        /// Where control went.
        to: Handover,
    },
    /// The customer reacted to a message (ours or theirs), or took a
    /// reaction back (`emoji` is `None`).
    Reaction {
        /// Who.
        sender: Sender,
        /// The platform id of the message reacted to.
        message_id: String,
        /// The reaction; `None` when removed.
        emoji: Option<String>,
    },
    /// The platform's word on one message we sent (WhatsApp `statuses`).
    Status {
        /// The customer it was sent to.
        customer: String,
        /// Our message's platform id.
        message_id: String,
        /// What happened to it.
        status: SendStatus,
        /// When, as the platform says.
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Valid but irrelevant: answered 200 so the platform stops retrying,
    /// and logged with this reason.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// What became of a message we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendStatus {
    /// The platform took it.
    Sent,
    /// It reached the customer's device.
    Delivered,
    /// The customer read it.
    Read,
    /// It will not arrive, and why: the platform's error code and title
    /// (WhatsApp 131047 "Re-engagement message", 131026, …).
    Failed {
        /// The platform's error code.
        code: Option<i64>,
        /// Its title and details.
        reason: String,
    },
}

impl SendStatus {
    /// `sent`, `delivered`, `read` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed { .. } => "failed",
        }
    }
}

/// An event and the platform identity of the account it is for (the page id
/// of a Messenger entry); `None` when the route names the account.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedEvent {
    /// Page id for Messenger, phone number id for WhatsApp, account id for
    /// Instagram.
    pub account: Option<String>,
    /// What happened.
    pub event: InboundEvent,
}

impl RoutedEvent {
    fn unrouted(event: InboundEvent) -> Self {
        Self {
            account: None,
            event,
        }
    }

    fn skipped(reason: impl Into<String>) -> Self {
        Self::unrouted(InboundEvent::Skipped {
            reason: reason.into(),
        })
    }
}

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Telegram chat id, PSID, WhatsApp id, IGSID, or email address.
    pub external_id: String,
    /// Email only: threading of the reply.
    pub email: Option<EmailReply>,
    /// The platform id of the customer's latest message, where the platform
    /// marks messages read or shows typing against one (WhatsApp).
    pub last_inbound: Option<String>,
    /// Our own platform id the reply goes out from, where the URL names it:
    /// the WhatsApp phone number id, the Instagram account id.
    pub via: Option<String>,
}

impl Recipient {
    /// A chat recipient.
    pub fn chat(external_id: impl Into<String>) -> Self {
        Recipient {
            external_id: external_id.into(),
            email: None,
            last_inbound: None,
            via: None,
        }
    }
}

/// What an email reply needs to thread under the customer's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailReply {
    /// Our address (the account's).
    pub from: String,
    /// Subject of the thread; `Re: ` is added once.
    pub subject: String,
    /// The message replied to.
    pub in_reply_to: Option<String>,
    /// The thread's ids, oldest first.
    pub references: Vec<String>,
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Plain text; split within the platform's limit.
    pub text: String,
    /// Options to pick from, shown with the last part: native buttons where
    /// the platform has them, else a numbered list ([`choices`]).
    pub choices: Vec<choices::Choice>,
    /// How it may reach the customer on a platform with a messaging window.
    pub reach: Reach,
}

impl OutboundMessage {
    /// Plain text, no options.
    pub fn text(text: impl Into<String>) -> Self {
        OutboundMessage {
            text: text.into(),
            choices: Vec::new(),
            reach: Reach::Standard,
        }
    }
}

/// How a reply may reach a customer on a platform with a messaging window
/// (see [`meta::window`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reach {
    /// Within the standard window (or a platform without one).
    #[default]
    Standard,
    /// A person's reply after the standard window, under Meta's
    /// `HUMAN_AGENT` tag (Messenger and Instagram, up to 7 days).
    HumanAgent,
    /// Outside the window on WhatsApp: the approved template instead of the
    /// text.
    Template {
        /// The template's name.
        name: String,
        /// Its language code (`en_US`).
        language: String,
    },
}

/// What the platform said about one sent part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The platform's id for it (Telegram `chat:message_id`, Messenger mid,
    /// our email Message-ID).
    pub external_id: String,
}

/// Platform limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest text of one message, in characters (Unicode scalar values).
    pub max_text_chars: usize,
}

/// A webhook that must not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature header is absent.
    #[error("missing {0}")]
    MissingSignature(&'static str),
    /// The signature header is not in the expected form.
    #[error("malformed {0}")]
    MalformedSignature(&'static str),
    /// The signature does not match.
    #[error("signature does not match")]
    BadSignature,
    /// Outside the accepted time window.
    #[error("timestamp outside the {0}-second window")]
    Stale(i64),
    /// The account has no such secret configured.
    #[error("account has no `{0}` configured")]
    MissingSecret(&'static str),
}

/// A body that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Why a reply could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Retrying will not help (4xx other than 429, bad recipient, blocked bot).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// Retries exhausted on 5xx, 429 or network errors.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// How many.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The channel is not configured to send (e.g. no SMTP server).
    #[error("not configured: {0}")]
    NotConfigured(String),
}

/// One platform: verification, parsing, sending, limits.
pub trait Channel: Send + Sync {
    /// Which platform.
    fn kind(&self) -> ChannelKind;

    /// Its limits.
    fn limits(&self) -> Limits;

    /// Checks that the request comes from the platform, over the raw bytes.
    /// Returns a replay token when the scheme has one (email), which the
    /// caller must accept only once.
    fn verify(
        &self,
        request: &WebhookRequest,
        secrets: &dyn Secrets,
    ) -> Result<Option<String>, VerifyError>;

    /// Parses a verified request into events.
    fn parse(&self, request: &WebhookRequest) -> Result<Vec<RoutedEvent>, ParseError>;

    /// Sends `message` to `to`, split within the limits; one [`Sent`] per part.
    fn send(
        &self,
        secrets: &(dyn Secrets + Sync),
        to: &Recipient,
        message: &OutboundMessage,
    ) -> impl std::future::Future<Output = Result<Vec<Sent>, SendError>> + Send;

    /// Shows a typing indicator, where the platform has one. Best effort.
    fn typing(
        &self,
        secrets: &(dyn Secrets + Sync),
        to: &Recipient,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send;
}

/// Constant-time comparison of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Checks `expected_hex` against HMAC-SHA256(key, message), in constant time.
pub(crate) fn verify_hmac_sha256(key: &[u8], message: &[&[u8]], expected_hex: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Ok(expected) = hex::decode(expected_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    for part in message {
        mac.update(part);
    }
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ChannelKind::ALL {
            assert_eq!(kind.as_str().parse::<ChannelKind>(), Ok(kind));
        }
        assert!("sms".parse::<ChannelKind>().is_err());
    }
}
