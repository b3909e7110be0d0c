//! What can go wrong in a call to the language model.

/// Why a call to the language model failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// Recent calls failed; this one was refused without contacting the server.
    #[error("the language model is paused after repeated failures (circuit breaker open)")]
    CircuitOpen,
    /// The server answered with an HTTP error status.
    #[error("the language model server answered HTTP {status}: {detail}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The server's message, shortened and scrubbed of the API key.
        detail: String,
    },
    /// No answer in time; the phase is `connect`, `first token`,
    /// `between tokens` or `total`.
    #[error("the language model server did not answer in time ({0})")]
    Timeout(&'static str),
    /// The server could not be reached, or the connection broke before any token.
    #[error("cannot reach the language model server: {0}")]
    Connect(String),
    /// The answer was not a readable chat completion, or the server reported
    /// an error inside it.
    #[error("unusable answer from the language model server: {0}")]
    Malformed(String),
    /// The answer ended without any content.
    #[error("the language model returned an empty answer")]
    Empty,
    /// The answer broke off after `tokens` deltas had been sent.
    #[error("the language model's answer was cut off after {tokens} tokens")]
    CutOff {
        /// Content deltas already sent.
        tokens: usize,
    },
    /// The client's options or the request cannot be used.
    #[error("the language model client is misconfigured: {0}")]
    Config(String),
}
