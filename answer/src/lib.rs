//! Frontdesk's answering core: from a customer's question and the passages
//! retrieval found, to paragraphs streamed to the customer, or a handoff to
//! a person. It knows nothing of HTTP, the database or the broker; the
//! gateway hands it plain inputs ([`input`]) and a channel for paragraphs.
//!
//! # Layout
//!
//! - [`input`] — what the core is given: the bot as it answers, passages,
//!   options.
//! - [`decision`] — answer, offer "did you mean…" choices, or hand off,
//!   from the candidates' calibrated probabilities.
//! - [`pipeline`] — the turn: the decision, the bot's policy when it does
//!   not know, and generation, paragraph by paragraph.
//! - [`phrases`] — a customer asking for a person, in sixteen languages.
//! - [`extractive`] — the offline answerer: the best sentences of the best
//!   passages.
//! - [`prompt`] — the delimited prompt and the check that an answer does
//!   not quote its instructions.
//! - [`llm`] — the OpenAI-compatible streaming client: retries before the
//!   first token, timeouts, a circuit breaker.
//! - [`stream`] — the model's output cleaned of markup and cut into
//!   paragraphs as it streams.
//! - [`triage`] — category, sentiment and urgency of a handoff, by the
//!   model or by rules.
//! - [`handoff`] — what a handoff carries.
//! - [`usage`] — the model calls of a turn, their tokens and latency.
//!
//! # Data flow
//!
//! [`Pipeline::answer`] takes a [`Question`] and a [`Retrieval`]: a customer
//! asking for a person, or a confidence below the bot's threshold, goes to
//! the bot's `on_unknown` policy; otherwise the extractive answerer or the
//! model writes the answer, [`stream::MarkupFilter`] strips the model's
//! status and citation markup, [`stream::ParagraphBuffer`] cuts paragraphs,
//! and each goes into the caller's channel as soon as it is complete. The
//! returned [`Answer`] carries the sources, the draft and any handoff
//! [`handoff::Request`] (with its [`triage::Triage`]) and the model calls
//! made ([`usage::ModelCall`]).

pub mod decision;
pub mod extractive;
pub mod handoff;
pub mod input;
pub mod llm;
pub mod phrases;
pub mod pipeline;
pub mod prompt;
pub mod stream;
pub mod triage;
pub mod usage;

pub use input::{BotProfile, Choice, Generator, OnUnknown, Options, Passage, Retrieval};
pub use pipeline::{Answer, Paragraph, Pipeline, Question};
