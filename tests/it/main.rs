//! End-to-end tests of the whole gateway, in one test binary (one link).
//!
//! Database tests run on both backends: SQLite on a temporary file, and
//! PostgreSQL on a fresh database per test, created from `TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped after.
//! Without PostgreSQL or Redis the tests that need them skip loudly, except
//! under `CI=true`, where they fail.

// Test helpers fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod admin;
mod agents;
mod analytics;
mod answer;
mod browser;
mod channel_setup;
mod cli;
mod common;
mod gaps;
mod hygiene;
mod knowledge;
mod meta;
mod migrations;
mod server;
mod sources;
mod storage;
mod tls;
mod usage;
mod webhooks;
mod worker;
