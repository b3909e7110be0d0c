//! The REST API, `/api/v1`: JSON in and out, one error shape
//! (`{"error":{"code","message","details"}}`), every route behind
//! [`Principal`] and scoped to the caller's workspace. An id of another
//! workspace is answered like an id that does not exist.
//!
//! Every change records an audit entry (who, what, when, from where,
//! before and after, secrets left out).

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, web};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{self, Principal};
use crate::error::{ApiError, ErrorKind};
use crate::http::{AppState, resource};
use store::models::audit::Audit;
use store::models::user::Role;

pub mod analytics;
pub mod bots;
pub mod channels;
pub mod conversations;
pub mod gaps;
pub mod knowledge;
pub mod openapi;
pub mod passwords;
pub mod session;
pub mod usage;
pub mod users;

/// One route of the API: what mounts it and what documents it. Routing
/// and the OpenAPI document are both made from [`routes`], so they cannot
/// disagree.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, `PATCH`, `DELETE`.
    pub method: &'static str,
    /// Under `/api/v1`, with `{id}` parameters.
    pub path: &'static str,
    /// The least role allowed; `None` for the login route.
    pub role: Option<Role>,
    /// What it does.
    pub summary: &'static str,
    /// Body fields: name, JSON type, required.
    pub body: &'static [(&'static str, &'static str, bool)],
    /// Query parameters: name, type.
    pub query: &'static [(&'static str, &'static str)],
    /// Status on success.
    pub ok: u16,
    /// Attaches the handler.
    pub mount: fn(actix_web::Route) -> actix_web::Route,
}

/// Every route of the API.
pub fn routes() -> Vec<Route> {
    [
        session::ROUTES,
        users::ROUTES,
        passwords::ROUTES,
        bots::ROUTES,
        channels::ROUTES,
        conversations::ROUTES,
        analytics::ROUTES,
        gaps::ROUTES,
        usage::ROUTES,
    ]
    .concat()
}

/// Mounts `/api/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut scope = web::scope("/api/v1")
        .service(resource("/openapi.json").route(web::get().to(openapi::document)));
    let all = routes();
    let mut paths: Vec<&str> = all.iter().map(|r| r.path).collect();
    paths.dedup();
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        if !seen.insert(path) {
            continue;
        }
        let mut res = resource(path);
        for route in all.iter().filter(|r| r.path == path) {
            let method = actix_web::http::Method::from_bytes(route.method.as_bytes())
                .unwrap_or(actix_web::http::Method::GET);
            res = res.route((route.mount)(web::route().method(method)));
        }
        scope = scope.service(res);
    }
    cfg.service(scope);
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = auth::token_of(req, false);
        let by_cookie = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .is_none()
            && req.cookie(auth::SESSION_COOKIE).is_some();
        let changes = !matches!(
            *req.method(),
            actix_web::http::Method::GET | actix_web::http::Method::HEAD
        );
        // The cookie rides along on forged cross-site forms; a bearer
        // token does not.
        let forged = by_cookie && changes && !crate::http::same_origin(req);
        Box::pin(async move {
            if forged {
                return Err(ApiError::new(
                    ErrorKind::Forbidden,
                    "cross-site request refused: send it from the console's own origin",
                ));
            }
            let Some(state) = state else {
                return Err(ApiError::new(ErrorKind::Internal, "no application state"));
            };
            // In a task of its own: when another extractor fails (a bad
            // body), actix drops this future, and a database call dropped
            // half-way must not be cancelled on the server's thread.
            let app = state.app.clone();
            tokio::spawn(async move { auth::authenticate(&app, token.as_deref()).await })
                .await
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
        })
    }
}

pub use crate::http::Origin;

/// One audit entry, for [`record`].
#[derive(Debug, Clone, Default)]
pub struct Change<'a> {
    /// Dotted verb, e.g. `bot.create`.
    pub action: &'a str,
    /// Kind of object.
    pub target_kind: &'a str,
    /// Its id.
    pub target_id: Option<&'a str>,
    /// Before (secrets left out by the caller).
    pub before: Option<Value>,
    /// After.
    pub after: Option<Value>,
}

/// Records `change` by `who`. A failure is logged, never hides the change
/// itself from the caller (it happened).
pub async fn record(state: &AppState, who: &Principal, origin: &Origin, change: Change<'_>) {
    let entry = Audit {
        workspace_id: Some(&who.workspace_id),
        actor_kind: Some(who.actor_kind()),
        actor_id: Some(who.actor_id()),
        action: change.action,
        target_kind: change.target_kind,
        target_id: change.target_id,
        source_ip: origin.ip.as_deref(),
        request_id: origin.request_id.as_deref(),
        before: change.before,
        after: change.after,
    };
    let recorded = async {
        let mut conn = state.app.db.get().await?;
        entry.record(&mut conn).await
    };
    if let Err(error) = recorded.await {
        tracing::error!(%error, action = change.action, "audit entry not recorded");
    }
}

/// `?limit=&cursor=` of list routes.
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    /// Items per page, 1-200 (default 50).
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl Page {
    /// The limit, checked.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=200).contains(&n) => Ok(n),
            Some(n) => Err(bad_request(format!("limit must be 1-200, not {n}"))),
        }
    }

    /// The decoded cursor: the parts a previous page put in it.
    pub fn cursor(&self) -> Result<Option<Vec<String>>, ApiError> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        let bad = || bad_request("the cursor is not one this API gave out");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let parts: Vec<String> = serde_json::from_str(&text).map_err(|_| bad())?;
        Ok(Some(parts))
    }
}

/// An opaque cursor holding `parts`.
pub fn cursor_of(parts: &[&str]) -> String {
    let text = serde_json::to_string(parts).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// 400 with `message`.
pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

/// 429 saying `why` and when to come back (`Retry-After`, and
/// `retry_after_secs` in the details).
pub fn too_many(why: &str, wait: std::time::Duration) -> ApiError {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(
        ErrorKind::TooManyRequests,
        format!("{why}; try again in {secs} s"),
    )
    .with_details(serde_json::json!({ "retry_after_secs": secs }))
}

/// 404 for a `what` that does not exist in the caller's workspace.
pub fn not_found(what: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no such {what}"))
}

/// 409 with `message`.
pub fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Conflict, message)
}

/// A JSON body; extraction errors answer in the API's error shape.
pub type Json<T> = web::Json<T>;

/// Checks a short text field: trimmed, non-empty, at most `max` characters.
pub fn text_field(name: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(bad_request(format!("{name} must not be empty")));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(bad_request(format!(
            "{name} must be at most {max} characters (it has {chars})"
        )));
    }
    Ok(value.to_owned())
}
