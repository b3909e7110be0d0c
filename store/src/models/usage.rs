//! The model usage log: one row per bot turn — provider and model, the
//! model calls it made, prompt and completion tokens (reported by the
//! server or estimated), time spent waiting on the model, and the cost
//! from `llm.prices` at the time — and the report over a range: totals,
//! a daily series and a breakdown by model.
//!
//! As in [`analytics`](super::analytics), the report reads bounded rows and
//! sums them in Rust, identically on PostgreSQL and SQLite; it reuses that
//! module's day buckets, percentiles and row bound.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::analytics::{AnalyticsError, Interval, Percentiles, at_most};
use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::model_usage;

/// The provider name of turns answered without a model.
pub const EXTRACTIVE: &str = "extractive";

/// The most usage rows one report reads; a wider range is refused.
pub const MAX_ROWS: i64 = 1_000_000;

/// One turn's usage, as the worker records it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUsage<'a> {
    /// The bot's workspace.
    pub workspace_id: &'a str,
    /// The bot.
    pub bot_id: &'a str,
    /// The conversation.
    pub conversation_id: &'a str,
    /// The newest customer message the turn answered.
    pub message_id: Option<&'a str>,
    /// `extractive` or `openai`.
    pub provider: &'a str,
    /// The model asked (`None` for extractive turns).
    pub model: Option<&'a str>,
    /// Requests made to the model server.
    pub calls: u32,
    /// Prompt tokens, all calls.
    pub prompt_tokens: u64,
    /// Completion tokens, all calls.
    pub completion_tokens: u64,
    /// Some call's tokens were estimated.
    pub estimated: bool,
    /// Time spent waiting on the model, all calls, in milliseconds.
    pub latency_ms: u64,
    /// The cost; `None` when the model has no price.
    pub cost: Option<f64>,
}

/// A stored usage row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = model_usage)]
pub struct Usage {
    /// UUID.
    pub id: String,
    /// The bot's workspace.
    pub workspace_id: String,
    /// The bot.
    pub bot_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The newest customer message the turn answered.
    pub message_id: Option<String>,
    /// `extractive` or `openai`.
    pub provider: String,
    /// The model asked.
    pub model: Option<String>,
    /// Requests made to the model server.
    pub calls: i32,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Some call's tokens were estimated.
    pub estimated: bool,
    /// Time spent waiting on the model, in milliseconds.
    pub latency_ms: i64,
    /// The cost; `None` when the model had no price.
    pub cost: Option<f64>,
    /// Recorded.
    pub created_at: NaiveDateTime,
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl NewUsage<'_> {
    /// Stores the row.
    pub async fn insert(&self, conn: &mut DbConn) -> Result<(), DbError> {
        db_run!(conn: {
            diesel::insert_into(model_usage::table)
                .values((
                    model_usage::id.eq(new_id()),
                    model_usage::workspace_id.eq(self.workspace_id),
                    model_usage::bot_id.eq(self.bot_id),
                    model_usage::conversation_id.eq(self.conversation_id),
                    model_usage::message_id.eq(self.message_id),
                    model_usage::provider.eq(self.provider),
                    model_usage::model.eq(self.model),
                    model_usage::calls.eq(i32::try_from(self.calls).unwrap_or(i32::MAX)),
                    model_usage::prompt_tokens.eq(signed(self.prompt_tokens)),
                    model_usage::completion_tokens.eq(signed(self.completion_tokens)),
                    model_usage::estimated.eq(self.estimated),
                    model_usage::latency_ms.eq(signed(self.latency_ms)),
                    model_usage::cost.eq(self.cost),
                    model_usage::created_at.eq(now()),
                ))
                .execute(conn)
                .await?;
        });
        Ok(())
    }
}

impl Usage {
    /// The usage rows of a conversation, oldest first.
    pub async fn of_conversation(
        conn: &mut DbConn,
        conversation_id: &str,
    ) -> Result<Vec<Usage>, DbError> {
        Ok(db_run!(conn: {
            model_usage::table
                .filter(model_usage::conversation_id.eq(conversation_id))
                .order((model_usage::created_at, model_usage::id))
                .select(Usage::as_select())
                .load(conn)
                .await?
        }))
    }
}

/// What a report covers.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The workspace.
    pub workspace_id: String,
    /// Only this bot's turns.
    pub bot_id: Option<String>,
    /// From, inclusive (UTC).
    pub from: NaiveDateTime,
    /// To, exclusive (UTC).
    pub to: NaiveDateTime,
}

/// The figures of a range, a day or a model.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Figures {
    /// Bot turns (extractive ones included).
    pub turns: u64,
    /// Turns that called the model at least once.
    pub model_turns: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Turns whose tokens were (partly) estimated, not reported.
    pub estimated_turns: u64,
    /// Sum of the known costs.
    pub cost: f64,
    /// Some model turn had no price: `cost` leaves it out.
    pub cost_incomplete: bool,
    /// Time waiting on the model per model turn, in milliseconds; `null`
    /// without model turns.
    pub latency_ms: Percentiles,
}

/// One day of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// The UTC day, `YYYY-MM-DD`.
    pub start: NaiveDate,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// One provider and model's share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ByModel {
    /// `extractive` or `openai`.
    pub provider: String,
    /// The model (`null` for extractive turns).
    pub model: Option<String>,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// A usage report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The whole range.
    pub totals: Figures,
    /// Per UTC day, oldest first, covering the range.
    pub series: Vec<Day>,
    /// Per provider and model, in name order.
    pub by_model: Vec<ByModel>,
}

/// A row as the report reads it.
type Row = (
    NaiveDateTime,
    String,
    Option<String>,
    i32,
    i64,
    i64,
    bool,
    i64,
    Option<f64>,
);

/// Figures being summed, latencies kept until the percentiles.
#[derive(Debug, Clone, Default)]
struct Tally {
    figures: Figures,
    latencies: Vec<f64>,
}

impl Tally {
    fn add(&mut self, row: &Row) {
        let (_, _, _, calls, prompt, completion, estimated, latency_ms, cost) = *row;
        let f = &mut self.figures;
        f.turns += 1;
        f.prompt_tokens += u64::try_from(prompt).unwrap_or(0);
        f.completion_tokens += u64::try_from(completion).unwrap_or(0);
        f.estimated_turns += u64::from(estimated);
        match cost {
            Some(cost) => f.cost += cost,
            None => f.cost_incomplete = true,
        }
        if calls > 0 {
            f.model_turns += 1;
            self.latencies.push(latency_ms as f64);
        }
    }

    fn figures(&self) -> Figures {
        Figures {
            // Nine decimals: sums of binary fractions read as prices.
            cost: (self.figures.cost * 1e9).round() / 1e9,
            latency_ms: Percentiles::of(&self.latencies),
            ..self.figures.clone()
        }
    }
}

/// Makes the report of `scope`.
pub async fn report(conn: &mut DbConn, scope: &Scope) -> Result<Report, AnalyticsError> {
    let rows: Vec<Row> = db_run!(conn: {
        let mut query = model_usage::table
            .filter(model_usage::workspace_id.eq(&scope.workspace_id))
            .filter(model_usage::created_at.ge(scope.from))
            .filter(model_usage::created_at.lt(scope.to))
            .into_boxed();
        if let Some(bot) = &scope.bot_id {
            query = query.filter(model_usage::bot_id.eq(bot));
        }
        query
            .limit(MAX_ROWS + 1)
            .select((
                model_usage::created_at,
                model_usage::provider,
                model_usage::model,
                model_usage::calls,
                model_usage::prompt_tokens,
                model_usage::completion_tokens,
                model_usage::estimated,
                model_usage::latency_ms,
                model_usage::cost,
            ))
            .load(conn)
            .await
            .map_err(DbError::from)?
    });
    Ok(summarize(
        &at_most(rows, MAX_ROWS, "model usage rows")?,
        scope,
    ))
}

/// The report of `rows` (all within the scope's range).
fn summarize(rows: &[Row], scope: &Scope) -> Report {
    let starts = Interval::Day.buckets(scope.from, scope.to);
    let mut totals = Tally::default();
    let mut days = vec![Tally::default(); starts.len()];
    let mut models: BTreeMap<(String, Option<String>), Tally> = BTreeMap::new();
    for row in rows {
        totals.add(row);
        if let Some(i) = starts.partition_point(|s| *s <= row.0).checked_sub(1) {
            days[i].add(row);
        }
        models
            .entry((row.1.clone(), row.2.clone()))
            .or_default()
            .add(row);
    }
    Report {
        totals: totals.figures(),
        series: starts
            .iter()
            .zip(&days)
            .map(|(start, tally)| Day {
                start: start.date(),
                figures: tally.figures(),
            })
            .collect(),
        by_model: models
            .into_iter()
            .map(|((provider, model), tally)| ByModel {
                provider,
                model,
                figures: tally.figures(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn row(
        when: &str,
        model: Option<&str>,
        calls: i32,
        tokens: (i64, i64),
        cost: Option<f64>,
    ) -> Row {
        let provider = if model.is_some() {
            "openai"
        } else {
            EXTRACTIVE
        };
        (
            at(when),
            provider.to_owned(),
            model.map(str::to_owned),
            calls,
            tokens.0,
            tokens.1,
            false,
            i64::from(calls) * 100,
            cost,
        )
    }

    fn scope(from: &str, to: &str) -> Scope {
        Scope {
            workspace_id: "w".into(),
            bot_id: None,
            from: at(from),
            to: at(to),
        }
    }

    #[test]
    fn totals_days_and_models_add_up() {
        let mut estimated = row("2026-12-02 09:00:00", Some("b"), 1, (7, 3), None);
        estimated.6 = true;
        let rows = vec![
            row("2026-12-01 10:00:00", Some("a"), 1, (100, 20), Some(0.1)),
            row("2026-12-01 23:59:59", Some("a"), 2, (300, 40), Some(0.2)),
            row("2026-12-02 00:00:00", None, 0, (0, 0), Some(0.0)),
            estimated,
        ];
        let report = summarize(&rows, &scope("2026-12-01 00:00:00", "2026-12-03 00:00:00"));
        let t = &report.totals;
        assert_eq!((t.turns, t.model_turns, t.estimated_turns), (4, 3, 1));
        assert_eq!((t.prompt_tokens, t.completion_tokens), (407, 63));
        assert_eq!(t.cost, 0.3, "rounded, not 0.30000000000000004");
        assert!(t.cost_incomplete, "model b has no price");
        assert_eq!(t.latency_ms.p50, Some(100.0), "of model turns only");
        assert_eq!(t.latency_ms.p90, Some(180.0));

        let days: Vec<(String, u64, u64)> = report
            .series
            .iter()
            .map(|d| {
                (
                    d.start.to_string(),
                    d.figures.turns,
                    d.figures.prompt_tokens,
                )
            })
            .collect();
        assert_eq!(
            days,
            [("2026-12-01".into(), 2, 400), ("2026-12-02".into(), 2, 7)]
        );
        assert!(!report.series[0].figures.cost_incomplete);

        let models: Vec<(&str, Option<&str>, u64, f64)> = report
            .by_model
            .iter()
            .map(|m| {
                (
                    m.provider.as_str(),
                    m.model.as_deref(),
                    m.figures.turns,
                    m.figures.cost,
                )
            })
            .collect();
        assert_eq!(
            models,
            [
                (EXTRACTIVE, None, 1, 0.0),
                ("openai", Some("a"), 2, 0.3),
                ("openai", Some("b"), 1, 0.0)
            ]
        );
        let extractive = &report.by_model[0].figures;
        assert_eq!(extractive.latency_ms, Percentiles::default());
        assert!(!extractive.cost_incomplete);
    }

    #[test]
    fn an_empty_range_is_zeros() {
        let report = summarize(&[], &scope("2026-12-01 12:00:00", "2026-12-01 12:00:00"));
        assert_eq!(report.totals, Figures::default());
        assert!(report.series.is_empty() && report.by_model.is_empty());
        let json = serde_json::to_value(&report.totals).unwrap();
        assert_eq!(json["cost"], 0.0);
        assert_eq!(
            json["latency_ms"],
            serde_json::json!({"p50": null, "p90": null})
        );
    }
}
