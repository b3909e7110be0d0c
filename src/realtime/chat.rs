//! `GET /ws/chat/{bot}`: the web chat widget's customer session.

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, Message as WsMessage, Session};
use broker::Limit;
use channels::webchat;
use channels::{ChannelKind, InboundEvent, RoutedEvent};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::close;
use crate::auth;
use crate::context::App;
use crate::error::{ApiError, ErrorKind};
use crate::http::AppState;
use crate::hub::Feed;
use store::models::bot::Bot;
use store::models::channel_account::ChannelAccount;
use store::models::conversation::Conversation;
use store::models::customer::Customer;
use store::models::message::Message;

/// `GET /ws/chat/{bot}?session=TOKEN&after=SEQ`.
pub(super) async fn chat_socket(
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
    let page = req.headers().get("origin").and_then(|o| o.to_str().ok());
    if !bot.widget_origins.allow(page) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "this bot's chat widget may only be opened from its own pages, not from {}",
                page.unwrap_or("a request without Origin")
            ),
        ));
    }
    let ip = crate::http::Origin::of(&req).ip;
    let settings = &state.app.settings.realtime;
    let limits = [
        Limit::new(
            format!("chat:sessions:ip:{}", ip.as_deref().unwrap_or("?")),
            settings.chat_sessions_per_ip_per_minute,
        ),
        Limit::new(
            format!("chat:sessions:bot:{}", bot.id),
            settings.chat_sessions_per_bot_per_minute,
        ),
    ];
    admit(&state.app, &limits)
        .await
        .map_err(|wait| crate::api::too_many("too many chat sessions opened", wait))?;
    let account = crate::channel_setup::webchat_account(&state.app, &bot).await?;
    if account.status != store::models::channel_account::AccountStatus::Active {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "this bot's web chat is disabled",
        ));
    }
    let query = req.query_string();
    let token = webchat::session_token(auth::url_param(query, "session"))
        .unwrap_or_else(|| auth::new_token(webchat::SESSION_PREFIX));
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
            visitor: webchat::visitor_id(&token),
            token,
            ip,
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
    /// The client's address, for the per-address limits.
    ip: Option<String>,
}

/// Admits one attempt against `limits` over a minute, in whole seconds to
/// wait when refused. When the broker does not answer, the attempt is let
/// through: the per-socket limit still holds.
async fn admit(app: &App, limits: &[Limit]) -> Result<(), Duration> {
    use broker::Broker;
    match app
        .broker
        .admit(limits, &auth::new_token(""), Duration::from_secs(60))
        .await
    {
        Ok(None) => Ok(()),
        Ok(Some(wait)) => Err(Duration::from_secs(
            wait.as_secs_f64().ceil().max(1.0) as u64
        )),
        Err(error) => {
            tracing::warn!(%error, "chat limits not checked: the broker does not answer");
            Ok(())
        }
    }
}

/// A stored message as the widget shows it.
fn chat_frame(message: &Message) -> Value {
    webchat::message_frame(
        message.seq,
        message.author_kind.as_str(),
        &message.body,
        &json!(message.created_at),
        message.metadata.as_deref(),
    )
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
                    if let Err(wait) = admit(&self.app, &self.message_limits()).await {
                        session
                            .text(json!({
                                "type": "error",
                                "code": "rate_limited",
                                "message": format!("too many messages; send this again in {} s", wait.as_secs()),
                                "retry_after_secs": wait.as_secs(),
                            }).to_string())
                            .await
                            .map_err(|_| "closed")?;
                        continue;
                    }
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
                                    let frame = webchat::message_frame(message.seq, &message.author_kind, &message.body, &message.created_at, message.metadata.as_deref());
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

    /// The per-address and per-bot limits on messages.
    fn message_limits(&self) -> [Limit; 2] {
        let settings = &self.app.settings.realtime;
        [
            Limit::new(
                format!("chat:messages:ip:{}", self.ip.as_deref().unwrap_or("?")),
                settings.chat_messages_per_ip_per_minute,
            ),
            Limit::new(
                format!("chat:messages:bot:{}", self.bot.id),
                settings.chat_messages_per_bot_per_minute,
            ),
        ]
    }

    /// Stores a customer message from the widget; returns its conversation.
    async fn receive(&self, frame: &str) -> Result<Option<String>, String> {
        let message = webchat::parse_frame(&self.visitor, frame)?;
        let event = RoutedEvent {
            account: None,
            event: InboundEvent::Message(message),
        };
        crate::ingest::ingest(
            &self.app,
            &self.account,
            &self.bot.workspace_id,
            vec![event],
        )
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
    #[serde(default)]
    metadata: Option<String>,
}
