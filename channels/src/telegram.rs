//! Telegram Bot API: webhook updates in, `sendMessage` out.
//!
//! Verification: the `X-Telegram-Bot-Api-Secret-Token` header must equal the
//! account's `secret_token` (set with `setWebhook`), compared in constant time.
//!
//! Parsing: private-chat `message`s (text, or a caption as text, media as
//! attachments), `edited_message` (an edit, never a new question),
//! `callback_query` (the button's data as the customer's words). Group and
//! channel traffic, media without words, and every other update kind, known
//! or future, are skipped with a reason. Message ids are only unique per chat,
//! so ids are `chat_id:message_id`.
//!
//! Sending: plain text (no `parse_mode`, so no "can't parse entities"), split
//! at 4096 characters; `retry_after` of a 429 is honoured.

use std::time::Duration;

use serde_json::{Value, json};

use crate::choices::Choice;
use crate::http::{Attempt, default_verdict};
use crate::{
    Attachment, Channel, ChannelKind, HttpClient, InboundEvent, InboundMessage, Limits, Origin,
    OutboundMessage, ParseError, Recipient, RoutedEvent, Secrets, SendError, Sender, Sent,
    VerifyError, WebhookRequest, constant_time_eq, split_text,
};

/// The secret-token header.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Telegram's limit for one message's text.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Telegram's limit for a button's `callback_data`, in bytes.
pub const MAX_CALLBACK_DATA: usize = 64;
/// Button texts longer than this are cut (Telegram shows about this much on
/// a phone).
pub const MAX_BUTTON_CHARS: usize = 60;

/// The Telegram adapter.
#[derive(Debug, Clone)]
pub struct Telegram {
    api_base: String,
    http: HttpClient,
}

impl Telegram {
    /// Talks to the Bot API at `api_base` (e.g. `https://api.telegram.org`).
    pub fn new(api_base: impl Into<String>, http: HttpClient) -> Self {
        Self {
            api_base: api_base.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    fn method_url(&self, token: &str, method: &str) -> String {
        format!("{}/bot{token}/{method}", self.api_base)
    }
}

impl Channel for Telegram {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Telegram
    }

    fn limits(&self) -> Limits {
        Limits {
            max_text_chars: MAX_TEXT_CHARS,
        }
    }

    fn verify(
        &self,
        request: &WebhookRequest,
        secrets: &dyn Secrets,
    ) -> Result<Option<String>, VerifyError> {
        let expected = secrets.require("secret_token")?;
        let given = request
            .header(SECRET_HEADER)
            .ok_or(VerifyError::MissingSignature(
                "X-Telegram-Bot-Api-Secret-Token",
            ))?;
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(None)
        } else {
            Err(VerifyError::BadSignature)
        }
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<RoutedEvent>, ParseError> {
        parse_update(&request.body).map(|event| vec![event])
    }

    async fn send(
        &self,
        secrets: &(dyn Secrets + Sync),
        to: &Recipient,
        message: &OutboundMessage,
    ) -> Result<Vec<Sent>, SendError> {
        let token = bot_token(secrets)?;
        let url = self.method_url(token, "sendMessage");
        let mut sent = Vec::new();
        let parts = split_text(&message.text, MAX_TEXT_CHARS);
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.into_iter().enumerate() {
            let mut body = json!({ "chat_id": chat_id(&to.external_id), "text": part });
            if i == last && !message.choices.is_empty() {
                body["reply_markup"] = inline_keyboard(&message.choices);
            }
            let id = self
                .http
                .post_json(
                    "telegram sendMessage",
                    &url,
                    None,
                    &body,
                    |status, after, json| match verdict(status, after, json) {
                        Attempt::Ok(()) => {
                            let result = &json["result"];
                            match (result["chat"]["id"].as_i64(), result["message_id"].as_i64()) {
                                (Some(chat), Some(id)) => Attempt::Ok(format!("{chat}:{id}")),
                                _ => Attempt::Permanent(
                                    "sendMessage answered without a message id".into(),
                                ),
                            }
                        }
                        Attempt::Retry { error, after } => Attempt::Retry { error, after },
                        Attempt::Permanent(e) => Attempt::Permanent(e),
                    },
                )
                .await?;
            sent.push(Sent { external_id: id });
        }
        Ok(sent)
    }

    async fn typing(
        &self,
        secrets: &(dyn Secrets + Sync),
        to: &Recipient,
    ) -> Result<(), SendError> {
        let token = bot_token(secrets)?;
        let body = json!({ "chat_id": chat_id(&to.external_id), "action": "typing" });
        self.http
            .once()
            .post_json(
                "telegram sendChatAction",
                &self.method_url(token, "sendChatAction"),
                None,
                &body,
                verdict,
            )
            .await
    }
}

impl Telegram {
    /// Acknowledges an inline-keyboard press (`answerCallbackQuery`), so the
    /// customer's button stops spinning. One attempt: best effort.
    pub async fn answer_callback(
        &self,
        secrets: &(dyn Secrets + Sync),
        callback_id: &str,
    ) -> Result<(), SendError> {
        let token = bot_token(secrets)?;
        self.http
            .once()
            .post_json(
                "telegram answerCallbackQuery",
                &self.method_url(token, "answerCallbackQuery"),
                None,
                &json!({ "callback_query_id": callback_id }),
                verdict,
            )
            .await
    }
}

/// The update kinds a webhook set by [`Telegram::set_webhook`] asks for:
/// the ones [`parse_update`] reads. Others would be delivered only to be
/// skipped.
pub const ALLOWED_UPDATES: &[&str] = &["message", "edited_message", "callback_query"];

/// A Bot API call that Telegram refused or that did not reach it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct BotApiError {
    /// Telegram's `error_code` (its HTTP status); `None` when Telegram was
    /// not reached.
    pub error_code: Option<u16>,
    /// Telegram's `description`, verbatim (e.g. `Unauthorized`, `Bad
    /// Request: bad webhook: An HTTPS URL must be provided for webhook`),
    /// or why the request failed.
    pub description: String,
}

impl BotApiError {
    /// Whether Telegram does not know the bot token (401, or 404 for a
    /// malformed one): the caller's input is wrong.
    pub fn is_bad_token(&self) -> bool {
        matches!(self.error_code, Some(401 | 404))
    }
}

impl Telegram {
    /// Points the bot's updates at `url` (`setWebhook`), signed with
    /// `secret_token`, for [`ALLOWED_UPDATES`]. One attempt: a person is
    /// waiting for the answer, and Telegram's refusal is what they need.
    pub async fn set_webhook(
        &self,
        bot_token: &str,
        url: &str,
        secret_token: &str,
    ) -> Result<(), BotApiError> {
        let body = json!({
            "url": url,
            "secret_token": secret_token,
            "allowed_updates": ALLOWED_UPDATES,
        });
        self.management_call(bot_token, "setWebhook", &body).await
    }

    /// Stops the bot's webhook (`deleteWebhook`). One attempt.
    pub async fn delete_webhook(&self, bot_token: &str) -> Result<(), BotApiError> {
        self.management_call(bot_token, "deleteWebhook", &json!({}))
            .await
    }

    async fn management_call(
        &self,
        bot_token: &str,
        method: &str,
        body: &Value,
    ) -> Result<(), BotApiError> {
        let what = format!("telegram {method}");
        let answer = self
            .http
            .once()
            .post_json(
                &what,
                &self.method_url(bot_token, method),
                None,
                body,
                |status, _, json| {
                    if status.is_success() && json["ok"] == json!(true) {
                        return Attempt::Ok(Ok(()));
                    }
                    let description = json["description"]
                        .as_str()
                        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
                    let error_code = json["error_code"]
                        .as_u64()
                        .and_then(|c| u16::try_from(c).ok())
                        .or(Some(status.as_u16()));
                    Attempt::Ok(Err(BotApiError {
                        error_code,
                        description,
                    }))
                },
            )
            .await;
        match answer {
            Ok(result) => result,
            Err(SendError::Exhausted { last, .. }) => Err(BotApiError {
                error_code: None,
                description: format!("Telegram could not be reached: {last}"),
            }),
            Err(other) => Err(BotApiError {
                error_code: None,
                description: other.to_string(),
            }),
        }
    }
}

/// Options as an inline keyboard, one button a row. Button texts are fitted
/// to [`MAX_BUTTON_CHARS`]; `callback_data` is limited to 64 bytes, and a
/// payload over it is left out rather than cut (a cut payload would not
/// come back as ours).
fn inline_keyboard(choices: &[Choice]) -> Value {
    let rows: Vec<Value> = choices
        .iter()
        .filter(|c| c.payload.len() <= MAX_CALLBACK_DATA)
        .map(|c| {
            json!([{
                "text": crate::choices::fit(&c.label, MAX_BUTTON_CHARS),
                "callback_data": c.payload,
            }])
        })
        .collect();
    json!({ "inline_keyboard": rows })
}

/// The callback query ids among `events` (to acknowledge after storing).
pub fn callback_ids(events: &[RoutedEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            InboundEvent::Message(m) if matches!(m.origin, Origin::Callback { .. }) => {
                m.external_id.strip_prefix("callback:").map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

fn bot_token(secrets: &(dyn Secrets + Sync)) -> Result<&str, SendError> {
    secrets
        .get("bot_token")
        .ok_or_else(|| SendError::NotConfigured("the account has no bot_token".into()))
}

/// Chat ids are integers; send them as numbers when they are.
fn chat_id(id: &str) -> Value {
    id.parse::<i64>().map_or_else(|_| json!(id), |n| json!(n))
}

/// Bot API errors: `{"ok":false,"error_code":429,"description":…,"parameters":{"retry_after":5}}`.
fn verdict(
    status: reqwest::StatusCode,
    header_after: Option<Duration>,
    json: &Value,
) -> Attempt<()> {
    let after = json["parameters"]["retry_after"]
        .as_u64()
        .map(Duration::from_secs)
        .or(header_after);
    let description = || {
        json["description"]
            .as_str()
            .unwrap_or("no description")
            .to_owned()
    };
    if status.is_success() && json["ok"] == json!(false) {
        return Attempt::Permanent(description());
    }
    default_verdict(status, after, description)
}

/// Parses one update into one event.
pub fn parse_update(body: &[u8]) -> Result<RoutedEvent, ParseError> {
    let update: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new(format!("body is not valid JSON: {e}")))?;
    let Some(fields) = update.as_object() else {
        return Err(ParseError::new("an update must be a JSON object"));
    };
    if let Some(message) = fields.get("message") {
        return Ok(message_event(message, false));
    }
    if let Some(message) = fields.get("edited_message") {
        return Ok(message_event(message, true));
    }
    if let Some(query) = fields.get("callback_query") {
        return Ok(callback_event(query));
    }
    let kind = fields
        .keys()
        .find(|k| k.as_str() != "update_id")
        .map_or("empty", String::as_str);
    Ok(RoutedEvent::skipped(match kind {
        "channel_post" | "edited_channel_post" => "channel posts are not answered".to_owned(),
        other => format!("update kind `{other}` is not handled"),
    }))
}

fn sender(from: &Value) -> Option<Sender> {
    let id = from["id"].as_i64()?;
    let name = [from["first_name"].as_str(), from["last_name"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let display_name = if name.trim().is_empty() {
        from["username"].as_str().map(str::to_owned)
    } else {
        Some(name.trim().to_owned())
    };
    Some(Sender {
        external_id: id.to_string(),
        display_name,
    })
}

/// A chat we answer: private. A chat without `type` (seen in Telegram's own
/// samples) counts as private when its id is the sender's.
fn is_private(chat: &Value, from: &Value) -> bool {
    match chat["type"].as_str() {
        Some(kind) => kind == "private",
        None => chat["id"].as_i64().is_some() && chat["id"] == from["id"],
    }
}

fn message_event(message: &Value, edited: bool) -> RoutedEvent {
    let chat = &message["chat"];
    let from = &message["from"];
    if !is_private(chat, from) {
        let kind = chat["type"].as_str().unwrap_or("unknown");
        return RoutedEvent::skipped(format!("{kind} chat messages are not answered"));
    }
    if from["is_bot"] == json!(true) {
        return RoutedEvent::skipped("message from a bot");
    }
    let (Some(sender), Some(chat_id), Some(message_id)) = (
        sender(from),
        chat["id"].as_i64(),
        message["message_id"].as_i64(),
    ) else {
        return RoutedEvent::skipped("message without sender, chat or id");
    };
    let (text, origin) = match (message["text"].as_str(), message["caption"].as_str()) {
        (Some(text), _) => (text.to_owned(), Origin::Text),
        (None, Some(caption)) => (caption.to_owned(), Origin::Caption),
        (None, None) => (String::new(), Origin::Text),
    };
    let attachments = attachments(message);
    if text.trim().is_empty() {
        let what = attachments
            .first()
            .map_or_else(|| media_kind(message), |a| a.kind.clone());
        return RoutedEvent::skipped(format!("no text or caption ({what})"));
    }
    let external_id = format!("{chat_id}:{message_id}");
    if edited {
        return RoutedEvent::unrouted(InboundEvent::Edit {
            external_id,
            sender,
            text,
        });
    }
    RoutedEvent::unrouted(InboundEvent::Message(InboundMessage {
        external_id,
        sender,
        text,
        origin,
        attachments,
        sent_at: message["date"]
            .as_i64()
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
        reply_to: message["reply_to_message"]["message_id"]
            .as_i64()
            .map(|id| format!("{chat_id}:{id}")),
        email: None,
    }))
}

fn media_kind(message: &Value) -> String {
    message
        .as_object()
        .and_then(|m| {
            m.keys()
                .find(|k| {
                    !matches!(
                        k.as_str(),
                        "message_id"
                            | "from"
                            | "chat"
                            | "date"
                            | "edit_date"
                            | "entities"
                            | "forward_from"
                            | "forward_date"
                            | "reply_to_message"
                    )
                })
                .cloned()
        })
        .unwrap_or_else(|| "empty".into())
}

fn attachments(message: &Value) -> Vec<Attachment> {
    let mut out = Vec::new();
    let file = |kind: &str, v: &Value| Attachment {
        kind: kind.to_owned(),
        url: None,
        file_id: v["file_id"].as_str().map(str::to_owned),
        name: v["file_name"].as_str().map(str::to_owned),
        mime_type: v["mime_type"].as_str().map(str::to_owned),
        size: v["file_size"].as_u64(),
    };
    // Photos come in several sizes; keep the largest.
    if let Some(largest) = message["photo"].as_array().and_then(|sizes| sizes.last()) {
        out.push(file("image", largest));
    }
    for kind in [
        "document",
        "video",
        "audio",
        "voice",
        "video_note",
        "animation",
        "sticker",
    ] {
        if message[kind].is_object() {
            out.push(file(kind, &message[kind]));
        }
    }
    for kind in ["location", "contact", "venue"] {
        if message[kind].is_object() {
            out.push(Attachment {
                kind: kind.to_owned(),
                url: None,
                file_id: None,
                name: None,
                mime_type: None,
                size: None,
            });
        }
    }
    out
}

fn callback_event(query: &Value) -> RoutedEvent {
    let from = &query["from"];
    if let Some(chat) = query["message"]["chat"].as_object()
        && chat.get("type").and_then(Value::as_str) != Some("private")
    {
        return RoutedEvent::skipped("callback from a group chat is not answered");
    }
    let (Some(sender), Some(id), Some(data)) =
        (sender(from), query["id"].as_str(), query["data"].as_str())
    else {
        return RoutedEvent::skipped("callback query without sender, id or data");
    };
    // The pressed button's own text, from the keyboard the update carries:
    // what the customer saw and chose.
    let label = query["message"]["reply_markup"]["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .find(|b| b["callback_data"].as_str() == Some(data))
        .and_then(|b| b["text"].as_str())
        .map(str::trim)
        .filter(|t| !t.is_empty());
    RoutedEvent::unrouted(InboundEvent::Message(InboundMessage {
        external_id: format!("callback:{id}"),
        sender,
        text: label.unwrap_or(data).to_owned(),
        origin: Origin::Callback {
            payload: data.to_owned(),
        },
        attachments: Vec::new(),
        sent_at: None,
        reply_to: query["message"]["message_id"]
            .as_i64()
            .zip(query["message"]["chat"]["id"].as_i64())
            .map(|(m, c)| format!("{c}:{m}")),
        email: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/telegram");
        std::fs::read(root.join(path)).expect("fixture")
    }

    fn message(path: &str) -> InboundMessage {
        match parse_update(&fixture(path)).expect("parses").event {
            InboundEvent::Message(m) => m,
            other => panic!("{path}: expected a message, got {other:?}"),
        }
    }

    fn skipped(path: &str) -> String {
        match parse_update(&fixture(path)).expect("parses").event {
            InboundEvent::Skipped { reason } => reason,
            other => panic!("{path}: expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn text_messages_normalize() {
        let m = message("official-bot-docs-webhooks/02_message_text.json");
        assert_eq!(m.external_id, "1111111:1365");
        assert_eq!(m.text, "/start");
        assert_eq!(m.sender.external_id, "1111111");
        assert_eq!(
            m.sender.display_name.as_deref(),
            Some("Test Firstname Test Lastname")
        );
        assert_eq!(m.sent_at.map(|t| t.timestamp()), Some(1_441_645_532));
        // No chat type: private, because the chat is the sender's.
        let m = message("official-bot-docs-webhooks/01_message_text_no_chat_type.json");
        assert_eq!(m.text, "/start");
        let m = message("illemius-telegram_types/reply_message.json");
        assert!(m.reply_to.is_some());
    }

    #[test]
    fn captions_are_text_and_media_is_metadata() {
        let m = message("illemius-telegram_types/message_with_photo.json");
        assert_eq!(m.text, "photo description");
        assert_eq!(m.origin, Origin::Caption);
        assert_eq!(m.attachments[0].kind, "image");
        assert_eq!(m.attachments[0].size, Some(47844), "largest size kept");
        let m = message("illemius-telegram_types/message_with_document.json");
        assert_eq!(m.attachments[0].kind, "document");
    }

    #[test]
    fn edits_are_edits() {
        match parse_update(&fixture(
            "official-bot-docs-webhooks/06_edited_message.json",
        ))
        .expect("parses")
        .event
        {
            InboundEvent::Edit {
                external_id, text, ..
            } => {
                assert!(external_id.contains(':'));
                assert!(!text.is_empty());
            }
            other => panic!("expected an edit, got {other:?}"),
        }
    }

    #[test]
    fn callbacks_are_the_customers_words() {
        let m = message("official-bot-docs-webhooks/13_callback_query.json");
        assert_eq!(m.text, "Data from button callback");
        assert_eq!(
            m.origin,
            Origin::Callback {
                payload: "Data from button callback".into()
            }
        );
        assert_eq!(m.external_id, "callback:4382bfdwdsb323b2d9");
    }

    #[test]
    fn a_pressed_button_shows_as_its_text() {
        let update = json!({
            "update_id": 1,
            "callback_query": {
                "id": "77",
                "from": { "id": 5, "is_bot": false, "first_name": "Ann" },
                "data": "fd:abc:2",
                "message": {
                    "message_id": 9,
                    "chat": { "id": 5, "type": "private" },
                    "reply_markup": { "inline_keyboard": [
                        [{ "text": "Delivery times", "callback_data": "fd:abc:1" }],
                        [{ "text": "Returns", "callback_data": "fd:abc:2" }]
                    ]}
                }
            }
        });
        let RoutedEvent {
            event: InboundEvent::Message(m),
            ..
        } = parse_update(update.to_string().as_bytes()).expect("parse")
        else {
            panic!("a message");
        };
        assert_eq!(m.text, "Returns");
        assert_eq!(m.origin.payload(), Some("fd:abc:2"));
        assert_eq!(m.reply_to.as_deref(), Some("5:9"));
    }

    #[test]
    fn irrelevant_updates_are_skipped_with_a_reason() {
        assert!(
            skipped("official-bot-docs-webhooks/11_inline_query.json").contains("inline_query")
        );
        assert!(skipped("official-bot-docs-webhooks/09_voice_message.json").contains("voice"));
        assert!(skipped("bottender/groupMessage.json").contains("group"));
        assert!(skipped("bottender/channelPost.json").contains("channel"));
        assert!(skipped("bottender/poll.json").contains("poll"));
        assert!(skipped("bottender/groupCallbackQuery.json").contains("group"));
        let future = br#"{"update_id":1,"message_reaction_count_v9":{"x":1}}"#;
        let RoutedEvent {
            event: InboundEvent::Skipped { reason },
            ..
        } = parse_update(future).expect("tolerated")
        else {
            panic!("future kinds are skipped")
        };
        assert!(reason.contains("message_reaction_count_v9"));
    }

    #[test]
    fn every_fixture_parses_or_skips_without_error() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/telegram");
        for dir in [
            "official-bot-docs-webhooks",
            "illemius-telegram_types",
            "bottender",
        ] {
            for entry in std::fs::read_dir(root.join(dir)).expect("dir") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "json") {
                    let body = std::fs::read(&path).expect("read");
                    parse_update(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
            }
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(parse_update(b"not json").is_err());
        assert!(parse_update(b"[1,2]").is_err());
        assert!(parse_update(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn secret_token_is_compared_exactly() {
        let telegram = Telegram::new("http://127.0.0.1:1", HttpClient::new(Default::default()));
        let secrets =
            std::collections::BTreeMap::from([("secret_token".to_owned(), "s3cret".to_owned())]);
        let request = |token: Option<&str>| WebhookRequest {
            headers: token
                .map(|t| vec![(SECRET_HEADER.to_owned(), t.to_owned())])
                .unwrap_or_default(),
            query: String::new(),
            body: bytes::Bytes::new(),
            received_at: chrono::Utc::now(),
        };
        assert_eq!(
            telegram.verify(&request(Some("s3cret")), &secrets),
            Ok(None)
        );
        assert_eq!(
            telegram.verify(&request(Some("s3cret ")), &secrets),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            telegram.verify(&request(Some("")), &secrets),
            Err(VerifyError::BadSignature)
        );
        assert!(matches!(
            telegram.verify(&request(None), &secrets),
            Err(VerifyError::MissingSignature(_))
        ));
    }
}
