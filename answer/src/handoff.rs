//! What a handoff carries: why the bot gave the conversation to people,
//! the question, the bot's draft and its sources, and the triage.

use serde::Serialize;

use crate::triage::Triage;

/// Why a conversation goes to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Retrieval confidence below the bot's `min_confidence`.
    LowConfidence,
    /// The model said the knowledge does not hold the answer.
    NoInformation,
    /// The customer asked for a person.
    CustomerAsked,
    /// The model failed (error, timeout, empty or cut-off answer, open circuit).
    GenerationFailed,
    /// The model's answer quoted its instructions; it was not sent.
    UnsafeOutput,
    /// An agent or an API client asked for it.
    Requested,
    /// An email whose sender failed authentication (SPF and DKIM): the bot
    /// does not answer whoever `From` claims to be.
    UnverifiedSender,
    /// The bot reached its most replies in the conversation for the hour
    /// (another machine may be answering it).
    ReplyLimit,
}

impl Reason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LowConfidence => "low_confidence",
            Reason::NoInformation => "no_information",
            Reason::CustomerAsked => "customer_asked",
            Reason::GenerationFailed => "generation_failed",
            Reason::UnsafeOutput => "unsafe_output",
            Reason::Requested => "requested",
            Reason::UnverifiedSender => "unverified_sender",
            Reason::ReplyLimit => "reply_limit",
        }
    }

    /// The reason with this stored name.
    pub fn parse(name: &str) -> Option<Reason> {
        [
            Reason::LowConfidence,
            Reason::NoInformation,
            Reason::CustomerAsked,
            Reason::GenerationFailed,
            Reason::UnsafeOutput,
            Reason::Requested,
            Reason::UnverifiedSender,
            Reason::ReplyLimit,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }
}

/// A source of an answer, as agents and the CLI see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    /// Its number in the prompt, from 1.
    pub n: usize,
    /// The chunk.
    pub chunk_id: String,
    /// The document (file name, or an FAQ entry's id).
    pub doc_ref: String,
    /// Document and section, or the FAQ question.
    pub label: String,
    /// Search score.
    pub score: f32,
    /// How likely it answers the question, 0–1 (calibrated).
    pub probability: f32,
    /// Whether the answer used it.
    pub cited: bool,
}

/// A handoff to record.
#[derive(Debug, Clone)]
pub struct Request {
    /// Why.
    pub reason: Reason,
    /// Details (the phrase, the error).
    pub detail: Option<String>,
    /// The customer's question.
    pub question: String,
    /// The bot's draft answer (may be empty).
    pub draft: String,
    /// Its sources.
    pub sources: Vec<Source>,
    /// Retrieval confidence.
    pub confidence: f32,
    /// Triage.
    pub triage: Triage,
    /// The user who asked for it.
    pub requested_by: Option<String>,
}
