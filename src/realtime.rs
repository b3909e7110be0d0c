//! Websockets: `GET /ws/agent` streams a workspace's events to agents,
//! `GET /ws/chat/{bot}` is the web chat widget's customer session.
//!
//! Each node subscribes once per workspace to the broker's pub/sub (the
//! [`Hub`]) and fans events out to its sockets, so events published on any
//! node reach every node's sockets. Events are numbered in the database's
//! event log: a socket that falls behind (a slow client, a broker
//! reconnect) or reconnects with `?after=SEQ` replays what it missed from
//! there; the widget replays its conversation's messages by seq.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message as WsMessage, Session};
use channels::{ChannelKind, InboundEvent, InboundMessage, Origin, RoutedEvent, Sender};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::app::App;
use crate::auth;
use crate::error::{ApiError, ErrorKind};
use crate::server::{AppState, resource};
use broker::Broker;
use store::models::bot::Bot;
use store::models::channel_account::{AccountSpec, ChannelAccount};
use store::models::conversation::Conversation;
use store::models::customer::Customer;
use store::models::event::StoredEvent;
use store::models::message::{AuthorKind, Message};

/// A published event, parsed once per node for all its sockets.
#[derive(Debug)]
pub struct Published {
    /// The JSON text, as sent to agents.
    pub payload: String,
    /// Its `seq` (absent for unlogged events such as `typing`).
    pub seq: Option<i64>,
    /// Its `conversation_id`, if any.
    pub conversation_id: Option<String>,
    /// The parsed event.
    pub value: Value,
}

/// What the hub hands to sockets: an event, or word that events may have
/// been lost (the socket replays from the log).
#[derive(Debug, Clone)]
pub enum Feed {
    /// A published event.
    Event(Arc<Published>),
    /// The broker subscription was re-established: replay.
    Resync,
}

/// One broker subscription per workspace, shared by this node's sockets.
#[derive(Debug, Clone)]
pub struct Hub {
    app: App,
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Feed>>>>,
}

impl Hub {
    /// A hub over `app`'s broker.
    pub fn new(app: App) -> Self {
        Self {
            app,
            topics: Arc::default(),
        }
    }

    /// The workspace's feed; subscribes to the broker on first use.
    pub fn subscribe(&self, workspace_id: &str) -> broadcast::Receiver<Feed> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = topics.get(workspace_id) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(4096);
        topics.insert(workspace_id.to_owned(), tx.clone());
        let hub = self.clone();
        let workspace = workspace_id.to_owned();
        tokio::spawn(async move { hub.pump(workspace, tx).await });
        rx
    }

    /// Forwards the broker's messages to the local feed until no socket
    /// listens; resubscribes (and tells sockets to replay) when the broker
    /// connection drops.
    async fn pump(self, workspace: String, tx: broadcast::Sender<Feed>) {
        let topic = crate::events::topic(&workspace);
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            match self.app.broker.subscribe(&topic).await {
                Ok(mut subscription) => {
                    backoff = Duration::from_millis(100);
                    if !first {
                        let _ = tx.send(Feed::Resync);
                    }
                    first = false;
                    loop {
                        tokio::select! {
                            payload = subscription.recv() => match payload {
                                Some(payload) => {
                                    let value: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                                    let published = Published {
                                        seq: value["seq"].as_i64(),
                                        conversation_id: value["conversation_id"].as_str().map(str::to_owned),
                                        payload,
                                        value,
                                    };
                                    let _ = tx.send(Feed::Event(Arc::new(published)));
                                }
                                None => break,
                            },
                            () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        }
                        if tx.receiver_count() == 0 && self.retire(&workspace, &tx) {
                            return;
                        }
                    }
                    tracing::warn!(%workspace, "event subscription ended; resubscribing");
                }
                Err(error) => {
                    tracing::warn!(%workspace, %error, "cannot subscribe to events; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if tx.receiver_count() == 0 && self.retire(&workspace, &tx) {
                return;
            }
        }
    }

    /// Drops the workspace's feed if still unused; `true` when dropped.
    fn retire(&self, workspace: &str, tx: &broadcast::Sender<Feed>) -> bool {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if tx.receiver_count() == 0 {
            topics.remove(workspace);
            true
        } else {
            false
        }
    }
}

/// Mounts the websocket routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ws/agent").route(web::get().to(agent_socket)))
        .service(resource("/ws/chat/{bot}").route(web::get().to(chat_socket)));
}

/// Whether a browser request comes from our own pages: with cookie
/// authentication, a page of another site (or a sibling subdomain) could
/// otherwise act as the agent. Requests without `Origin` are not a
/// browser's cross-site requests.
pub fn same_origin(req: &HttpRequest) -> bool {
    let fetch_site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return false;
    }
    let Some(origin) = req.headers().get("origin").and_then(|o| o.to_str().ok()) else {
        return true; // not a browser
    };
    let host = req.connection_info().host().to_owned();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

fn close(code: CloseCode, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(description.to_owned()),
    })
}

/// `GET /ws/agent?after=SEQ`.
async fn agent_socket(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = auth::token_of(&req, true);
    let by_cookie = req.cookie(auth::SESSION_COOKIE).is_some()
        && req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .is_none();
    if by_cookie && !same_origin(&req) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "cross-site websocket refused",
        ));
    }
    let who = auth::authenticate(&state.app, token.as_deref()).await?;
    let token = token.unwrap_or_default();
    let after = auth::url_param(req.query_string(), "after")
        .map(|a| a.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::new(ErrorKind::BadRequest, "after must be an event seq"))?;
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("not a websocket handshake: {e}"),
        )
    })?;
    let stream = stream.max_frame_size(state.app.settings.realtime.max_frame_bytes);
    let feed = state.hub.subscribe(&who.workspace_id);
    let app = state.app.clone();
    state
        .metrics
        .ws_connections
        .with_label_values(&["agent"])
        .inc();
    let metrics = state.metrics.clone();
    actix_web::rt::spawn(async move {
        let outcome = run_agent(
            app,
            &token,
            who.workspace_id.clone(),
            after,
            session,
            stream,
            feed,
        )
        .await;
        metrics.ws_connections.with_label_values(&["agent"]).dec();
        if let Err(error) = outcome {
            tracing::debug!(%error, "agent socket ended");
        }
    });
    Ok(response)
}

/// Sends the workspace's events after `last` from the log; returns the new last seq.
async fn replay(
    app: &App,
    session: &mut Session,
    workspace: &str,
    mut last: i64,
) -> Result<i64, String> {
    let limit = app.settings.realtime.replay_limit;
    let mut conn = app.db.get().await.map_err(|e| e.to_string())?;
    let events = StoredEvent::after(&mut conn, workspace, last, limit)
        .await
        .map_err(|e| e.to_string())?;
    drop(conn);
    for event in events {
        let mut value: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
        value["seq"] = json!(event.seq);
        session
            .text(value.to_string())
            .await
            .map_err(|_| "closed".to_owned())?;
        last = event.seq;
    }
    Ok(last)
}

async fn run_agent(
    app: App,
    token: &str,
    workspace: String,
    after: Option<i64>,
    mut session: Session,
    mut stream: actix_ws::MessageStream,
    mut feed: broadcast::Receiver<Feed>,
) -> Result<(), String> {
    let latest = {
        let mut conn = app.db.get().await.map_err(|e| e.to_string())?;
        StoredEvent::latest(&mut conn, &workspace)
            .await
            .map_err(|e| e.to_string())?
    };
    session
        .text(json!({ "type": "hello", "seq": latest }).to_string())
        .await
        .map_err(|_| "closed")?;
    // `replayed`: events up to here came from the log, live copies of them
    // are dropped. `last`: the newest seq sent, where a later replay starts.
    // Live events may arrive out of seq order (two nodes publishing at
    // once), so only replayed ones are skipped by seq.
    let mut last = match after {
        Some(after) => replay(&app, &mut session, &workspace, after).await?,
        None => latest,
    };
    let mut replayed = last;
    let heartbeat = Duration::from_secs(app.settings.realtime.heartbeat_secs.max(1));
    let mut ticker = tokio::time::interval(heartbeat);
    let mut heard = Instant::now();
    let mut checked = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if heard.elapsed() > heartbeat * 3 {
                    let _ = session.close(close(CloseCode::Away, "no answer to pings")).await;
                    return Ok(());
                }
                // A logout, a removal or a disabled account ends the socket
                // too, within a minute.
                if checked.elapsed() >= Duration::from_secs(60) {
                    checked = Instant::now();
                    if let Err(e) = auth::authenticate(&app, Some(token)).await
                        && e.kind == ErrorKind::Unauthorized
                    {
                        let _ = session.close(close(CloseCode::Policy, &e.message)).await;
                        return Ok(());
                    }
                }
                session.ping(b"").await.map_err(|_| "closed")?;
            }
            incoming = stream.recv() => match incoming {
                None => return Ok(()),
                Some(Ok(WsMessage::Ping(bytes))) => {
                    heard = Instant::now();
                    session.pong(&bytes).await.map_err(|_| "closed")?;
                }
                Some(Ok(WsMessage::Close(_))) => {
                    let _ = session.close(None).await;
                    return Ok(());
                }
                Some(Ok(_)) => heard = Instant::now(),
                Some(Err(error)) => {
                    let _ = session.close(close(CloseCode::Size, &format!("bad frame: {error}"))).await;
                    return Ok(());
                }
            },
            fed = feed.recv() => match fed {
                Ok(Feed::Event(event)) => {
                    match event.seq {
                        Some(seq) if seq <= replayed => continue, // replayed already
                        Some(seq) => last = last.max(seq),
                        None => {}
                    }
                    session.text(event.payload.clone()).await.map_err(|_| "closed")?;
                }
                Ok(Feed::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    last = replay(&app, &mut session, &workspace, last).await?;
                    replayed = last;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = session.close(close(CloseCode::Restart, "server restarting")).await;
                    return Ok(());
                }
            },
        }
    }
}

/// Prefix of chat widget session tokens.
pub const CHAT_PREFIX: &str = "fdc_";

/// The widget's session token, if well-formed.
fn chat_token(raw: Option<String>) -> Option<String> {
    raw.filter(|t| {
        t.len() == CHAT_PREFIX.len() + 43
            && t.starts_with(CHAT_PREFIX)
            && t[CHAT_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The customer identity a widget session token stands for.
fn visitor_id(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("web-{}", &hex::encode(digest)[..24])
}

/// The bot's web chat account, created on first use.
async fn webchat_account(app: &App, bot: &Bot) -> Result<ChannelAccount, ApiError> {
    let public_id = format!("webchat-{}", bot.id);
    let mut conn = app.db.get().await?;
    if let Some(account) = ChannelAccount::find_by_public_id(&mut conn, &public_id).await? {
        // Only this bot's own web chat account: an id taken by anything
        // else must never route this bot's customers elsewhere.
        if account.bot_id == bot.id && account.kind == ChannelKind::Webchat {
            return Ok(account);
        }
        tracing::error!(bot = %bot.id, account = %account.id, "the web chat account id is taken by another account");
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "this bot's web chat is unavailable",
        ));
    }
    let spec = AccountSpec {
        public_id,
        bot_id: bot.id.clone(),
        kind: ChannelKind::Webchat,
        external_id: None,
        credentials: Default::default(),
    };
    ChannelAccount::upsert(&mut conn, &app.master_key, &spec)
        .await
        .map(|u| u.row().clone())
        .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))
}

/// `GET /ws/chat/{bot}?session=TOKEN&after=SEQ`.
async fn chat_socket(
    state: web::Data<AppState>,
    req: HttpRequest,
    bot_id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.app.db.get().await?;
    let bot = Bot::find_by_id(&mut conn, &bot_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "no such bot"))?;
    drop(conn);
    let account = webchat_account(&state.app, &bot).await?;
    if account.status != store::models::channel_account::AccountStatus::Active {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "this bot's web chat is disabled",
        ));
    }
    let query = req.query_string();
    let token = chat_token(auth::url_param(query, "session"))
        .unwrap_or_else(|| auth::new_token(CHAT_PREFIX));
    let after = auth::url_param(query, "after")
        .and_then(|a| a.parse::<i64>().ok())
        .unwrap_or(0);
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("not a websocket handshake: {e}"),
        )
    })?;
    let stream = stream.max_frame_size(state.app.settings.realtime.max_frame_bytes);
    let feed = state.hub.subscribe(&bot.workspace_id);
    let app = state.app.clone();
    state
        .metrics
        .ws_connections
        .with_label_values(&["chat"])
        .inc();
    let metrics = state.metrics.clone();
    actix_web::rt::spawn(async move {
        let chat = Chat {
            app,
            bot,
            account,
            visitor: visitor_id(&token),
            token,
        };
        let outcome = chat.run(after, session, stream, feed).await;
        metrics.ws_connections.with_label_values(&["chat"]).dec();
        if let Err(error) = outcome {
            tracing::debug!(%error, "chat socket ended");
        }
    });
    Ok(response)
}

struct Chat {
    app: App,
    bot: Bot,
    account: ChannelAccount,
    token: String,
    visitor: String,
}

/// A message as the widget shows it.
fn chat_frame(message: &Message) -> Value {
    let author = match message.author_kind {
        AuthorKind::Customer => "customer",
        AuthorKind::Agent => "agent",
        _ => "bot",
    };
    json!({
        "type": "message",
        "seq": message.seq,
        "author": author,
        "text": message.body,
        "created_at": message.created_at,
    })
}

impl Chat {
    /// The visitor's open conversation, if any.
    async fn conversation(&self) -> Result<Option<Conversation>, String> {
        let mut conn = self.app.db.get().await.map_err(|e| e.to_string())?;
        let Some(customer) = Customer::find(
            &mut conn,
            &self.bot.workspace_id,
            ChannelKind::Webchat,
            &self.visitor,
        )
        .await
        .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        Ok(
            Conversation::open_of_customer(&mut conn, &self.account.id, &customer.id)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .next(),
        )
    }

    /// Sends the conversation's messages after `last`; returns the new last seq.
    async fn replay(
        &self,
        session: &mut Session,
        conversation: &str,
        mut last: i64,
    ) -> Result<i64, String> {
        let mut conn = self.app.db.get().await.map_err(|e| e.to_string())?;
        let messages = Message::after(&mut conn, conversation, last, 500)
            .await
            .map_err(|e| e.to_string())?;
        drop(conn);
        for message in messages {
            session
                .text(chat_frame(&message).to_string())
                .await
                .map_err(|_| "closed".to_owned())?;
            last = message.seq;
        }
        Ok(last)
    }

    async fn run(
        self,
        after: i64,
        mut session: Session,
        mut stream: actix_ws::MessageStream,
        mut feed: broadcast::Receiver<Feed>,
    ) -> Result<(), String> {
        let mut conversation = self.conversation().await?.map(|c| c.id);
        session
            .text(
                json!({ "type": "session", "session": self.token, "conversation_id": conversation })
                    .to_string(),
            )
            .await
            .map_err(|_| "closed")?;
        // Seqs count per conversation: `after` belongs to the open one only.
        let mut last = if conversation.is_some() { after } else { 0 };
        if let Some(id) = &conversation {
            last = self.replay(&mut session, id, last).await?;
        }
        let mut replayed = last;
        let settings = &self.app.settings.realtime;
        let heartbeat = Duration::from_secs(settings.heartbeat_secs.max(1));
        let per_minute = settings.chat_messages_per_minute.max(1);
        let mut ticker = tokio::time::interval(heartbeat);
        let mut heard = Instant::now();
        let mut sent: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if heard.elapsed() > heartbeat * 3 {
                        let _ = session.close(close(CloseCode::Away, "no answer to pings")).await;
                        return Ok(());
                    }
                    session.ping(b"").await.map_err(|_| "closed")?;
                }
                incoming = stream.recv() => {
                    heard = Instant::now();
                    let text = match incoming {
                        None => return Ok(()),
                        Some(Ok(WsMessage::Text(text))) => text,
                        Some(Ok(WsMessage::Ping(bytes))) => {
                            session.pong(&bytes).await.map_err(|_| "closed")?;
                            continue;
                        }
                        Some(Ok(WsMessage::Close(_))) => {
                            let _ = session.close(None).await;
                            return Ok(());
                        }
                        Some(Ok(WsMessage::Binary(_))) => {
                            let _ = session.close(close(CloseCode::Unsupported, "send JSON text frames")).await;
                            return Ok(());
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(error)) => {
                            let _ = session.close(close(CloseCode::Size, &format!("bad frame: {error}"))).await;
                            return Ok(());
                        }
                    };
                    let now = Instant::now();
                    while sent.front().is_some_and(|t| now - *t > Duration::from_secs(60)) {
                        sent.pop_front();
                    }
                    if sent.len() >= per_minute as usize {
                        let _ = session.close(close(CloseCode::Policy, "too many messages; wait a minute")).await;
                        return Ok(());
                    }
                    sent.push_back(now);
                    match self.receive(&text).await {
                        Ok(Some(id)) => {
                            if conversation.as_deref() != Some(id.as_str()) {
                                // A new conversation: its messages from the start.
                                last = self.replay(&mut session, &id, 0).await?;
                                replayed = last;
                            }
                            conversation = Some(id);
                        }
                        Ok(None) => {}
                        Err(problem) => {
                            session
                                .text(json!({ "type": "error", "code": "bad_message", "message": problem }).to_string())
                                .await
                                .map_err(|_| "closed")?;
                        }
                    }
                }
                fed = feed.recv() => match fed {
                    Ok(Feed::Event(published)) => {
                        let Some(id) = &conversation else { continue };
                        if published.conversation_id.as_deref() != Some(id.as_str()) {
                            continue;
                        }
                        let event = &published.value;
                        match event["type"].as_str() {
                            Some("message.created") => {
                                let Ok(message) = serde_json::from_value::<MessageView>(event["message"].clone()) else { continue };
                                if message.seq <= replayed { continue; }
                                if message.direction == "outbound" || message.author_kind == "customer" {
                                    last = last.max(message.seq);
                                    let frame = json!({
                                        "type": "message",
                                        "seq": message.seq,
                                        "author": match message.author_kind.as_str() { "customer" => "customer", "agent" => "agent", _ => "bot" },
                                        "text": message.body,
                                        "created_at": message.created_at,
                                    });
                                    session.text(frame.to_string()).await.map_err(|_| "closed")?;
                                }
                            }
                            Some("typing") => {
                                session.text(json!({ "type": "typing" }).to_string()).await.map_err(|_| "closed")?;
                            }
                            Some("conversation.status") if event["status"] == "resolved" => {
                                // The next message opens a new conversation:
                                // the widget starts counting again.
                                conversation = None;
                                last = 0;
                                replayed = 0;
                                session
                                    .text(json!({ "type": "session", "session": self.token, "conversation_id": null }).to_string())
                                    .await
                                    .map_err(|_| "closed")?;
                            }
                            _ => {}
                        }
                    }
                    Ok(Feed::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(id) = &conversation {
                            last = self.replay(&mut session, id, last).await?;
                            replayed = last;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = session.close(close(CloseCode::Restart, "server restarting")).await;
                        return Ok(());
                    }
                },
            }
        }
    }

    /// Stores a customer message from the widget; returns its conversation.
    async fn receive(&self, frame: &str) -> Result<Option<String>, String> {
        let value: Value = serde_json::from_str(frame)
            .map_err(|_| "send {\"type\":\"message\",\"text\":\"…\"}".to_owned())?;
        if value["type"] != "message" {
            return Err("unknown frame type; send {\"type\":\"message\",\"text\":\"…\"}".into());
        }
        let text = value["text"].as_str().unwrap_or("").trim();
        if text.is_empty() {
            return Err("the message is empty".into());
        }
        if text.chars().count() > 2000 {
            return Err("the message is longer than 2000 characters".into());
        }
        // A client id makes a resend after a reconnect idempotent.
        let client_id = value["id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.len() <= 64)
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let event = RoutedEvent {
            account: None,
            event: InboundEvent::Message(InboundMessage {
                external_id: format!("{}:{client_id}", self.visitor),
                sender: Sender {
                    external_id: self.visitor.clone(),
                    display_name: Some(format!("Web visitor {}", &self.visitor[4..10])),
                },
                text: text.to_owned(),
                origin: Origin::Text,
                attachments: Vec::new(),
                sent_at: None,
                reply_to: None,
                email: None,
            }),
        };
        crate::ingest::ingest(&self.app, &self.account, vec![event])
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "web chat message not stored");
                "the message could not be stored; send it again".to_owned()
            })?;
        Ok(self.conversation().await?.map(|c| c.id))
    }
}

/// The fields of a `message.created` event the widget needs.
#[derive(serde::Deserialize)]
struct MessageView {
    seq: i64,
    direction: String,
    author_kind: String,
    body: String,
    created_at: Value,
}

/// Tells the widget of `conversation` that the bot is writing (not logged).
pub async fn typing(app: &App, workspace_id: &str, conversation_id: &str) {
    let payload = json!({ "type": "typing", "conversation_id": conversation_id }).to_string();
    if let Err(error) = app
        .broker
        .publish(&crate::events::topic(workspace_id), &payload)
        .await
    {
        tracing::debug!(%error, "typing not published");
    }
}

/// Forgets events older than `realtime.retention_days`, now and then hourly.
pub async fn prune_events(app: App) {
    loop {
        let days = app.settings.realtime.retention_days.max(1);
        let before = store::db::now() - chrono::Duration::days(days);
        let pruned = async {
            let mut conn = app.db.get().await?;
            StoredEvent::prune(&mut conn, before).await
        };
        match pruned.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, days, "old events pruned from the event log"),
            Err(error) => tracing::warn!(%error, "event log not pruned; retrying in an hour"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
