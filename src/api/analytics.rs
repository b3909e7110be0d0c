//! Analytics for admins: `GET /analytics` reads the query, resolves the
//! bot and channel to the caller's workspace, and answers the report
//! [`store::models::analytics`] makes.

use actix_web::{HttpResponse, web};
use channels::ChannelKind;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::Deserialize;

use super::{Route, bad_request, not_found};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::AppState;
use store::models::analytics::{self, AnalyticsError, Interval, MAX_BUCKETS, Scope};
use store::models::bot::Bot;
use store::models::channel_account::ChannelAccount;
use store::models::user::Role;

pub(super) const ROUTES: &[Route] = &[Route {
    method: "GET",
    path: "/analytics",
    role: Some(Role::Admin),
    summary: "Conversations, deflection, handoffs, response and resolution times, in total and per day or week",
    body: &[],
    query: &[
        ("bot_id", "string"),
        (
            "channel",
            "telegram | messenger | whatsapp | instagram | email | webchat",
        ),
        ("from", "RFC 3339 date-time (default: 30 days before `to`)"),
        ("to", "RFC 3339 date-time (default: now)"),
        ("interval", "day | week (default day)"),
    ],
    ok: 200,
    mount: |r| r.to(report),
}];

/// The query, every field text so that each bad one is named in the 400.
#[derive(Deserialize)]
struct Query {
    bot_id: Option<String>,
    channel: Option<String>,
    from: Option<String>,
    to: Option<String>,
    interval: Option<String>,
}

/// `value` of parameter `name` as a UTC time.
fn instant(name: &str, value: &str) -> Result<NaiveDateTime, ApiError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc).naive_utc())
        .map_err(|_| {
            bad_request(format!(
                "{name} must be an RFC 3339 date-time such as 2026-12-01T00:00:00Z, not `{value}`"
            ))
        })
}

/// The `from` and `to` of a report's query (RFC 3339, both optional): `to`
/// defaults to now, `from` to 30 days before `to`. A malformed one, or
/// `from` after `to`, is a 400 naming the parameter.
pub(super) fn range(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(NaiveDateTime, NaiveDateTime), ApiError> {
    let to = match to {
        Some(to) => instant("to", to)?,
        None => Utc::now().naive_utc(),
    };
    let from = match from {
        Some(from) => instant("from", from)?,
        None => to - Duration::days(30),
    };
    if from > to {
        return Err(bad_request("from must not be after to"));
    }
    Ok((from, to))
}

async fn report(
    state: web::Data<AppState>,
    who: Principal,
    query: web::Query<Query>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let (from, to) = range(query.from.as_deref(), query.to.as_deref())?;
    let interval = match query.interval.as_deref() {
        None | Some("day") => Interval::Day,
        Some("week") => Interval::Week,
        Some(other) => {
            return Err(bad_request(format!(
                "interval must be day or week, not `{other}`"
            )));
        }
    };
    if interval.count(from, to) > MAX_BUCKETS {
        return Err(bad_request(format!(
            "interval: from–to holds more than {MAX_BUCKETS} buckets of a {}; choose a shorter range or interval=week",
            if interval == Interval::Day {
                "day"
            } else {
                "week"
            }
        )));
    }
    let kind = match &query.channel {
        Some(channel) => Some(channel.parse::<ChannelKind>().map_err(|_| {
            let kinds: Vec<&str> = ChannelKind::ALL.iter().map(|k| k.as_str()).collect();
            bad_request(format!(
                "channel must be one of {}, not `{channel}`",
                kinds.join(", ")
            ))
        })?),
        None => None,
    };
    let mut conn = state.app.db.get().await?;
    if let Some(bot_id) = &query.bot_id {
        Bot::find_by_id(&mut conn, bot_id)
            .await?
            .filter(|b| b.workspace_id == who.workspace_id)
            .ok_or_else(|| not_found("bot"))?;
    }
    let accounts = match kind {
        Some(kind) => Some(
            ChannelAccount::in_workspace(&mut conn, &who.workspace_id)
                .await?
                .into_iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.id)
                .collect(),
        ),
        None => None,
    };
    let scope = Scope {
        workspace_id: who.workspace_id.clone(),
        bot_id: query.bot_id.clone(),
        accounts,
        from,
        to,
        interval,
    };
    let report = analytics::report(&mut conn, &scope)
        .await
        .map_err(refused)?;
    Ok(HttpResponse::Ok().json(report))
}

/// A report not made: a range holding too much is the caller's 400.
pub(super) fn refused(error: AnalyticsError) -> ApiError {
    match error {
        AnalyticsError::Db(e) => ApiError::from(e),
        too_many @ AnalyticsError::TooMany { .. } => bad_request(format!("from/to: {too_many}")),
    }
}
