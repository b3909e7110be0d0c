//! A streaming client for OpenAI-compatible chat servers (OpenAI, Ollama,
//! vLLM, llama.cpp): `POST {base_url}/chat/completions`.
//!
//! [`LlmClient::stream`] sends the answer's content deltas into a bounded
//! channel as they arrive; [`LlmClient::complete`] returns the whole answer.
//! Both share one policy:
//!
//! - **Timeouts** per phase: connecting, waiting for the first content token,
//!   the gap between chunks once tokens flow, and the whole call.
//! - **Retries** with doubling backoff, only while nothing has reached the
//!   customer: after the first token a failure is returned as
//!   [`LlmError::CutOff`], never retried.
//! - **A circuit breaker**: after `breaker_failures` consecutive failed calls,
//!   calls fail at once with [`LlmError::CircuitOpen`] for
//!   `breaker_cooldown`, then one trial call decides. Rejections of our own
//!   request (4xx other than 401, 403, 408 and 429) do not count.
//!
//! The server's output is untrusted: the event-stream parser works on bytes
//! (chunks may split lines and UTF-8 characters anywhere), bounds its
//! buffers, and turns anything unexpected into [`LlmError::Malformed`]. The
//! API key is sent as a sensitive header and scrubbed from every error
//! message.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// Longest line the event-stream parser buffers.
const MAX_LINE: usize = 1 << 20;
/// Longest `data` of one event.
const MAX_EVENT: usize = 1 << 20;
/// Largest non-streamed JSON answer.
const MAX_JSON_BODY: usize = 8 << 20;
/// How much of an error response is read for its message.
const MAX_ERROR_BODY: usize = 16 << 10;
/// Longest server message kept in an error.
const DETAIL_CHARS: usize = 200;
/// Longest quote of unreadable server output kept in an error.
const SNIPPET_CHARS: usize = 80;
/// Longest `Retry-After` honoured; beyond it the call gives up at once.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// How long an error response's body is awaited.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(2);

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The customer (or the context given on their behalf).
    User,
    /// The model's earlier answers.
    Assistant,
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// A chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Model name as the server knows it.
    pub model: String,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature; the server's default when `None`.
    pub temperature: Option<f32>,
    /// Longest answer in tokens; the server's default when `None`.
    pub max_tokens: Option<u32>,
}

/// Where the server is and how patient to be with it.
#[derive(Clone)]
pub struct ClientOptions {
    /// Base URL ending in the API version, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`; never logged.
    pub api_key: Option<String>,
    /// Longest TCP (and TLS) connect.
    pub connect_timeout: Duration,
    /// Longest wait from sending a request to the first content token.
    pub first_token_timeout: Duration,
    /// Longest gap between two chunks once tokens flow.
    pub idle_timeout: Duration,
    /// Longest whole call, retries included.
    pub total_timeout: Duration,
    /// Extra attempts of a call that fails before its first token.
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one.
    pub retry_base: Duration,
    /// Consecutive failed calls that open the circuit (0: never).
    pub breaker_failures: u32,
    /// How long the open circuit fails calls before letting a trial through.
    pub breaker_cooldown: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            base_url: "http://127.0.0.1:11434/v1".to_owned(),
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            first_token_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(120),
            retries: 2,
            retry_base: Duration::from_millis(250),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("connect_timeout", &self.connect_timeout)
            .field("first_token_timeout", &self.first_token_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("retries", &self.retries)
            .field("retry_base", &self.retry_base)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .finish()
    }
}

/// How a streamed answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    /// The server's `finish_reason` (`stop`, `length`…), if it sent one;
    /// `None` also when the receiver went away first.
    pub finish_reason: Option<String>,
    /// Content deltas sent into the channel.
    pub tokens: usize,
}

/// Why a call to the language model failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// Recent calls failed; this one was refused without contacting the server.
    #[error("the language model is paused after repeated failures (circuit breaker open)")]
    CircuitOpen,
    /// The server answered with an HTTP error status.
    #[error("the language model server answered HTTP {status}: {detail}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The server's message, shortened and scrubbed of the API key.
        detail: String,
    },
    /// No answer in time; the phase is `connect`, `first token`,
    /// `between tokens` or `total`.
    #[error("the language model server did not answer in time ({0})")]
    Timeout(&'static str),
    /// The server could not be reached, or the connection broke before any token.
    #[error("cannot reach the language model server: {0}")]
    Connect(String),
    /// The answer was not a readable chat completion, or the server reported
    /// an error inside it.
    #[error("unusable answer from the language model server: {0}")]
    Malformed(String),
    /// The answer ended without any content.
    #[error("the language model returned an empty answer")]
    Empty,
    /// The answer broke off after `tokens` deltas had been sent.
    #[error("the language model's answer was cut off after {tokens} tokens")]
    CutOff {
        /// Content deltas already sent.
        tokens: usize,
    },
    /// The client's options or the request cannot be used.
    #[error("the language model client is misconfigured: {0}")]
    Config(String),
}

/// A client for one OpenAI-compatible server; cheap to clone (clones share
/// the connection pool and the circuit breaker).
#[derive(Clone)]
pub struct LlmClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("server", &self.inner.server)
            .field("breaker_open", &self.breaker_open())
            .finish_non_exhaustive()
    }
}

impl LlmClient {
    /// A client for `options.base_url`; checks the options, connects lazily.
    pub fn new(options: ClientOptions) -> Result<Self, LlmError> {
        let url = reqwest::Url::parse(options.base_url.trim())
            .map_err(|e| LlmError::Config(format!("base_url is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LlmError::Config(
                "base_url must start with http:// or https://".into(),
            ));
        }
        let server = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(LlmError::Config("base_url has no host".into())),
        };
        for (name, value) in [
            ("connect_timeout", options.connect_timeout),
            ("first_token_timeout", options.first_token_timeout),
            ("idle_timeout", options.idle_timeout),
            ("total_timeout", options.total_timeout),
        ] {
            if value.is_zero() {
                return Err(LlmError::Config(format!("{name} must be more than zero")));
            }
        }
        let api_key = options.api_key.clone().filter(|k| !k.is_empty());
        let auth = match &api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    LlmError::Config(
                        "the API key contains characters that cannot be sent in an HTTP header"
                            .into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("frontdesk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        let endpoint = format!(
            "{}/chat/completions",
            options.base_url.trim().trim_end_matches('/')
        );
        Ok(LlmClient {
            inner: Arc::new(Inner {
                http,
                endpoint,
                server,
                auth,
                api_key,
                options,
                breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            }),
        })
    }

    /// Streams the answer's content deltas into `tokens` as they arrive.
    /// Returns how it ended; when the receiver is dropped, stops reading and
    /// returns `Ok` with what was sent.
    pub async fn stream(
        &self,
        request: &ChatRequest,
        tokens: mpsc::Sender<String>,
    ) -> Result<StreamEnd, LlmError> {
        let mut sink = Sink::Channel {
            tx: tokens,
            sent: 0,
        };
        let finish_reason = self.inner.call(request, &mut sink).await?;
        Ok(StreamEnd {
            finish_reason,
            tokens: sink.delivered(),
        })
    }

    /// Asks for the whole answer at once (`stream: false`) and returns its
    /// content; same total timeout, retries and breaker as [`Self::stream`].
    pub async fn complete(&self, request: &ChatRequest) -> Result<String, LlmError> {
        let mut sink = Sink::Buffer {
            text: String::new(),
            parts: 0,
        };
        self.inner.call(request, &mut sink).await?;
        match sink {
            Sink::Buffer { text, .. } => Ok(text),
            Sink::Channel { .. } => Err(LlmError::Empty),
        }
    }

    /// Whether calls currently fail fast with [`LlmError::CircuitOpen`].
    pub fn breaker_open(&self) -> bool {
        match *self.inner.breaker() {
            Breaker::Closed { .. } => false,
            Breaker::Open { until } => Instant::now() < until,
            Breaker::HalfOpen { trial } => trial,
        }
    }
}

struct Inner {
    http: reqwest::Client,
    endpoint: String,
    /// `host:port`, for error messages (no credentials, no path).
    server: String,
    auth: Option<HeaderValue>,
    /// Kept to scrub it from anything the server echoes back.
    api_key: Option<String>,
    options: ClientOptions,
    breaker: Mutex<Breaker>,
}

/// Circuit breaker state.
#[derive(Debug, Clone, Copy)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Cooldown over; `trial` while the one trial call is in flight.
    HalfOpen {
        trial: bool,
    },
}

/// What a finished call means for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Says nothing about the server's health (our request was refused, or
    /// the receiver went away before an answer).
    Neutral,
}

/// Admission through the breaker; an unfinished trial permit (the call's
/// future was dropped) frees the half-open slot.
struct Permit<'a> {
    inner: &'a Inner,
    trial: bool,
    done: bool,
}

impl Permit<'_> {
    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.inner.record(self.trial, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.inner.record(self.trial, Outcome::Neutral);
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    No,
    Backoff,
    After(Duration),
}

#[derive(Debug)]
struct Failure {
    error: LlmError,
    retry: Retry,
}

impl Failure {
    fn new(error: LlmError, retry: Retry) -> Self {
        Failure { error, retry }
    }

    fn fatal(error: LlmError) -> Self {
        Failure::new(error, Retry::No)
    }
}

/// Where content goes: the caller's channel, or a buffer for `complete`.
enum Sink {
    Channel {
        tx: mpsc::Sender<String>,
        sent: usize,
    },
    Buffer {
        text: String,
        parts: usize,
    },
}

enum Push {
    Sent,
    Gone,
    Late,
}

impl Sink {
    fn streaming(&self) -> bool {
        matches!(self, Sink::Channel { .. })
    }

    /// Content deltas taken in by this attempt (or call, for the channel).
    fn delivered(&self) -> usize {
        match self {
            Sink::Channel { sent, .. } => *sent,
            Sink::Buffer { parts, .. } => *parts,
        }
    }

    /// Deltas someone may already have seen; retries stop once there are any.
    fn committed(&self) -> usize {
        match self {
            Sink::Channel { sent, .. } => *sent,
            Sink::Buffer { .. } => 0,
        }
    }

    fn reset(&mut self) {
        if let Sink::Buffer { text, parts } = self {
            text.clear();
            *parts = 0;
        }
    }

    /// Resolves when the receiver is gone (never, for the buffer).
    async fn closed(&self) {
        match self {
            Sink::Channel { tx, .. } => tx.closed().await,
            Sink::Buffer { .. } => std::future::pending().await,
        }
    }

    async fn push(&mut self, delta: String, deadline: Instant) -> Push {
        match self {
            Sink::Channel { tx, sent } => match timeout_at(deadline, tx.send(delta)).await {
                Ok(Ok(())) => {
                    *sent += 1;
                    Push::Sent
                }
                Ok(Err(_)) => Push::Gone,
                Err(_) => Push::Late,
            },
            Sink::Buffer { text, parts } => {
                text.push_str(&delta);
                *parts += 1;
                Push::Sent
            }
        }
    }
}

/// What the event loop does next.
enum Flow {
    Continue,
    Done,
    Gone,
}

/// How a successful response's body is framed.
enum BodyKind {
    Sse,
    Json,
    Html,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

impl Inner {
    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self) -> Result<Permit<'_>, LlmError> {
        let permit = |trial| Permit {
            inner: self,
            trial,
            done: false,
        };
        if self.options.breaker_failures == 0 {
            return Ok(permit(false));
        }
        let mut state = self.breaker();
        match *state {
            Breaker::Closed { .. } => Ok(permit(false)),
            Breaker::Open { until } if Instant::now() < until => Err(LlmError::CircuitOpen),
            Breaker::Open { .. } | Breaker::HalfOpen { trial: false } => {
                *state = Breaker::HalfOpen { trial: true };
                tracing::info!(server = %self.server, "LLM circuit breaker half-open: letting one trial call through");
                Ok(permit(true))
            }
            Breaker::HalfOpen { trial: true } => Err(LlmError::CircuitOpen),
        }
    }

    fn record(&self, trial: bool, outcome: Outcome) {
        if self.options.breaker_failures == 0 {
            return;
        }
        let mut state = self.breaker();
        match outcome {
            Outcome::Success => {
                if !matches!(*state, Breaker::Closed { .. }) {
                    tracing::info!(server = %self.server, "LLM circuit breaker closed: the server answers again");
                }
                *state = Breaker::Closed { failures: 0 };
            }
            Outcome::Failure => match *state {
                Breaker::Closed { failures } => {
                    let failures = failures.saturating_add(1);
                    if failures >= self.options.breaker_failures {
                        *state = Breaker::Open {
                            until: later(self.options.breaker_cooldown),
                        };
                        tracing::warn!(
                            server = %self.server,
                            failures,
                            cooldown_secs = self.options.breaker_cooldown.as_secs_f64(),
                            "LLM circuit breaker open: calls fail fast until the cooldown ends"
                        );
                    } else {
                        *state = Breaker::Closed { failures };
                    }
                }
                Breaker::HalfOpen { .. } => {
                    *state = Breaker::Open {
                        until: later(self.options.breaker_cooldown),
                    };
                    tracing::warn!(
                        server = %self.server,
                        cooldown_secs = self.options.breaker_cooldown.as_secs_f64(),
                        "LLM circuit breaker open again: the trial call failed"
                    );
                }
                Breaker::Open { .. } => {}
            },
            Outcome::Neutral => {
                if trial && matches!(*state, Breaker::HalfOpen { .. }) {
                    *state = Breaker::HalfOpen { trial: false };
                }
            }
        }
    }

    /// One call: breaker, attempts, and the outcome recorded.
    async fn call(
        &self,
        request: &ChatRequest,
        sink: &mut Sink,
    ) -> Result<Option<String>, LlmError> {
        if request.temperature.is_some_and(|t| !t.is_finite()) {
            return Err(LlmError::Config(
                "temperature must be a finite number".into(),
            ));
        }
        let body = serde_json::to_vec(&WireRequest {
            model: &request.model,
            messages: &request.messages,
            stream: sink.streaming(),
            temperature: request.temperature,
            max_tokens: request.max_tokens,
        })
        .map_err(|e| LlmError::Config(format!("cannot encode the request: {e}")))?;
        let permit = self.admit()?;
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

    async fn attempts(&self, body: &[u8], sink: &mut Sink) -> Result<Option<String>, LlmError> {
        let total = later(self.options.total_timeout);
        let mut attempt: u32 = 0;
        loop {
            sink.reset();
            let failure = match self.attempt(body, sink, total).await {
                Ok(finish) => return Ok(finish),
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
                () = sink.closed() => return Ok(None),
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
    ) -> Result<Option<String>, Failure> {
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
            () = sink.closed() => return Ok(None),
            sent = timeout_at(first.0, request.send()) => sent,
        };
        let mut response = match sent {
            Err(_) => {
                return Err(Failure::new(
                    LlmError::Timeout(first.1),
                    retry_after_timeout(first.1),
                ));
            }
            Ok(Err(e)) => return Err(self.transport(e)),
            Ok(Ok(response)) => response,
        };
        if !response.status().is_success() {
            return Err(self.status_failure(response, first.0).await);
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
        let mut finish: Option<String> = None;
        loop {
            let (deadline, phase) = self.read_deadline(streaming, sink.delivered(), first, total);
            let read = tokio::select! {
                biased;
                () = sink.closed() => None,
                read = timeout_at(deadline, response.chunk()) => Some(read),
            };
            let bytes = match read {
                None => return Ok(finish),
                // A server that sent its finish_reason and then lingers or
                // resets the connection has still answered.
                Some(Err(_) | Ok(Err(_))) if finish.is_some() && sink.delivered() > 0 => {
                    return Ok(finish);
                }
                Some(Err(_)) => {
                    return Err(cut(
                        sink,
                        Failure::new(LlmError::Timeout(phase), retry_after_timeout(phase)),
                    ));
                }
                Some(Ok(Err(e))) => return Err(cut(sink, self.transport(e))),
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
            let events = parser
                .feed(&bytes)
                .map_err(|m| cut(sink, Failure::fatal(LlmError::Malformed(self.snippet(&m)))))?;
            for event in events {
                match self.on_event(&event, sink, &mut finish, total).await? {
                    Flow::Continue => {}
                    Flow::Done => return finished(sink, finish),
                    Flow::Gone => return Ok(finish),
                }
            }
        }
        let Some(mut parser) = parser else {
            return self.on_json_body(&json_body, sink, total).await;
        };
        let last = parser
            .finish()
            .map_err(|m| cut(sink, Failure::fatal(LlmError::Malformed(self.snippet(&m)))))?;
        if let Some(event) = last {
            // An event the server did not terminate counts only if whole.
            let data = event.data.trim();
            if data == "[DONE]" {
                return finished(sink, finish);
            }
            if serde_json::from_str::<Value>(data).is_ok() {
                match self.on_event(&event, sink, &mut finish, total).await? {
                    Flow::Continue => {}
                    Flow::Done => return finished(sink, finish),
                    Flow::Gone => return Ok(finish),
                }
            }
        }
        if finish.is_some() {
            return finished(sink, finish);
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

    async fn on_event(
        &self,
        event: &SseEvent,
        sink: &mut Sink,
        finish: &mut Option<String>,
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
                        self.sanitize(&message, DETAIL_CHARS)
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
                    self.sanitize(data, SNIPPET_CHARS)
                ))),
            )
        })?;
        self.on_chunk(&value, sink, finish, total).await
    }

    /// A chunk of a stream, or a whole non-streamed completion.
    async fn on_chunk(
        &self,
        value: &Value,
        sink: &mut Sink,
        finish: &mut Option<String>,
        total: Instant,
    ) -> Result<Flow, Failure> {
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            return Err(cut(sink, self.reported_error(error)));
        }
        let choice = value.get("choices").and_then(|c| c.get(0));
        let content = choice.and_then(|c| {
            c.pointer("/delta/content")
                .and_then(Value::as_str)
                .or_else(|| c.pointer("/message/content").and_then(Value::as_str))
                .or_else(|| c.get("text").and_then(Value::as_str))
        });
        if let Some(reason) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            *finish = Some(reason.to_owned());
        }
        if let Some(text) = content.filter(|t| !t.is_empty()) {
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
    ) -> Result<Option<String>, Failure> {
        let value: Value = serde_json::from_slice(body).map_err(|_| {
            Failure::fatal(LlmError::Malformed(format!(
                "the answer is not valid JSON: {}",
                self.sanitize(&String::from_utf8_lossy(body), SNIPPET_CHARS)
            )))
        })?;
        let mut finish = None;
        match self.on_chunk(&value, sink, &mut finish, total).await? {
            Flow::Gone => Ok(finish),
            Flow::Continue | Flow::Done => finished(sink, finish),
        }
    }

    /// An `{"error": …}` object the server sent with a success status.
    fn reported_error(&self, error: &Value) -> Failure {
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

    async fn status_failure(&self, mut response: reqwest::Response, deadline: Instant) -> Failure {
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

    fn transport(&self, error: reqwest::Error) -> Failure {
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

    fn snippet(&self, text: &str) -> String {
        self.sanitize(text, DETAIL_CHARS)
    }

    /// One line of at most `limit` characters, without the API key.
    fn sanitize(&self, text: &str, limit: usize) -> String {
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

/// Whether an error (after retries) counts towards opening the breaker.
fn counts_as_failure(error: &LlmError) -> bool {
    match error {
        LlmError::Status { status, .. } => {
            !(400..500).contains(status) || matches!(status, 401 | 403 | 408 | 429)
        }
        LlmError::Config(_) | LlmError::CircuitOpen => false,
        _ => true,
    }
}

fn status_retry(status: u16, retry_after: Option<&str>) -> Retry {
    if !(status == 408 || status == 429 || (500..=599).contains(&status)) {
        return Retry::No;
    }
    match retry_after.and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(secs) if Duration::from_secs(secs) <= MAX_RETRY_AFTER => {
            Retry::After(Duration::from_secs(secs))
        }
        Some(_) => Retry::No,
        None => Retry::Backoff,
    }
}

/// `now + wait`, capped at a year so huge settings cannot overflow.
fn later(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// A timeout is worth retrying unless it is the whole call's.
fn retry_after_timeout(phase: &'static str) -> Retry {
    if phase == "total" {
        Retry::No
    } else {
        Retry::Backoff
    }
}

fn earliest((deadline, phase): (Instant, &'static str), total: Instant) -> (Instant, &'static str) {
    if deadline < total {
        (deadline, phase)
    } else {
        (total, "total")
    }
}

/// The answer ended properly: content, or [`LlmError::Empty`].
fn finished(sink: &Sink, finish: Option<String>) -> Result<Option<String>, Failure> {
    if sink.delivered() == 0 {
        Err(Failure::fatal(LlmError::Empty))
    } else {
        Ok(finish)
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

fn body_kind(headers: &HeaderMap) -> BodyKind {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        BodyKind::Json
    } else if content_type.starts_with("text/html") {
        BodyKind::Html
    } else {
        BodyKind::Sse
    }
}

/// The message of an error body: OpenAI `{"error":{"message"}}`, Ollama
/// `{"error":"…"}`, vLLM `{"message"}`, FastAPI `{"detail"}`.
fn error_message(value: &Value) -> Option<String> {
    [
        value.pointer("/error/message"),
        value.get("error"),
        value.get("message"),
        value.get("detail"),
    ]
    .into_iter()
    .flatten()
    .find_map(|v| v.as_str().map(str::to_owned))
    .or_else(|| {
        value
            .get("error")
            .or_else(|| value.get("detail"))
            .filter(|v| !v.is_null())
            .map(Value::to_string)
    })
}

/// The text of an HTML error page (a proxy's 502…); other text unchanged.
fn strip_tags(text: &str) -> String {
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

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    event: Option<String>,
    data: String,
}

/// An incremental `text/event-stream` parser over raw bytes.
#[derive(Debug, Default)]
struct SseParser {
    buf: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    started: bool,
}

impl SseParser {
    /// Takes the next bytes; returns the events they complete.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.buf);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = start + pos;
            let terminator = match (buf[end], buf.get(end + 1)) {
                (b'\r', Some(b'\n')) => 2,
                // A CR at the very end may be the first half of a CRLF.
                (b'\r', None) => break,
                _ => 1,
            };
            self.line(&buf[start..end], &mut events)?;
            start = end + terminator;
        }
        self.buf = buf;
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err("a line of the event stream is longer than 1 MiB".into());
        }
        Ok(events)
    }

    /// The end of the body: the last line, and a pending unterminated event.
    fn finish(&mut self) -> Result<Option<SseEvent>, String> {
        let mut buf = std::mem::take(&mut self.buf);
        let terminated = buf.last() == Some(&b'\r');
        if terminated {
            buf.pop();
        }
        let mut events = Vec::new();
        if terminated || !buf.is_empty() {
            self.line(&buf, &mut events)?;
        }
        if self.has_data {
            self.has_data = false;
            events.push(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        Ok(events.pop())
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), String> {
        let line = std::str::from_utf8(line)
            .map_err(|_| "the event stream is not valid UTF-8".to_owned())?;
        let line = if self.started {
            line
        } else {
            self.started = true;
            line.strip_prefix('\u{feff}').unwrap_or(line)
        };
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                events.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            } else {
                self.event = None;
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT {
                    return Err("an event of the stream is larger than 1 MiB".into());
                }
            }
            "event" => self.event = Some(value.to_owned()),
            "id" | "retry" => {}
            // Servers only send the fields above; anything else means the
            // body is not an event stream at all.
            _ => {
                let quote: String = line.chars().take(SNIPPET_CHARS).collect();
                return Err(format!("not an event stream: {quote}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const KEY: &str = "sk-test-secret-4242";

    /// One step of a scripted response.
    #[derive(Debug, Clone)]
    enum Step {
        Write(Vec<u8>),
        Sleep(u64),
    }

    /// A raw HTTP/1.1 server answering the n-th connection with the n-th
    /// reply (the last one repeats) and recording each request.
    struct Server {
        url: String,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl Server {
        async fn start(replies: Vec<Vec<Step>>) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/v1/", listener.local_addr().unwrap());
            let requests = Arc::new(Mutex::new(Vec::new()));
            let seen = requests.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while let Ok((socket, _)) = listener.accept().await {
                    let reply = replies[n.min(replies.len() - 1)].clone();
                    n += 1;
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let _ = Server::serve(socket, reply, seen).await;
                    });
                }
            });
            Server { url, requests }
        }

        async fn serve(
            mut socket: TcpStream,
            reply: Vec<Step>,
            seen: Arc<Mutex<Vec<String>>>,
        ) -> std::io::Result<()> {
            socket.set_nodelay(true)?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = socket.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < head_end + length {
                let n = socket.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).into_owned());
            for step in reply {
                match step {
                    Step::Write(bytes) => {
                        socket.write_all(&bytes).await?;
                        socket.flush().await?;
                    }
                    Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
            }
            socket.shutdown().await
        }

        fn count(&self) -> usize {
            self.requests.lock().unwrap().len()
        }

        fn request(&self, i: usize) -> String {
            self.requests.lock().unwrap()[i].clone()
        }

        fn body(&self, i: usize) -> Value {
            let raw = self.request(i);
            let (_, body) = raw.split_once("\r\n\r\n").unwrap();
            serde_json::from_str(body).unwrap()
        }
    }

    fn head(status: &str, content_type: &str, extra: &str) -> Step {
        Step::Write(
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nconnection: close\r\n{extra}\r\n"
            )
            .into_bytes(),
        )
    }

    fn delta(content: &str) -> String {
        json!({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
            .to_string()
    }

    fn stop() -> String {
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).to_string()
    }

    /// A 200 event stream, one write per event, a little apart.
    fn sse(events: &[String]) -> Vec<Step> {
        let mut steps = vec![head("200 OK", "text/event-stream", "")];
        for e in events {
            steps.push(Step::Write(format!("data: {e}\n\n").into_bytes()));
            steps.push(Step::Sleep(2));
        }
        steps
    }

    fn answer(parts: &[&str]) -> Vec<Step> {
        let mut events: Vec<String> = parts.iter().map(|p| delta(p)).collect();
        events.push(stop());
        events.push("[DONE]".into());
        sse(&events)
    }

    fn error_reply(status: &str, body: &str, extra: &str) -> Vec<Step> {
        vec![
            head(status, "application/json", extra),
            Step::Write(body.as_bytes().to_vec()),
        ]
    }

    fn options(url: &str) -> ClientOptions {
        ClientOptions {
            base_url: url.to_owned(),
            api_key: Some(KEY.to_owned()),
            connect_timeout: Duration::from_millis(500),
            first_token_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(500),
            total_timeout: Duration::from_secs(2),
            retries: 2,
            retry_base: Duration::from_millis(5),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_millis(200),
        }
    }

    fn request() -> ChatRequest {
        ChatRequest {
            model: "test-model".into(),
            messages: vec![ChatMessage::system("Be brief."), ChatMessage::user("Hi?")],
            temperature: Some(0.5),
            max_tokens: Some(64),
        }
    }

    async fn run(client: &LlmClient) -> (Result<StreamEnd, LlmError>, Vec<String>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let result = client.stream(&request(), tx).await;
        let mut tokens = Vec::new();
        while let Ok(t) = rx.try_recv() {
            tokens.push(t);
        }
        (result, tokens)
    }

    #[tokio::test]
    async fn streams_deltas_and_sends_the_request() {
        let server = Server::start(vec![answer(&["Hel", "lo", " wörld"])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(
            result.unwrap(),
            StreamEnd {
                finish_reason: Some("stop".into()),
                tokens: 3
            }
        );
        assert_eq!(tokens, ["Hel", "lo", " wörld"]);
        assert_eq!(server.count(), 1);
        let raw = server.request(0);
        assert!(
            raw.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{raw}"
        );
        assert!(
            raw.to_ascii_lowercase()
                .contains(&format!("authorization: bearer {KEY}").to_ascii_lowercase())
        );
        assert_eq!(
            server.body(0),
            json!({
                "model": "test-model",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
                "stream": true,
                "temperature": 0.5,
                "max_tokens": 64
            })
        );
    }

    #[tokio::test]
    async fn writes_split_anywhere_even_inside_a_character() {
        let mut body = Vec::new();
        for part in ["héllo ", "→ 日本", "😀"] {
            body.extend_from_slice(format!("data: {}\n\n", delta(part)).as_bytes());
        }
        body.extend_from_slice(format!("data: {}\n\ndata: [DONE]\n\n", stop()).as_bytes());
        let mut steps = vec![head("200 OK", "text/event-stream", "")];
        for piece in body.chunks(3) {
            steps.push(Step::Write(piece.to_vec()));
            steps.push(Step::Sleep(1));
        }
        let server = Server::start(vec![steps]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result.unwrap().tokens, 3);
        assert_eq!(tokens.concat(), "héllo → 日本😀");
    }

    #[test]
    fn parser_takes_bytes_one_at_a_time() {
        let text = "data: {\"a\":\"日本\"}\r\n\r\n: comment\revent: x\rdata:b\rdata: c\r\r\n";
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for b in text.as_bytes() {
            events.extend(parser.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(parser.finish().unwrap(), None);
        assert_eq!(
            events,
            [
                SseEvent {
                    event: None,
                    data: "{\"a\":\"日本\"}".into()
                },
                SseEvent {
                    event: Some("x".into()),
                    data: "b\nc".into()
                },
            ]
        );
        // A lone CR at the very end still ends its line and event.
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: z\r\r").unwrap().is_empty());
        assert_eq!(parser.finish().unwrap().unwrap().data, "z");
    }

    #[test]
    fn parser_rejects_invalid_utf8_and_foreign_lines() {
        assert!(SseParser::default().feed(b"data: \xff\xfe\n").is_err());
        assert!(SseParser::default().feed(b"<html>\n").is_err());
        assert!(
            SseParser::default()
                .feed(&vec![b'a'; MAX_LINE + 1])
                .is_err()
        );
        // A partial multi-byte character waits for the rest of its line.
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: \xe6\x97").unwrap().is_empty());
        assert_eq!(parser.feed(b"\xa5\n\n").unwrap()[0].data, "日");
    }

    #[tokio::test]
    async fn crlf_comments_fields_and_multiline_data() {
        let body = format!(
            ": keep-alive\r\nevent: message\r\nid: 1\r\nretry: 1000\r\ndata:{}\r\n\r\n\
             data: {{\"choices\":[{{\"delta\":\r\ndata: {{\"content\":\"b\"}}}}]}}\r\n\r\n\
             data: {}\r\n\r\ndata: [DONE]\r\n\r\n",
            delta("a"),
            stop()
        );
        let server = Server::start(vec![vec![
            head("200 OK", "text/event-stream; charset=utf-8", ""),
            Step::Write(body.into_bytes()),
        ]])
        .await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result.unwrap().tokens, 2);
        assert_eq!(tokens, ["a", "b"]);
    }

    #[tokio::test]
    async fn llama_cpp_text_field_is_accepted() {
        let chunk = json!({"choices": [{"text": "hi", "finish_reason": "stop"}]}).to_string();
        let server = Server::start(vec![sse(&[chunk])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result.unwrap().finish_reason.as_deref(), Some("stop"));
        assert_eq!(tokens, ["hi"]);
    }

    #[tokio::test]
    async fn missing_done_with_finish_reason_is_fine() {
        let server = Server::start(vec![sse(&[delta("ok"), stop()])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result.unwrap().finish_reason.as_deref(), Some("stop"));
        assert_eq!(tokens, ["ok"]);
    }

    #[tokio::test]
    async fn end_without_finish_after_tokens_is_cut_off_and_not_retried() {
        let server = Server::start(vec![sse(&[delta("a"), delta("b")])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result, Err(LlmError::CutOff { tokens: 2 }));
        assert_eq!(tokens, ["a", "b"]);
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn dropped_connection_mid_stream_is_cut_off() {
        let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len()).into_bytes();
        let server = Server::start(vec![vec![
            head(
                "200 OK",
                "text/event-stream",
                "transfer-encoding: chunked\r\n",
            ),
            Step::Write(chunk(&format!("data: {}\n\n", delta("a")))),
            Step::Sleep(5),
            Step::Write(b"40\r\ndata: {\"choi".to_vec()),
        ]])
        .await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result, Err(LlmError::CutOff { tokens: 1 }));
        assert_eq!(tokens, ["a"]);
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn empty_answer_is_empty_and_not_retried() {
        let server = Server::start(vec![sse(&[stop(), "[DONE]".into()])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result, Err(LlmError::Empty));
        assert!(tokens.is_empty());
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn a_stream_closed_before_any_token_is_retried() {
        let server = Server::start(vec![
            vec![head("200 OK", "text/event-stream", "")],
            answer(&["second"]),
        ])
        .await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result.unwrap().tokens, 1);
        assert_eq!(tokens, ["second"]);
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn server_error_then_success_is_retried() {
        let server = Server::start(vec![
            error_reply(
                "500 Internal Server Error",
                r#"{"error":{"message":"boom"}}"#,
                "",
            ),
            answer(&["fine"]),
        ])
        .await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result.unwrap().tokens, 1);
        assert_eq!(tokens, ["fine"]);
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn bad_request_is_not_retried_and_does_not_trip_the_breaker() {
        let server = Server::start(vec![error_reply(
            "400 Bad Request",
            r#"{"error":{"message":"context length exceeded","type":"invalid_request_error"}}"#,
            "",
        )])
        .await;
        let client = LlmClient::new(ClientOptions {
            breaker_failures: 1,
            ..options(&server.url)
        })
        .unwrap();
        let (result, _) = run(&client).await;
        assert_eq!(
            result,
            Err(LlmError::Status {
                status: 400,
                detail: "context length exceeded".into()
            })
        );
        assert_eq!(server.count(), 1);
        assert!(!client.breaker_open());
        let (result, _) = run(&client).await;
        assert!(matches!(result, Err(LlmError::Status { status: 400, .. })));
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn too_many_requests_honours_retry_after() {
        let server = Server::start(vec![
            error_reply(
                "429 Too Many Requests",
                r#"{"error":"slow down"}"#,
                "retry-after: 0\r\n",
            ),
            answer(&["ok"]),
        ])
        .await;
        let client = LlmClient::new(ClientOptions {
            retry_base: Duration::from_secs(5),
            ..options(&server.url)
        })
        .unwrap();
        let started = Instant::now();
        let (result, _) = run(&client).await;
        assert_eq!(result.unwrap().tokens, 1);
        assert_eq!(server.count(), 2);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn retry_after_beyond_ten_seconds_gives_up() {
        let server = Server::start(vec![error_reply(
            "429 Too Many Requests",
            r#"{"error":"slow down"}"#,
            "retry-after: 60\r\n",
        )])
        .await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, _) = run(&client).await;
        assert!(matches!(result, Err(LlmError::Status { status: 429, .. })));
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn invalid_utf8_is_malformed() {
        let server = Server::start(vec![vec![
            head("200 OK", "text/event-stream", ""),
            Step::Write(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n".to_vec(),
            ),
        ]])
        .await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, _) = run(&client).await;
        assert!(matches!(result, Err(LlmError::Malformed(_))), "{result:?}");
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        for (content_type, body) in [
            ("text/plain", "Welcome to nginx!\nIt works.\n"),
            ("text/event-stream", "data: this is not json\n\n"),
            ("text/html", "<html><body>hello</body></html>"),
            ("application/json", "{\"choices\": [ trunc"),
        ] {
            let server = Server::start(vec![vec![
                head("200 OK", content_type, ""),
                Step::Write(body.as_bytes().to_vec()),
            ]])
            .await;
            let client = LlmClient::new(options(&server.url)).unwrap();
            let (result, _) = run(&client).await;
            assert!(
                matches!(result, Err(LlmError::Malformed(_))),
                "{content_type}: {result:?}"
            );
            assert_eq!(server.count(), 1);
        }
    }

    #[tokio::test]
    async fn error_object_in_stream() {
        let error =
            json!({"error": {"message": "model overloaded", "type": "server_error"}}).to_string();
        let server = Server::start(vec![sse(&[error])]).await;
        let client = LlmClient::new(ClientOptions {
            retries: 1,
            ..options(&server.url)
        })
        .unwrap();
        let (result, _) = run(&client).await;
        let Err(LlmError::Malformed(message)) = result else {
            panic!("{result:?}")
        };
        assert!(message.contains("model overloaded"), "{message}");
        assert_eq!(server.count(), 2, "retried once");

        let error = json!({"error": {"message": "prompt too long", "code": 400}}).to_string();
        let server = Server::start(vec![sse(&[error])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, _) = run(&client).await;
        assert!(
            matches!(result, Err(LlmError::Status { status: 400, .. })),
            "{result:?}"
        );
        assert_eq!(server.count(), 1);

        // After a token, an in-stream error cuts the answer off.
        let error = json!({"error": {"message": "oops"}}).to_string();
        let server = Server::start(vec![sse(&[delta("a"), error])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, _) = run(&client).await;
        assert_eq!(result, Err(LlmError::CutOff { tokens: 1 }));
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn first_token_timeout_is_retried_then_reported() {
        let server = Server::start(vec![vec![
            head("200 OK", "text/event-stream", ""),
            Step::Write(
                format!(
                    "data: {}\n\n",
                    json!({"choices":[{"delta":{"role":"assistant"}}]})
                )
                .into_bytes(),
            ),
            Step::Sleep(3000),
        ]])
        .await;
        let client = LlmClient::new(ClientOptions {
            first_token_timeout: Duration::from_millis(150),
            retries: 1,
            ..options(&server.url)
        })
        .unwrap();
        let started = Instant::now();
        let (result, _) = run(&client).await;
        assert_eq!(result, Err(LlmError::Timeout("first token")));
        assert_eq!(server.count(), 2);
        assert!(started.elapsed() < Duration::from_millis(900));
    }

    #[tokio::test]
    async fn idle_timeout_after_a_token_is_cut_off() {
        let mut steps = sse(&[delta("a")]);
        steps.push(Step::Sleep(3000));
        let server = Server::start(vec![steps]).await;
        let client = LlmClient::new(ClientOptions {
            idle_timeout: Duration::from_millis(150),
            ..options(&server.url)
        })
        .unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(result, Err(LlmError::CutOff { tokens: 1 }));
        assert_eq!(tokens, ["a"]);
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        drop(listener);
        let client = LlmClient::new(options(&url)).unwrap();
        let (result, _) = run(&client).await;
        let Err(LlmError::Connect(message)) = result else {
            panic!("{result:?}")
        };
        assert!(message.starts_with("127.0.0.1:"), "{message}");
    }

    #[tokio::test]
    async fn breaker_opens_fails_fast_and_half_opens() {
        let fail = error_reply("500 Internal Server Error", "{}", "");
        let server = Server::start(vec![fail.clone(), fail.clone(), fail, answer(&["back"])]).await;
        let client = LlmClient::new(ClientOptions {
            retries: 0,
            breaker_failures: 2,
            ..options(&server.url)
        })
        .unwrap();
        for _ in 0..2 {
            assert!(matches!(
                run(&client).await.0,
                Err(LlmError::Status { status: 500, .. })
            ));
        }
        assert!(client.breaker_open());
        assert_eq!(run(&client).await.0, Err(LlmError::CircuitOpen));
        assert_eq!(
            server.count(),
            2,
            "failed fast without contacting the server"
        );

        // Cooldown over: one trial, which fails and re-opens the circuit.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!client.breaker_open());
        assert!(matches!(
            run(&client).await.0,
            Err(LlmError::Status { status: 500, .. })
        ));
        assert_eq!(server.count(), 3);
        assert_eq!(run(&client).await.0, Err(LlmError::CircuitOpen));
        assert_eq!(server.count(), 3);

        // Next trial succeeds and closes it.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(run(&client).await.1, ["back"]);
        assert!(!client.breaker_open());
        assert_eq!(run(&client).await.1, ["back"]);
        assert_eq!(server.count(), 5);
    }

    #[tokio::test]
    async fn unauthorized_counts_towards_the_breaker_and_hides_the_key() {
        let body = format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#);
        let server = Server::start(vec![error_reply("401 Unauthorized", &body, "")]).await;
        let client = LlmClient::new(ClientOptions {
            breaker_failures: 1,
            ..options(&server.url)
        })
        .unwrap();
        let (result, _) = run(&client).await;
        let error = result.unwrap_err();
        assert!(matches!(error, LlmError::Status { status: 401, .. }));
        assert!(!error.to_string().contains(KEY), "{error}");
        assert!(error.to_string().contains("[redacted]"), "{error}");
        assert_eq!(server.count(), 1, "not retried");
        assert!(client.breaker_open());
        assert!(!format!("{client:?} {:?}", options(&server.url)).contains(KEY));
    }

    #[tokio::test]
    async fn a_plain_json_answer_is_accepted_when_streaming() {
        let body = json!({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole answer"}, "finish_reason": "stop"}]
        })
        .to_string();
        let server = Server::start(vec![error_reply("200 OK", &body, "")]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, tokens) = run(&client).await;
        assert_eq!(
            result.unwrap(),
            StreamEnd {
                finish_reason: Some("stop".into()),
                tokens: 1
            }
        );
        assert_eq!(tokens, ["whole answer"]);
    }

    #[tokio::test]
    async fn complete_returns_the_content() {
        let body = json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}]
        })
        .to_string();
        let server = Server::start(vec![
            error_reply("503 Service Unavailable", "{}", ""),
            error_reply("200 OK", &body, ""),
        ])
        .await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        assert_eq!(client.complete(&request()).await.unwrap(), "Paris.");
        assert_eq!(server.body(1)["stream"], json!(false));
        assert_eq!(server.count(), 2);

        // A server that streams anyway is read to the end.
        let server = Server::start(vec![answer(&["Par", "is."])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        assert_eq!(client.complete(&request()).await.unwrap(), "Paris.");
    }

    #[tokio::test]
    async fn a_dropped_receiver_stops_the_stream() {
        let mut steps = vec![head("200 OK", "text/event-stream", "")];
        for i in 0..50 {
            steps.push(Step::Write(
                format!("data: {}\n\n", delta(&i.to_string())).into_bytes(),
            ));
            steps.push(Step::Sleep(20));
        }
        let server = Server::start(vec![steps]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let reader = tokio::spawn(async move {
            let first = rx.recv().await;
            drop(rx);
            first
        });
        let started = Instant::now();
        let end = client.stream(&request(), tx).await.unwrap();
        assert_eq!(reader.await.unwrap().as_deref(), Some("0"));
        assert!(end.tokens >= 1 && end.tokens <= 2, "{end:?}");
        assert_eq!(end.finish_reason, None);
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(server.count(), 1);

        // Gone before the call: nothing is sent.
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let end = client.stream(&request(), tx).await.unwrap();
        assert_eq!(end.tokens, 0);
        assert_eq!(server.count(), 1);
    }

    #[test]
    fn options_are_checked() {
        for bad in [
            ClientOptions {
                base_url: "localhost:11434".into(),
                ..ClientOptions::default()
            },
            ClientOptions {
                base_url: "ftp://example.com/v1".into(),
                ..ClientOptions::default()
            },
            ClientOptions {
                api_key: Some("bad\nkey".into()),
                ..ClientOptions::default()
            },
            ClientOptions {
                idle_timeout: Duration::ZERO,
                ..ClientOptions::default()
            },
        ] {
            let error = LlmClient::new(bad).unwrap_err();
            assert!(matches!(error, LlmError::Config(_)), "{error:?}");
            assert!(!error.to_string().contains("bad\nkey"));
        }
    }

    #[test]
    fn details_are_short_single_line_and_scrubbed() {
        let client = LlmClient::new(ClientOptions {
            api_key: Some(KEY.into()),
            ..ClientOptions::default()
        })
        .unwrap();
        let inner = &client.inner;
        let long = format!("{KEY}\n\t{}", "é".repeat(500));
        let detail = inner.sanitize(&long, DETAIL_CHARS);
        assert!(detail.starts_with("[redacted] éé"), "{detail}");
        assert_eq!(detail.chars().count(), DETAIL_CHARS + 1);
        assert_eq!(inner.sanitize("  \n ", DETAIL_CHARS), "no details");
        assert_eq!(
            strip_tags("<html><title>502 Bad Gateway</title></html>").trim(),
            "502 Bad Gateway"
        );
        assert_eq!(
            error_message(&json!({"detail": [{"msg": "field required"}]})).as_deref(),
            Some(r#"[{"msg":"field required"}]"#)
        );
    }
}
