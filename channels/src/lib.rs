//! Channel adapters: the gateway's front door to each messaging platform.
//!
//! # Layout
//!
//! - `lib.rs` — what every channel shares: [`ChannelKind`], and (as channels
//!   land) the channel trait (kind, verify, parse, send, limits), the
//!   normalized inbound and outbound messages, and the registry.
//! - one file per platform beside it: `messenger.rs`, `telegram.rs`,
//!   `email.rs`, `webchat.rs`.
//!
//! # Data flow
//!
//! A webhook handler hands an adapter the raw body bytes and headers; the
//! adapter verifies the signature over those bytes, then parses the platform's
//! JSON or MIME into normalized messages. Nothing after an adapter sees
//! platform formats. Outbound, an adapter formats a reply within the
//! platform's limits and sends it. This crate knows nothing of the database or
//! the queue: it is tested alone against recorded payloads and local servers.

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
}

impl ChannelKind {
    /// Every kind, in a stable order.
    pub const ALL: [ChannelKind; 4] = [
        ChannelKind::Messenger,
        ChannelKind::Telegram,
        ChannelKind::Email,
        ChannelKind::Webchat,
    ];

    /// The name used in URLs, bot files and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messenger => "messenger",
            Self::Telegram => "telegram",
            Self::Email => "email",
            Self::Webchat => "webchat",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no channel kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel kind `{0}` (expected messenger, telegram, email or webchat)")]
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
