//! Rate limits: sliding windows of attempts per key (an email, a client
//! address, a bot). An attempt is admitted only when every key it names has
//! room, and then counts against each of them at once, so concurrent
//! attempts cannot all slip past a limit. A successful attempt can be taken
//! back ([`Broker::forgive`](crate::Broker::forgive)).
//!
//! The in-process broker keeps its windows here; Redis keeps them in sorted
//! sets, shared by every node (`redis.rs`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One key of an attempt and the most attempts it allows per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// What is counted, e.g. `login:ip:1.2.3.4`.
    pub key: String,
    /// Attempts allowed per window.
    pub max: u32,
}

impl Limit {
    /// `max` attempts per window for `key`.
    pub fn new(key: impl Into<String>, max: u32) -> Self {
        Self {
            key: key.into(),
            max,
        }
    }
}

/// Keys tracked at most before expired windows are swept (bounded memory
/// under a flood of distinct keys).
const SWEEP_ABOVE: usize = 100_000;

/// In-process sliding windows.
#[derive(Debug, Default)]
pub struct Windows {
    attempts: HashMap<String, VecDeque<(Instant, String)>>,
}

impl Windows {
    /// Admits attempt `id` when every limit has room in the last `window`,
    /// counting it against each; otherwise returns how long until the
    /// fullest key has room.
    pub fn admit(
        &mut self,
        limits: &[Limit],
        id: &str,
        window: Duration,
        now: Instant,
    ) -> Option<Duration> {
        if self.attempts.len() > SWEEP_ABOVE {
            self.attempts
                .retain(|_, times| times.back().is_some_and(|(t, _)| now - *t < window));
        }
        let mut wait = None;
        for limit in limits {
            let Some(times) = self.attempts.get_mut(&limit.key) else {
                if limit.max == 0 {
                    wait = wait.max(Some(window));
                }
                continue;
            };
            while times.front().is_some_and(|(t, _)| now - *t >= window) {
                times.pop_front();
            }
            if times.len() >= limit.max as usize {
                let oldest = times.front().map_or(now, |(t, _)| *t);
                let room = window
                    .saturating_sub(now - oldest)
                    .max(Duration::from_millis(1));
                wait = wait.max(Some(room));
            }
        }
        if wait.is_some() {
            return wait;
        }
        for limit in limits {
            self.attempts
                .entry(limit.key.clone())
                .or_default()
                .push_back((now, id.to_owned()));
        }
        None
    }

    /// Takes attempt `id` back from each key.
    pub fn forgive(&mut self, keys: &[String], id: &str) {
        for key in keys {
            if let Some(times) = self.attempts.get_mut(key) {
                times.retain(|(_, attempt)| attempt != id);
                if times.is_empty() {
                    self.attempts.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_when_admitted_and_can_be_forgiven() {
        let mut windows = Windows::default();
        let window = Duration::from_secs(60);
        let start = Instant::now();
        let limits = [Limit::new("email:a", 2), Limit::new("ip:1", 3)];
        assert_eq!(windows.admit(&limits, "1", window, start), None);
        assert_eq!(windows.admit(&limits, "2", window, start), None);
        // The email is full: refused, and the refusal does not count.
        let wait = windows.admit(&limits, "3", window, start + Duration::from_secs(10));
        assert_eq!(wait, Some(Duration::from_secs(50)));
        // The address still has room for another email.
        let other = [Limit::new("email:b", 2), Limit::new("ip:1", 3)];
        assert_eq!(windows.admit(&other, "4", window, start), None);
        assert!(windows.admit(&other, "5", window, start).is_some());
        // A success is taken back from both keys.
        windows.forgive(&["email:a".into(), "ip:1".into()], "2");
        assert_eq!(windows.admit(&limits, "6", window, start), None);
        // The window slides.
        let later = start + window;
        assert_eq!(windows.admit(&other, "7", window, later), None);
        // A zero limit admits nothing.
        assert!(
            windows
                .admit(&[Limit::new("x", 0)], "8", window, later)
                .is_some()
        );
    }
}
