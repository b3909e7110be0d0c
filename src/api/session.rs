//! Logging in and out: `POST /auth/login`, `POST /auth/logout`, `GET /me`.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::{Change, Json, Origin, Route, bad_request, record, too_many};
use crate::auth::{self, Actor, Principal};
use crate::error::{ApiError, ErrorKind};
use crate::http::AppState;
use store::models::session::{NewSession, Session};
use store::models::user::{Role, User};
use store::models::workspace::Workspace;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/auth/login",
        role: None,
        summary: "Log in: a session token, also set as the HttpOnly cookie fd_session",
        body: &[
            ("email", "string", true),
            ("password", "string", true),
            ("workspace", "string", false),
        ],
        query: &[],
        ok: 200,
        mount: |r| r.to(login),
    },
    Route {
        method: "POST",
        path: "/auth/logout",
        role: Some(Role::Agent),
        summary: "End the session",
        body: &[],
        query: &[],
        ok: 204,
        mount: |r| r.to(logout),
    },
    Route {
        method: "GET",
        path: "/me",
        role: Some(Role::Agent),
        summary: "Who is calling: user or token, workspace, role",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(me),
    },
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
    workspace: Option<String>,
}

fn refused() -> ApiError {
    ApiError::new(ErrorKind::Unauthorized, "wrong email or password")
}

async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let Login {
        email,
        password,
        workspace,
    } = body.into_inner();
    let email = email.trim().to_lowercase();
    if email.is_empty() || email.len() > 320 || password.len() > 1024 {
        return Err(bad_request("email and password are required"));
    }
    let origin = Origin::of(&req);
    // Counted now, before the password is checked: concurrent attempts
    // cannot all get past the limit.
    let attempt = match state.logins.admit(&email, origin.ip.as_deref()).await {
        Ok(attempt) => attempt,
        Err(wait) => {
            tracing::warn!(ip = ?origin.ip, "login refused: too many attempts");
            return Err(too_many("too many login attempts", wait));
        }
    };
    let mut conn = state.app.db.get().await?;
    let user = User::find_by_email(&mut conn, &email).await?;
    drop(conn);
    let hash = user
        .as_ref()
        .filter(|u| !u.disabled)
        .and_then(|u| u.password_hash.clone());
    // Argon2 takes 19 MiB and tens of milliseconds of a core: a bounded
    // number run at once, off the async threads.
    let ok = match state.logins.check(hash, password).await {
        Ok(ok) => ok,
        Err(wait) => {
            tracing::warn!(ip = ?origin.ip, "login refused: password checks busy");
            return Err(too_many("too many logins at once", wait));
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        tracing::warn!(ip = ?origin.ip, "login failed");
        return Err(refused());
    };
    state.logins.succeeded(attempt).await;

    let mut conn = state.app.db.get().await?;
    let memberships = User::memberships(&mut conn, &user.id).await?;
    let (workspace_id, role) = match workspace.as_deref().map(str::trim) {
        Some(slug) if !slug.is_empty() => {
            let found = Workspace::find_by_slug(&mut conn, slug).await?;
            let member =
                found.and_then(|w| memberships.iter().find(|(id, _)| *id == w.id).cloned());
            member.ok_or_else(|| {
                ApiError::new(
                    ErrorKind::Forbidden,
                    format!("you are not a member of workspace `{slug}`"),
                )
            })?
        }
        _ => match memberships.as_slice() {
            [] => {
                return Err(ApiError::new(
                    ErrorKind::Forbidden,
                    "you are not a member of any workspace; ask an owner to add you",
                ));
            }
            [one] => one.clone(),
            _ => {
                let mut slugs = Vec::new();
                for (id, _) in &memberships {
                    if let Some(w) = Workspace::find_by_id(&mut conn, id).await? {
                        slugs.push(w.slug);
                    }
                }
                return Err(bad_request(format!(
                    "you belong to several workspaces: pass `workspace`, one of {}",
                    slugs.join(", ")
                ))
                .with_details(json!({ "workspaces": slugs })));
            }
        },
    };
    let workspace = Workspace::find_by_id(&mut conn, &workspace_id)
        .await?
        .ok_or_else(refused)?;
    let token = auth::new_token(auth::SESSION_PREFIX);
    let hash = auth::token_hash(&token);
    let ttl = chrono::Duration::hours(state.app.settings.auth.session_ttl_hours as i64);
    let user_agent = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect::<String>());
    let session = Session::open(
        &mut conn,
        &NewSession {
            hash: &hash,
            user_id: &user.id,
            workspace_id: &workspace.id,
            source_ip: origin.ip.as_deref(),
            user_agent: user_agent.as_deref(),
            ttl,
        },
    )
    .await?;
    drop(conn);
    let who = Principal {
        actor: Actor::User {
            id: user.id.clone(),
            email: user.email.clone(),
            session: hash,
        },
        workspace_id: workspace.id.clone(),
        role,
    };
    record(
        &state,
        &who,
        &origin,
        Change {
            action: "session.login",
            target_kind: "user",
            target_id: Some(&user.id),
            ..Change::default()
        },
    )
    .await;
    tracing::info!(user = %user.id, workspace = %workspace.slug, "logged in");
    let cookie = Cookie::build(auth::SESSION_COOKIE, token.clone())
        .path("/")
        .http_only(true)
        .secure(state.app.settings.auth.secure_cookie || origin.https)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(
            ttl.num_seconds(),
        ))
        .finish();
    Ok(HttpResponse::Ok().cookie(cookie).json(json!({
        "token": token,
        "expires_at": session.expires_at,
        "user": { "id": user.id, "email": user.email, "display_name": user.display_name },
        "workspace": workspace,
        "role": role,
    })))
}

async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    if let Actor::User { session, .. } = &who.actor {
        let mut conn = state.app.db.get().await?;
        Session::revoke(&mut conn, session).await?;
        drop(conn);
        record(
            &state,
            &who,
            &Origin::of(&req),
            Change {
                action: "session.logout",
                target_kind: "user",
                target_id: who.user_id(),
                ..Change::default()
            },
        )
        .await;
    }
    let mut gone = Cookie::build(auth::SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}

async fn me(state: web::Data<AppState>, who: Principal) -> Result<HttpResponse, ApiError> {
    let mut conn = state.app.db.get().await?;
    let workspace = Workspace::find_by_id(&mut conn, &who.workspace_id).await?;
    let body = match &who.actor {
        Actor::User { id, .. } => {
            let user = User::find_by_id(&mut conn, id).await?;
            json!({
                "user": user.map(|u| json!({ "id": u.id, "email": u.email, "display_name": u.display_name })),
                "token": null,
                "workspace": workspace,
                "role": who.role,
            })
        }
        Actor::Token { id, name } => json!({
            "user": null,
            "token": { "id": id, "name": name },
            "workspace": workspace,
            "role": who.role,
        }),
    };
    Ok(HttpResponse::Ok().json(body))
}
