//! Failures put into words: HTTP error statuses, transport errors and error
//! objects inside an answer become [`LlmError`]s of one short line, with
//! the API key scrubbed out and the server named by `host:port` only, each
//! with its retry decision.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use super::breaker::{Failure, Retry, later, status_retry};
use super::error::LlmError;
use super::wire::error_message;

/// How much of an error response is read for its message.
const MAX_ERROR_BODY: usize = 16 << 10;
/// Longest server message kept in an error.
pub(super) const DETAIL_CHARS: usize = 200;
/// Longest quote of unreadable server output kept in an error.
pub(super) const SNIPPET_CHARS: usize = 80;
/// How long an error response's body is awaited.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(2);

/// Words the failures of calls to one server.
pub(super) struct Reporter {
    /// `host:port` (no credentials, no path).
    server: String,
    /// Kept to scrub it from anything the server echoes back.
    api_key: Option<String>,
}

impl Reporter {
    /// A reporter for `server` (`host:port`) called with `api_key`.
    pub(super) fn new(server: String, api_key: Option<String>) -> Self {
        Reporter { server, api_key }
    }

    /// An `{"error": …}` object the server sent with a success status.
    pub(super) fn reported_error(&self, error: &Value) -> Failure {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| error.as_str().map(str::to_owned))
            .unwrap_or_else(|| error.to_string());
        let detail = self.sanitize(&message, DETAIL_CHARS);
        let code = ["code", "status"]
            .iter()
            .find_map(|k| error.get(*k).and_then(Value::as_u64))
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..=599).contains(c));
        match code {
            Some(status) => Failure::new(
                LlmError::Status { status, detail },
                status_retry(status, None),
            ),
            None => Failure::new(
                LlmError::Malformed(format!("the server reported an error: {detail}")),
                Retry::Backoff,
            ),
        }
    }

    /// An HTTP error status, with the message of its body.
    pub(super) async fn status_failure(
        &self,
        mut response: reqwest::Response,
        deadline: Instant,
    ) -> Failure {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let deadline = deadline.min(later(ERROR_BODY_WAIT));
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    let room = MAX_ERROR_BODY - body.len();
                    body.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| error_message(&v))
            .unwrap_or_else(|| strip_tags(&text));
        Failure::new(
            LlmError::Status {
                status,
                detail: self.sanitize(&message, DETAIL_CHARS),
            },
            status_retry(status, retry_after.as_deref()),
        )
    }

    /// A request that failed before an answer, or a broken connection.
    pub(super) fn transport(&self, error: reqwest::Error) -> Failure {
        if error.is_timeout() {
            return Failure::new(LlmError::Timeout("connect"), Retry::Backoff);
        }
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        Failure::new(
            LlmError::Connect(format!("{}: {}", self.server, self.sanitize(&text, 300))),
            Retry::Backoff,
        )
    }

    /// A quote of unreadable server output.
    pub(super) fn snippet(&self, text: &str) -> String {
        self.sanitize(text, DETAIL_CHARS)
    }

    /// One line of at most `limit` characters, without the API key.
    pub(super) fn sanitize(&self, text: &str, limit: usize) -> String {
        let text = match &self.api_key {
            Some(key) => text.replace(key.as_str(), "[redacted]"),
            None => text.to_owned(),
        };
        let mut out = String::new();
        let mut count = 0;
        for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
            if word.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
                count += 1;
            }
            for c in word.chars() {
                if count >= limit {
                    out.push('…');
                    return out;
                }
                out.push(c);
                count += 1;
            }
        }
        if out.is_empty() {
            "no details".to_owned()
        } else {
            out
        }
    }
}

/// The text of an HTML error page (a proxy's 502…); other text unchanged.
pub(super) fn strip_tags(text: &str) -> String {
    if !text.trim_start().starts_with('<') {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}
