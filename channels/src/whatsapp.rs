//! WhatsApp Business (Cloud API): `whatsapp_business_account` webhooks in,
//! `/{phone_number_id}/messages` out.
//!
//! Verification is Meta's ([`meta`]): `X-Hub-Signature-256` with the app
//! secret, and the `GET` subscribe handshake.
//!
//! Parsing: every change of every entry, each routed by its
//! `value.metadata.phone_number_id`. Text, captions, button and list replies
//! (the chosen title, the payload answering a "did you mean" offer) become
//! the customer's words; media, locations, contacts and orders are kept as
//! metadata; reactions are recorded on the message they react to; stickers
//! and unsupported types are stored without an answer; `statuses` move our
//! replies forward or record why they failed.
//!
//! Sending: text split at 4,096 characters; "did you mean" options as reply
//! buttons (at most 3, titles of 20 characters, when every title fits whole)
//! or a list (at most 10 rows, titles of 24 and the whole label below);
//! outside the 24-hour window, the channel's approved
//! template. Each customer message is marked read, and a typing indicator
//! is shown against the latest one while the bot answers.

use serde_json::{Value, json};

use crate::choices::{self, Choice};
use crate::meta::{self, id_string, json_body, seconds};
use crate::{
    Attachment, Channel, ChannelKind, HttpClient, InboundEvent, InboundMessage, Limits, Origin,
    OutboundMessage, ParseError, Reach, Recipient, RoutedEvent, Secrets, SendError, SendStatus,
    Sender, Sent, VerifyError, WebhookRequest, split_text,
};

/// WhatsApp's limit for one text message.
pub const MAX_TEXT_CHARS: usize = 4096;
/// The body of an interactive message.
pub const MAX_INTERACTIVE_BODY: usize = 1024;
/// Reply buttons per message.
pub const MAX_BUTTONS: usize = 3;
/// A reply button's title.
pub const MAX_BUTTON_TITLE: usize = 20;
/// Rows of a list message.
pub const MAX_LIST_ROWS: usize = 10;
/// A list row's title.
pub const MAX_ROW_TITLE: usize = 24;
/// A list row's description.
pub const MAX_ROW_DESCRIPTION: usize = 72;
/// A list row's id (a button's may be 256).
pub const MAX_ROW_ID: usize = 200;

/// The WhatsApp adapter.
#[derive(Debug, Clone)]
pub struct Whatsapp {
    graph_api_base: String,
    http: HttpClient,
}

impl Whatsapp {
    /// Talks to the Graph API at `graph_api_base` (version included).
    pub fn new(graph_api_base: impl Into<String>, http: HttpClient) -> Self {
        Self {
            graph_api_base: graph_api_base.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    async fn post(
        &self,
        http: &HttpClient,
        what: &str,
        secrets: &(dyn Secrets + Sync),
        from: &Recipient,
        body: &Value,
    ) -> Result<Value, SendError> {
        let token = secrets
            .get("access_token")
            .ok_or_else(|| SendError::NotConfigured("the account has no access_token".into()))?;
        let phone = from.via.as_deref().ok_or_else(|| {
            SendError::NotConfigured("the reply names no phone number id to send from".into())
        })?;
        let url = format!("{}/{phone}/messages", self.graph_api_base);
        meta::graph_post(http, what, &url, token, body).await
    }

    /// Marks a customer's message read (the blue ticks). One attempt.
    pub async fn mark_read(
        &self,
        secrets: &(dyn Secrets + Sync),
        to: &Recipient,
        message_id: &str,
    ) -> Result<(), SendError> {
        let body = json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        });
        self.post(&self.http.once(), "whatsapp read", secrets, to, &body)
            .await
            .map(|_| ())
    }
}

/// The distinct phone number ids a batch is for, in order of appearance,
/// to find the accounts (and the app secret) before verifying; more than
/// `max` is an error. Reads only `entry[].changes[].value.metadata`.
pub fn phone_number_ids(body: &[u8], max: usize) -> Result<Vec<String>, ParseError> {
    // Only the ids are built; the rest of the body is skipped.
    #[derive(serde::Deserialize)]
    struct Batch {
        #[serde(default)]
        entry: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        changes: Vec<Change>,
    }
    #[derive(serde::Deserialize)]
    struct Change {
        #[serde(default)]
        value: Option<ChangeValue>,
    }
    #[derive(serde::Deserialize)]
    struct ChangeValue {
        #[serde(default)]
        metadata: Option<Metadata>,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(default)]
        phone_number_id: Value,
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let batch: Batch = serde_json::from_slice(body)
        .map_err(|e| ParseError::new(format!("body is not a WhatsApp batch: {e}")))?;
    let ids = batch
        .entry
        .iter()
        .flat_map(|e| &e.changes)
        .filter_map(|c| id_string(&c.value.as_ref()?.metadata.as_ref()?.phone_number_id));
    meta::distinct_capped(ids, max, "phone number ids")
}

impl Channel for Whatsapp {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Whatsapp
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
        meta::verify(request, secrets)
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<RoutedEvent>, ParseError> {
        parse_batch(&request.body)
    }

    async fn send(
        &self,
        secrets: &(dyn Secrets + Sync),
        to: &Recipient,
        message: &OutboundMessage,
    ) -> Result<Vec<Sent>, SendError> {
        let envelope = |rest: Value| {
            let mut body = json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to.external_id,
            });
            if let (Some(body), Value::Object(rest)) = (body.as_object_mut(), rest) {
                body.extend(rest);
            }
            body
        };
        let mut bodies = Vec::new();
        if let Reach::Template { name, language } = &message.reach {
            // Outside the window only an approved template reaches the
            // customer; the reply's own text is not sent.
            bodies.push(envelope(json!({
                "type": "template",
                "template": { "name": name, "language": { "code": language } },
            })));
        } else if message.choices.is_empty() {
            for part in split_text(&message.text, MAX_TEXT_CHARS) {
                bodies.push(envelope(text_body(&part)));
            }
        } else {
            let text = choices::numbered(&message.text, &message.choices, None);
            let mut parts = split_text(&text, MAX_TEXT_CHARS);
            let last = parts.pop().unwrap_or_default();
            for part in parts {
                bodies.push(envelope(text_body(&part)));
            }
            // The options ride on the last part when it fits an interactive
            // body; otherwise it goes as text and the options follow alone.
            let body = if last.chars().count() <= MAX_INTERACTIVE_BODY {
                last
            } else {
                bodies.push(envelope(text_body(&last)));
                choices::fit(
                    &choices::numbered("", &message.choices, None),
                    MAX_INTERACTIVE_BODY,
                )
            };
            bodies.push(envelope(interactive(&body, &message.choices)));
        }
        let mut sent = Vec::new();
        for body in bodies {
            let answer = self
                .post(&self.http, "whatsapp send", secrets, to, &body)
                .await?;
            let id = answer["messages"][0]["id"].as_str().ok_or_else(|| {
                SendError::Permanent("the Cloud API answered without a message id".into())
            })?;
            sent.push(Sent {
                external_id: id.to_owned(),
            });
        }
        Ok(sent)
    }

    async fn typing(
        &self,
        secrets: &(dyn Secrets + Sync),
        to: &Recipient,
    ) -> Result<(), SendError> {
        // The indicator is shown against the customer's latest message,
        // which it also marks read; it goes away when we reply (or in 25 s).
        let Some(last) = &to.last_inbound else {
            return Ok(());
        };
        let body = json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": last,
            "typing_indicator": { "type": "text" },
        });
        self.post(&self.http.once(), "whatsapp typing", secrets, to, &body)
            .await
            .map(|_| ())
    }
}

fn text_body(text: &str) -> Value {
    json!({ "type": "text", "text": { "body": text, "preview_url": false } })
}

/// Options as reply buttons (up to three) or as a list (up to ten rows),
/// each titled "1. …" within WhatsApp's limits.
fn interactive(body: &str, options: &[Choice]) -> Value {
    let numbered = |i: usize, c: &Choice, max: usize| {
        let number = format!("{}. ", i + 1);
        let room = max - number.chars().count();
        format!("{number}{}", choices::fit(&c.label, room))
    };
    // Buttons only when every title fits whole: options often share their
    // first words, and a list row shows the full label below its title.
    let fits = |i: usize, c: &Choice| {
        format!("{}. {}", i + 1, c.label).chars().count() <= MAX_BUTTON_TITLE
    };
    if options.len() <= MAX_BUTTONS && options.iter().enumerate().all(|(i, c)| fits(i, c)) {
        let buttons: Vec<Value> = options
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "type": "reply",
                    "reply": { "id": c.payload, "title": numbered(i, c, MAX_BUTTON_TITLE) },
                })
            })
            .collect();
        return json!({
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": { "text": body },
                "action": { "buttons": buttons },
            },
        });
    }
    let rows: Vec<Value> = options
        .iter()
        .enumerate()
        .filter(|(_, c)| c.payload.chars().count() <= MAX_ROW_ID)
        .take(MAX_LIST_ROWS)
        .map(|(i, c)| {
            let title = numbered(i, c, MAX_ROW_TITLE);
            let mut row = json!({ "id": c.payload, "title": title });
            if !title.ends_with(c.label.as_str()) {
                row["description"] = json!(choices::fit(&c.label, MAX_ROW_DESCRIPTION));
            }
            row
        })
        .collect();
    json!({
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": { "text": body },
            "action": { "button": "Options", "sections": [{ "title": "Options", "rows": rows }] },
        },
    })
}

/// Parses a whole webhook body: every message and status of every change.
pub fn parse_batch(body: &[u8]) -> Result<Vec<RoutedEvent>, ParseError> {
    let batch = json_body(body)?;
    let entries = match meta::entries(&batch, "whatsapp_business_account")? {
        Ok(entries) => entries,
        Err(other) => {
            return Ok(vec![RoutedEvent::skipped(format!(
                "object `{other}` is not a WhatsApp Business Account"
            ))]);
        }
    };
    let mut events = Vec::new();
    for change in entries
        .iter()
        .flat_map(|e| e["changes"].as_array().into_iter().flatten())
    {
        let value = &change["value"];
        let Some(phone) = id_string(&value["metadata"]["phone_number_id"]) else {
            events.push(RoutedEvent::skipped(format!(
                "change `{}` without a phone number id",
                change["field"].as_str().unwrap_or("?")
            )));
            continue;
        };
        let route = |event| RoutedEvent {
            account: Some(phone.clone()),
            event,
        };
        if let Some(field) = change["field"].as_str().filter(|f| *f != "messages") {
            events.push(route(skip(format!("`{field}` changes are not handled"))));
            continue;
        }
        let names = contact_names(value);
        for message in value["messages"].as_array().into_iter().flatten() {
            events.push(route(message_event(message, &names)));
        }
        for status in value["statuses"].as_array().into_iter().flatten() {
            events.push(route(status_event(status)));
        }
        for error in value["errors"].as_array().into_iter().flatten() {
            events.push(route(skip(format!(
                "WhatsApp reported an error: {}",
                meta::describe_error(error)
            ))));
        }
    }
    Ok(events)
}

fn skip(reason: impl Into<String>) -> InboundEvent {
    InboundEvent::Skipped {
        reason: reason.into(),
    }
}

/// The profile names the change gives, by WhatsApp id.
fn contact_names(value: &Value) -> Vec<(String, String)> {
    value["contacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                id_string(&c["wa_id"])?,
                c["profile"]["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn media(kind: &str, m: &Value) -> Attachment {
    Attachment {
        kind: match kind {
            "document" => "file",
            other => other,
        }
        .to_owned(),
        url: m["link"].as_str().map(str::to_owned),
        file_id: id_string(&m["id"]),
        name: m["filename"].as_str().map(str::to_owned),
        mime_type: m["mime_type"].as_str().map(str::to_owned),
        size: m["file_size"].as_u64(),
    }
}

fn plain(kind: &str, url: Option<String>, name: Option<String>) -> Attachment {
    Attachment {
        kind: kind.to_owned(),
        url,
        file_id: None,
        name,
        mime_type: None,
        size: None,
    }
}

fn message_event(message: &Value, names: &[(String, String)]) -> InboundEvent {
    let Some(from) = id_string(&message["from"]) else {
        return skip("message without a sender (`from`)");
    };
    let Some(id) = id_string(&message["id"]) else {
        return skip("message without an id");
    };
    let kind = message["type"].as_str().unwrap_or("unknown");
    if kind == "reaction" {
        let reaction = &message["reaction"];
        let Some(target) = id_string(&reaction["message_id"]) else {
            return skip("reaction without the message it reacts to");
        };
        return InboundEvent::Reaction {
            sender: Sender {
                external_id: from,
                display_name: None,
            },
            message_id: target,
            emoji: reaction["emoji"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
        };
    }
    if kind == "revoke" {
        return skip("the customer deleted a message (kept as it was received)");
    }
    if kind == "edit" {
        let edit = &message["edit"];
        let Some(original) = id_string(&edit["original_message_id"]) else {
            return skip("edit without the message it edits");
        };
        let new = &edit["message"];
        let new_kind = new["type"].as_str().unwrap_or_default();
        let text = new["text"]["body"]
            .as_str()
            .or_else(|| new[new_kind]["caption"].as_str())
            .unwrap_or_default();
        return InboundEvent::Edit {
            external_id: original,
            sender: Sender {
                external_id: from,
                display_name: None,
            },
            text: text.to_owned(),
        };
    }
    let mut text = String::new();
    let mut origin = Origin::Text;
    let mut attachments = Vec::new();
    let body = &message[kind];
    match kind {
        "text" => text = body["body"].as_str().unwrap_or_default().to_owned(),
        "image" | "video" | "document" | "audio" => {
            attachments.push(media(kind, body));
            if let Some(caption) = body["caption"].as_str().filter(|c| !c.trim().is_empty()) {
                text = caption.to_owned();
                origin = Origin::Caption;
            }
        }
        "sticker" => {
            attachments.push(media(kind, body));
            origin = Origin::Unanswered {
                reason: "a sticker".into(),
            };
        }
        "location" => {
            let (lat, long) = (body["latitude"].as_f64(), body["longitude"].as_f64());
            let place: Vec<&str> = ["name", "address"]
                .iter()
                .filter_map(|k| body[*k].as_str().filter(|s| !s.is_empty()))
                .collect();
            let geo = lat.zip(long).map(|(lat, long)| format!("geo:{lat},{long}"));
            attachments.push(plain(
                "location",
                geo,
                (!place.is_empty()).then(|| place.join(", ")),
            ));
        }
        "contacts" => {
            for contact in message["contacts"].as_array().into_iter().flatten() {
                let phone = contact["phones"][0]["phone"].as_str();
                attachments.push(plain(
                    "contact",
                    phone.map(|p| format!("tel:{}", p.replace(' ', ""))),
                    contact["name"]["formatted_name"]
                        .as_str()
                        .map(str::to_owned),
                ));
            }
        }
        "interactive" => {
            let reply_kind = body["type"].as_str().unwrap_or_default();
            let reply = &body[reply_kind];
            match (reply["id"].as_str(), reply["title"].as_str()) {
                (Some(payload), Some(title)) => {
                    text = title.to_owned();
                    origin = Origin::QuickReply {
                        payload: payload.to_owned(),
                    };
                }
                _ if !reply.is_object() => {
                    attachments.push(plain("interactive", None, None));
                    origin = Origin::Unanswered {
                        reason: "an interactive reply without its content".into(),
                    };
                }
                // A flow's answer or a type of reply we do not know: the
                // words it carries, else its JSON, as the customer's text.
                _ => {
                    text = reply["body"]
                        .as_str()
                        .or_else(|| reply["title"].as_str())
                        .map(str::to_owned)
                        .unwrap_or_else(|| reply.to_string());
                    text = text.chars().take(MAX_TEXT_CHARS).collect();
                }
            }
        }
        "button" => {
            // A template's quick-reply button.
            text = body["text"].as_str().unwrap_or_default().to_owned();
            if let Some(payload) = body["payload"].as_str() {
                origin = Origin::QuickReply {
                    payload: payload.to_owned(),
                };
            }
        }
        "order" => {
            let items = body["product_items"].as_array().map_or(0, Vec::len);
            attachments.push(plain(
                "order",
                None,
                Some(format!(
                    "{items} item(s) from catalog {}",
                    body["catalog_id"].as_str().unwrap_or("?")
                )),
            ));
            text = body["text"].as_str().unwrap_or_default().to_owned();
        }
        "system" => {
            return skip(format!(
                "system message: {}",
                body["body"].as_str().unwrap_or("no text")
            ));
        }
        "request_welcome" => return skip("the customer opened the chat (no message yet)"),
        other => {
            let why = message["errors"]
                .as_array()
                .and_then(|e| e.first())
                .map_or_else(|| "no reason given".into(), meta::describe_error);
            attachments.push(plain(other, None, None));
            origin = Origin::Unanswered {
                reason: format!("unsupported message type `{other}`: {why}"),
            };
        }
    }
    if let Some(referral) = message.get("referral") {
        attachments.push(plain(
            "referral",
            referral["source_url"].as_str().map(str::to_owned),
            referral["headline"].as_str().map(str::to_owned),
        ));
    }
    if text.trim().is_empty() && attachments.is_empty() {
        return skip(format!("`{kind}` message without words or media"));
    }
    let display_name = names
        .iter()
        .find(|(wa_id, _)| *wa_id == from)
        .map(|(_, name)| name.clone());
    InboundEvent::Message(InboundMessage {
        external_id: id,
        sender: Sender {
            external_id: from,
            display_name,
        },
        text,
        origin,
        attachments,
        sent_at: seconds(&message["timestamp"]),
        reply_to: id_string(&message["context"]["id"]),
        email: None,
    })
}

fn status_event(status: &Value) -> InboundEvent {
    let (Some(id), Some(customer)) = (id_string(&status["id"]), id_string(&status["recipient_id"]))
    else {
        return skip("status without a message id or recipient");
    };
    let state = match status["status"].as_str().unwrap_or_default() {
        "sent" => SendStatus::Sent,
        "delivered" => SendStatus::Delivered,
        "read" => SendStatus::Read,
        "failed" => {
            let error = status["errors"].as_array().and_then(|e| e.first());
            SendStatus::Failed {
                code: error.and_then(|e| e["code"].as_i64()),
                reason: error.map_or_else(|| "no reason given".into(), meta::describe_error),
            }
        }
        other => return skip(format!("status `{other}` is not handled")),
    };
    InboundEvent::Status {
        customer,
        message_id: id,
        status: state,
        at: seconds(&status["timestamp"]),
    }
}

#[cfg(test)]
#[allow(clippy::needless_pass_by_value)] // payloads built inline with json!
mod tests {
    use super::*;

    fn batch(value: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": value }] }]
        }))
        .expect("json")
    }

    fn value(messages: Value) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": "106540352242922" },
            "contacts": [{ "profile": { "name": "Kerry Fisher" }, "wa_id": "16315551234" }],
            "messages": messages,
        })
    }

    fn one(message: Value) -> InboundEvent {
        let mut events = parse_batch(&batch(value(json!([message])))).expect("parses");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].account.as_deref(), Some("106540352242922"));
        events.remove(0).event
    }

    fn message(event: InboundEvent) -> InboundMessage {
        match event {
            InboundEvent::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn text_and_captions_are_words() {
        let m = message(one(json!({
            "from": "16315551234", "id": "wamid.A", "timestamp": "1683229471",
            "type": "text", "text": { "body": "Do you ship to Canada?" },
            "context": { "from": "15550001111", "id": "wamid.OURS" }
        })));
        assert_eq!(m.text, "Do you ship to Canada?");
        assert_eq!(m.sender.display_name.as_deref(), Some("Kerry Fisher"));
        assert_eq!(m.reply_to.as_deref(), Some("wamid.OURS"));
        assert_eq!(m.sent_at.map(|t| t.timestamp()), Some(1_683_229_471));
        let m = message(one(json!({
            "from": "16315551234", "id": "wamid.B", "timestamp": "1", "type": "image",
            "image": { "caption": "This arrived broken", "mime_type": "image/jpeg", "id": "MEDIA1" }
        })));
        assert_eq!(
            (m.text.as_str(), &m.origin),
            ("This arrived broken", &Origin::Caption)
        );
        assert_eq!(m.attachments[0].file_id.as_deref(), Some("MEDIA1"));
        let m = message(one(json!({
            "from": "16315551234", "id": "wamid.C", "timestamp": "1", "type": "document",
            "document": { "filename": "invoice.pdf", "mime_type": "application/pdf", "id": "MEDIA2" }
        })));
        assert_eq!(
            (m.attachments[0].kind.as_str(), m.text.as_str()),
            ("file", "")
        );
    }

    #[test]
    fn replies_to_buttons_and_lists_carry_their_payload() {
        for kind in ["button_reply", "list_reply"] {
            let m = message(one(json!({
                "from": "16315551234", "id": format!("wamid.{kind}"), "timestamp": "1",
                "type": "interactive",
                "interactive": { "type": kind, kind: { "id": "fd:abc:2", "title": "2. Returns" } }
            })));
            assert_eq!(m.text, "2. Returns");
            assert_eq!(m.origin.payload(), Some("fd:abc:2"));
        }
        // A flow's answer, or an unknown reply, is kept as text.
        let m = message(one(json!({
            "from": "16315551234", "id": "wamid.F", "timestamp": "1", "type": "interactive",
            "interactive": { "type": "nfm_reply", "nfm_reply": { "name": "flow", "response_json": "{\"a\":1}" } }
        })));
        assert!(m.text.contains("response_json"), "{}", m.text);
        assert_eq!(m.origin, Origin::Text);
    }

    #[test]
    fn other_kinds_are_metadata_reactions_and_skips() {
        let m = message(one(json!({
            "from": "16315551234", "id": "wamid.L", "timestamp": "1", "type": "location",
            "location": { "latitude": 38.9, "longitude": -77.03, "name": "Shop", "address": "1 Main St" }
        })));
        assert_eq!(m.attachments[0].url.as_deref(), Some("geo:38.9,-77.03"));
        assert_eq!(m.attachments[0].name.as_deref(), Some("Shop, 1 Main St"));
        let m = message(one(json!({
            "from": "16315551234", "id": "wamid.S", "timestamp": "1", "type": "sticker",
            "sticker": { "mime_type": "image/webp", "id": "ST", "animated": false }
        })));
        assert!(matches!(m.origin, Origin::Unanswered { .. }));
        let m = message(one(json!({
            "from": "16315551234", "id": "wamid.U", "timestamp": "1", "type": "unsupported",
            "errors": [{ "code": 131051, "title": "Message type unknown" }]
        })));
        let Origin::Unanswered { reason } = m.origin else {
            panic!("unanswered")
        };
        assert!(reason.contains("(131051) Message type unknown"), "{reason}");
        assert_eq!(
            one(json!({
                "from": "16315551234", "id": "wamid.R", "timestamp": "1", "type": "reaction",
                "reaction": { "message_id": "wamid.OURS", "emoji": "👍" }
            })),
            InboundEvent::Reaction {
                sender: Sender {
                    external_id: "16315551234".into(),
                    display_name: None
                },
                message_id: "wamid.OURS".into(),
                emoji: Some("👍".into()),
            }
        );
        assert!(matches!(
            one(
                json!({ "from": "1", "id": "wamid.Y", "timestamp": "1", "type": "system",
                "system": { "body": "changed number" } })
            ),
            InboundEvent::Skipped { .. }
        ));
    }

    #[test]
    fn statuses_move_replies_or_say_why_they_failed() {
        let body = batch(json!({
            "messaging_product": "whatsapp",
            "metadata": { "phone_number_id": "106540352242922" },
            "statuses": [
                { "id": "wamid.1", "status": "delivered", "timestamp": "1700000000", "recipient_id": "16315551234" },
                { "id": "wamid.2", "status": "failed", "timestamp": "1700000001", "recipient_id": "16315551234",
                  "errors": [{ "code": 131047, "title": "Re-engagement message" }] },
                { "id": "wamid.3", "status": "deleted", "timestamp": "1", "recipient_id": "1" }
            ]
        }));
        let events: Vec<InboundEvent> = parse_batch(&body)
            .expect("parses")
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert!(
            matches!(&events[0], InboundEvent::Status { status: SendStatus::Delivered, message_id, .. } if message_id == "wamid.1")
        );
        assert!(matches!(&events[1], InboundEvent::Status {
            status: SendStatus::Failed { code: Some(131047), reason }, .. } if reason == "(131047) Re-engagement message"));
        assert!(matches!(&events[2], InboundEvent::Skipped { .. }));
    }

    #[test]
    fn ids_come_from_the_metadata_and_are_capped() {
        let two = serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [
                { "id": "W", "changes": [{ "field": "messages", "value": { "metadata": { "phone_number_id": "1" } } }] },
                { "id": "W", "changes": [
                    { "field": "messages", "value": { "metadata": { "phone_number_id": 2 } } },
                    { "field": "messages", "value": { "metadata": { "phone_number_id": "1" } } }
                ] }
            ]
        }))
        .expect("json");
        assert_eq!(phone_number_ids(&two, 5).expect("ids"), ["1", "2"]);
        assert!(phone_number_ids(&two, 1).is_err());
        assert!(phone_number_ids(b"{\"entry\": 3}", 5).is_err());
        assert!(parse_batch(b"[1]").is_err());
        assert!(parse_batch(b"{\"entry\": []}").is_err());
    }

    fn fixtures() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/whatsapp")
    }

    #[test]
    fn every_fixture_parses_or_skips() {
        let manifest = std::fs::read_to_string(fixtures().join("MANIFEST.tsv")).expect("manifest");
        let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
        for line in manifest.lines().skip(1) {
            let file = line.split('\t').next().expect("file");
            if file == "signature-vectors.json" {
                continue;
            }
            if !file.ends_with(".json") {
                continue;
            }
            let body = std::fs::read(fixtures().join(file)).expect("fixture");
            let events = parse_batch(&body).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(!events.is_empty(), "{file}: no event");
            for e in &events {
                let kind = match &e.event {
                    InboundEvent::Message(m) => {
                        assert!(
                            !m.external_id.is_empty() && !m.sender.external_id.is_empty(),
                            "{file}"
                        );
                        if matches!(m.origin, Origin::Unanswered { .. }) {
                            "unanswered"
                        } else {
                            "message"
                        }
                    }
                    InboundEvent::Status { .. } => "status",
                    InboundEvent::Reaction { .. } => "reaction",
                    InboundEvent::Edit { .. } => "edit",
                    InboundEvent::Skipped { .. } => "skipped",
                    other => panic!("{file}: unexpected {other:?}"),
                };
                *kinds.entry(kind).or_default() += 1;
            }
        }
        // Every kind the fixtures hold is met, and most are messages.
        for kind in [
            "message",
            "unanswered",
            "status",
            "reaction",
            "edit",
            "skipped",
        ] {
            assert!(
                kinds.get(kind).copied().unwrap_or_default() > 0,
                "{kind}: {kinds:?}"
            );
        }
        assert!(kinds["message"] >= 25, "{kinds:?}");
        let invalid =
            std::fs::read(fixtures().join("meta-docs-examples/messages_errors_syntax.json.txt"))
                .expect("fixture");
        assert!(parse_batch(&invalid).is_err());
    }

    #[test]
    fn the_fixtures_read_as_the_customer_wrote() {
        let read = |file: &str| {
            let body = std::fs::read(fixtures().join(file)).expect("fixture");
            parse_batch(&body).expect("parses").remove(0).event
        };
        let m = message(read("netflie/can_build_a_button_reply_notification.json"));
        assert!(m.origin.payload().is_some() && !m.text.is_empty(), "{m:?}");
        let m = message(read("pywa/message__document.json"));
        assert_eq!(
            (m.origin.clone(), m.attachments[0].kind.as_str()),
            (Origin::Caption, "file")
        );
        assert!(matches!(
            read("pywa/message__unreaction_no_emoji.json"),
            InboundEvent::Reaction { emoji: None, .. }
        ));
        assert!(matches!(
            read("pywa/message__unreaction_empty.json"),
            InboundEvent::Reaction { emoji: None, .. }
        ));
        assert!(matches!(read("pywa/edited_message__image.json"),
            InboundEvent::Edit { text, .. } if text == "Updated image caption"));
        assert!(matches!(
            read("pywa/message_status__failed.json"),
            InboundEvent::Status {
                status: SendStatus::Failed {
                    code: Some(130472),
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn signature_vectors() {
        let vectors: Value = serde_json::from_slice(
            &std::fs::read(fixtures().join("signature-vectors.json")).expect("vectors"),
        )
        .expect("json");
        for v in vectors["vectors"].as_array().expect("vectors") {
            let body = match v["body_file"].as_str() {
                Some(file) => std::fs::read(fixtures().join(file)).expect("body"),
                None => v["body_inline"].as_str().expect("body").as_bytes().to_vec(),
            };
            let ok = meta::verify_signature(
                v["app_secret"].as_str().expect("secret"),
                &body,
                v["header_value"].as_str(),
            )
            .is_ok();
            let expect = v["expect"].as_str().expect("expect");
            assert_eq!(ok, expect == "valid", "{}", v["id"]);
        }
    }

    #[test]
    fn options_fit_the_interactive_limits() {
        let options: Vec<Choice> = (1..=12)
            .map(|n| Choice {
                label: format!("A rather long option label number {n}"),
                payload: choices::payload("tok", n),
            })
            .collect();
        let short: Vec<Choice> = ["Sweden", "Norway", "None of these"]
            .iter()
            .enumerate()
            .map(|(n, label)| Choice {
                label: (*label).into(),
                payload: choices::payload("tok", n),
            })
            .collect();
        let buttons = interactive("Which one?", &short);
        let list = buttons["interactive"]["action"]["buttons"]
            .as_array()
            .expect("buttons");
        assert_eq!(list.len(), 3);
        for b in list {
            assert!(
                b["reply"]["title"].as_str().expect("title").chars().count() <= MAX_BUTTON_TITLE
            );
        }
        // Labels that a button would cut go in a list, whole below the title.
        let cut = interactive("Which one?", &options[..3]);
        assert_eq!(cut["interactive"]["type"], "list");
        let list = interactive("Which one?", &options);
        let rows = list["interactive"]["action"]["sections"][0]["rows"]
            .as_array()
            .expect("rows");
        assert_eq!(rows.len(), MAX_LIST_ROWS);
        for r in rows {
            assert!(r["title"].as_str().expect("title").chars().count() <= MAX_ROW_TITLE);
            assert!(
                r["description"]
                    .as_str()
                    .expect("description")
                    .chars()
                    .count()
                    <= MAX_ROW_DESCRIPTION
            );
        }
    }
}
