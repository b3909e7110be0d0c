//! Frontdesk: a multi-channel customer-support gateway.
//!
//! # Layout
//!
//! - [`config`] — typed, layered settings (defaults, `config/frontdesk.toml`,
//!   `--config`, `FRONTDESK__*` variables).
//! - [`db`] and [`schema`] — one connection pool over PostgreSQL or SQLite,
//!   the [`db_run!`] dispatch point, embedded migrations.
//! - [`models`] — one file per model: its struct and its queries.
//! - [`crypto`] — AES-256-GCM sealing of channel credentials.
//! - [`botfiles`] — `config/bots/*.toml`, upserted whenever the database opens.
//! - [`app`] — opening everything a command needs, in order.
//! - [`server`] — the actix-web application: health, readiness, metrics,
//!   request ids, body limits, graceful shutdown.
//! - [`cli`] — the `frontdesk` command.
//!
//! # Data flow
//!
//! `main` parses the command line and loads the settings; [`app::open`]
//! connects the database, applies migrations, checks the master key and
//! upserts the bot files; `serve` then builds the HTTP server with
//! [`server::build`] (the same function the tests call). Channel webhooks,
//! the queue and worker, the knowledge base and the answer pipeline plug in
//! behind these in later modules and in the `channels` and `knowledge` crates.

pub mod answerer;
pub mod api;
pub mod app;
pub mod auth;
pub mod botfiles;
pub mod cli;
pub mod config;
pub mod console;
pub mod context;
pub mod delivery;
pub mod error;
pub mod events;
pub mod handoff;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod kb;
pub mod metrics;
pub mod realtime;
pub mod server;
pub mod telemetry;
pub mod turn;
pub mod webhooks;
pub mod worker;
