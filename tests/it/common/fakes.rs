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
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
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
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
    });
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
    } else if path.ends_with("/sendChatAction") || path.ends_with("/answerCallbackQuery") {
        HttpResponse::Ok().json(json!({ "ok": true, "result": true }))
    } else if path.ends_with("/me/messages") {
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
