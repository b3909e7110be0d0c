//! The platforms outside Frontdesk, as real local servers: the Telegram Bot
//! API and the Graph API over HTTP, and an SMTP server. Each records what it
//! receives; HTTP fakes answer from a script first, then like the platform.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived (the pipeline benchmark times replies by it).
    #[allow(dead_code)]
    pub at: std::time::Instant,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Woken at each request.
    arrived: tokio::sync::Notify,
    script: Mutex<VecDeque<(u16, Value)>>,
    next_id: Mutex<i64>,
}

/// A fake Telegram Bot API or Graph API.
pub struct FakePlatform {
    pub url: String,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl FakePlatform {
    pub async fn start() -> FakePlatform {
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .default_service(web::to(answer))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        FakePlatform {
            url,
            shared,
            handle,
        }
    }

    /// The next answers, in order, before the platform-like default.
    pub fn script(&self, answers: impl IntoIterator<Item = (u16, Value)>) {
        self.shared.script.lock().expect("lock").extend(answers);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// The first request whose path ends with `method` and that `pred`
    /// accepts, waiting for it up to `within`.
    pub async fn call(
        &self,
        method: &str,
        pred: impl Fn(&Recorded) -> bool,
        within: std::time::Duration,
    ) -> Recorded {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(found) = self.calls(method).into_iter().find(|r| pred(r)) {
                return found;
            }
            tokio::time::timeout_at(deadline, arrived)
                .await
                .unwrap_or_else(|_| panic!("no {method} call within {within:?}"));
        }
    }

    /// Requests whose path ends with `method`.
    pub fn calls(&self, method: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(method))
            .collect()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn answer(state: web::Data<Arc<Shared>>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.requests.lock().expect("lock").push(Recorded {
        at: std::time::Instant::now(),
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
    });
    state.arrived.notify_waiters();
    if let Some((status, json)) = state.script.lock().expect("lock").pop_front() {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
            .json(json);
    }
    let id = {
        let mut next = state.next_id.lock().expect("lock");
        *next += 1;
        *next
    };
    let path = req.path();
    if path.ends_with("/sendMessage") {
        HttpResponse::Ok().json(json!({
            "ok": true,
            "result": { "message_id": 5000 + id, "chat": { "id": body["chat_id"] }, "date": 0, "text": body["text"] }
        }))
    } else if path.ends_with("/setWebhook") {
        // As Telegram: only an HTTPS URL is accepted.
        if body["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://"))
        {
            HttpResponse::Ok()
                .json(json!({ "ok": true, "result": true, "description": "Webhook was set" }))
        } else {
            HttpResponse::BadRequest().json(json!({
                "ok": false,
                "error_code": 400,
                "description": "Bad Request: bad webhook: An HTTPS URL must be provided for webhook",
            }))
        }
    } else if path.ends_with("/deleteWebhook") {
        HttpResponse::Ok()
            .json(json!({ "ok": true, "result": true, "description": "Webhook was deleted" }))
    } else if path.ends_with("/sendChatAction") || path.ends_with("/answerCallbackQuery") {
        HttpResponse::Ok().json(json!({ "ok": true, "result": true }))
    } else if path.ends_with("/messages") && body["messaging_product"] == "whatsapp" {
        // The Cloud API: a read receipt or typing indicator is a success,
        // a message gets its wamid.
        if body["status"] == "read" {
            HttpResponse::Ok().json(json!({ "success": true }))
        } else {
            HttpResponse::Ok().json(json!({
                "messaging_product": "whatsapp",
                "contacts": [{ "input": body["to"], "wa_id": body["to"] }],
                "messages": [{ "id": format!("wamid.fake_{id}") }],
            }))
        }
    } else if path.ends_with("/messages") {
        // Messenger's /me/messages and Instagram's /{account}/messages.
        HttpResponse::Ok().json(json!({
            "recipient_id": body["recipient"]["id"],
            "message_id": format!("m_fake_{id}"),
        }))
    } else {
        HttpResponse::NotFound().json(json!({ "ok": false, "description": "Not Found" }))
    }
}

/// A minimal SMTP server that accepts every message and records its data.
pub struct FakeSmtp {
    pub url: String,
    messages: Arc<Mutex<Vec<String>>>,
}

impl FakeSmtp {
    pub async fn start() -> FakeSmtp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("smtp://{}", listener.local_addr().expect("addr"));
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store = messages.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = session(socket, store).await;
                });
            }
        });
        FakeSmtp { url, messages }
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("lock").clone()
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 fake.smtp ESMTP\r\n").await?;
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write
                .write_all(b"250-fake.smtp\r\n250 8BITMIME\r\n")
                .await?;
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            while let Some(line) = lines.next_line().await? {
                if line == "." {
                    break;
                }
                data.push_str(&line);
                data.push('\n');
            }
            store.lock().expect("lock").push(data);
            write.write_all(b"250 queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            break;
        } else {
            write.write_all(b"250 ok\r\n").await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// A fake OpenAI-compatible chat server.

/// What the fake LLM does with one request.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub enum LlmBehaviour {
    /// Streams these content deltas as SSE chunks (each its own `data:`
    /// event, a small gap between them), then finish_reason "stop" and [DONE].
    Stream(Vec<String>),
    /// Streams back, word by word, the concatenation of all message contents
    /// of the request: whatever the model "sees" is repeated.
    Echo,
    /// Answers `[[ANSWER]]` and each line of the request's `<question>`
    /// block in “quotes”: which customer messages a reply answers.
    QuoteQuestion,
    /// Answers this HTTP status with an error JSON body.
    Status(u16),
    /// Streams these deltas then drops the connection without finish_reason or [DONE].
    CutOff(Vec<String>),
    /// Raw bytes as the response body with content-type text/event-stream.
    Raw(Vec<u8>),
}

struct LlmShared {
    default: LlmBehaviour,
    script: Mutex<VecDeque<LlmBehaviour>>,
    /// Authorization header and body of each request, in order.
    requests: Mutex<Vec<(Option<String>, Value)>>,
    /// When each request arrived.
    received: Mutex<Vec<std::time::Instant>>,
    /// Pause before each streamed frame.
    gap: std::time::Duration,
    /// `(prompt_tokens, completion_tokens)` to report as `usage`, if any.
    usage: Mutex<Option<(u64, u64)>>,
}

/// A fake OpenAI-compatible server: `POST /v1/chat/completions`, streaming
/// (`stream: true`) or not.
#[allow(dead_code)]
pub struct FakeLlm {
    /// Base URL, ending in `/v1`.
    pub url: String,
    shared: Arc<LlmShared>,
    handle: actix_web::dev::ServerHandle,
}

#[allow(dead_code)]
impl FakeLlm {
    /// Serves on a free local port; `default` answers every unscripted
    /// request, streamed frames 5 ms apart.
    pub async fn start(default: LlmBehaviour) -> FakeLlm {
        Self::start_with_gap(default, std::time::Duration::from_millis(5)).await
    }

    /// Like [`FakeLlm::start`], with `gap` before each streamed frame (zero:
    /// an instant model, for benchmarks).
    pub async fn start_with_gap(default: LlmBehaviour, gap: std::time::Duration) -> FakeLlm {
        let shared = Arc::new(LlmShared {
            default,
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            received: Mutex::new(Vec::new()),
            gap,
            usage: Mutex::new(None),
        });
        let state = shared.clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .route("/v1/chat/completions", web::post().to(llm_answer))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeLlm {
            url,
            shared,
            handle,
        }
    }

    /// The next behaviours, one per request, before the default.
    pub fn script(&self, next: impl IntoIterator<Item = LlmBehaviour>) {
        self.shared.script.lock().expect("lock").extend(next);
    }

    /// From now on reports `(prompt_tokens, completion_tokens)` as `usage`
    /// as OpenAI does (beside a whole answer; in a last chunk of a stream
    /// when the request asked with `stream_options.include_usage`), or no
    /// usage (`None`, the default).
    pub fn report_usage(&self, usage: Option<(u64, u64)>) {
        *self.shared.usage.lock().expect("lock") = usage;
    }

    /// Request bodies received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.requests_with_auth()
            .into_iter()
            .map(|(_, body)| body)
            .collect()
    }

    /// When each request arrived, in order.
    pub fn received(&self) -> Vec<std::time::Instant> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Authorization header and body of each request, in order.
    pub fn requests_with_auth(&self) -> Vec<(Option<String>, Value)> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// Stops the server, dropping open connections.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn llm_answer(
    state: web::Data<Arc<LlmShared>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    state
        .received
        .lock()
        .expect("lock")
        .push(std::time::Instant::now());
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state
        .requests
        .lock()
        .expect("lock")
        .push((authorization, body.clone()));
    let behaviour = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or_else(|| state.default.clone());
    let streaming = body["stream"].as_bool().unwrap_or(false);
    let model = body["model"].as_str().unwrap_or("fake").to_owned();
    let usage = state
        .usage
        .lock()
        .expect("lock")
        .map(|(prompt, completion)| {
            json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            })
        });
    let (deltas, complete) = match behaviour {
        LlmBehaviour::Stream(deltas) => (deltas, true),
        LlmBehaviour::CutOff(deltas) => (deltas, false),
        LlmBehaviour::Echo => {
            let seen = body["messages"]
                .as_array()
                .map(|messages| {
                    messages
                        .iter()
                        .filter_map(|m| m["content"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            let words = seen
                .split_inclusive(char::is_whitespace)
                .map(str::to_owned)
                .collect();
            (words, true)
        }
        LlmBehaviour::QuoteQuestion => {
            let last = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default();
            let question = last
                .split("<question>")
                .nth(1)
                .and_then(|q| q.split("</question>").next())
                .unwrap_or_default();
            let quoted: Vec<String> = question
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| format!("“{l}” "))
                .collect();
            (
                std::iter::once("[[ANSWER]] ".to_owned())
                    .chain(quoted)
                    .collect(),
                true,
            )
        }
        LlmBehaviour::Status(status) => {
            let status = actix_web::http::StatusCode::from_u16(status).expect("status");
            return HttpResponse::build(status).json(json!({
                "error": {
                    "message": format!("fake LLM error {}", status.as_u16()),
                    "type": "fake_error",
                    "code": null,
                }
            }));
        }
        LlmBehaviour::Raw(bytes) => {
            return HttpResponse::Ok()
                .content_type("text/event-stream")
                .body(bytes);
        }
    };
    if !streaming && complete {
        let mut whole = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": deltas.concat() },
                "finish_reason": "stop",
            }],
        });
        if let Some(usage) = usage {
            whole["usage"] = usage;
        }
        return HttpResponse::Ok().json(whole);
    }
    // Streamed; a cut-off answer is streamed even when `stream: false` was
    // asked, since only a stream can break off half-way.
    let chunk = |delta: Value, finish: Value| {
        let event = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        Ok(web::Bytes::from(format!("data: {event}\n\n")))
    };
    let mut frames: VecDeque<Result<web::Bytes, std::io::Error>> = VecDeque::new();
    frames.push_back(chunk(json!({ "role": "assistant" }), Value::Null));
    for delta in deltas {
        frames.push_back(chunk(json!({ "content": delta }), Value::Null));
    }
    if complete {
        frames.push_back(chunk(json!({}), json!("stop")));
        if let Some(usage) = usage.filter(|_| body["stream_options"]["include_usage"] == true) {
            let last = json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": usage,
            });
            frames.push_back(Ok(web::Bytes::from(format!("data: {last}\n\n"))));
        }
        frames.push_back(Ok(web::Bytes::from_static(b"data: [DONE]\n\n")));
    } else {
        frames.push_back(Err(std::io::Error::other("fake LLM drops the connection")));
    }
    let gap = state.gap;
    let body = futures_util::stream::unfold(frames, move |mut frames| async move {
        let frame = frames.pop_front()?;
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        Some((frame, frames))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}
