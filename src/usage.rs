//! The model usage log: each bot turn leaves one row
//! ([`store::models::usage`]) with its provider and model, the tokens of
//! its model calls (as the server reported them, or counted with the
//! knowledge tokenizer and marked estimated), the time spent waiting on the
//! model, and the cost from `llm.prices`.
//!
//! The row is written in a task of its own: the turn never waits for the
//! tokenizer or the database, and a failure to record is logged, never the
//! turn's failure.

use answer::Answer;
use answer::usage::{ModelCall, Tokens, TurnUsage, tally};
use store::models::usage::{EXTRACTIVE, NewUsage};

use crate::context::App;
use crate::turn::TurnInput;

/// What a turn leaves to record.
#[derive(Debug, Clone)]
struct Pending {
    workspace_id: String,
    bot_id: String,
    conversation_id: String,
    message_id: Option<String>,
    provider: &'static str,
    model: Option<String>,
    calls: Vec<ModelCall>,
}

/// Records the usage of `answer`, the answer to `turn`, in the background.
/// `model` is the bot's model (for a model turn that made no call).
pub fn record(app: &App, turn: &TurnInput, model: Option<String>, answer: &Answer) {
    let conversation = &turn.conversation;
    let pending = Pending {
        workspace_id: conversation.workspace_id.clone(),
        bot_id: conversation.bot_id.clone(),
        conversation_id: conversation.id.clone(),
        message_id: turn.messages.last().map(|m| m.id.clone()),
        provider: answer.provider,
        model: match answer.provider {
            EXTRACTIVE => None,
            _ => answer.calls.first().map(|c| c.model.clone()).or(model),
        },
        calls: answer.calls.clone(),
    };
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(error) = store(&app, pending.clone()).await {
            tracing::error!(
                conversation = %pending.conversation_id,
                %error,
                "model usage of a turn not recorded"
            );
        }
    });
}

/// Counts what the server did not, prices the turn and stores its row.
async fn store(app: &App, pending: Pending) -> Result<(), String> {
    let estimating = pending
        .calls
        .iter()
        .any(|c| matches!(c.tokens, Tokens::Unreported { .. }));
    let used = if estimating {
        let counter = app.knowledge.counter().await;
        let calls = pending.calls.clone();
        // The tokenizer is CPU work: off the async threads.
        tokio::task::spawn_blocking(move || tally(&calls, &|text| counter.count(text)))
            .await
            .map_err(|e| e.to_string())?
    } else {
        tally(&pending.calls, &|_| 0)
    };
    let cost = cost(&app.settings.llm.prices, pending.model.as_deref(), &used);
    let row = NewUsage {
        workspace_id: &pending.workspace_id,
        bot_id: &pending.bot_id,
        conversation_id: &pending.conversation_id,
        message_id: pending.message_id.as_deref(),
        provider: pending.provider,
        model: pending.model.as_deref(),
        calls: used.calls,
        prompt_tokens: used.prompt_tokens,
        completion_tokens: used.completion_tokens,
        estimated: used.estimated,
        latency_ms: u64::try_from(used.latency.as_millis()).unwrap_or(u64::MAX),
        cost,
    };
    let mut conn = app.db.get().await.map_err(|e| e.to_string())?;
    row.insert(&mut conn).await.map_err(|e| e.to_string())
}

/// What a turn cost: nothing without model calls; else its tokens at the
/// model's price, or `None` when the model has no price.
fn cost(prices: &store::settings::Prices, model: Option<&str>, used: &TurnUsage) -> Option<f64> {
    if used.calls == 0 {
        return Some(0.0);
    }
    prices.cost(model?, used.prompt_tokens, used.completion_tokens)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use store::settings::{ModelPrice, Prices};

    use super::*;

    fn used(calls: u32, prompt: u64, completion: u64) -> TurnUsage {
        TurnUsage {
            calls,
            prompt_tokens: prompt,
            completion_tokens: completion,
            estimated: false,
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn a_turn_is_priced_by_its_model() {
        let prices = Prices(BTreeMap::from([(
            "gpt-4o-mini".to_owned(),
            ModelPrice {
                prompt_per_million: 0.15,
                completion_per_million: 0.6,
            },
        )]));
        let priced = cost(&prices, Some("gpt-4o-mini"), &used(2, 1_000_000, 100_000));
        assert!((priced.unwrap() - 0.21).abs() < 1e-12, "{priced:?}");
        assert_eq!(cost(&prices, Some("llama3"), &used(1, 10, 10)), None);
        assert_eq!(cost(&prices, None, &used(1, 10, 10)), None);
        assert_eq!(
            cost(&prices, None, &used(0, 0, 0)),
            Some(0.0),
            "no call costs nothing, priced or not"
        );
        assert_eq!(cost(&prices, Some("llama3"), &used(0, 0, 0)), Some(0.0));
    }
}
