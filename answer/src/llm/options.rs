//! Where the server is and how patient to be with it.

use std::fmt;
use std::time::Duration;

/// Where the server is and how patient to be with it.
#[derive(Clone)]
pub struct ClientOptions {
    /// Base URL ending in the API version, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`; never logged.
    pub api_key: Option<String>,
    /// Longest TCP (and TLS) connect.
    pub connect_timeout: Duration,
    /// Longest wait from sending a request to the first content token.
    pub first_token_timeout: Duration,
    /// Longest gap between two chunks once tokens flow.
    pub idle_timeout: Duration,
    /// Longest whole call, retries included.
    pub total_timeout: Duration,
    /// Extra attempts of a call that fails before its first token.
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one.
    pub retry_base: Duration,
    /// Consecutive failed calls that open the circuit (0: never).
    pub breaker_failures: u32,
    /// How long the open circuit fails calls before letting a trial through.
    pub breaker_cooldown: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            base_url: "http://127.0.0.1:11434/v1".to_owned(),
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            first_token_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(120),
            retries: 2,
            retry_base: Duration::from_millis(250),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("connect_timeout", &self.connect_timeout)
            .field("first_token_timeout", &self.first_token_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("retries", &self.retries)
            .field("retry_base", &self.retry_base)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .finish()
    }
}
