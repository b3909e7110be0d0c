//! `GET /ws/agent`: a workspace's events, live, for the agent console.

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, Message as WsMessage, Session};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::close;
use crate::auth;
use crate::context::App;
use crate::error::{ApiError, ErrorKind};
use crate::http::{AppState, same_origin};
use crate::hub::Feed;
use store::models::event::StoredEvent;
/// `GET /ws/agent?after=SEQ`.
pub(super) async fn agent_socket(
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
