//! Analytics: what a workspace's bots and agents did over a time range —
//! conversations, deflection, handoffs and their reasons, response and
//! resolution times, "did you mean…" offers and picks — in total and per
//! day or ISO week.
//!
//! Nothing here is backend-specific SQL: the queries fetch bounded rows
//! (conversations of the range, then their messages and handoffs a chunk
//! of conversations at a time) and the counting, durations and
//! percentiles are computed here in Rust, identically on PostgreSQL and
//! SQLite.
//!
//! Attribution: every conversation-level figure belongs to the bucket of
//! the conversation's creation, whenever its later messages came;
//! `customer_messages` counts customer messages by their own time. So the
//! series always sums to the totals.

use std::collections::BTreeMap;

use channels::choices::{self, Offer};
use chrono::{DateTime, Datelike, Duration, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::db::{DbConn, DbError};
use crate::db_run;
use crate::models::message::{AuthorKind, Direction};
use crate::schema::{conversations, handoffs, messages};

/// The most conversations one report reads; a wider range is refused
/// rather than answered from a sample.
pub const MAX_CONVERSATIONS: i64 = 100_000;
/// The most customer messages one report reads.
pub const MAX_CUSTOMER_MESSAGES: i64 = 1_000_000;
/// The most buckets in a series.
pub const MAX_BUCKETS: i64 = 1_000;
/// Conversations whose messages are read per query.
const CHUNK: usize = 500;

/// Bucket width of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// UTC days, from midnight.
    Day,
    /// ISO weeks, from Monday 00:00 UTC.
    Week,
}

impl Interval {
    /// The start of the bucket holding `at`.
    pub fn floor(self, at: NaiveDateTime) -> NaiveDateTime {
        let day = at.date();
        let day = match self {
            Interval::Day => day,
            Interval::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
        };
        day.and_time(chrono::NaiveTime::MIN)
    }

    /// Bucket width.
    pub fn step(self) -> TimeDelta {
        match self {
            Interval::Day => Duration::days(1),
            Interval::Week => Duration::days(7),
        }
    }

    /// The starts of the buckets covering `[from, to)`; none when it is
    /// empty.
    pub fn buckets(self, from: NaiveDateTime, to: NaiveDateTime) -> Vec<NaiveDateTime> {
        let mut starts = Vec::new();
        if to <= from {
            return starts;
        }
        let mut at = self.floor(from);
        while at < to {
            starts.push(at);
            at += self.step();
        }
        starts
    }

    /// How many buckets cover `[from, to)`, without making them.
    pub fn count(self, from: NaiveDateTime, to: NaiveDateTime) -> i64 {
        if to <= from {
            return 0;
        }
        let span = to - self.floor(from);
        let step = self.step().num_seconds();
        (span.num_seconds() + step - 1) / step
    }
}

/// What a report covers.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The workspace.
    pub workspace_id: String,
    /// Only this bot's conversations.
    pub bot_id: Option<String>,
    /// Only conversations on these channel accounts.
    pub accounts: Option<Vec<String>>,
    /// From, inclusive (UTC).
    pub from: NaiveDateTime,
    /// To, exclusive (UTC).
    pub to: NaiveDateTime,
    /// Series bucket width.
    pub interval: Interval,
}

/// Why a report was not made.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The range holds more than a report reads.
    #[error("the range holds more than {limit} {what}: choose a shorter one")]
    TooMany {
        /// `conversations` or `customer messages`.
        what: &'static str,
        /// The bound.
        limit: i64,
    },
}

/// The 50th and 90th percentiles of durations, in fractional seconds;
/// `null` without data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
}

impl Percentiles {
    /// Of `values` (any order), linearly interpolated between ranks.
    pub fn of(values: &[f64]) -> Percentiles {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Percentiles {
            p50: percentile(&sorted, 0.5),
            p90: percentile(&sorted, 0.9),
        }
    }
}

/// The `p` quantile (0 to 1) of sorted `values`, linearly interpolated.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = p * last as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (a, b) = (sorted[lo.min(last)], sorted[hi.min(last)]);
    Some(a + (b - a) * (rank - lo as f64))
}

/// The figures of a range or of one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Figures {
    /// Conversations opened.
    pub conversations: u64,
    /// Customer (inbound) messages stored.
    pub customer_messages: u64,
    /// Conversations the bot replied in (an answer or offered choices) and
    /// never handed off.
    pub answered_by_bot: u64,
    /// Conversations handed off at least once.
    pub handed_off: u64,
    /// Handoffs per reason (a conversation handed off twice counts twice).
    pub handoff_reasons: BTreeMap<String, u64>,
    /// `answered_by_bot / conversations`; 0 without conversations.
    pub deflection_rate: f64,
    /// From the customer's first message to the first reply of the bot or
    /// an agent (a handoff notice counts: the customer heard back).
    pub first_response_seconds: Percentiles,
    /// From the first handoff to the first agent reply after it.
    pub agent_first_response_seconds: Percentiles,
    /// From opening to resolution (`conversations.resolved_at`, stamped
    /// when an agent resolves), of resolved conversations.
    pub resolution_seconds: Percentiles,
    /// "Did you mean…" offers made.
    pub choices_offered: u64,
    /// Offered options picked (a button or a typed number; "none of these"
    /// is not counted).
    pub choices_taken: u64,
}

/// A report: the range's figures and the series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The whole range.
    pub totals: Figures,
    /// Per bucket, oldest first, covering the range.
    pub series: Vec<Bucket>,
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Its start (UTC midnight; Mondays for weeks).
    pub start: DateTime<Utc>,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// What one conversation contributes.
#[derive(Debug, Clone, Default, PartialEq)]
struct Facts {
    bot_replied: bool,
    reasons: Vec<String>,
    first_response: Option<f64>,
    agent_first_response: Option<f64>,
    resolution: Option<f64>,
    offers: u64,
    picks: u64,
}

/// Figures being summed, durations kept until the percentiles.
#[derive(Debug, Clone, Default)]
struct Tally {
    conversations: u64,
    customer_messages: u64,
    answered_by_bot: u64,
    handed_off: u64,
    reasons: BTreeMap<String, u64>,
    first_response: Vec<f64>,
    agent_first_response: Vec<f64>,
    resolution: Vec<f64>,
    offers: u64,
    picks: u64,
}

impl Tally {
    fn add(&mut self, facts: &Facts) {
        self.conversations += 1;
        let handed_off = !facts.reasons.is_empty();
        if handed_off {
            self.handed_off += 1;
        } else if facts.bot_replied {
            self.answered_by_bot += 1;
        }
        for reason in &facts.reasons {
            *self.reasons.entry(reason.clone()).or_default() += 1;
        }
        self.first_response.extend(facts.first_response);
        self.agent_first_response.extend(facts.agent_first_response);
        self.resolution.extend(facts.resolution);
        self.offers += facts.offers;
        self.picks += facts.picks;
    }

    fn figures(&self) -> Figures {
        Figures {
            conversations: self.conversations,
            customer_messages: self.customer_messages,
            answered_by_bot: self.answered_by_bot,
            handed_off: self.handed_off,
            handoff_reasons: self.reasons.clone(),
            deflection_rate: if self.conversations == 0 {
                0.0
            } else {
                self.answered_by_bot as f64 / self.conversations as f64
            },
            first_response_seconds: Percentiles::of(&self.first_response),
            agent_first_response_seconds: Percentiles::of(&self.agent_first_response),
            resolution_seconds: Percentiles::of(&self.resolution),
            choices_offered: self.offers,
            choices_taken: self.picks,
        }
    }
}

/// A message as analytics reads it.
#[derive(Debug, Clone)]
struct Msg {
    direction: Direction,
    author_kind: AuthorKind,
    created_at: NaiveDateTime,
    metadata: Option<String>,
    body: String,
}

type MsgRow = (
    String,
    Direction,
    AuthorKind,
    NaiveDateTime,
    Option<String>,
    String,
);

fn seconds(from: NaiveDateTime, to: NaiveDateTime) -> f64 {
    let d = to - from;
    let secs = d
        .num_microseconds()
        .map_or(d.num_seconds() as f64, |us| us as f64 / 1e6);
    secs.max(0.0)
}

fn metadata(m: &Msg) -> serde_json::Value {
    m.metadata
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// What one conversation contributes, from its messages (in order) and its
/// handoffs (oldest first): `(reason, created_at)`.
fn facts(
    created_at: NaiveDateTime,
    resolved_at: Option<NaiveDateTime>,
    messages: &[Msg],
    handoffs: &[(String, NaiveDateTime)],
) -> Facts {
    let mut facts = Facts {
        reasons: handoffs.iter().map(|(r, _)| r.clone()).collect(),
        resolution: resolved_at.map(|at| seconds(created_at, at)),
        ..Facts::default()
    };
    let replies = |m: &&Msg| {
        m.direction == Direction::Outbound
            && matches!(m.author_kind, AuthorKind::Bot | AuthorKind::Agent)
    };
    if let Some(first) = messages
        .iter()
        .position(|m| m.direction == Direction::Inbound)
    {
        facts.first_response = messages[first..]
            .iter()
            .find(replies)
            .map(|reply| seconds(messages[first].created_at, reply.created_at));
    }
    if let Some((_, handed)) = handoffs.iter().min_by_key(|(_, at)| *at) {
        facts.agent_first_response = messages
            .iter()
            .find(|m| {
                m.direction == Direction::Outbound
                    && m.author_kind == AuthorKind::Agent
                    && m.created_at >= *handed
            })
            .map(|reply| seconds(*handed, reply.created_at));
    }
    // Offers seen so far, and the offer of the latest outbound message
    // (a typed number answers only that one), as the answerer reads picks.
    let mut offers: Vec<Offer> = Vec::new();
    let mut latest: Option<Offer> = None;
    for m in messages {
        let meta = metadata(m);
        if m.direction == Direction::Outbound {
            let offer = Offer::from_metadata(m.metadata.as_deref());
            if m.author_kind == AuthorKind::Bot && meta.get("notice").is_none() {
                facts.bot_replied = true;
            }
            if let Some(offer) = &offer {
                facts.offers += 1;
                offers.push(offer.clone());
            }
            latest = offer;
            continue;
        }
        let picked = match meta["origin"]["payload"].as_str() {
            Some(payload) => choices::parse_payload(payload).and_then(|(token, n)| {
                offers
                    .iter()
                    .find(|o| o.token == token)
                    .and_then(|o| o.by_number(n).cloned())
            }),
            None => choices::parse_number(&m.body)
                .and_then(|p| latest.as_ref().and_then(|o| o.at_position(p).cloned())),
        };
        if picked.is_some_and(|o| o.chunk_id.is_some()) {
            facts.picks += 1;
        }
    }
    facts
}

/// Makes the report of `scope`.
pub async fn report(conn: &mut DbConn, scope: &Scope) -> Result<Report, AnalyticsError> {
    let starts = scope.interval.buckets(scope.from, scope.to);
    let bucket_of = |at: NaiveDateTime| starts.partition_point(|s| *s <= at).checked_sub(1);
    let mut totals = Tally::default();
    let mut buckets = vec![Tally::default(); starts.len()];

    for at in customer_message_times(conn, scope).await? {
        totals.customer_messages += 1;
        if let Some(i) = bucket_of(at) {
            buckets[i].customer_messages += 1;
        }
    }

    let opened = conversations_of(conn, scope).await?;
    for chunk in opened.chunks(CHUNK) {
        let ids: Vec<String> = chunk.iter().map(|(id, _, _)| id.clone()).collect();
        let mut messages: BTreeMap<String, Vec<Msg>> = BTreeMap::new();
        for (conversation_id, direction, author_kind, created_at, metadata, body) in
            messages_of(conn, &ids).await?
        {
            messages.entry(conversation_id).or_default().push(Msg {
                direction,
                author_kind,
                created_at,
                metadata,
                body,
            });
        }
        let mut handed: BTreeMap<String, Vec<(String, NaiveDateTime)>> = BTreeMap::new();
        for (conversation_id, reason, at) in handoffs_of(conn, &ids).await? {
            handed
                .entry(conversation_id)
                .or_default()
                .push((reason, at));
        }
        for (id, created_at, resolved_at) in chunk {
            let f = facts(
                *created_at,
                *resolved_at,
                messages.get(id).map_or(&[][..], Vec::as_slice),
                handed.get(id).map_or(&[][..], Vec::as_slice),
            );
            totals.add(&f);
            if let Some(i) = bucket_of(*created_at) {
                buckets[i].add(&f);
            }
        }
    }

    Ok(Report {
        totals: totals.figures(),
        series: starts
            .iter()
            .zip(&buckets)
            .map(|(start, tally)| Bucket {
                start: start.and_utc(),
                figures: tally.figures(),
            })
            .collect(),
    })
}

/// `(id, created_at, resolved_at)` of the conversations opened in range.
async fn conversations_of(
    conn: &mut DbConn,
    scope: &Scope,
) -> Result<Vec<(String, NaiveDateTime, Option<NaiveDateTime>)>, AnalyticsError> {
    let rows: Vec<(String, NaiveDateTime, Option<NaiveDateTime>)> = db_run!(conn: {
        let mut query = conversations::table
            .filter(conversations::workspace_id.eq(&scope.workspace_id))
            .filter(conversations::created_at.ge(scope.from))
            .filter(conversations::created_at.lt(scope.to))
            .into_boxed();
        if let Some(bot) = &scope.bot_id {
            query = query.filter(conversations::bot_id.eq(bot));
        }
        if let Some(accounts) = &scope.accounts {
            query = query.filter(conversations::channel_account_id.eq_any(accounts));
        }
        query
            .order((conversations::created_at, conversations::id))
            .limit(MAX_CONVERSATIONS + 1)
            .select((
                conversations::id,
                conversations::created_at,
                conversations::resolved_at,
            ))
            .load(conn)
            .await
            .map_err(DbError::from)?
    });
    at_most(rows, MAX_CONVERSATIONS, "conversations")
}

/// When each customer message of the range was stored.
async fn customer_message_times(
    conn: &mut DbConn,
    scope: &Scope,
) -> Result<Vec<NaiveDateTime>, AnalyticsError> {
    let rows: Vec<NaiveDateTime> = db_run!(conn: {
        let mut query = messages::table
            .inner_join(conversations::table)
            .filter(conversations::workspace_id.eq(&scope.workspace_id))
            .filter(messages::direction.eq(Direction::Inbound))
            .filter(messages::created_at.ge(scope.from))
            .filter(messages::created_at.lt(scope.to))
            .into_boxed();
        if let Some(bot) = &scope.bot_id {
            query = query.filter(conversations::bot_id.eq(bot));
        }
        if let Some(accounts) = &scope.accounts {
            query = query.filter(conversations::channel_account_id.eq_any(accounts));
        }
        query
            .limit(MAX_CUSTOMER_MESSAGES + 1)
            .select(messages::created_at)
            .load(conn)
            .await
            .map_err(DbError::from)?
    });
    at_most(rows, MAX_CUSTOMER_MESSAGES, "customer messages")
}

/// `rows`, fetched with a limit of `limit + 1`, or the error that says the
/// range holds more than `limit` of `what`.
pub(crate) fn at_most<T>(
    rows: Vec<T>,
    limit: i64,
    what: &'static str,
) -> Result<Vec<T>, AnalyticsError> {
    if rows.len() as i64 > limit {
        return Err(AnalyticsError::TooMany { what, limit });
    }
    Ok(rows)
}

/// The messages of `ids`, each conversation's in order.
async fn messages_of(conn: &mut DbConn, ids: &[String]) -> Result<Vec<MsgRow>, DbError> {
    Ok(db_run!(conn: {
        messages::table
            .filter(messages::conversation_id.eq_any(ids))
            .order((messages::conversation_id, messages::seq))
            .select((
                messages::conversation_id,
                messages::direction,
                messages::author_kind,
                messages::created_at,
                messages::metadata,
                messages::body,
            ))
            .load::<MsgRow>(conn)
            .await?
    }))
}

/// `(conversation_id, reason, created_at)` of the handoffs of `ids`,
/// oldest first.
async fn handoffs_of(
    conn: &mut DbConn,
    ids: &[String],
) -> Result<Vec<(String, String, NaiveDateTime)>, DbError> {
    Ok(db_run!(conn: {
        handoffs::table
            .filter(handoffs::conversation_id.eq_any(ids))
            .order((handoffs::conversation_id, handoffs::created_at))
            .select((
                handoffs::conversation_id,
                handoffs::reason,
                handoffs::created_at,
            ))
            .load(conn)
            .await?
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn msg(
        direction: Direction,
        author: AuthorKind,
        t: &str,
        meta: Option<&str>,
        body: &str,
    ) -> Msg {
        Msg {
            direction,
            author_kind: author,
            created_at: at(t),
            metadata: meta.map(str::to_owned),
            body: body.to_owned(),
        }
    }

    #[test]
    fn analytics_percentiles_interpolate_and_keep_fractions() {
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        let one = Percentiles::of(&[1.25]);
        assert_eq!((one.p50, one.p90), (Some(1.25), Some(1.25)));
        let p = Percentiles::of(&[4.0, 1.5, 3.0, 2.0]);
        assert_eq!(p.p50, Some(2.5));
        assert!((p.p90.unwrap() - 3.7).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn analytics_buckets_start_at_midnight_and_on_mondays() {
        let from = at("2026-12-02 15:00:00"); // a Wednesday
        let to = at("2026-12-09 01:00:00");
        let days = Interval::Day.buckets(from, to);
        assert_eq!(days[0], at("2026-12-02 00:00:00"));
        assert_eq!(days[days.len() - 1], at("2026-12-09 00:00:00"));
        assert_eq!(days.len() as i64, Interval::Day.count(from, to));
        let weeks = Interval::Week.buckets(from, to);
        assert_eq!(
            weeks,
            vec![at("2026-11-30 00:00:00"), at("2026-12-07 00:00:00")]
        );
        assert_eq!(Interval::Week.count(from, to), 2);
        assert!(Interval::Day.buckets(to, to).is_empty());
        assert_eq!(Interval::Day.count(to, from), 0);
    }

    #[test]
    fn analytics_facts_of_a_conversation() {
        let offer = r#"{"choices":{"token":"tok1","question":"q","options":[
            {"n":1,"label":"A","chunk_id":"c1"},{"n":0,"label":"none"}]}}"#;
        let messages = vec![
            msg(
                Direction::Inbound,
                AuthorKind::Customer,
                "2026-12-01 10:00:00",
                None,
                "hi",
            ),
            msg(
                Direction::Outbound,
                AuthorKind::Bot,
                "2026-12-01 10:00:01.5",
                Some(offer),
                "which?",
            ),
            msg(
                Direction::Inbound,
                AuthorKind::Customer,
                "2026-12-01 10:00:05",
                None,
                "1",
            ),
            msg(
                Direction::Outbound,
                AuthorKind::Bot,
                "2026-12-01 10:00:06",
                Some(offer),
                "which?",
            ),
            msg(
                Direction::Inbound,
                AuthorKind::Customer,
                "2026-12-01 10:00:07",
                Some(r#"{"origin":{"type":"callback","payload":"fd:tok1:0"}}"#),
                "none",
            ),
            msg(
                Direction::Outbound,
                AuthorKind::Bot,
                "2026-12-01 10:00:08",
                Some(r#"{"notice":"low_confidence"}"#),
                "a colleague",
            ),
            msg(
                Direction::Outbound,
                AuthorKind::Agent,
                "2026-12-01 10:01:00.25",
                None,
                "hello",
            ),
        ];
        let handoffs = vec![("low_confidence".to_owned(), at("2026-12-01 10:00:08"))];
        let f = facts(
            at("2026-12-01 10:00:00"),
            Some(at("2026-12-01 11:00:00")),
            &messages,
            &handoffs,
        );
        assert!(f.bot_replied);
        assert_eq!(f.first_response, Some(1.5));
        assert_eq!(f.agent_first_response, Some(52.25));
        assert_eq!(f.resolution, Some(3600.0));
        assert_eq!((f.offers, f.picks), (2, 1));
        let mut tally = Tally::default();
        tally.add(&f);
        let figures = tally.figures();
        assert_eq!((figures.handed_off, figures.answered_by_bot), (1, 0));
        assert_eq!(figures.handoff_reasons["low_confidence"], 1);
    }
}
