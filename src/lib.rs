//! Frontdesk: a multi-channel customer-support gateway. This crate is the
//! top of the house: HTTP and websockets, ingest, the worker loop, delivery,
//! the API, the console pages, the CLI and the one start-up. Below it sit
//! `answer` (the decision and generation), `store` (SQL), `broker` (queue,
//! locks, pub/sub), `channels` (platform adapters) and `knowledge`
//! (extraction, embeddings, hybrid search).
//!
//! # Layout
//!
//! Modules from the bottom up; each uses only modules above it in this list.
//!
//! - [`config`] — typed, layered settings (defaults, `config/frontdesk.toml`,
//!   `--config`, `FRONTDESK__*` variables); [`telemetry`] — logging;
//!   [`error`] — the one table from errors to HTTP statuses and codes.
//! - [`metrics`] — Prometheus metrics of the process; [`kb`] — knowledge
//!   bases: ingesting documents into SQL, this node's search indexes;
//!   [`botfiles`] — `config/bots/*.toml`, upserted whenever the database
//!   opens.
//! - [`door`] — the group commit: customer messages of concurrent webhooks
//!   stored in one transaction, each webhook answered on its own;
//!   [`accounts`] — this node's channel accounts, credentials decrypted, in
//!   memory.
//! - [`context`] — [`context::App`], the context every service takes
//!   (settings, database, broker, door, accounts, channel adapters,
//!   knowledge, metrics).
//! - [`events`] — realtime events: logged, then published per workspace;
//!   [`hub`] — this node's subscriptions, shared by its websockets.
//! - [`ingest`] — verified inbound events → stored messages → queued turns;
//!   [`handoff`] — who answers a conversation (bot, people); [`gaps`] —
//!   what handoffs teach: knowledge gaps and similar resolved cases;
//!   [`delivery`] — a stored reply → the customer's channel; [`window`] —
//!   what Meta's 24-hour messaging window lets a reply do now;
//!   [`channel_setup`] — registering webhooks with platforms, and what a
//!   business pastes where to connect a channel.
//! - [`turn`] — the responder contract between the worker and what answers;
//!   [`usage`] — the model usage log: a turn's model calls, counted and
//!   priced, stored off the turn's path;
//!   [`answerer`] — the `answer` crate's pipeline over this process's bots
//!   and knowledge (the production responder); [`rehearsal`] — a question
//!   put to that pipeline with no customer (`frontdesk ask`, the console's
//!   "try a question"); [`worker`] — one turn at a time under the
//!   conversation's lock, and the loops around it.
//! - [`auth`] — users, sessions, tokens, roles; [`http`] — what handlers
//!   share: state, request id, 405 routes, the same-origin check.
//! - Handlers: [`webhooks`] (one route family per channel), [`api`] (REST
//!   `/api/v1`), [`realtime`] (`/ws/agent`, `/ws/chat/{bot}`), [`console`]
//!   (the pages).
//! - [`server`] — the actix-web server: mounts the handlers, request ids,
//!   metrics, body limits, health and readiness, graceful shutdown.
//! - [`app`] — opening everything in order, and [`app::start`], the one
//!   start-up that `main`, the tests and the benchmarks share; [`cli`] —
//!   the `frontdesk` command.
//!
//! # Data flow
//!
//! A platform posts a webhook → [`webhooks`] finds the channel account in
//! [`accounts`], has its `channels` adapter verify the signature over the
//! raw bytes and parse the body → [`ingest`] hands the messages to the
//! [`door`], which stores each once (deduped on its external id) with other
//! webhooks' messages in one commit, then enqueues the conversations on the
//! broker → the
//! [`worker`] claims the turn, locks the conversation, reads the unanswered
//! messages and, while the bot has the conversation, asks its
//! [`turn::Responder`] → the [`answerer`] loads the bot, searches its
//! knowledge and runs `answer::Pipeline`, which streams paragraphs back →
//! the worker stores, publishes ([`events`]) and sends ([`delivery`]) each
//! paragraph → a handoff in the verdict goes through [`handoff`] to the
//! agents, who follow on [`realtime`] and act through [`api`].

pub mod accounts;
pub mod answerer;
pub mod api;
pub mod app;
pub mod auth;
pub mod botfiles;
pub mod channel_setup;
pub mod cli;
pub mod config;
pub mod console;
pub mod context;
pub mod delivery;
pub mod door;
pub mod error;
pub mod events;
pub mod gaps;
pub mod handoff;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod kb;
pub mod metrics;
pub mod realtime;
pub mod rehearsal;
pub mod server;
pub mod telemetry;
pub mod turn;
pub mod usage;
pub mod webhooks;
pub mod window;
pub mod worker;
