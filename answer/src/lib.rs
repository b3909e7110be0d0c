//! Frontdesk's answering core.

pub mod extractive;
pub mod llm;
pub mod phrases;
pub mod prompt;
pub mod stream;
pub mod triage;
