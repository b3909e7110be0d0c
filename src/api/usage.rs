//! The model usage log for admins: `GET /usage` reads the query (the range
//! as analytics reads it), resolves the bot to the caller's workspace, and
//! answers the report [`store::models::usage`] makes: totals, a daily
//! series and a breakdown by provider and model.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::analytics::{range, refused};
use super::{Route, bad_request, not_found};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::AppState;
use store::models::analytics::{Interval, MAX_BUCKETS};
use store::models::bot::Bot;
use store::models::usage::{self, Scope};
use store::models::user::Role;

pub(super) const ROUTES: &[Route] = &[Route {
    method: "GET",
    path: "/usage",
    role: Some(Role::Admin),
    summary: "Model usage: turns, model turns, prompt and completion tokens (estimated turns counted), cost from llm.prices, latency percentiles; in total, per day and per model",
    body: &[],
    query: &[
        ("bot_id", "string"),
        ("from", "RFC 3339 date-time (default: 30 days before `to`)"),
        ("to", "RFC 3339 date-time (default: now)"),
    ],
    ok: 200,
    mount: |r| r.to(report),
}];

/// The query, every field text so that each bad one is named in the 400.
#[derive(Deserialize)]
struct Query {
    bot_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

async fn report(
    state: web::Data<AppState>,
    who: Principal,
    query: web::Query<Query>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let (from, to) = range(query.from.as_deref(), query.to.as_deref())?;
    if Interval::Day.count(from, to) > MAX_BUCKETS {
        return Err(bad_request(format!(
            "from/to: the range spans more than {MAX_BUCKETS} days; choose a shorter one"
        )));
    }
    let mut conn = state.app.db.get().await?;
    if let Some(bot_id) = &query.bot_id {
        Bot::find_by_id(&mut conn, bot_id)
            .await?
            .filter(|b| b.workspace_id == who.workspace_id)
            .ok_or_else(|| not_found("bot"))?;
    }
    let scope = Scope {
        workspace_id: who.workspace_id.clone(),
        bot_id: query.bot_id.clone(),
        from,
        to,
    };
    let report = usage::report(&mut conn, &scope).await.map_err(refused)?;
    Ok(HttpResponse::Ok().json(report))
}
