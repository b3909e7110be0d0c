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
//!
//! # Layout
//!
//! Each file uses only files listed after it.
//!
//! - `mod.rs`: the client's public face: [`LlmClient`], [`StreamEnd`] and
//!   the re-exports of the types below.
//! - `call.rs`: one call: its attempts, each an HTTP request whose answer is
//!   read under the deadline of its phase.
//! - `sse.rs`: a body's framing, and the `text/event-stream` parser.
//! - `report.rs`: failures put into words, scrubbed of the API key.
//! - `breaker.rs`: retry decisions and the circuit breaker.
//! - `sink.rs`: where content goes: the caller's channel, or a buffer.
//! - `wire.rs`: the wire format: [`ChatMessage`], [`Role`], [`ChatRequest`],
//!   the JSON body sent, and how chunks and error bodies read.
//! - `options.rs`: [`ClientOptions`], where the server is and how patient to
//!   be with it.
//! - `error.rs`: [`LlmError`], why a call failed.

mod breaker;
mod call;
mod error;
mod options;
mod report;
mod sink;
mod sse;
mod wire;

use std::fmt;
use std::sync::Arc;

use reqwest::header::HeaderValue;
use tokio::sync::mpsc;

use breaker::CircuitBreaker;
use call::Inner;
use report::Reporter;
use sink::Sink;

pub use error::LlmError;
pub use options::ClientOptions;
/// The event-stream parser a streamed call reads its body with, for the
/// fuzz targets (`fuzz/`).
pub use sse::{SseEvent, SseParser};
pub use wire::{ChatMessage, ChatRequest, Role, TokenUsage};

/// How a streamed answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    /// The server's `finish_reason` (`stop`, `length`…), if it sent one;
    /// `None` also when the receiver went away first.
    pub finish_reason: Option<String>,
    /// Content deltas sent into the channel.
    pub tokens: usize,
    /// The tokens the server counted, when it reported them (streams ask
    /// for them with `stream_options.include_usage`).
    pub usage: Option<TokenUsage>,
}

/// A whole answer ([`LlmClient::complete`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Its content.
    pub text: String,
    /// The tokens the server counted, when it reported them.
    pub usage: Option<TokenUsage>,
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
        let breaker = CircuitBreaker::new(
            options.breaker_failures,
            options.breaker_cooldown,
            server.clone(),
        );
        let report = Reporter::new(server.clone(), api_key);
        Ok(LlmClient {
            inner: Arc::new(Inner {
                http,
                endpoint,
                server,
                auth,
                options,
                breaker,
                report,
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
        let end = self.inner.call(request, &mut sink).await?;
        Ok(StreamEnd {
            finish_reason: end.finish_reason,
            tokens: sink.delivered(),
            usage: end.usage,
        })
    }

    /// Asks for the whole answer at once (`stream: false`) and returns it;
    /// same total timeout, retries and breaker as [`Self::stream`].
    pub async fn complete(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let mut sink = Sink::Buffer {
            text: String::new(),
            parts: 0,
        };
        let end = self.inner.call(request, &mut sink).await?;
        match sink {
            Sink::Buffer { text, .. } => Ok(Completion {
                text,
                usage: end.usage,
            }),
            Sink::Channel { .. } => Err(LlmError::Empty),
        }
    }

    /// Whether calls currently fail fast with [`LlmError::CircuitOpen`].
    pub fn breaker_open(&self) -> bool {
        self.inner.breaker.is_open()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    use serde_json::{Value, json};
    use tokio::time::Instant;

    use super::report::{DETAIL_CHARS, strip_tags};
    use super::wire::error_message;
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
                tokens: 3,
                usage: None,
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
                "stream_options": {"include_usage": true},
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
                tokens: 1,
                usage: None,
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
        assert_eq!(client.complete(&request()).await.unwrap().text, "Paris.");
        assert_eq!(server.body(1)["stream"], json!(false));
        assert_eq!(server.count(), 2);

        // A server that streams anyway is read to the end.
        let server = Server::start(vec![answer(&["Par", "is."])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        assert_eq!(client.complete(&request()).await.unwrap().text, "Paris.");
    }

    #[tokio::test]
    async fn the_usage_the_server_reports_is_returned() {
        // OpenAI's last chunk with `include_usage`: no choices, the counts.
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 57, "completion_tokens": 9, "total_tokens": 66}}).to_string();
        let server = Server::start(vec![sse(&[delta("Hi"), stop(), usage, "[DONE]".into()])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let (result, _) = run(&client).await;
        assert_eq!(
            result.unwrap().usage,
            Some(TokenUsage {
                prompt_tokens: 57,
                completion_tokens: 9
            })
        );

        // Whole answers carry it beside the message; `null` or partial
        // counts are no usage.
        let whole = |usage: Value| {
            json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
                "usage": usage,
            })
            .to_string()
        };
        let server = Server::start(vec![
            error_reply(
                "200 OK",
                &whole(json!({"prompt_tokens": 12, "completion_tokens": 2})),
                "",
            ),
            error_reply("200 OK", &whole(Value::Null), ""),
            error_reply("200 OK", &whole(json!({"prompt_tokens": 12})), ""),
        ])
        .await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        let reported = client.complete(&request()).await.unwrap();
        assert_eq!(
            reported.usage,
            Some(TokenUsage {
                prompt_tokens: 12,
                completion_tokens: 2
            })
        );
        assert_eq!(client.complete(&request()).await.unwrap().usage, None);
        assert_eq!(client.complete(&request()).await.unwrap().usage, None);
        assert_eq!(
            server.body(0).get("stream_options"),
            None,
            "only streams ask"
        );

        // A stream without it: no usage.
        let server = Server::start(vec![answer(&["a"])]).await;
        let client = LlmClient::new(options(&server.url)).unwrap();
        assert_eq!(run(&client).await.0.unwrap().usage, None);
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
        let report = &client.inner.report;
        let long = format!("{KEY}\n\t{}", "é".repeat(500));
        let detail = report.sanitize(&long, DETAIL_CHARS);
        assert!(detail.starts_with("[redacted] éé"), "{detail}");
        assert_eq!(detail.chars().count(), DETAIL_CHARS + 1);
        assert_eq!(report.sanitize("  \n ", DETAIL_CHARS), "no details");
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
