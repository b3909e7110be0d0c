//! Facebook Messenger (Graph API): page webhooks in, Send API out.
//!
//! Verification: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret,
//! raw body)>`, compared in constant time; the legacy SHA-1 header is not
//! accepted. The `GET` subscribe handshake answers `hub.challenge` when
//! `hub.verify_token` matches.
//!
//! Parsing: every event of a batch (`entry[]` × `messaging[]`), each routed
//! by its entry's page id. Text, quick replies and postbacks become the
//! customer's words; attachments are kept as metadata; echoes of our own
//! messages are skipped; `delivery`/`read` update outbound status; handover
//! events move control between apps. `standby` events (another app owns the
//! thread) and other kinds are skipped with a reason.
//!
//! Sending: `messaging_type: RESPONSE`, text split at 2000 characters,
//! `sender_action: typing_on` for the typing indicator.

use serde_json::{Value, json};

use crate::choices::{self, Choice};
use crate::meta::{self, id_string, json_body, millis};
use crate::{
    Attachment, Channel, ChannelKind, Handover, HttpClient, InboundEvent, InboundMessage, Limits,
    Origin, OutboundMessage, ParseError, Reach, Recipient, RoutedEvent, Secrets, SendError, Sender,
    Sent, VerifyError, WebhookRequest, split_text,
};

pub use crate::meta::{SIGNATURE_HEADER, subscription_challenge, verify_signature};

/// Messenger's limit for one message's text.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Messenger shows at most this many quick replies.
pub const MAX_QUICK_REPLIES: usize = 13;
/// A quick reply's title is cut by Messenger after this many characters.
pub const MAX_QUICK_REPLY_TITLE: usize = 20;
/// A quick reply's payload, in characters.
pub const MAX_QUICK_REPLY_PAYLOAD: usize = 1000;

/// The Messenger adapter.
#[derive(Debug, Clone)]
pub struct Messenger {
    graph_api_base: String,
    http: HttpClient,
}

impl Messenger {
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
        token: &str,
        body: &Value,
    ) -> Result<Value, SendError> {
        let url = format!("{}/me/messages", self.graph_api_base);
        meta::graph_post(http, what, &url, token, body).await
    }
}

/// The distinct page ids a batch is for, in order of appearance, to find
/// the accounts (and the app secret) before verifying; more than `max` is
/// an error. Reads only `entry[].id`, in time linear in the body.
pub fn page_ids(body: &[u8], max: usize) -> Result<Vec<String>, ParseError> {
    meta::entry_ids(body, max, "a Messenger batch", "page ids")
}

impl Channel for Messenger {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Messenger
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
        let token = page_token(secrets)?;
        let mut sent = Vec::new();
        for body in send_bodies(to, message, MAX_TEXT_CHARS) {
            let answer = self
                .post(&self.http, "messenger send", token, &body)
                .await?;
            sent.push(sent_id(&answer)?);
        }
        Ok(sent)
    }

    async fn typing(
        &self,
        secrets: &(dyn Secrets + Sync),
        to: &Recipient,
    ) -> Result<(), SendError> {
        let token = page_token(secrets)?;
        let body = json!({ "recipient": { "id": to.external_id }, "sender_action": "typing_on" });
        self.post(&self.http.once(), "messenger typing", token, &body)
            .await
            .map(|_| ())
    }
}

/// The Send API bodies of a reply (Messenger and Instagram): the text in
/// parts within `max_chars`, the window's tag on each, and the options as
/// quick replies on the last. Quick-reply titles are short, so the options
/// are numbered in the text too, and each title starts with its number.
pub(crate) fn send_bodies(
    to: &Recipient,
    message: &OutboundMessage,
    max_chars: usize,
) -> Vec<Value> {
    let text = if message.choices.is_empty() {
        message.text.clone()
    } else {
        choices::numbered(&message.text, &message.choices, None)
    };
    let parts = split_text(&text, max_chars);
    let last = parts.len().saturating_sub(1);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let mut body = json!({
                "recipient": { "id": to.external_id },
                "message": { "text": part },
            });
            tag(&mut body, &message.reach);
            if i == last && !message.choices.is_empty() {
                body["message"]["quick_replies"] = quick_replies(&message.choices);
            }
            body
        })
        .collect()
}

/// The platform's id of a sent part, from the Send API's answer.
pub(crate) fn sent_id(answer: &Value) -> Result<Sent, SendError> {
    let id = answer["message_id"]
        .as_str()
        .ok_or_else(|| SendError::Permanent("the Send API answered without message_id".into()))?;
    Ok(Sent {
        external_id: id.to_owned(),
    })
}

/// `messaging_type` of a Send API body (Messenger and Instagram): a
/// response within the window, or a person's reply under the `HUMAN_AGENT`
/// tag after it.
fn tag(body: &mut Value, reach: &Reach) {
    match reach {
        Reach::HumanAgent => {
            body["messaging_type"] = json!("MESSAGE_TAG");
            body["tag"] = json!("HUMAN_AGENT");
        }
        Reach::Standard | Reach::Template { .. } => body["messaging_type"] = json!("RESPONSE"),
    }
}

/// Options as quick replies, titled "1. …" within Messenger's limits.
fn quick_replies(options: &[Choice]) -> Value {
    let replies: Vec<Value> = options
        .iter()
        .enumerate()
        .filter(|(_, c)| c.payload.chars().count() <= MAX_QUICK_REPLY_PAYLOAD)
        .take(MAX_QUICK_REPLIES)
        .map(|(i, c)| {
            let number = format!("{}. ", i + 1);
            let room = MAX_QUICK_REPLY_TITLE - number.chars().count();
            json!({
                "content_type": "text",
                "title": format!("{number}{}", choices::fit(&c.label, room)),
                "payload": c.payload,
            })
        })
        .collect();
    Value::Array(replies)
}

fn page_token(secrets: &(dyn Secrets + Sync)) -> Result<&str, SendError> {
    secrets
        .get("page_access_token")
        .ok_or_else(|| SendError::NotConfigured("the account has no page_access_token".into()))
}

/// Parses a whole webhook body: every event of every entry.
pub fn parse_batch(body: &[u8]) -> Result<Vec<RoutedEvent>, ParseError> {
    let batch = json_body(body)?;
    if batch.get("field").is_some() && batch.get("value").is_some() {
        return Ok(vec![RoutedEvent::skipped(
            "dashboard test payload (no page entry to route)",
        )]);
    }
    let entries = match meta::entries(&batch, "page")? {
        Ok(entries) => entries,
        Err(other) => {
            return Ok(vec![RoutedEvent::skipped(format!(
                "object `{other}` is not a page"
            ))]);
        }
    };
    let mut events = Vec::new();
    for entry in entries {
        let Some(page) = id_string(&entry["id"]) else {
            events.push(RoutedEvent::skipped("entry without a page id"));
            continue;
        };
        let route = |event| RoutedEvent {
            account: Some(page.clone()),
            event,
        };
        for event in entry["messaging"].as_array().into_iter().flatten() {
            events.push(route(messaging_event(event)));
        }
        for _ in entry["standby"].as_array().into_iter().flatten() {
            events.push(route(InboundEvent::Skipped {
                reason: "standby event: another app owns the thread".into(),
            }));
        }
        if entry.get("changes").is_some() {
            events.push(route(InboundEvent::Skipped {
                reason: "page feed changes are not handled".into(),
            }));
        }
    }
    Ok(events)
}

pub(crate) fn skip(reason: impl Into<String>) -> InboundEvent {
    InboundEvent::Skipped {
        reason: reason.into(),
    }
}

/// One `messaging[]` event of Messenger or Instagram (same shapes).
pub(crate) fn messaging_event(event: &Value) -> InboundEvent {
    let Some(customer) = id_string(&event["sender"]["id"]) else {
        return skip("event without sender id");
    };
    let sender = Sender {
        external_id: customer.clone(),
        display_name: None,
    };
    let sent_at = millis(&event["timestamp"]);
    if let Some(message) = event.get("message") {
        if message["is_echo"] == json!(true) {
            return skip("echo of a message sent by the page");
        }
        if message["is_deleted"] == json!(true) {
            return skip("the customer deleted a message (kept as it was received)");
        }
        if message["is_unsupported"] == json!(true) {
            return skip("a message type the platform does not pass on");
        }
        let Some(mid) = message["mid"].as_str() else {
            return skip("message without mid");
        };
        let mut text = message["text"].as_str().unwrap_or_default().to_owned();
        if text.trim().is_empty() {
            // A quick reply without its title: the payload names the pick.
            text = message["quick_reply"]["payload"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        let origin = match message["quick_reply"]["payload"].as_str() {
            Some(payload) => Origin::QuickReply {
                payload: payload.to_owned(),
            },
            None => Origin::Text,
        };
        let attachments: Vec<Attachment> = message["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| Attachment {
                kind: a["type"].as_str().unwrap_or("unknown").to_owned(),
                url: a["payload"]["url"].as_str().map(str::to_owned),
                file_id: None,
                name: a["title"].as_str().map(str::to_owned),
                mime_type: None,
                size: None,
            })
            .collect();
        let mut attachments = attachments;
        // Instagram: a reply to the business's story.
        if let Some(story) = message["reply_to"].get("story") {
            attachments.push(Attachment {
                kind: "story_reply".into(),
                url: story["url"].as_str().map(str::to_owned),
                file_id: id_string(&story["id"]),
                name: None,
                mime_type: None,
                size: None,
            });
        }
        if text.trim().is_empty() && attachments.is_empty() {
            return skip("message without text or attachments");
        }
        let stickers_only = message["attachments"]
            .as_array()
            .is_some_and(|a| a.iter().all(|a| a["payload"].get("sticker_id").is_some()));
        if text.trim().is_empty() && (message.get("sticker_id").is_some() || stickers_only) {
            return skip("sticker without words");
        }
        return InboundEvent::Message(InboundMessage {
            external_id: mid.to_owned(),
            sender,
            text,
            origin,
            attachments,
            sent_at,
            reply_to: message["reply_to"]["mid"].as_str().map(str::to_owned),
            email: None,
        });
    }
    if let Some(postback) = event.get("postback") {
        let payload = postback["payload"].as_str().unwrap_or_default().to_owned();
        let text = postback["title"]
            .as_str()
            .filter(|t| !t.trim().is_empty())
            .map_or_else(|| payload.clone(), str::to_owned);
        if text.trim().is_empty() {
            return skip("postback without title or payload");
        }
        let external_id = postback["mid"].as_str().map_or_else(
            || {
                format!(
                    "postback:{customer}:{}",
                    event["timestamp"].as_i64().unwrap_or_default()
                )
            },
            str::to_owned,
        );
        return InboundEvent::Message(InboundMessage {
            external_id,
            sender,
            text,
            origin: Origin::Postback { payload },
            attachments: Vec::new(),
            sent_at,
            reply_to: None,
            email: None,
        });
    }
    if let Some(delivery) = event.get("delivery") {
        return InboundEvent::Delivered {
            customer,
            message_ids: delivery["mids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect(),
            watermark: millis(&delivery["watermark"]),
        };
    }
    if let Some(reaction) = event.get("reaction") {
        let Some(mid) = reaction["mid"].as_str() else {
            return skip("reaction without the message it reacts to");
        };
        let emoji = (reaction["action"].as_str() != Some("unreact"))
            .then(|| {
                reaction["emoji"]
                    .as_str()
                    .or_else(|| reaction["reaction"].as_str())
                    .map(str::to_owned)
            })
            .flatten();
        return InboundEvent::Reaction {
            sender,
            message_id: mid.to_owned(),
            emoji,
        };
    }
    if let Some(read) = event.get("read") {
        // Instagram names the message read instead of a watermark: what was
        // sent before the event was read.
        let watermark = millis(&read["watermark"])
            .or_else(|| read.get("mid").and_then(|_| millis(&event["timestamp"])));
        return match watermark {
            Some(watermark) => InboundEvent::Read {
                customer,
                watermark,
            },
            None => skip("read event without watermark"),
        };
    }
    // The handover protocol: each event goes to the app it concerns.
    if event.get("take_thread_control").is_some() {
        return InboundEvent::Handover {
            customer,
            to: Handover::ToOtherApp,
        };
    }
    if event.get("pass_thread_control").is_some() {
        return InboundEvent::Handover {
            customer,
            to: Handover::ToUs,
        };
    }
    if event.get("request_thread_control").is_some() {
        return InboundEvent::Handover {
            customer,
            to: Handover::Requested,
        };
    }
    let kind = event
        .as_object()
        .and_then(|o| {
            o.keys()
                .find(|k| !matches!(k.as_str(), "sender" | "recipient" | "timestamp"))
                .cloned()
        })
        .unwrap_or_else(|| "empty".into());
    skip(format!("event kind `{kind}` is not handled"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/messenger")
    }

    fn read(path: &str) -> Vec<u8> {
        std::fs::read(root().join(path)).expect("fixture")
    }

    /// Wraps a single `messaging[]` event (bottender, meta docs) in a batch.
    fn wrap(path: &str) -> Vec<u8> {
        let event: Value = json_body(&read(path)).expect("json");
        serde_json::to_vec(&json!({
            "object": "page",
            "entry": [{ "id": "404217156637689", "time": 1, "messaging": [event] }]
        }))
        .expect("serialize")
    }

    fn one(body: &[u8]) -> InboundEvent {
        let mut events = parse_batch(body).expect("parses");
        assert_eq!(events.len(), 1, "{events:?}");
        events.remove(0).event
    }

    #[test]
    fn signature_vectors() {
        let vectors: Value =
            serde_json::from_slice(&read("signature-vectors.json")).expect("vectors");
        for v in vectors["vectors"].as_array().expect("array") {
            let body = match v["body_file"].as_str() {
                Some(file) => read(file),
                None => v["body_inline"]
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
            };
            let secret = v["app_secret"].as_str().expect("secret");
            let header = v["header_value"].as_str();
            let sha256 = v.get("header_name").is_none();
            let expect_valid = v["expect"].as_str().expect("expect").starts_with("valid") && sha256;
            let result = verify_signature(secret, &body, header);
            assert_eq!(result.is_ok(), expect_valid, "{}: {result:?}", v["id"]);
        }
        // One flipped byte of the body breaks the signature.
        let mut body = read("botbuilder-dotnet/RequestResponse.json");
        body[10] ^= 1;
        assert_eq!(
            verify_signature(
                "TestAppSecret",
                &body,
                Some("sha256=13870d954c7cb3a6725c7c8dc58260e6eee77d538dafea1a3703dcc2ae21e97f")
            ),
            Err(VerifyError::BadSignature)
        );
        assert!(matches!(
            verify_signature("s", b"{}", None),
            Err(VerifyError::MissingSignature(_))
        ));
    }

    #[test]
    fn handshake() {
        let q = "hub.mode=subscribe&hub.verify_token=tok%20en&hub.challenge=1158201444";
        assert_eq!(subscription_challenge(q, "tok en"), Ok("1158201444".into()));
        assert_eq!(
            subscription_challenge(q, "other"),
            Err(VerifyError::BadSignature)
        );
        assert!(subscription_challenge("hub.mode=unsubscribe", "x").is_err());
    }

    #[test]
    fn page_ids_are_distinct_and_capped_in_linear_time() {
        let entries: Vec<String> = (0..120_000)
            .map(|i| format!(r#"{{"id":"{}","time":1}}"#, i % 150_000))
            .collect();
        let body = format!(r#"{{"object":"page","entry":[{}]}}"#, entries.join(","));
        assert!(body.len() < 4 << 20);
        let error = page_ids(body.as_bytes(), 100).expect_err("capped");
        assert!(error.to_string().contains("more than 100"), "{error}");
        let repeated = format!(
            r#"{{"object":"page","entry":[{}]}}"#,
            vec![r#"{"id":"p1"},{"id":"p2"}"#; 50_000].join(",")
        );
        assert_eq!(
            page_ids(repeated.as_bytes(), 100).expect("ids"),
            ["p1", "p2"]
        );
    }

    #[test]
    fn batches_route_every_event_by_page() {
        let events =
            parse_batch(&read("botbuilder-dotnet/PayloadWithStandby.json")).expect("parses");
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.account.as_deref() == Some("page1")));
        assert!(matches!(&events[0].event, InboundEvent::Message(m) if m.text == "text"));
        assert!(
            matches!(&events[1].event, InboundEvent::Skipped { reason } if reason.contains("standby"))
        );
        assert_eq!(
            page_ids(&read("botbuilder-dotnet/Payload.json"), 100)
                .expect("ids")
                .len(),
            1
        );
    }

    #[test]
    fn message_kinds() {
        let InboundEvent::Message(m) = one(&wrap("bottender/quickReplyMessage.json")) else {
            panic!("quick reply is a message")
        };
        assert!(matches!(m.origin, Origin::QuickReply { .. }));
        let InboundEvent::Message(m) = one(&wrap("bottender/postback.json")) else {
            panic!("postback is a message")
        };
        assert_eq!(m.text, "USER_DEFINED_PAYLOAD");
        let InboundEvent::Message(m) = one(&wrap("bottender/imageMessage.json")) else {
            panic!("attachment is a message")
        };
        assert_eq!(m.attachments[0].kind, "image");
        assert!(m.attachments[0].url.is_some());
        assert!(matches!(
            one(&wrap("bottender/echoMessage.json")),
            InboundEvent::Skipped { .. }
        ));
        assert!(
            matches!(one(&wrap("bottender/delivery.json")), InboundEvent::Delivered { ref message_ids, .. } if message_ids.len() == 1)
        );
        assert!(matches!(
            one(&wrap("bottender/read.json")),
            InboundEvent::Read { .. }
        ));
        assert!(matches!(
            one(&wrap("bottender/takeThreadControl.json")),
            InboundEvent::Handover {
                to: Handover::ToOtherApp,
                ..
            }
        ));
        assert!(matches!(
            one(&wrap("bottender/passThreadControl.json")),
            InboundEvent::Handover {
                to: Handover::ToUs,
                ..
            }
        ));
        // Reactions are recorded on the message they react to.
        assert!(matches!(
            one(&wrap("bottender/reactionReact.json")),
            InboundEvent::Reaction { emoji: Some(e), message_id, .. }
                if e == "❤️" && message_id == "mid.$cAAE1UUyiiwthh0NPrVbVf4HFNDGl"
        ));
        assert!(matches!(
            one(&wrap("bottender/reactionUnreact.json")),
            InboundEvent::Reaction { emoji: None, .. }
        ));
        assert!(matches!(
            one(&wrap("bottender/policyEnforcement.json")),
            InboundEvent::Skipped { .. }
        ));
    }

    #[test]
    fn every_fixture_parses_or_skips() {
        let manifest = String::from_utf8(read("MANIFEST.tsv")).expect("utf-8");
        let mut checked = 0;
        for line in manifest.lines().skip(1) {
            let mut cols = line.split('\t');
            let (Some(file), Some(shape)) = (cols.next(), cols.next()) else {
                continue;
            };
            let body = match shape {
                s if s.starts_with("full body") => read(file),
                s if s.starts_with("single messaging event") => wrap(&file.replace(
                    "bottender-MessengerEvent.spec/derived-snake_case",
                    "bottender",
                )),
                _ => continue,
            };
            let events = parse_batch(&body).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(!events.is_empty(), "{file}");
            checked += 1;
        }
        assert!(checked > 40, "only {checked} fixtures checked");
        let dash = parse_batch(&read(
            "meta-docs-examples/messaging_postbacks_dashboard_test_format.json",
        ))
        .expect("dashboard");
        assert!(matches!(dash[0].event, InboundEvent::Skipped { .. }));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(parse_batch(b"{").is_err());
        assert!(parse_batch(b"\"page\"").is_err());
        assert!(parse_batch(br#"{"object":"page"}"#).is_err());
    }
}
