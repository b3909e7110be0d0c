//! Websockets: `GET /ws/agent` streams a workspace's events to agents,
//! `GET /ws/chat/{bot}` is the web chat widget's customer session.
//!
//! Each node subscribes once per workspace to the broker's pub/sub (the
//! [`Hub`](crate::hub::Hub)) and fans events out to its sockets, so events
//! published on any node reach every node's sockets. Events are numbered in
//! the database's event log: a socket that falls behind (a slow client, a
//! broker reconnect) or reconnects with `?after=SEQ` replays what it missed
//! from there; the widget replays its conversation's messages by seq.
//!
//! - `agent` — the agent console's socket.
//! - `chat` — the widget's socket; the widget's frames and tokens are the
//!   `channels::webchat` adapter's.

mod agent;
mod chat;

use actix_web::web;
use actix_ws::{CloseCode, CloseReason};

use crate::http::resource;

/// Mounts the websocket routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ws/agent").route(web::get().to(agent::agent_socket)))
        .service(resource("/ws/chat/{bot}").route(web::get().to(chat::chat_socket)));
}

fn close(code: CloseCode, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(description.to_owned()),
    })
}
