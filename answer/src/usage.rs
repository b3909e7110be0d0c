//! What a turn asked of the model: one [`ModelCall`] per request (the
//! answer, the handoff's triage), with the tokens the server reported or,
//! when it reported none, the texts to count them from. [`tally`] sums a
//! turn's calls, counting the unreported ones with the caller's tokenizer.
//!
//! Counting is left to the caller: the tokenizer lives with the knowledge
//! index, and counting is work the turn need not wait for.

use std::time::{Duration, Instant};

use crate::llm::{ChatMessage, LlmError, TokenUsage};

/// Tokens a chat format adds around each message (role and separators),
/// added to an estimate per message, as OpenAI's counting guide does.
pub const MESSAGE_OVERHEAD: u64 = 4;

/// Why the model was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Writing the answer.
    Answer,
    /// Category, sentiment and urgency of a handoff.
    Triage,
}

/// The tokens of one call, as far as they are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tokens {
    /// As the server reported them.
    Reported(TokenUsage),
    /// Not reported: the request's message contents and the content
    /// received, to be counted.
    Unreported {
        /// Content of each message sent.
        prompt: Vec<String>,
        /// Content received (maybe cut short).
        completion: String,
    },
    /// The call failed before the server answered: nothing to count.
    Nothing,
}

/// One request to the model server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCall {
    /// Why.
    pub purpose: Purpose,
    /// The model asked.
    pub model: String,
    /// Its tokens.
    pub tokens: Tokens,
    /// From sending the request to its last token (or its failure).
    pub latency: Duration,
}

impl ModelCall {
    /// The call of `model` with `messages`, started at `started`, that
    /// ended with `ended` (the server's count, if it reported one) after
    /// receiving `received`.
    pub fn ended(
        purpose: Purpose,
        model: &str,
        messages: &[ChatMessage],
        started: Instant,
        ended: Result<Option<TokenUsage>, &LlmError>,
        received: &str,
    ) -> ModelCall {
        let tokens = match ended {
            Ok(Some(usage)) => Tokens::Reported(usage),
            // Failed before any content: the server answered nothing (a
            // refusal, an unreachable server) and charges nothing.
            Err(_) if received.is_empty() => Tokens::Nothing,
            Ok(None) | Err(_) => Tokens::Unreported {
                prompt: messages.iter().map(|m| m.content.clone()).collect(),
                completion: received.to_owned(),
            },
        };
        ModelCall {
            purpose,
            model: model.to_owned(),
            tokens,
            latency: started.elapsed(),
        }
    }
}

/// A turn's calls summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TurnUsage {
    /// Requests made.
    pub calls: u32,
    /// Prompt tokens, all calls.
    pub prompt_tokens: u64,
    /// Completion tokens, all calls.
    pub completion_tokens: u64,
    /// Some call's tokens were counted here, not reported by the server.
    pub estimated: bool,
    /// Time spent waiting on the model, all calls.
    pub latency: Duration,
}

/// Sums `calls`, counting the tokens of unreported ones with `count`
/// (tokens in a text) plus [`MESSAGE_OVERHEAD`] per message sent.
pub fn tally(calls: &[ModelCall], count: &dyn Fn(&str) -> usize) -> TurnUsage {
    let mut sum = TurnUsage::default();
    for call in calls {
        sum.calls += 1;
        sum.latency += call.latency;
        match &call.tokens {
            Tokens::Reported(usage) => {
                sum.prompt_tokens += usage.prompt_tokens;
                sum.completion_tokens += usage.completion_tokens;
            }
            Tokens::Unreported { prompt, completion } => {
                sum.estimated = true;
                sum.prompt_tokens += prompt
                    .iter()
                    .map(|m| count(m) as u64 + MESSAGE_OVERHEAD)
                    .sum::<u64>();
                sum.completion_tokens += count(completion) as u64;
            }
            Tokens::Nothing => {}
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    fn call(tokens: Tokens, ms: u64) -> ModelCall {
        ModelCall {
            purpose: Purpose::Answer,
            model: "m".into(),
            tokens,
            latency: Duration::from_millis(ms),
        }
    }

    #[test]
    fn reported_counts_are_summed_as_they_are() {
        let usage = |p, c| {
            Tokens::Reported(TokenUsage {
                prompt_tokens: p,
                completion_tokens: c,
            })
        };
        let sum = tally(&[call(usage(100, 20), 300), call(usage(40, 5), 50)], &words);
        assert_eq!(
            sum,
            TurnUsage {
                calls: 2,
                prompt_tokens: 140,
                completion_tokens: 25,
                estimated: false,
                latency: Duration::from_millis(350),
            }
        );
    }

    #[test]
    fn unreported_counts_are_estimated_and_said_so() {
        let unreported = Tokens::Unreported {
            prompt: vec!["be brief".into(), "where is my order".into()],
            completion: "it ships today".into(),
        };
        let sum = tally(&[call(unreported, 10), call(Tokens::Nothing, 5)], &words);
        assert_eq!(sum.calls, 2);
        assert_eq!(sum.prompt_tokens, 2 + 4 + 2 * MESSAGE_OVERHEAD);
        assert_eq!(sum.completion_tokens, 3);
        assert!(sum.estimated);
        assert_eq!(sum.latency, Duration::from_millis(15));
    }

    #[test]
    fn no_calls_cost_nothing() {
        assert_eq!(tally(&[], &words), TurnUsage::default());
    }

    #[test]
    fn a_call_failing_before_any_content_counts_nothing() {
        let messages = [ChatMessage::user("hello there")];
        let error = LlmError::Empty;
        let failed = ModelCall::ended(
            Purpose::Answer,
            "m",
            &messages,
            Instant::now(),
            Err(&error),
            "",
        );
        assert_eq!(failed.tokens, Tokens::Nothing);
        let cut = ModelCall::ended(
            Purpose::Answer,
            "m",
            &messages,
            Instant::now(),
            Err(&error),
            "half an",
        );
        assert_eq!(
            cut.tokens,
            Tokens::Unreported {
                prompt: vec!["hello there".into()],
                completion: "half an".into()
            }
        );
        let usage = TokenUsage {
            prompt_tokens: 3,
            completion_tokens: 1,
        };
        let whole = ModelCall::ended(
            Purpose::Triage,
            "m",
            &messages,
            Instant::now(),
            Ok(Some(usage)),
            "ok",
        );
        assert_eq!(whole.tokens, Tokens::Reported(usage));
    }
}
