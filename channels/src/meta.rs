//! What Meta's platforms share: Messenger, WhatsApp and Instagram.
//!
//! - **Verification.** `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app
//!   secret, raw body)>`, compared in constant time, and the `GET` subscribe
//!   handshake that echoes `hub.challenge` when `hub.verify_token` matches.
//! - **Graph API errors.** Which error codes a retry can help (rate limits,
//!   transient failures) and which it cannot (outside the window, an
//!   undeliverable number); the code is kept in the error text so that
//!   agents see it.
//! - **The messaging window.** Replies are free-form for 24 hours after the
//!   customer's last message. After that Messenger and Instagram accept a
//!   person's reply under the `HUMAN_AGENT` tag for 7 days, and WhatsApp
//!   only an approved template. [`Window`] says what a reply may do now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::http::{Attempt, default_verdict};
use crate::{
    ChannelKind, HttpClient, ParseError, Reach, SendError, VerifyError, verify_hmac_sha256,
};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Free-form replies are allowed this long after the customer's last message.
pub const STANDARD_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// Messenger and Instagram accept a person's reply under the `HUMAN_AGENT`
/// tag this long after the customer's last message.
pub const HUMAN_AGENT_WINDOW: chrono::Duration = chrono::Duration::days(7);

/// Checks the `GET` subscribe handshake's query against `verify_token` and
/// returns the challenge to echo.
pub fn subscription_challenge(query: &str, verify_token: &str) -> Result<String, VerifyError> {
    let mut mode = None;
    let mut token = None;
    let mut challenge = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "hub.mode" => mode = Some(value.into_owned()),
            "hub.verify_token" => token = Some(value.into_owned()),
            "hub.challenge" => challenge = Some(value.into_owned()),
            _ => {}
        }
    }
    if mode.as_deref() != Some("subscribe") {
        return Err(VerifyError::MalformedSignature(
            "hub.mode (expected subscribe)",
        ));
    }
    let token = token.ok_or(VerifyError::MissingSignature("hub.verify_token"))?;
    let challenge = challenge.ok_or(VerifyError::MissingSignature("hub.challenge"))?;
    if crate::constant_time_eq(token.as_bytes(), verify_token.as_bytes()) {
        Ok(challenge)
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// Checks `X-Hub-Signature-256` over the raw body.
pub fn verify_signature(
    app_secret: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), VerifyError> {
    let header = header.ok_or(VerifyError::MissingSignature("X-Hub-Signature-256"))?;
    let hex = header
        .strip_prefix("sha256=")
        .ok_or(VerifyError::MalformedSignature("X-Hub-Signature-256"))?;
    if verify_hmac_sha256(app_secret.as_bytes(), &[body], hex) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// Checks a request of one of Meta's platforms with the account's
/// `app_secret`.
pub(crate) fn verify(
    request: &crate::WebhookRequest,
    secrets: &dyn crate::Secrets,
) -> Result<Option<String>, VerifyError> {
    let secret = secrets.require("app_secret")?;
    verify_signature(secret, &request.body, request.header(SIGNATURE_HEADER)).map(|()| None)
}

/// The `entry` array of a batch whose `object` is `expected`; `Ok(Err(_))`
/// names another object, which is answered 200 and skipped.
pub(crate) fn entries<'a>(
    batch: &'a Value,
    expected: &str,
) -> Result<Result<&'a Vec<Value>, String>, ParseError> {
    let Some(object) = batch.as_object() else {
        return Err(ParseError::new("body must be a JSON object"));
    };
    match object.get("object").and_then(Value::as_str) {
        Some(o) if o == expected => {}
        Some(other) => return Ok(Err(other.to_owned())),
        None => return Err(ParseError::new("missing `object`")),
    }
    object
        .get("entry")
        .and_then(Value::as_array)
        .map(Ok)
        .ok_or_else(|| ParseError::new("missing `entry` array"))
}

/// JSON, tolerating a leading UTF-8 byte-order mark.
pub(crate) fn json_body(body: &[u8]) -> Result<Value, ParseError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    serde_json::from_slice(body)
        .map_err(|e| ParseError::new(format!("body is not valid JSON: {e}")))
}

/// An id Meta writes as a string or a number.
pub(crate) fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Milliseconds since the epoch (Messenger, Instagram).
pub(crate) fn millis(v: &Value) -> Option<DateTime<Utc>> {
    let ms = v.as_i64().or_else(|| v.as_str()?.parse().ok())?;
    DateTime::from_timestamp_millis(ms)
}

/// Seconds since the epoch, as a number or a string (WhatsApp).
pub(crate) fn seconds(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_i64().or_else(|| v.as_str()?.trim().parse().ok())?;
    DateTime::from_timestamp(s, 0)
}

/// Distinct ids picked from a batch, in order of appearance; more than `max`
/// is an error (the accounts are looked up before verification, so the
/// number of lookups an unsigned body can cause is bounded).
pub(crate) fn distinct_capped(
    ids: impl IntoIterator<Item = String>,
    max: usize,
    what: &str,
) -> Result<Vec<String>, ParseError> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if seen.insert(id.clone()) {
            if out.len() == max {
                return Err(ParseError::new(format!(
                    "more than {max} distinct {what} in one batch"
                )));
            }
            out.push(id);
        }
    }
    Ok(out)
}

/// The distinct `entry[].id`s of a batch (Messenger's page ids,
/// Instagram's account ids), in order of appearance, in time linear in the
/// body: only the ids are built, the rest is skipped (a 2 MiB body of 137k
/// entries parses in a few ms).
pub(crate) fn entry_ids(
    body: &[u8],
    max: usize,
    batch_name: &str,
    what: &str,
) -> Result<Vec<String>, ParseError> {
    #[derive(serde::Deserialize)]
    struct Batch {
        #[serde(default)]
        entry: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        id: Value,
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let batch: Batch = serde_json::from_slice(body)
        .map_err(|e| ParseError::new(format!("body is not {batch_name}: {e}")))?;
    distinct_capped(
        batch.entry.iter().filter_map(|e| id_string(&e.id)),
        max,
        what,
    )
}

/// Graph API error codes that a later attempt can get past: throttling
/// (4, 17, 32, 613, 80007, WhatsApp's 130429 and 131056) and transient
/// failures (1, 2, 131000, WhatsApp's 131016 "service unavailable").
pub fn retryable(code: i64) -> bool {
    matches!(
        code,
        1 | 2 | 4 | 17 | 32 | 613 | 80007 | 130429 | 131000 | 131016 | 131056
    )
}

/// A Graph API error as agents should read it: `(131047) Re-engagement
/// message: more than 24 hours have passed…`.
pub fn describe_error(error: &Value) -> String {
    let code = error["code"].as_i64();
    let title = error["title"]
        .as_str()
        .or_else(|| error["message"].as_str())
        .unwrap_or("no error message");
    let details = error["error_data"]["details"]
        .as_str()
        .or_else(|| error["details"].as_str())
        .filter(|d| *d != title);
    let mut text = match code {
        Some(code) => format!("({code}) {title}"),
        None => title.to_owned(),
    };
    if let Some(details) = details {
        text.push_str(": ");
        text.push_str(details);
    }
    text
}

/// POSTs `body` to a Graph API `url` with the token as a bearer (never in
/// the URL), retrying what [`retryable`] and HTTP say a retry can help.
pub(crate) async fn graph_post(
    http: &HttpClient,
    what: &str,
    url: &str,
    token: &str,
    body: &Value,
) -> Result<Value, SendError> {
    http.post_json(what, url, Some(token), body, |status, after, json| {
        let error = &json["error"];
        if !status.is_success() && error.is_object() {
            let code = error["code"].as_i64().unwrap_or_default();
            if retryable(code) || error["is_transient"] == json!(true) {
                return Attempt::Retry {
                    error: describe_error(error),
                    after: after.or(Some(Duration::from_secs(1))),
                };
            }
            if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Attempt::Permanent(describe_error(error));
            }
        }
        match default_verdict(status, after, || describe_error(error)) {
            Attempt::Ok(()) => Attempt::Ok(json.clone()),
            Attempt::Retry { error, after } => Attempt::Retry { error, after },
            Attempt::Permanent(e) => Attempt::Permanent(e),
        }
    })
    .await
}

/// Who writes a reply: the bot, or a person (an agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    /// The bot.
    Bot,
    /// An agent.
    Person,
}

/// A conversation's messaging window on a Meta platform, from the
/// customer's last message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    /// The platform.
    pub kind: ChannelKind,
    /// When the customer last wrote; `None` if never.
    pub last_customer_message: Option<DateTime<Utc>>,
    /// Free-form replies until then.
    pub closes_at: Option<DateTime<Utc>>,
    /// A person may still reply under the `HUMAN_AGENT` tag until then
    /// (Messenger and Instagram).
    pub human_agent_until: Option<DateTime<Utc>>,
}

/// A reply the window does not allow now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Closed {
    /// Since when replies of this kind are not allowed (`None`: the
    /// customer never wrote).
    pub since: Option<DateTime<Utc>>,
    /// What to tell the person: which window closed, when, and what is
    /// still possible.
    pub reason: String,
}

impl Window {
    /// The window of a conversation on `kind`; `None` for platforms without
    /// one (Telegram, email, web chat).
    pub fn of(kind: ChannelKind, last_customer_message: Option<DateTime<Utc>>) -> Option<Window> {
        if !kind.has_window() {
            return None;
        }
        let human = kind != ChannelKind::Whatsapp;
        Some(Window {
            kind,
            last_customer_message,
            closes_at: last_customer_message.map(|at| at + STANDARD_WINDOW),
            human_agent_until: last_customer_message
                .filter(|_| human)
                .map(|at| at + HUMAN_AGENT_WINDOW),
        })
    }

    /// Whether free-form replies are allowed at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.closes_at.is_some_and(|at| now < at)
    }

    /// How a reply by `author` may go out at `now`; `template` is the
    /// channel's re-engagement template (name, language), if it has one.
    pub fn reach(
        &self,
        now: DateTime<Utc>,
        author: Author,
        template: Option<(&str, &str)>,
    ) -> Result<Reach, Closed> {
        if self.is_open(now) {
            return Ok(Reach::Standard);
        }
        let platform = self.kind.display_name();
        let Some(closed_at) = self.closes_at else {
            return Err(Closed {
                since: None,
                reason: format!(
                    "the customer has never written on {platform}, so no reply can be sent"
                ),
            });
        };
        let when = closed_at.format("%Y-%m-%d %H:%M UTC");
        match author {
            Author::Bot => Err(Closed {
                since: Some(closed_at),
                reason: format!(
                    "the {platform} 24-hour window closed at {when}: the bot does not write until the customer does"
                ),
            }),
            Author::Person => {
                if let Some(until) = self.human_agent_until {
                    if now < until {
                        return Ok(Reach::HumanAgent);
                    }
                    return Err(Closed {
                        since: Some(until),
                        reason: format!(
                            "the {platform} window for a person's reply closed at {} (7 days after the customer's last message); they can be reached again when they write",
                            until.format("%Y-%m-%d %H:%M UTC")
                        ),
                    });
                }
                match template {
                    Some((name, language)) => Ok(Reach::Template {
                        name: name.to_owned(),
                        language: language.to_owned(),
                    }),
                    None => Err(Closed {
                        since: Some(closed_at),
                        reason: format!(
                            "the {platform} 24-hour window closed at {when}: only an approved template can reach the customer now, and this channel has no `reengage_template`"
                        ),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time") + chrono::Duration::hours(hours)
    }

    #[test]
    fn the_window_rules_of_each_platform() {
        let last = Some(at(0));
        let wa = Window::of(ChannelKind::Whatsapp, last).expect("window");
        let ig = Window::of(ChannelKind::Instagram, last).expect("window");
        let fb = Window::of(ChannelKind::Messenger, last).expect("window");
        assert!(Window::of(ChannelKind::Telegram, last).is_none());
        for w in [wa, ig, fb] {
            assert_eq!(w.reach(at(23), Author::Bot, None), Ok(Reach::Standard));
            assert_eq!(w.reach(at(23), Author::Person, None), Ok(Reach::Standard));
            let closed = w.reach(at(24), Author::Bot, None).expect_err("bot closed");
            assert!(
                closed.reason.contains("24-hour window closed at"),
                "{closed}"
            );
            assert_eq!(closed.since, Some(at(24)));
        }
        for w in [ig, fb] {
            assert_eq!(w.reach(at(25), Author::Person, None), Ok(Reach::HumanAgent));
            assert_eq!(
                w.reach(at(24 * 7 - 1), Author::Person, None),
                Ok(Reach::HumanAgent)
            );
            let closed = w
                .reach(at(24 * 7), Author::Person, Some(("t", "en")))
                .expect_err("after 7 days");
            assert!(closed.reason.contains("7 days"), "{closed}");
        }
        let closed = wa
            .reach(at(25), Author::Person, None)
            .expect_err("no template");
        assert!(closed.reason.contains("reengage_template"), "{closed}");
        assert_eq!(
            wa.reach(at(25), Author::Person, Some(("hello_again", "en_US"))),
            Ok(Reach::Template {
                name: "hello_again".into(),
                language: "en_US".into()
            })
        );
        let never = Window::of(ChannelKind::Whatsapp, None).expect("window");
        assert!(never.reach(at(0), Author::Person, None).is_err());
    }

    #[test]
    fn graph_errors_read_as_code_title_and_details() {
        let e = json!({"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
            "error_data": {"details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}});
        assert_eq!(
            describe_error(&e),
            "(131047) Re-engagement message: Message failed to send because more than 24 hours have passed since the customer last replied to this number."
        );
        assert_eq!(
            describe_error(&json!({"message": "Invalid OAuth access token.", "code": 190})),
            "(190) Invalid OAuth access token."
        );
        assert!(retryable(130429) && retryable(131056) && retryable(4));
        assert!(!retryable(131047) && !retryable(131026) && !retryable(190));
    }

    #[test]
    fn ids_are_distinct_and_capped() {
        let ids = ["a", "b", "a", "c"].map(String::from);
        assert_eq!(
            distinct_capped(ids.clone(), 3, "ids").expect("fits"),
            ["a", "b", "c"]
        );
        assert!(distinct_capped(ids, 2, "ids").is_err());
    }
}
