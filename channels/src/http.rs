//! Outbound HTTP with bounded retries.
//!
//! 5xx, 429 and network errors are retried with exponential backoff (capped),
//! honouring a server-given delay (`Retry-After`, Telegram's
//! `parameters.retry_after`) up to the cap; other 4xx are permanent. A send
//! never loops forever: after `max_attempts` it gives up with the last error.

use std::time::Duration;

use crate::SendError;

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Longest single wait, server-given delays included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// A shared HTTP client plus its retry policy.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    policy: RetryPolicy,
}

/// One attempt's verdict, decided by the platform module from the response.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// Done.
    Ok(T),
    /// Try again, after at least this long if the server said so.
    Retry {
        /// Why.
        error: String,
        /// Server-requested delay.
        after: Option<Duration>,
    },
    /// Stop.
    Permanent(String),
}

impl HttpClient {
    /// A client with a 30-second request timeout.
    pub fn new(policy: RetryPolicy) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("frontdesk/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { client, policy }
    }

    /// The same client, trying once: for best-effort calls such as typing
    /// indicators, which must never hold up a reply.
    pub fn once(&self) -> Self {
        Self {
            client: self.client.clone(),
            policy: RetryPolicy {
                max_attempts: 1,
                ..self.policy
            },
        }
    }

    /// POSTs `body` as JSON to `url` until `judge` accepts the response, says
    /// stop, or the attempts run out. `what` names the call in logs; the URL
    /// is never logged (it may hold a token).
    pub(crate) async fn post_json<T>(
        &self,
        what: &str,
        url: &str,
        bearer: Option<&str>,
        body: &serde_json::Value,
        judge: impl Fn(reqwest::StatusCode, Option<Duration>, &serde_json::Value) -> Attempt<T>,
    ) -> Result<T, SendError> {
        let mut last = String::new();
        for attempt in 1..=self.policy.max_attempts {
            let mut request = self.client.post(url).json(body);
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            let verdict = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let json = response
                        .json::<serde_json::Value>()
                        .await
                        .unwrap_or_default();
                    judge(status, retry_after, &json)
                }
                Err(e) => Attempt::Retry {
                    error: format!("request failed: {}", e.without_url()),
                    after: None,
                },
            };
            match verdict {
                Attempt::Ok(value) => return Ok(value),
                Attempt::Permanent(error) => return Err(SendError::Permanent(error)),
                Attempt::Retry { error, after } => {
                    tracing::warn!(what, attempt, %error, "send failed, will retry");
                    last = error;
                    if attempt < self.policy.max_attempts {
                        tokio::time::sleep(self.delay(attempt, after)).await;
                    }
                }
            }
        }
        Err(SendError::Exhausted {
            attempts: self.policy.max_attempts,
            last,
        })
    }

    fn delay(&self, attempt: u32, server: Option<Duration>) -> Duration {
        let backoff = self
            .policy
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        server
            .map_or(backoff, |s| s.max(backoff))
            .min(self.policy.max_delay)
    }
}

/// The usual verdict for a JSON API: 2xx ok, 429/5xx retry, other 4xx stop.
pub(crate) fn default_verdict(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    detail: impl FnOnce() -> String,
) -> Attempt<()> {
    if status.is_success() {
        Attempt::Ok(())
    } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Attempt::Retry {
            error: format!("HTTP {status}: {}", detail()),
            after: retry_after,
        }
    } else {
        Attempt::Permanent(format!("HTTP {status}: {}", detail()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_honours_the_server_and_is_capped() {
        let client = HttpClient::new(RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        });
        assert_eq!(client.delay(1, None), Duration::from_millis(100));
        assert_eq!(client.delay(3, None), Duration::from_millis(400));
        assert_eq!(
            client.delay(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            client.delay(1, Some(Duration::from_secs(99))),
            Duration::from_secs(2)
        );
        assert_eq!(client.delay(30, None), Duration::from_secs(2));
    }
}
