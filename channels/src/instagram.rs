//! Instagram messaging (Graph API): `instagram` webhooks in,
//! `/{ig_account_id}/messages` out.
//!
//! Verification is Meta's ([`meta`]). Events come as Messenger's do
//! (`entry[].messaging[]`), routed by `entry[].id`, the professional
//! account's id, and are read by the same code: text, quick replies,
//! postbacks, attachments (story mentions among them) and story replies as
//! metadata, `reply_to`, reactions and read receipts; echoes and deleted
//! messages are skipped with their reason, as are comment and mention
//! changes.
//!
//! Sending: text split at 1,000 characters, options as quick replies, a
//! person's reply after the 24-hour window under the `HUMAN_AGENT` tag.

use serde_json::{Value, json};

use crate::messenger::{messaging_event, send_bodies, sent_id};
use crate::meta::{self, id_string, json_body};
use crate::{
    Channel, ChannelKind, HttpClient, InboundEvent, Limits, OutboundMessage, ParseError, Recipient,
    RoutedEvent, Secrets, SendError, Sent, VerifyError, WebhookRequest,
};

/// Instagram's limit for one text message.
pub const MAX_TEXT_CHARS: usize = 1000;

/// The Instagram adapter.
#[derive(Debug, Clone)]
pub struct Instagram {
    graph_api_base: String,
    http: HttpClient,
}

impl Instagram {
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
        to: &Recipient,
        body: &Value,
    ) -> Result<Value, SendError> {
        let token = secrets.get("page_access_token").ok_or_else(|| {
            SendError::NotConfigured("the account has no page_access_token".into())
        })?;
        let account = to.via.as_deref().ok_or_else(|| {
            SendError::NotConfigured("the reply names no Instagram account id to send from".into())
        })?;
        let url = format!("{}/{account}/messages", self.graph_api_base);
        meta::graph_post(http, what, &url, token, body).await
    }
}

/// The distinct account ids (`entry[].id`) a batch is for; more than `max`
/// is an error.
pub fn account_ids(body: &[u8], max: usize) -> Result<Vec<String>, ParseError> {
    meta::entry_ids(body, max, "an Instagram batch", "account ids")
}

impl Channel for Instagram {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Instagram
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
        let mut sent = Vec::new();
        for body in send_bodies(to, message, MAX_TEXT_CHARS) {
            let answer = self
                .post(&self.http, "instagram send", secrets, to, &body)
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
        let body = json!({ "recipient": { "id": to.external_id }, "sender_action": "typing_on" });
        self.post(&self.http.once(), "instagram typing", secrets, to, &body)
            .await
            .map(|_| ())
    }
}

/// Parses a whole webhook body: every event of every entry.
pub fn parse_batch(body: &[u8]) -> Result<Vec<RoutedEvent>, ParseError> {
    let batch = json_body(body)?;
    let entries = match meta::entries(&batch, "instagram")? {
        Ok(entries) => entries,
        Err(other) => {
            return Ok(vec![RoutedEvent::skipped(format!(
                "object `{other}` is not instagram"
            ))]);
        }
    };
    let mut events = Vec::new();
    for entry in entries {
        let Some(account) = id_string(&entry["id"]) else {
            events.push(RoutedEvent::skipped("entry without an account id"));
            continue;
        };
        let route = |event| RoutedEvent {
            account: Some(account.clone()),
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
        for change in entry["changes"].as_array().into_iter().flatten() {
            events.push(route(InboundEvent::Skipped {
                reason: format!(
                    "Instagram `{}` changes (comments, mentions) are not handled",
                    change["field"].as_str().unwrap_or("?")
                ),
            }));
        }
    }
    Ok(events)
}

#[cfg(test)]
#[allow(clippy::needless_pass_by_value)] // payloads built inline with json!
mod tests {
    use super::*;
    use crate::{InboundMessage, Origin};

    fn batch(events: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "instagram",
            "entry": [{ "id": "17841400000000001", "time": 1, "messaging": events }]
        }))
        .expect("json")
    }

    fn one(event: Value) -> InboundEvent {
        let mut events = parse_batch(&batch(json!([event]))).expect("parses");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].account.as_deref(), Some("17841400000000001"));
        events.remove(0).event
    }

    fn message(event: InboundEvent) -> InboundMessage {
        match event {
            InboundEvent::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn from(message: Value) -> Value {
        json!({
            "sender": { "id": "IGSID1" }, "recipient": { "id": "17841400000000001" },
            "timestamp": 1_700_000_000_000_i64, "message": message
        })
    }

    #[test]
    fn messages_story_replies_and_quick_replies() {
        let m = message(one(from(
            json!({ "mid": "m1", "text": "Is the blue one in stock?" }),
        )));
        assert_eq!(
            (m.external_id.as_str(), m.text.as_str()),
            ("m1", "Is the blue one in stock?")
        );
        let m = message(one(from(
            json!({ "mid": "m2", "text": "Love it, how much?",
            "reply_to": { "story": { "url": "https://cdn.example/story", "id": "STORY1" } } }),
        )));
        assert_eq!(m.attachments[0].kind, "story_reply");
        assert_eq!(m.attachments[0].file_id.as_deref(), Some("STORY1"));
        let m = message(one(from(json!({ "mid": "m3",
            "attachments": [{ "type": "story_mention", "payload": { "url": "https://cdn.example/m" } }] }))));
        assert_eq!(m.attachments[0].kind, "story_mention");
        let m = message(one(from(json!({ "mid": "m4", "text": "1. Returns",
            "quick_reply": { "payload": "fd:tok:1" }, "reply_to": { "mid": "m0" } }))));
        assert_eq!(
            m.origin,
            Origin::QuickReply {
                payload: "fd:tok:1".into()
            }
        );
        assert_eq!(m.reply_to.as_deref(), Some("m0"));
    }

    #[test]
    fn echoes_deletions_reactions_and_reads() {
        assert!(matches!(
            one(from(json!({ "mid": "e", "text": "ours", "is_echo": true }))),
            InboundEvent::Skipped { reason } if reason.contains("echo")
        ));
        assert!(matches!(
            one(from(json!({ "mid": "d", "is_deleted": true }))),
            InboundEvent::Skipped { reason } if reason.contains("deleted")
        ));
        let react = one(
            json!({ "sender": { "id": "IGSID1" }, "recipient": { "id": "1" }, "timestamp": 1,
            "reaction": { "mid": "m9", "action": "react", "reaction": "love", "emoji": "❤️" } }),
        );
        assert!(matches!(react, InboundEvent::Reaction { emoji: Some(e), .. } if e == "❤️"));
        let unreact = one(
            json!({ "sender": { "id": "IGSID1" }, "recipient": { "id": "1" }, "timestamp": 1,
            "reaction": { "mid": "m9", "action": "unreact" } }),
        );
        assert!(matches!(
            unreact,
            InboundEvent::Reaction { emoji: None, .. }
        ));
        let read = one(
            json!({ "sender": { "id": "IGSID1" }, "recipient": { "id": "1" },
            "timestamp": 1_700_000_000_000_i64, "read": { "mid": "m9" } }),
        );
        assert!(
            matches!(read, InboundEvent::Read { watermark, .. } if watermark.timestamp() == 1_700_000_000)
        );
    }

    fn fixtures() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/instagram")
    }

    /// A fixture as a wire body: chatwoot's derived ones lack `object`.
    fn fixture(file: &str) -> Vec<u8> {
        let body = std::fs::read(fixtures().join(file)).expect("fixture");
        if !file.starts_with("chatwoot/") {
            return body;
        }
        let mut value: Value = serde_json::from_slice(&body).expect("json");
        value["object"] = json!("instagram");
        serde_json::to_vec(&value).expect("json")
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
            let events = match parse_batch(&fixture(file)) {
                Ok(events) => events,
                Err(e) => {
                    assert!(
                        file.ends_with(".txt") || file.contains("malformed"),
                        "{file}: {e}"
                    );
                    *kinds.entry("refused").or_default() += 1;
                    continue;
                }
            };
            for e in &events {
                let kind = match &e.event {
                    InboundEvent::Message(m) => {
                        assert!(
                            !m.external_id.is_empty() && !m.sender.external_id.is_empty(),
                            "{file}"
                        );
                        "message"
                    }
                    InboundEvent::Read { .. } => "read",
                    InboundEvent::Skipped { .. } => "skipped",
                    other => panic!("{file}: unexpected {other:?}"),
                };
                *kinds.entry(kind).or_default() += 1;
            }
        }
        assert_eq!(kinds.get("refused"), Some(&3), "{kinds:?}");
        assert!(kinds["message"] >= 12 && kinds["skipped"] >= 8, "{kinds:?}");
        let reply = |file: &str| match parse_batch(&fixture(file)).expect("parses").remove(0).event
        {
            InboundEvent::Message(m) => m,
            other => panic!("{file}: {other:?}"),
        };
        assert_eq!(
            reply("chatwoot/derived-json/instagram_story_reply_event.json").attachments[0].kind,
            "story_reply"
        );
        assert_eq!(
            reply("go-meta-webhooks/messaging__story_mention.json").attachments[0].kind,
            "story_mention"
        );
        assert!(
            reply("go-meta-webhooks/messaging__quick_reply_message.json")
                .origin
                .payload()
                .is_some()
        );
        assert!(matches!(
            reply("go-meta-webhooks/messaging__postback_message.json").origin,
            Origin::Postback { .. }
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
            assert_eq!(ok, v["expect"] == "valid", "{}", v["id"]);
        }
    }

    #[test]
    fn comments_and_other_objects_are_skipped_and_junk_refused() {
        let body = serde_json::to_vec(&json!({ "object": "instagram",
            "entry": [{ "id": "1", "time": 1, "changes": [{ "field": "comments", "value": {} }] }] }))
        .expect("json");
        assert!(matches!(
            &parse_batch(&body).expect("parses")[0].event,
            InboundEvent::Skipped { .. }
        ));
        assert!(matches!(
            &parse_batch(b"{\"object\":\"page\",\"entry\":[]}").expect("parses")[0].event,
            InboundEvent::Skipped { .. }
        ));
        assert!(parse_batch(b"{\"object\":\"instagram\"}").is_err());
        assert!(parse_batch(b"not json").is_err());
        assert!(account_ids(b"{\"entry\":[{\"id\":\"1\"},{\"id\":2}]}", 1).is_err());
    }
}
