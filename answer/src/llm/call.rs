//! One call to the server: the attempts, each an HTTP request whose answer
//! is read as it arrives under the deadline of its phase, and the outcome
//! handed to the breaker.

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use super::breaker::{
    CircuitBreaker, Failure, Outcome, Retry, counts_as_failure, later, retry_after_timeout,
};
use super::error::LlmError;
use super::options::ClientOptions;
use super::report::{DETAIL_CHARS, Reporter, SNIPPET_CHARS};
use super::sink::{Push, Sink};
use super::sse::{BodyKind, SseEvent, SseParser, body_kind};
use super::wire::{self, ChatRequest, Chunk, TokenUsage, error_message};

/// Largest non-streamed JSON answer.
const MAX_JSON_BODY: usize = 8 << 20;

/// What a client's clones share.
pub(super) struct Inner {
    pub(super) http: reqwest::Client,
    pub(super) endpoint: String,
    /// `host:port`, for the log (no credentials, no path).
    pub(super) server: String,
    pub(super) auth: Option<HeaderValue>,
    pub(super) options: ClientOptions,
    pub(super) breaker: CircuitBreaker,
    /// Puts failures into words, without the API key.
    pub(super) report: Reporter,
}

/// How an answer ended, as far as the server said.
#[derive(Debug, Clone, Default)]
pub(super) struct Ending {
    /// The first choice's `finish_reason`, if the server sent one.
    pub(super) finish_reason: Option<String>,
    /// The call's token counts, if the server reported them.
    pub(super) usage: Option<TokenUsage>,
}

/// What the event loop does next.
enum Flow {
    /// Read on.
    Continue,
    /// The server said it is done.
    Done,
    /// The receiver went away.
    Gone,
}

impl Inner {
    /// One call: breaker, attempts, and the outcome recorded.
    pub(super) async fn call(
        &self,
        request: &ChatRequest,
        sink: &mut Sink,
    ) -> Result<Ending, LlmError> {
        let body = wire::encode(request, sink.streaming())?;
        let permit = self.breaker.admit()?;
        let result = self.attempts(&body, sink).await;
        let outcome = match &result {
            Ok(_) if sink.delivered() > 0 => Outcome::Success,
            Ok(_) => Outcome::Neutral,
            Err(e) if counts_as_failure(e) => Outcome::Failure,
            Err(_) => Outcome::Neutral,
        };
        permit.finish(outcome);
        result
    }

    /// Attempts until one succeeds, or content was sent, or retrying is
    /// pointless or out of time.
    async fn attempts(&self, body: &[u8], sink: &mut Sink) -> Result<Ending, LlmError> {
        let total = later(self.options.total_timeout);
        let mut attempt: u32 = 0;
        loop {
            sink.reset();
            let failure = match self.attempt(body, sink, total).await {
                Ok(end) => return Ok(end),
                Err(failure) => failure,
            };
            if sink.committed() > 0 || attempt >= self.options.retries {
                return Err(failure.error);
            }
            let wait = match failure.retry {
                Retry::No => return Err(failure.error),
                Retry::Backoff => self
                    .options
                    .retry_base
                    .saturating_mul(2u32.saturating_pow(attempt)),
                Retry::After(wait) => wait,
            };
            if later(wait) >= total {
                return Err(failure.error);
            }
            attempt += 1;
            tracing::warn!(
                server = %self.server,
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %failure.error,
                "LLM call failed before any token; retrying"
            );
            tokio::select! {
                biased;
                () = sink.closed() => return Ok(Ending::default()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One HTTP request and its answer.
    async fn attempt(
        &self,
        body: &[u8],
        sink: &mut Sink,
        total: Instant,
    ) -> Result<Ending, Failure> {
        let streaming = sink.streaming();
        let first = if streaming {
            earliest(
                (later(self.options.first_token_timeout), "first token"),
                total,
            )
        } else {
            (total, "total")
        };
        let mut request = self
            .http
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/json")
            .header(
                ACCEPT,
                if streaming {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(body.to_vec());
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let sent = tokio::select! {
            biased;
            () = sink.closed() => return Ok(Ending::default()),
            sent = timeout_at(first.0, request.send()) => sent,
        };
        let mut response = match sent {
            Err(_) => {
                return Err(Failure::new(
                    LlmError::Timeout(first.1),
                    retry_after_timeout(first.1),
                ));
            }
            Ok(Err(e)) => return Err(self.report.transport(e)),
            Ok(Ok(response)) => response,
        };
        if !response.status().is_success() {
            return Err(self.report.status_failure(response, first.0).await);
        }
        let mut parser = match body_kind(response.headers()) {
            BodyKind::Html => {
                return Err(Failure::fatal(LlmError::Malformed(
                    "got an HTML page instead of a chat completion (is base_url right?)".into(),
                )));
            }
            BodyKind::Sse => Some(SseParser::default()),
            BodyKind::Json => None,
        };
        let mut json_body = Vec::new();
        let mut end = Ending::default();
        loop {
            let (deadline, phase) = self.read_deadline(streaming, sink.delivered(), first, total);
            let read = tokio::select! {
                biased;
                () = sink.closed() => None,
                read = timeout_at(deadline, response.chunk()) => Some(read),
            };
            let bytes = match read {
                None => return Ok(end),
                // A server that sent its finish_reason and then lingers or
                // resets the connection has still answered.
                Some(Err(_) | Ok(Err(_)))
                    if end.finish_reason.is_some() && sink.delivered() > 0 =>
                {
                    return Ok(end);
                }
                Some(Err(_)) => {
                    return Err(cut(
                        sink,
                        Failure::new(LlmError::Timeout(phase), retry_after_timeout(phase)),
                    ));
                }
                Some(Ok(Err(e))) => return Err(cut(sink, self.report.transport(e))),
                Some(Ok(Ok(None))) => break,
                Some(Ok(Ok(Some(bytes)))) => bytes,
            };
            let Some(parser) = parser.as_mut() else {
                if json_body.len() + bytes.len() > MAX_JSON_BODY {
                    return Err(Failure::fatal(LlmError::Malformed(
                        "the answer is larger than 8 MiB".into(),
                    )));
                }
                json_body.extend_from_slice(&bytes);
                continue;
            };
            let events = parser.feed(&bytes).map_err(|m| {
                cut(
                    sink,
                    Failure::fatal(LlmError::Malformed(self.report.snippet(&m))),
                )
            })?;
            for event in events {
                match self.on_event(&event, sink, &mut end, total).await? {
                    Flow::Continue => {}
                    Flow::Done => return finished(sink, end),
                    Flow::Gone => return Ok(end),
                }
            }
        }
        let Some(mut parser) = parser else {
            return self.on_json_body(&json_body, sink, total).await;
        };
        let last = parser.finish().map_err(|m| {
            cut(
                sink,
                Failure::fatal(LlmError::Malformed(self.report.snippet(&m))),
            )
        })?;
        if let Some(event) = last {
            // An event the server did not terminate counts only if whole.
            let data = event.data.trim();
            if data == "[DONE]" {
                return finished(sink, end);
            }
            if serde_json::from_str::<Value>(data).is_ok() {
                match self.on_event(&event, sink, &mut end, total).await? {
                    Flow::Continue => {}
                    Flow::Done => return finished(sink, end),
                    Flow::Gone => return Ok(end),
                }
            }
        }
        if end.finish_reason.is_some() {
            return finished(sink, end);
        }
        let tokens = sink.delivered();
        if tokens > 0 {
            tracing::warn!(server = %self.server, tokens, "LLM stream ended without finish_reason or [DONE]");
            Err(Failure::new(LlmError::CutOff { tokens }, Retry::Backoff))
        } else {
            Err(Failure::new(LlmError::Empty, Retry::Backoff))
        }
    }

    /// The deadline of the next read, and the phase it belongs to.
    fn read_deadline(
        &self,
        streaming: bool,
        delivered: usize,
        first: (Instant, &'static str),
        total: Instant,
    ) -> (Instant, &'static str) {
        if !streaming {
            (total, "total")
        } else if delivered == 0 {
            first
        } else {
            earliest((later(self.options.idle_timeout), "between tokens"), total)
        }
    }

    /// One server-sent event.
    async fn on_event(
        &self,
        event: &SseEvent,
        sink: &mut Sink,
        end: &mut Ending,
        total: Instant,
    ) -> Result<Flow, Failure> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::Done);
        }
        if event.event.as_deref() == Some("error") {
            let message = serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| error_message(&v))
                .unwrap_or_else(|| data.to_owned());
            return Err(cut(
                sink,
                Failure::new(
                    LlmError::Malformed(format!(
                        "the server reported an error: {}",
                        self.report.sanitize(&message, DETAIL_CHARS)
                    )),
                    Retry::Backoff,
                ),
            ));
        }
        let value: Value = serde_json::from_str(data).map_err(|_| {
            cut(
                sink,
                Failure::fatal(LlmError::Malformed(format!(
                    "an event is not JSON: {}",
                    self.report.sanitize(data, SNIPPET_CHARS)
                ))),
            )
        })?;
        self.on_chunk(&value, sink, end, total).await
    }

    /// A chunk of a stream, or a whole non-streamed completion.
    async fn on_chunk(
        &self,
        value: &Value,
        sink: &mut Sink,
        end: &mut Ending,
        total: Instant,
    ) -> Result<Flow, Failure> {
        let chunk = Chunk::read(value);
        if let Some(error) = chunk.error {
            return Err(cut(sink, self.report.reported_error(error)));
        }
        if let Some(reason) = chunk.finish_reason {
            end.finish_reason = Some(reason.to_owned());
        }
        if chunk.usage.is_some() {
            end.usage = chunk.usage;
        }
        if let Some(text) = chunk.content.filter(|t| !t.is_empty()) {
            match sink.push(text.to_owned(), total).await {
                Push::Sent => {}
                Push::Gone => return Ok(Flow::Gone),
                Push::Late => return Err(cut(sink, Failure::fatal(LlmError::Timeout("total")))),
            }
        }
        Ok(Flow::Continue)
    }

    /// A whole JSON answer (`stream: false`, or a server ignoring `stream: true`).
    async fn on_json_body(
        &self,
        body: &[u8],
        sink: &mut Sink,
        total: Instant,
    ) -> Result<Ending, Failure> {
        let value: Value = serde_json::from_slice(body).map_err(|_| {
            Failure::fatal(LlmError::Malformed(format!(
                "the answer is not valid JSON: {}",
                self.report
                    .sanitize(&String::from_utf8_lossy(body), SNIPPET_CHARS)
            )))
        })?;
        let mut end = Ending::default();
        match self.on_chunk(&value, sink, &mut end, total).await? {
            Flow::Gone => Ok(end),
            Flow::Continue | Flow::Done => finished(sink, end),
        }
    }
}

/// The earlier of a phase's deadline and the whole call's.
fn earliest((deadline, phase): (Instant, &'static str), total: Instant) -> (Instant, &'static str) {
    if deadline < total {
        (deadline, phase)
    } else {
        (total, "total")
    }
}

/// The answer ended properly: content, or [`LlmError::Empty`].
fn finished(sink: &Sink, end: Ending) -> Result<Ending, Failure> {
    if sink.delivered() == 0 {
        Err(Failure::fatal(LlmError::Empty))
    } else {
        Ok(end)
    }
}

/// After content was delivered, any failure is a cut-off answer.
fn cut(sink: &Sink, failure: Failure) -> Failure {
    let tokens = sink.delivered();
    if tokens == 0 {
        return failure;
    }
    tracing::warn!(tokens, cause = %failure.error, "LLM answer cut off");
    Failure::new(LlmError::CutOff { tokens }, failure.retry)
}
