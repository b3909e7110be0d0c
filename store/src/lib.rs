//! Frontdesk's store: the source of truth in SQL, on PostgreSQL or SQLite.
//!
//! # Layout
//!
//! - [`settings`] — `[database]`: the URL (password hidden in logs) and the
//!   pool's limits.
//! - [`db`] — one pool over either backend, the [`db_run!`] dispatch point
//!   that compiles each query once per backend, and the migrations embedded
//!   from the workspace's `migrations/postgres` and `migrations/sqlite`.
//! - [`tls`] — PostgreSQL connections over TLS: libpq's `sslmode` and
//!   `sslrootcert` on rustls.
//! - [`schema`] — diesel's table definitions, portable types only (ids and
//!   JSON as text).
//! - [`models`] — one file per model: its struct and its queries.
//! - [`crypto`] — AES-256-GCM sealing of channel credentials at rest.
//!
//! # Data flow
//!
//! A command opens a [`db::Db`] from [`settings::DatabaseSettings`], which
//! applies pending migrations; callers take a connection from the pool and
//! call model functions (`Conversation::transition`, `Message::insert_inbound`,
//! …), each of which runs one query or one transaction through `db_run!`.
//! Secrets go through [`crypto::MasterKey`] before they reach a model. This
//! crate knows nothing of HTTP or the broker; it takes plain types from
//! `channels` and `knowledge` only.

pub mod crypto;
pub mod db;
pub mod models;
pub mod schema;
pub mod settings;
pub mod tls;
