//! Email: Mailgun inbound routes in, SMTP out.
//!
//! Verification (Mailgun's scheme): `signature` = hex HMAC-SHA256(signing
//! key, `timestamp` + `token`), constant-time; `timestamp` within 5 minutes
//! of arrival; the `token` is returned so the caller accepts it only once.
//!
//! Parsing: the raw MIME of `body-mime` (or, for routes that post parsed
//! fields, `body-plain` and `message-headers`), any charset, through
//! `mail-parser`. The new text prefers text/plain, else the HTML converted to
//! text; quoted history ("On … wrote:", `>` lines, Outlook headers) and
//! signatures (`-- `, "Sent from my …") are cut off. Attachments are kept as
//! metadata. `Message-ID`, `In-Reply-To` and `References` come along so the
//! caller can thread a reply into its conversation.
//!
//! Sending: one message per reply over SMTP (lettre), with our own
//! `Message-ID`, `In-Reply-To`, `References` and a `Re:` subject.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use sha2::Digest;

use crate::form::Form;
use crate::{
    Attachment, Channel, ChannelKind, EmailThread, InboundEvent, InboundMessage, Limits, Origin,
    OutboundMessage, ParseError, Recipient, RoutedEvent, Secrets, SendError, Sender, SenderAuth,
    Sent, VerifyError, WebhookRequest, verify_hmac_sha256,
};

/// How far a webhook's timestamp may be from now, in seconds.
pub const TIMESTAMP_WINDOW_SECS: i64 = 300;

/// Characters of a body examined for the reply text.
const MAX_TEXT_SCAN: usize = 100_000;

/// Ids kept from `References` (the newest) and `In-Reply-To`.
const MAX_THREAD_IDS: usize = 50;

/// Most MIME parts accepted in one message.
const MAX_PARTS: usize = 500;

/// The email adapter.
#[derive(Debug, Clone)]
pub struct Email {
    smtp_url: Option<String>,
}

impl Email {
    /// Sends through `smtp_url` (`smtp://host:port`, `smtps://user:pass@host:port`),
    /// or cannot send when `None`.
    pub fn new(smtp_url: Option<String>) -> Self {
        Self { smtp_url }
    }
}

/// Checks Mailgun's signature fields against `signing_key` and the time
/// window; returns the token, to be accepted once.
pub fn verify_mailgun(
    signing_key: &str,
    timestamp: Option<&str>,
    token: Option<&str>,
    signature: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, VerifyError> {
    let timestamp = timestamp.ok_or(VerifyError::MissingSignature("timestamp"))?;
    let token = token.ok_or(VerifyError::MissingSignature("token"))?;
    let signature = signature.ok_or(VerifyError::MissingSignature("signature"))?;
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::MalformedSignature("timestamp"))?;
    if !verify_hmac_sha256(
        signing_key.as_bytes(),
        &[timestamp.as_bytes(), token.as_bytes()],
        signature,
    ) {
        return Err(VerifyError::BadSignature);
    }
    if now.timestamp().abs_diff(seconds) > TIMESTAMP_WINDOW_SECS as u64 {
        return Err(VerifyError::Stale(TIMESTAMP_WINDOW_SECS));
    }
    Ok(token.to_owned())
}

impl Channel for Email {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    fn limits(&self) -> Limits {
        Limits {
            max_text_chars: 200_000,
        }
    }

    fn verify(
        &self,
        request: &WebhookRequest,
        secrets: &dyn Secrets,
    ) -> Result<Option<String>, VerifyError> {
        let key = secrets.require("signing_key")?;
        let form = Form::parse(request.header("content-type"), &request.body)
            .map_err(|_| VerifyError::MissingSignature("signature (body is not a form)"))?;
        verify_mailgun(
            key,
            form.text("timestamp").as_deref(),
            form.text("token").as_deref(),
            form.text("signature").as_deref(),
            request.received_at,
        )
        .map(Some)
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<RoutedEvent>, ParseError> {
        let form = Form::parse(request.header("content-type"), &request.body)?;
        // Both payload forms go through one MIME parser, so the automatic
        // and bulk skips and the sender checks read the same headers.
        let rebuilt;
        let raw = match form.bytes("body-mime") {
            Some(raw) => raw,
            None => {
                rebuilt = fields_as_mime(&form);
                rebuilt.as_bytes()
            }
        };
        if let Some(reason) = automatic(raw) {
            return Ok(vec![RoutedEvent::skipped(reason)]);
        }
        let mut message = parse_mime(raw)?;
        if form.bytes("body-mime").is_none() {
            message.attachments = field_attachments(&form);
        }
        // Mailgun's `sender` is the envelope sender it received (SMTP
        // `MAIL FROM`), the one its SPF verdict is about.
        if let (Some(envelope), Some(thread)) = (form.text("sender"), message.email.as_mut()) {
            thread.auth.envelope_from =
                Some(envelope.trim().trim_matches(['<', '>']).to_lowercase());
            thread.auth.authenticated = thread.auth.is_aligned(&message.sender.external_id);
        }
        Ok(vec![RoutedEvent::unrouted(InboundEvent::Message(message))])
    }

    async fn send(
        &self,
        _secrets: &(dyn Secrets + Sync),
        to: &Recipient,
        message: &OutboundMessage,
    ) -> Result<Vec<Sent>, SendError> {
        use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
        let url = self
            .smtp_url
            .as_deref()
            .ok_or_else(|| SendError::NotConfigured("channels.email.smtp_url is not set".into()))?;
        let reply = to
            .email
            .as_ref()
            .ok_or_else(|| SendError::Permanent("email reply without threading details".into()))?;
        let domain = reply
            .from
            .rsplit_once('@')
            .map_or("frontdesk.invalid", |(_, d)| d);
        let message_id = format!("{}@{domain}", uuid_like());
        let subject = if reply.subject.to_ascii_lowercase().starts_with("re:") {
            reply.subject.clone()
        } else if reply.subject.trim().is_empty() {
            "Re: your message".to_owned()
        } else {
            format!("Re: {}", reply.subject)
        };
        let mut builder = lettre::Message::builder()
            .from(
                reply
                    .from
                    .parse()
                    .map_err(|e| SendError::Permanent(format!("bad From address: {e}")))?,
            )
            .to(to
                .external_id
                .parse()
                .map_err(|e| SendError::Permanent(format!("bad To address: {e}")))?)
            .subject(subject)
            .message_id(Some(format!("<{message_id}>")))
            // RFC 3834: a machine wrote this; other machines must not answer.
            .header(AutoSubmitted);
        if let Some(parent) = &reply.in_reply_to {
            builder = builder.in_reply_to(format!("<{parent}>"));
        }
        if !reply.references.is_empty() {
            let refs: Vec<String> = reply.references.iter().map(|r| format!("<{r}>")).collect();
            builder = builder.references(refs.join(" "));
        }
        let email = builder
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(if message.choices.is_empty() {
                message.text.clone()
            } else {
                crate::choices::numbered(
                    &message.text,
                    &message.choices,
                    Some("Reply with the number of the one you mean."),
                )
            })
            .map_err(|e| SendError::Permanent(format!("cannot build the email: {e}")))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| SendError::NotConfigured(format!("channels.email.smtp_url: {e}")))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        let mut last = String::new();
        for attempt in 1..=3u32 {
            match transport.send(email.clone()).await {
                Ok(_) => {
                    return Ok(vec![Sent {
                        external_id: message_id,
                    }]);
                }
                Err(e) if e.is_permanent() => {
                    return Err(SendError::Permanent(format!("SMTP: {e}")));
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "SMTP send failed, will retry");
                    last = e.to_string();
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)))
                        .await;
                }
            }
        }
        Err(SendError::Exhausted { attempts: 3, last })
    }

    async fn typing(
        &self,
        _secrets: &(dyn Secrets + Sync),
        _to: &Recipient,
    ) -> Result<(), SendError> {
        Ok(())
    }
}

/// `Auto-Submitted: auto-replied` (RFC 3834), on every reply we send.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "auto-replied".to_owned())
    }
}

fn uuid_like() -> String {
    format!("frontdesk.{}", uuid::Uuid::new_v4().simple())
}

/// Ids of a `Message-ID`-like header, without angle brackets.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    let mut out: Vec<String> = match (value.as_text_list(), value.as_text()) {
        (Some(list), _) => list.iter().map(|s| s.to_string()).collect(),
        (None, Some(text)) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    for id in &mut out {
        *id = id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned();
    }
    out.retain(|id| !id.is_empty());
    // The newest ancestors are the ones that thread; a hostile header with
    // thousands of ids must not become thousands of query parameters.
    if out.len() > MAX_THREAD_IDS {
        out.drain(..out.len() - MAX_THREAD_IDS);
    }
    out
}

/// Parses a raw MIME message.
pub fn parse_mime(raw: &[u8]) -> Result<InboundMessage, ParseError> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| ParseError::new("not a MIME message"))?;
    if message.parts.len() > MAX_PARTS {
        return Err(ParseError::new(format!(
            "too many MIME parts ({} > {MAX_PARTS})",
            message.parts.len()
        )));
    }
    let from = message
        .from()
        .and_then(|a| a.first())
        .ok_or_else(|| ParseError::new("email has no From address"))?;
    let reply_to = message
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .filter(|a| a.contains('@'))
        .map(|a| a.trim().to_lowercase());
    let address = from
        .address()
        .filter(|a| a.contains('@'))
        .ok_or_else(|| ParseError::new("email has no From address"))?
        .trim()
        .to_lowercase();
    let auth = sender_auth(&message, &address);
    let body = message
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    let text = reply_text(&body);
    let attachments = message
        .attachments()
        .map(|part| Attachment {
            kind: "file".into(),
            url: None,
            file_id: None,
            name: part.attachment_name().map(str::to_owned),
            mime_type: part.content_type().map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{sub}", ct.ctype()),
                None => ct.ctype().to_owned(),
            }),
            size: Some(part.len() as u64),
        })
        .collect();
    let message_id = message
        .message_id()
        .map(|id| id.trim_matches(['<', '>']).to_owned())
        .filter(|id| !id.is_empty())
        // No Message-ID: a content hash keeps redeliveries recognisable.
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(sha2::Sha256::digest(raw))));
    Ok(InboundMessage {
        external_id: message_id.clone(),
        sender: Sender {
            external_id: address,
            display_name: from
                .name()
                .map(str::to_owned)
                .filter(|n| !n.trim().is_empty()),
        },
        text,
        origin: Origin::Email,
        attachments,
        sent_at: message
            .date()
            .and_then(|d| chrono::DateTime::from_timestamp(d.to_timestamp(), 0)),
        reply_to: ids(message.in_reply_to()).into_iter().next(),
        email: Some(EmailThread {
            message_id,
            in_reply_to: ids(message.in_reply_to()),
            references: ids(message.references()),
            subject: message.subject().unwrap_or_default().to_owned(),
            reply_to,
            auth,
        }),
    })
}

/// Why an email must not be answered (RFC 3834 auto-replies, lists, bulk),
/// so the bot never talks to autoresponders or mailing lists.
pub fn automatic(raw: &[u8]) -> Option<String> {
    let message = MessageParser::default().parse_headers(raw)?;
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if let Some(value) = header("Auto-Submitted")
        && value != "no"
    {
        return Some(format!("automatic email (Auto-Submitted: {value})"));
    }
    if let Some(value) = header("Precedence")
        && matches!(value.as_str(), "bulk" | "list" | "junk" | "auto_reply")
    {
        return Some(format!("automatic email (Precedence: {value})"));
    }
    for name in ["X-Autoreply", "X-Autorespond", "List-Id"] {
        if header(name).is_some() {
            return Some(format!("automatic or list email ({name})"));
        }
    }
    None
}

/// The first value of header `name`, as written (unfolded, trimmed). The
/// first is the receiving side's own: Mailgun adds its headers on top.
fn first_header<'a>(message: &'a mail_parser::Message<'_>, name: &str) -> Option<&'a str> {
    message
        .headers_raw()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// The SPF and DKIM verdicts Mailgun wrote into the message's headers
/// (`X-Mailgun-Spf`, `X-Mailgun-Dkim-Check-Result`), the signing domains
/// of its `DKIM-Signature`s, its envelope sender (`X-Envelope-From`), and
/// whether they authenticate `from`.
fn sender_auth(message: &mail_parser::Message<'_>, from: &str) -> SenderAuth {
    let verdict = |name| {
        first_header(message, name)
            .map(|v| {
                v.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase()
            })
            .filter(|v| !v.is_empty())
    };
    let dkim_domains = message
        .headers_raw()
        .filter(|(n, _)| n.eq_ignore_ascii_case("DKIM-Signature"))
        .filter_map(|(_, v)| {
            v.split(';').find_map(|tag| {
                let (key, value) = tag.split_once('=')?;
                (key.trim() == "d").then(|| value.trim().to_ascii_lowercase())
            })
        })
        .take(MAX_THREAD_IDS)
        .collect();
    let mut auth = SenderAuth {
        spf: verdict("X-Mailgun-Spf"),
        dkim: verdict("X-Mailgun-Dkim-Check-Result"),
        envelope_from: first_header(message, "X-Envelope-From")
            .map(|v| v.trim_matches(['<', '>']).to_lowercase())
            .filter(|v| v.contains('@')),
        dkim_domains,
        authenticated: false,
    };
    auth.authenticated = auth.is_aligned(from);
    auth
}

/// Headers not carried over when Mailgun's parsed fields are rebuilt into
/// a message: the body is rebuilt too, as plain text or HTML.
const BODY_HEADERS: [&str; 3] = ["content-type", "content-transfer-encoding", "mime-version"];

/// Mailgun's parsed fields (routes without `body-mime`) as one small MIME
/// message: the original headers from `message-headers`, the fields for
/// those missing, and the text body.
fn fields_as_mime(form: &Form) -> String {
    let headers: Vec<(String, String)> = form
        .text("message-headers")
        .and_then(|h| serde_json::from_str(&h).ok())
        .unwrap_or_default();
    let mut raw = String::new();
    // Values stay on their line: a hostile value cannot add headers.
    let mut push = |name: &str, value: &str| {
        let clean = |s: &str| s.replace(['\r', '\n'], " ");
        raw.push_str(&format!(
            "{}: {}\r\n",
            clean(name).replace(':', ""),
            clean(value)
        ));
    };
    for (name, value) in &headers {
        if !BODY_HEADERS.contains(&name.to_ascii_lowercase().as_str()) && !name.trim().is_empty() {
            push(name, value);
        }
    }
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    for (header, field) in [
        ("From", "from"),
        ("Subject", "subject"),
        ("Message-Id", "Message-Id"),
    ] {
        if !has(header)
            && let Some(value) = form.text(field)
        {
            push(header, &value);
        }
    }
    if !has("From")
        && form.text("from").is_none()
        && let Some(sender) = form.text("sender")
    {
        push("From", &sender);
    }
    match form
        .text("body-plain")
        .or_else(|| form.text("stripped-text"))
    {
        Some(text) => {
            raw.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
            raw.push_str(&text);
        }
        None => {
            raw.push_str("Content-Type: text/html; charset=utf-8\r\n\r\n");
            raw.push_str(&form.text("body-html").unwrap_or_default());
        }
    }
    raw
}

/// The attachments Mailgun's parsed fields announce (`attachment-count`),
/// as metadata.
fn field_attachments(form: &Form) -> Vec<Attachment> {
    let count = form
        .text("attachment-count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0usize)
        .min(MAX_PARTS);
    (0..count)
        .map(|_| Attachment {
            kind: "file".into(),
            url: None,
            file_id: None,
            name: None,
            mime_type: None,
            size: None,
        })
        .collect()
}

/// The new text of a reply: quoted history and signature removed.
pub fn reply_text(body: &str) -> String {
    // A customer's new text is short; a huge body is mostly history. The
    // cap bounds the work on hostile input.
    let body: String = body.chars().take(MAX_TEXT_SCAN).collect();
    let body = body.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = body.lines().collect();
    let mut keep: Vec<&str> = match quote_header(&lines) {
        Some((at, QuoteStyle::Quoted)) => {
            // "On … wrote:" followed by `>` lines: keep what was written
            // before it and any unquoted answers interleaved after it.
            let mut kept = lines[..at].to_vec();
            let after: Vec<&str> = lines[at..]
                .iter()
                .skip_while(|l| !l.trim_start().starts_with('>'))
                .copied()
                .collect();
            let interleaved = after
                .iter()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('>'))
                && kept.iter().all(|l| l.trim().is_empty() || l.len() < 40);
            if interleaved {
                kept.extend(after.iter().filter(|l| !l.trim_start().starts_with('>')));
            }
            kept
        }
        Some((at, QuoteStyle::Block)) => lines[..at].to_vec(),
        None => lines,
    };
    // Trailing `>` lines and blank lines.
    while keep
        .last()
        .is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with('>'))
    {
        keep.pop();
    }
    strip_signature(&mut keep);
    let text = keep.join("\n");
    let text = text.trim();
    if text.is_empty() {
        // Nothing new (e.g. a bare forward): fall back to the whole body.
        body.trim().to_owned()
    } else {
        text.to_owned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteStyle {
    /// The history follows as `>` lines.
    Quoted,
    /// The history follows unquoted (Outlook, forwarded blocks).
    Block,
}

/// Finds where quoted history starts.
fn quote_header(lines: &[&str]) -> Option<(usize, QuoteStyle)> {
    // quoted_from[i]: every line from i on is quoted or blank (one backward
    // pass, so the scan stays linear).
    let mut quoted_from = vec![true; lines.len() + 1];
    for i in (0..lines.len()).rev() {
        let l = lines[i];
        quoted_from[i] =
            quoted_from[i + 1] && (l.trim().is_empty() || l.trim_start().starts_with('>'));
    }
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        if t.starts_with('>') {
            // History quoted without a header line.
            if quoted_from[i] {
                return Some((i, QuoteStyle::Quoted));
            }
            continue;
        }
        // An attribution wrapped over two lines: the first must look like
        // one's start, the second must not be quoted.
        let wrapped = (starts_attribution(t)
            || t.contains('@')
            || t.starts_with(|c: char| c.is_ascii_digit()))
            && !next.starts_with('>')
            && is_wrote_line(&format!("{t} {next}"));
        if is_wrote_line(t) || wrapped {
            return Some((i, QuoteStyle::Quoted));
        }
        let lower = t.to_ascii_lowercase();
        if lower.contains("original message") && t.starts_with('-')
            || lower.starts_with("begin forwarded message")
            || (t.len() >= 20 && t.chars().all(|c| c == '_'))
        {
            return Some((i, QuoteStyle::Block));
        }
        // Outlook: From: … then Sent:/Date: and To:/Subject: within a few lines.
        if is_field(t, &["from:", "von:", "de:", "da:"]) {
            let window = &lines[i + 1..lines.len().min(i + 6)];
            let sent = window.iter().any(|l| {
                is_field(
                    l.trim(),
                    &[
                        "sent:",
                        "date:",
                        "gesendet:",
                        "envoyé :",
                        "envoyé:",
                        "enviado:",
                        "inviato:",
                    ],
                )
            });
            let to = window.iter().any(|l| {
                is_field(
                    l.trim(),
                    &[
                        "to:", "subject:", "an:", "betreff:", "à :", "objet :", "para:", "asunto:",
                    ],
                )
            });
            if sent && to {
                return Some((i, QuoteStyle::Block));
            }
        }
    }
    None
}

fn is_field(line: &str, names: &[&str]) -> bool {
    let lower = line.to_lowercase();
    let lower = lower.trim_start_matches('*');
    names.iter().any(|n| lower.starts_with(n))
}

fn starts_attribution(line: &str) -> bool {
    let lower = line.to_lowercase();
    [
        "on ", "am ", "le ", "el ", "il ", "op ", "em ", "w dniu ", "den ",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
}

/// "On <date>, <name> wrote:" and its translations, also when a client
/// starts it with the date ("02.04.2012 14:20 … написал:").
fn is_wrote_line(line: &str) -> bool {
    let lower = line.to_lowercase();
    let lower = lower.trim_end();
    let wrote = [
        "wrote:",
        "schrieb:",
        "a écrit :",
        "a écrit:",
        "escribió:",
        "ha scritto:",
        "schreef:",
        "escreveu:",
        "napisał:",
        "skrev:",
        "написал:",
        "написала:",
        "kirjoitti:",
        "yazdı:",
        "wrote :",
    ]
    .iter()
    .any(|w| lower.ends_with(w));
    wrote
        && lower.chars().count() < 300
        && (starts_attribution(lower)
            || lower.contains('@')
            || lower.chars().any(|c| c.is_ascii_digit()))
}

fn strip_signature(lines: &mut Vec<&str>) {
    // RFC 3676 delimiter `-- `; a bare `--` only near the end (it is also
    // an ordinary separator in text).
    let near_end = lines.len().saturating_sub(8);
    if let Some(at) = lines
        .iter()
        .enumerate()
        .rposition(|(i, l)| *l == "-- " || (*l == "--" && i >= near_end))
    {
        lines.truncate(at);
    }
    // Mobile signatures on the last lines.
    while let Some(last) = lines.last() {
        let lower = last.trim().to_lowercase();
        let mobile = (lower.starts_with("sent from my ") && lower.len() < 60)
            || lower.starts_with("sent from mail for windows")
            || lower.starts_with("get outlook for ")
            || lower.starts_with("sent with sparrow")
            || lower.starts_with("von meinem iphone gesendet")
            || lower.starts_with("envoyé de mon ");
        if mobile || lower.is_empty() {
            lines.pop();
        } else {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/email")
    }

    #[test]
    fn mailgun_signature_vectors() {
        let vectors: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root().join("mailgun-signature-vectors.json")).expect("read"),
        )
        .expect("json");
        for v in vectors["vectors"].as_array().expect("array") {
            let ts = v["timestamp"].as_str().expect("ts");
            let now = chrono::DateTime::from_timestamp(ts.parse::<i64>().expect("int") + 60, 0)
                .expect("time");
            let result = verify_mailgun(
                v["signing_key"].as_str().expect("key"),
                Some(ts),
                v["token"].as_str(),
                v["signature"].as_str(),
                now,
            );
            let valid = v["expect"].as_str().expect("expect").starts_with("valid");
            assert_eq!(result.is_ok(), valid, "{}: {result:?}", v["id"]);
        }
    }

    #[test]
    fn stale_timestamps_are_refused_even_when_signed() {
        let key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
        let (ts, token) = (
            "1403645220",
            "5egbgr1vjgqxtrnp65xfznchgdccwh5d6i09vijqi3whgowmn6",
        );
        let sig = "9cfc5c41582e51246e73c88d34db3af0a3a2692a76fbab81492842f000256d33";
        let late = chrono::DateTime::from_timestamp(1_403_645_220 + 301, 0).expect("t");
        assert_eq!(
            verify_mailgun(key, Some(ts), Some(token), Some(sig), late),
            Err(VerifyError::Stale(300))
        );
        assert!(verify_mailgun(key, None, Some(token), Some(sig), late).is_err());
        assert!(verify_mailgun(key, Some("x"), Some(token), Some(sig), late).is_err());
    }

    #[test]
    fn talon_replies() {
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root().join("talon/EXPECTED_REPLIES.json")).expect("read"),
        )
        .expect("json");
        let mut failures = Vec::new();
        for case in expected.as_array().expect("array") {
            let file = case["file"].as_str().expect("file");
            let raw = std::fs::read(
                root()
                    .join("talon/tests/fixtures/standard_replies")
                    .join(file),
            )
            .expect("eml");
            let message = parse_mime(&raw).expect("parses");
            // Talon keeps signatures; Frontdesk strips them, so compare the
            // reply without its signature.
            let want = case["expected_reply_text"].as_str().expect("text");
            let mut want_lines: Vec<&str> = want.lines().collect();
            strip_signature(&mut want_lines);
            let want = want_lines.join("\n").trim().to_owned();
            if message.text != want {
                failures.push(format!("{file}: got {:?}, want {want:?}", message.text));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn github_reply_parser_corpus() {
        let dir = root().join("github-email_reply_parser/emails");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("read");
        assert_eq!(
            reply_text(&read("email_1_1.txt")).lines().next(),
            Some("Hi folks")
        );
        let interleaved = reply_text(&read("email_1_2.txt"));
        assert!(interleaved.starts_with("Hi,"), "{interleaved}");
        assert!(
            interleaved.contains("You can list the keys for the bucket"),
            "{interleaved}"
        );
        assert!(
            !interleaved.contains("> What is the best way"),
            "{interleaved}"
        );
        let iphone = reply_text(&read("email_iPhone.txt"));
        assert!(
            !iphone.to_lowercase().contains("sent from my iphone"),
            "{iphone}"
        );
        let sig = reply_text(&read("correct_sig.txt"));
        assert!(!sig.contains("rick"), "{sig}");
        for entry in std::fs::read_dir(&dir).expect("dir") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            assert!(!reply_text(&text).is_empty());
        }
    }

    #[test]
    fn mime_corpora_parse_without_panicking() {
        let mut parsed = 0;
        let mut stack = vec![
            root().join("ruby-mail-gem"),
            root().join("enmime"),
            root().join("anymail"),
        ];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_none_or(|e| e != "json")
                    && !path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().contains("LICENSE"))
                {
                    let raw = std::fs::read(&path).expect("read");
                    if parse_mime(&raw).is_ok() {
                        parsed += 1;
                    }
                }
            }
        }
        assert!(parsed > 100, "only {parsed} messages parsed");
    }

    #[test]
    fn threading_headers_and_charsets() {
        let dir = root().join("ruby-mail-gem/emails/rfc2822");
        let m5 = parse_mime(&std::fs::read(dir.join("example05.eml")).expect("05")).expect("parse");
        let m6 = parse_mime(&std::fs::read(dir.join("example06.eml")).expect("06")).expect("parse");
        let t6 = m6.email.expect("thread");
        assert!(
            t6.in_reply_to.contains(&m5.external_id),
            "{t6:?} vs {}",
            m5.external_id
        );
    }

    /// What the adapter makes of a form post with these fields.
    fn parse_form<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> InboundEvent {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = WebhookRequest {
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            query: String::new(),
            body: body.into(),
            received_at: chrono::Utc::now(),
        };
        let mut events = Email::new(None).parse(&request).expect("parsed");
        assert_eq!(events.len(), 1);
        events.remove(0).event
    }

    fn message(event: InboundEvent) -> InboundMessage {
        match event {
            InboundEvent::Message(m) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn mailgun_parsed_fields() {
        let fields: std::collections::BTreeMap<String, String> = serde_json::from_slice(
            &std::fs::read(root().join("anymail/mailgun_inbound_basics.form-fields.json"))
                .expect("read"),
        )
        .expect("json");
        let m = message(parse_form(
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
        assert_eq!(m.sender.external_id, "from+test@example.org");
        assert_eq!(m.text, "Test body plain");
        assert_eq!(m.external_id, "CAEPk3R+4Zr@mail.example.org");
        let thread = m.email.expect("thread");
        assert_eq!(thread.subject, "Test subject");
        // Mailgun's verdicts, a DKIM signature of example.org and an
        // envelope sender there: From is authenticated.
        assert_eq!(thread.auth.spf.as_deref(), Some("pass"));
        assert_eq!(thread.auth.dkim.as_deref(), Some("pass"));
        assert_eq!(thread.auth.dkim_domains, ["example.org"]);
        assert_eq!(
            thread.auth.envelope_from.as_deref(),
            Some("envelope-from@example.org")
        );
        assert!(thread.auth.authenticated);
    }

    /// A raw message from `from`, with Mailgun's verdicts as headers.
    fn mime(from: &str, extra: &str) -> String {
        format!("{extra}From: {from}\r\nMessage-ID: <t@x>\r\nSubject: Hi\r\n\r\nWhere is my order?")
    }

    #[test]
    fn senders_are_authenticated_only_by_aligned_passing_verdicts() {
        let auth = |from: &str, extra: &str, envelope: Option<&str>| {
            let raw = mime(from, extra);
            let mut fields = vec![("body-mime", raw.as_str())];
            fields.extend(envelope.map(|e| ("sender", e)));
            message(parse_form(fields)).email.expect("thread").auth
        };
        let spf_pass = "X-Mailgun-Spf: Pass\r\n";
        let dkim_pass = "X-Mailgun-Dkim-Check-Result: Pass\r\n";
        // SPF for an envelope sender on the same domain, or a subdomain.
        assert!(
            auth(
                "ann@shop.example",
                spf_pass,
                Some("bounce@mail.shop.example")
            )
            .authenticated
        );
        // SPF for someone else's envelope says nothing of From.
        assert!(!auth("ann@shop.example", spf_pass, Some("x@evil.example")).authenticated);
        // No verdicts at all: not authenticated.
        let none = auth("ann@shop.example", "", Some("ann@shop.example"));
        assert!(!none.authenticated && none.spf.is_none() && none.dkim.is_none());
        // Failing verdicts.
        let failed = auth(
            "ann@shop.example",
            "X-Mailgun-Spf: Fail\r\nX-Mailgun-Dkim-Check-Result: Fail\r\nDKIM-Signature: v=1; d=shop.example; s=a\r\n",
            Some("ann@shop.example"),
        );
        assert_eq!(
            (failed.spf.as_deref(), failed.dkim.as_deref()),
            (Some("fail"), Some("fail"))
        );
        assert!(!failed.authenticated);
        // DKIM passes only for aligned signing domains, all of them.
        let signed = |domains: &[&str]| {
            let sigs: String = domains
                .iter()
                .map(|d| format!("DKIM-Signature: v=1; a=rsa-sha256; d={d}; s=k\r\n"))
                .collect();
            auth("ann@shop.example", &format!("{dkim_pass}{sigs}"), None).authenticated
        };
        assert!(signed(&["shop.example"]));
        assert!(signed(&["Shop.Example", "eu.shop.example"]));
        assert!(!signed(&["mailer.example"]));
        assert!(!signed(&["shop.example", "mailer.example"]));
        assert!(!signed(&[]), "a pass without a signature proves nothing");
        // The receiving side's headers come first; a sender's own copy
        // further down is not read.
        let forged = auth(
            "ann@shop.example",
            "X-Mailgun-Spf: Fail\r\nX-Mailgun-Spf: Pass\r\n",
            Some("ann@shop.example"),
        );
        assert!(!forged.authenticated);
    }

    #[test]
    fn reply_to_is_kept_for_agents_on_both_forms() {
        let raw = mime("ann@shop.example", "Reply-To: <Pay@Evil.Example>\r\n");
        let m = message(parse_form([("body-mime", raw.as_str())]));
        assert_eq!(
            m.email.expect("thread").reply_to.as_deref(),
            Some("pay@evil.example")
        );
        let headers = r#"[["From", "ann@shop.example"], ["Reply-To", "pay@evil.example"], ["Subject", "Hi"]]"#;
        let m = message(parse_form([
            ("message-headers", headers),
            ("body-plain", "Hello"),
        ]));
        assert_eq!(
            m.email.expect("thread").reply_to.as_deref(),
            Some("pay@evil.example")
        );
    }

    #[test]
    fn automatic_mail_is_skipped_on_both_forms() {
        let raw = mime("robot@shop.example", "Auto-Submitted: auto-replied\r\n");
        assert!(matches!(
            parse_form([("body-mime", raw.as_str())]),
            InboundEvent::Skipped { .. }
        ));
        for header in [
            r#"["Auto-Submitted", "auto-generated"]"#,
            r#"["Precedence", "bulk"]"#,
            r#"["List-Id", "<news.shop.example>"]"#,
            r#"["X-Autoreply", "yes"]"#,
        ] {
            let headers = format!(r#"[["From", "robot@shop.example"], {header}]"#);
            let event = parse_form([
                ("message-headers", headers.as_str()),
                ("body-plain", "Away"),
            ]);
            assert!(
                matches!(event, InboundEvent::Skipped { .. }),
                "{header}: {event:?}"
            );
        }
        // A header value cannot smuggle in another header.
        let headers =
            r#"[["From", "ann@shop.example"], ["Subject", "Hi\r\nAuto-Submitted: auto-replied"]]"#;
        let event = parse_form([("message-headers", headers), ("body-plain", "Hello")]);
        assert!(matches!(event, InboundEvent::Message(_)), "{event:?}");
    }

    #[test]
    fn huge_quoted_bodies_stay_linear() {
        let body = format!("Thanks!\n{}", "> quoted line\n".repeat(200_000));
        assert_eq!(reply_text(&body), "Thanks!");
        let text = format!(
            "Line one\n--\nnot a signature\n{}",
            "more text\n".repeat(20)
        );
        assert!(
            reply_text(&text).contains("not a signature"),
            "a bare -- far from the end is text"
        );
    }

    #[test]
    fn html_only_and_missing_from() {
        let html = b"From: Ann <ann@example.com>\r\nMessage-ID: <h1@example.com>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <b>there</b></p><blockquote>old</blockquote>";
        let m = parse_mime(html).expect("html");
        assert!(m.text.contains("Hello"), "{}", m.text);
        assert!(parse_mime(b"Subject: x\r\n\r\nno sender").is_err());
    }
}
