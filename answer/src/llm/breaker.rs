//! Retry decisions and the circuit breaker.
//!
//! A failed attempt is a [`Failure`]: the error and whether another attempt
//! may follow ([`Retry`]). A finished call is an [`Outcome`] for the
//! [`CircuitBreaker`], which admits calls through a [`Permit`].

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::error::LlmError;

/// Longest `Retry-After` honoured; beyond it the call gives up at once.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Give up.
    No,
    /// Wait `retry_base`, doubled for each earlier retry.
    Backoff,
    /// Wait as the server asked (`Retry-After`).
    After(Duration),
}

/// A failed attempt: its error, and whether to try again.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) error: LlmError,
    pub(super) retry: Retry,
}

impl Failure {
    pub(super) fn new(error: LlmError, retry: Retry) -> Self {
        Failure { error, retry }
    }

    /// A failure not worth another attempt.
    pub(super) fn fatal(error: LlmError) -> Self {
        Failure::new(error, Retry::No)
    }
}

/// Whether an HTTP error status is worth another attempt, and when: 408,
/// 429 and 5xx are, after `Retry-After` seconds (up to ten) or the backoff.
pub(super) fn status_retry(status: u16, retry_after: Option<&str>) -> Retry {
    if !(status == 408 || status == 429 || (500..=599).contains(&status)) {
        return Retry::No;
    }
    match retry_after.and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(secs) if Duration::from_secs(secs) <= MAX_RETRY_AFTER => {
            Retry::After(Duration::from_secs(secs))
        }
        Some(_) => Retry::No,
        None => Retry::Backoff,
    }
}

/// `now + wait`, capped at a year so huge settings cannot overflow.
pub(super) fn later(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// A timeout is worth retrying unless it is the whole call's.
pub(super) fn retry_after_timeout(phase: &'static str) -> Retry {
    if phase == "total" {
        Retry::No
    } else {
        Retry::Backoff
    }
}

/// Whether an error (after retries) counts towards opening the breaker.
pub(super) fn counts_as_failure(error: &LlmError) -> bool {
    match error {
        LlmError::Status { status, .. } => {
            !(400..500).contains(status) || matches!(status, 401 | 403 | 408 | 429)
        }
        LlmError::Config(_) | LlmError::CircuitOpen => false,
        _ => true,
    }
}

/// What a finished call means for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Success,
    Failure,
    /// Says nothing about the server's health (our request was refused, or
    /// the receiver went away before an answer).
    Neutral,
}

/// Circuit breaker state.
#[derive(Debug, Clone, Copy)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Cooldown over; `trial` while the one trial call is in flight.
    HalfOpen {
        trial: bool,
    },
}

/// The circuit breaker of one client, shared by its clones: after
/// `threshold` consecutive failed calls it fails calls for `cooldown`, then
/// lets one trial call decide.
pub(super) struct CircuitBreaker {
    state: Mutex<Breaker>,
    /// Consecutive failed calls that open the circuit (0: never).
    threshold: u32,
    /// How long the open circuit fails calls before letting a trial through.
    cooldown: Duration,
    /// `host:port`, for the log.
    server: String,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub(super) fn new(threshold: u32, cooldown: Duration, server: String) -> Self {
        CircuitBreaker {
            state: Mutex::new(Breaker::Closed { failures: 0 }),
            threshold,
            cooldown,
            server,
        }
    }

    fn state(&self) -> MutexGuard<'_, Breaker> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether calls currently fail fast with [`LlmError::CircuitOpen`].
    pub(super) fn is_open(&self) -> bool {
        match *self.state() {
            Breaker::Closed { .. } => false,
            Breaker::Open { until } => Instant::now() < until,
            Breaker::HalfOpen { trial } => trial,
        }
    }

    /// Lets a call through, or refuses it with [`LlmError::CircuitOpen`].
    pub(super) fn admit(&self) -> Result<Permit<'_>, LlmError> {
        let permit = |trial| Permit {
            breaker: self,
            trial,
            done: false,
        };
        if self.threshold == 0 {
            return Ok(permit(false));
        }
        let mut state = self.state();
        match *state {
            Breaker::Closed { .. } => Ok(permit(false)),
            Breaker::Open { until } if Instant::now() < until => Err(LlmError::CircuitOpen),
            Breaker::Open { .. } | Breaker::HalfOpen { trial: false } => {
                *state = Breaker::HalfOpen { trial: true };
                tracing::info!(server = %self.server, "LLM circuit breaker half-open: letting one trial call through");
                Ok(permit(true))
            }
            Breaker::HalfOpen { trial: true } => Err(LlmError::CircuitOpen),
        }
    }

    /// Counts a finished call.
    fn record(&self, trial: bool, outcome: Outcome) {
        if self.threshold == 0 {
            return;
        }
        let mut state = self.state();
        match outcome {
            Outcome::Success => {
                if !matches!(*state, Breaker::Closed { .. }) {
                    tracing::info!(server = %self.server, "LLM circuit breaker closed: the server answers again");
                }
                *state = Breaker::Closed { failures: 0 };
            }
            Outcome::Failure => match *state {
                Breaker::Closed { failures } => {
                    let failures = failures.saturating_add(1);
                    if failures >= self.threshold {
                        *state = Breaker::Open {
                            until: later(self.cooldown),
                        };
                        tracing::warn!(
                            server = %self.server,
                            failures,
                            cooldown_secs = self.cooldown.as_secs_f64(),
                            "LLM circuit breaker open: calls fail fast until the cooldown ends"
                        );
                    } else {
                        *state = Breaker::Closed { failures };
                    }
                }
                Breaker::HalfOpen { .. } => {
                    *state = Breaker::Open {
                        until: later(self.cooldown),
                    };
                    tracing::warn!(
                        server = %self.server,
                        cooldown_secs = self.cooldown.as_secs_f64(),
                        "LLM circuit breaker open again: the trial call failed"
                    );
                }
                Breaker::Open { .. } => {}
            },
            Outcome::Neutral => {
                if trial && matches!(*state, Breaker::HalfOpen { .. }) {
                    *state = Breaker::HalfOpen { trial: false };
                }
            }
        }
    }
}

/// Admission through the breaker; an unfinished trial permit (the call's
/// future was dropped) frees the half-open slot.
pub(super) struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    done: bool,
}

impl Permit<'_> {
    /// Records how the admitted call ended.
    pub(super) fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker.record(self.trial, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record(self.trial, Outcome::Neutral);
        }
    }
}
