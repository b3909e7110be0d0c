//! Passwords: a user changes their own (knowing the current one), an owner
//! sets a member's. Either way the sessions opened with the old password
//! end, and the audit log says who did it (never the password).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::{Change, Json, Origin, Route, bad_request, conflict, record, too_many};
use crate::auth::{self, Actor, Principal};
use crate::error::{ApiError, ErrorKind};
use crate::http::AppState;
use store::models::user::{Role, User};

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/me/password",
        role: Some(Role::Agent),
        summary: "Change your own password, giving the current one; your other sessions end",
        body: &[("current", "string", true), ("new", "string", true)],
        query: &[],
        ok: 200,
        mount: |r| r.to(change_own),
    },
    Route {
        method: "POST",
        path: "/users/{id}/password",
        role: Some(Role::Owner),
        summary: "Set a member's password; all their sessions end",
        body: &[("password", "string", true)],
        query: &[],
        ok: 200,
        mount: |r| r.to(reset),
    },
];

/// The longest current password worth checking (as logins do).
const MAX_PASSWORD_BYTES: usize = 1024;

/// The Argon2id hash of `password`, computed off the async threads.
async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
        .map_err(|e| ApiError::new(ErrorKind::Internal, e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnPassword {
    current: String,
    new: String,
}

async fn change_own(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    body: Json<OwnPassword>,
) -> Result<HttpResponse, ApiError> {
    let Actor::User {
        id, email, session, ..
    } = &who.actor
    else {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "an API token has no password: log in as a user to change yours",
        ));
    };
    let OwnPassword { current, new } = body.into_inner();
    if current.len() > MAX_PASSWORD_BYTES {
        return Err(bad_request("current is not your current password"));
    }
    if let Some(problem) = auth::password_problem(&new) {
        return Err(bad_request(format!("new: {problem}")));
    }
    // Guesses of the current password count as failed logins of the
    // account: a stolen session gets no more tries than the login form.
    let attempt = state
        .logins
        .admit(email, Origin::of(&req).ip.as_deref())
        .await
        .map_err(|wait| too_many("too many wrong passwords", wait))?;
    let mut conn = state.app.db.get().await?;
    let stored = User::find_by_id(&mut conn, id)
        .await?
        .and_then(|u| u.password_hash);
    drop(conn);
    let matches = state
        .logins
        .check(stored, current.clone())
        .await
        .map_err(|wait| too_many("too many password checks at once", wait))?;
    if !matches {
        tracing::warn!(user = %id, "password change refused: wrong current password");
        // 403, not 401: the session is fine, and a console treats 401 as
        // "logged out".
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "the current password is wrong; the password was not changed",
        ));
    }
    state.logins.succeeded(attempt).await;
    if new == current {
        return Err(bad_request("new must differ from the current password"));
    }
    set(
        &state,
        &req,
        &who,
        (id, None),
        new,
        Some(session),
        "user.password_change",
    )
    .await
}

/// Sets the password of user `id` (`email` for the audit entry), ending
/// their sessions but `keep`, and records `action`.
async fn set(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    (id, email): (&str, Option<&str>),
    password: String,
    keep: Option<&str>,
    action: &'static str,
) -> Result<HttpResponse, ApiError> {
    let hashed = hash(password).await?;
    let mut conn = state.app.db.get().await?;
    let ended = User::change_password(&mut conn, id, &hashed, keep).await?;
    drop(conn);
    let after = json!({ "sessions_ended": ended });
    let mut audited = after.clone();
    if let Some(email) = email {
        audited["email"] = json!(email);
    }
    record(
        state,
        who,
        &Origin::of(req),
        Change {
            action,
            target_kind: "user",
            target_id: Some(id),
            before: None,
            after: Some(audited),
        },
    )
    .await;
    Ok(HttpResponse::Ok().json(after))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

async fn reset(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    body: Json<NewPassword>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Owner)?;
    let (user, _) = super::users::member(&state, &who, &id).await?;
    let mut conn = state.app.db.get().await?;
    if who.user_id() == Some(user.id.as_str()) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "change your own password with POST /api/v1/me/password, giving the current one",
        ));
    }
    if User::memberships(&mut conn, &user.id).await?.len() > 1 {
        // The same login opens the other workspaces: one workspace's owner
        // may not take the account over there.
        return Err(conflict(
            "this user belongs to other workspaces too: they change their password \
             themselves, with POST /api/v1/me/password",
        ));
    }
    drop(conn);
    let password = body.into_inner().password;
    if let Some(problem) = auth::password_problem(&password) {
        return Err(bad_request(format!("password: {problem}")));
    }
    set(
        &state,
        &req,
        &who,
        (&user.id, Some(&user.email)),
        password,
        None,
        "user.password_reset",
    )
    .await
}
