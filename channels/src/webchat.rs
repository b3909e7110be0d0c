//! The web chat widget, served by Frontdesk itself over a websocket
//! (`/ws/chat/{bot}`): its session tokens, the customer identity a token
//! stands for, the frames the widget sends and the frames it is sent.
//!
//! There is no webhook and no signature: the socket is the channel. The
//! gateway's websocket handler hands each text frame to [`parse_frame`] and
//! shows messages with [`message_frame`].

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{InboundMessage, Origin, Sender};

/// Prefix of chat widget session tokens.
pub const SESSION_PREFIX: &str = "fdc_";

/// Longest customer message the widget may send, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// The widget's session token, if well-formed: the prefix and 43 URL-safe
/// base64 characters (32 random bytes).
pub fn session_token(raw: Option<String>) -> Option<String> {
    raw.filter(|t| {
        t.len() == SESSION_PREFIX.len() + 43
            && t.starts_with(SESSION_PREFIX)
            && t[SESSION_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The customer identity a session token stands for (`web-` and 24 hex
/// digits of its hash: the token itself is never stored).
pub fn visitor_id(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("web-{}", &hex::encode(digest)[..24])
}

/// A customer's `{"type":"message","text":"…","id":"…"}` frame as an inbound
/// message of `visitor`, or the reason it is refused, for the widget. The
/// optional client `id` makes a resend after a reconnect idempotent.
pub fn parse_frame(visitor: &str, frame: &str) -> Result<InboundMessage, String> {
    let value: Value = serde_json::from_str(frame)
        .map_err(|_| "send {\"type\":\"message\",\"text\":\"…\"}".to_owned())?;
    if value["type"] != "message" {
        return Err("unknown frame type; send {\"type\":\"message\",\"text\":\"…\"}".into());
    }
    let text = value["text"].as_str().unwrap_or("").trim();
    if text.is_empty() {
        return Err("the message is empty".into());
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(format!(
            "the message is longer than {MAX_MESSAGE_CHARS} characters"
        ));
    }
    // A tapped option comes back as its label with the option's payload.
    let origin = match value["choice"].as_str() {
        Some(payload) if !payload.is_empty() && payload.len() <= 128 => Origin::QuickReply {
            payload: payload.to_owned(),
        },
        _ => Origin::Text,
    };
    let client_id = value["id"]
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let short = visitor.get(4..10).unwrap_or(visitor);
    Ok(InboundMessage {
        external_id: format!("{visitor}:{client_id}"),
        sender: Sender {
            external_id: visitor.to_owned(),
            display_name: Some(format!("Web visitor {short}")),
        },
        text: text.to_owned(),
        origin,
        attachments: Vec::new(),
        sent_at: None,
        reply_to: None,
        email: None,
    })
}

/// A message as the widget shows it; `author_kind` is the stored author
/// (`customer`, `agent`, anything else shows as the bot).
/// A bot message that offers options carries them as `choices`
/// (`[{"label","payload"}]`); the widget shows them as buttons and sends a
/// pick back as `{"type":"message","text":label,"choice":payload}`.
pub fn message_frame(
    seq: i64,
    author_kind: &str,
    text: &str,
    created_at: &Value,
    metadata: Option<&str>,
) -> Value {
    let author = match author_kind {
        "customer" => "customer",
        "agent" => "agent",
        _ => "bot",
    };
    let mut frame = json!({
        "type": "message",
        "seq": seq,
        "author": author,
        "text": text,
        "created_at": created_at,
    });
    if author == "bot"
        && let Some(offer) = crate::choices::Offer::from_metadata(metadata)
    {
        frame["choices"] = offer
            .choices()
            .into_iter()
            .map(|c| json!({ "label": c.label, "payload": c.payload }))
            .collect();
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_hashed_into_a_visitor() {
        let token = format!("{SESSION_PREFIX}{}", "a".repeat(43));
        assert_eq!(session_token(Some(token.clone())), Some(token.clone()));
        assert_eq!(session_token(Some("fdc_short".into())), None);
        assert_eq!(
            session_token(Some(format!("{SESSION_PREFIX}{}", "/".repeat(43)))),
            None
        );
        let visitor = visitor_id(&token);
        assert!(visitor.starts_with("web-") && visitor.len() == 28);
        assert_eq!(visitor, visitor_id(&token));
    }

    #[test]
    fn frames_become_messages_or_say_what_is_wrong() {
        let m = parse_frame(
            "web-0123456789ab",
            r#"{"type":"message","text":" hi ","id":"c1"}"#,
        )
        .expect("a message");
        assert_eq!(m.text, "hi");
        assert_eq!(m.external_id, "web-0123456789ab:c1");
        assert_eq!(m.sender.display_name.as_deref(), Some("Web visitor 012345"));
        assert!(parse_frame("web-x", "not json").is_err());
        assert!(parse_frame("web-x", r#"{"type":"ping"}"#).is_err());
        assert!(parse_frame("web-x", r#"{"type":"message","text":"  "}"#).is_err());
        let long = format!(r#"{{"type":"message","text":"{}"}}"#, "é".repeat(2001));
        assert!(parse_frame("web-x", &long).unwrap_err().contains("2000"));
    }

    #[test]
    fn authors_show_as_customer_agent_or_bot() {
        let at = json!("2026-01-01T00:00:00");
        assert_eq!(
            message_frame(3, "customer", "a", &at, None)["author"],
            "customer"
        );
        assert_eq!(message_frame(3, "agent", "a", &at, None)["author"], "agent");
        assert_eq!(message_frame(3, "bot", "a", &at, None)["author"], "bot");
        assert_eq!(message_frame(3, "system", "a", &at, None)["seq"], 3);
    }
}
