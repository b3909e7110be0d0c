//! The workspace's people and machines (owners manage them), and its audit
//! log (admins read it).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::{
    Change, Json, Origin, Page, Route, bad_request, conflict, cursor_of, not_found, record,
};
use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::http::AppState;
use store::models::audit::{AuditEntry, AuditFilter};
use store::models::session::{ApiToken, Creator, Session, effective_role};
use store::models::user::{Role, User};

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/users",
        role: Some(Role::Admin),
        summary: "The workspace's members and their roles",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(list_users),
    },
    Route {
        method: "POST",
        path: "/users",
        role: Some(Role::Owner),
        summary: "Add a member: a new user with a password, or an existing one by email",
        body: &[
            ("email", "string", true),
            ("display_name", "string", false),
            ("password", "string", false),
            ("role", "string", true),
        ],
        query: &[],
        ok: 201,
        mount: |r| r.to(add_user),
    },
    Route {
        method: "PATCH",
        path: "/users/{id}",
        role: Some(Role::Owner),
        summary: "Change a member's role, or disable their account",
        body: &[("role", "string", false), ("disabled", "boolean", false)],
        query: &[],
        ok: 200,
        mount: |r| r.to(update_user),
    },
    Route {
        method: "DELETE",
        path: "/users/{id}",
        role: Some(Role::Owner),
        summary: "Remove a member from the workspace; their sessions end",
        body: &[],
        query: &[],
        ok: 204,
        mount: |r| r.to(remove_user),
    },
    Route {
        method: "GET",
        path: "/tokens",
        role: Some(Role::Owner),
        summary: "API tokens (never their secret)",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(list_tokens),
    },
    Route {
        method: "POST",
        path: "/tokens",
        role: Some(Role::Owner),
        summary: "Create an API token; its secret is in this response only",
        body: &[
            ("name", "string", true),
            ("role", "string", true),
            ("expires_in_days", "integer", false),
        ],
        query: &[],
        ok: 201,
        mount: |r| r.to(create_token),
    },
    Route {
        method: "DELETE",
        path: "/tokens/{id}",
        role: Some(Role::Owner),
        summary: "Revoke an API token",
        body: &[],
        query: &[],
        ok: 204,
        mount: |r| r.to(revoke_token),
    },
    Route {
        method: "GET",
        path: "/audit",
        role: Some(Role::Admin),
        summary: "The audit log, newest first",
        body: &[],
        query: &[
            ("action", "string"),
            ("actor_id", "string (a user or token id)"),
            ("target_kind", "string"),
            ("target_id", "string"),
            ("limit", "integer"),
            ("cursor", "string"),
        ],
        ok: 200,
        mount: |r| r.to(audit_log),
    },
];

/// What the audit log keeps of a member.
fn member_json(user: &User, role: Role) -> serde_json::Value {
    json!({
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "role": role,
        "disabled": user.disabled,
        "created_at": user.created_at,
    })
}

async fn list_users(state: web::Data<AppState>, who: Principal) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let mut conn = state.app.db.get().await?;
    let members = User::members(&mut conn, &who.workspace_id).await?;
    let items: Vec<_> = members
        .iter()
        .map(|m| member_json(&m.user, m.role))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": null })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    email: String,
    display_name: Option<String>,
    password: Option<String>,
    role: Role,
}

async fn add_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    body: Json<NewMember>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Owner)?;
    let body = body.into_inner();
    let email = body.email.trim().to_lowercase();
    let valid = email.len() <= 320
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
    if !valid {
        return Err(bad_request("email is not an email address"));
    }
    let mut conn = state.app.db.get().await?;
    let existing = User::find_by_email(&mut conn, &email).await?;
    let user = match existing {
        Some(user) => {
            if User::role_in(&mut conn, &user.id, &who.workspace_id)
                .await?
                .is_some()
            {
                return Err(conflict(format!("{email} is already a member")));
            }
            user
        }
        None => {
            let Some(password) = body.password else {
                return Err(bad_request(
                    "password is required for a new user (at least 10 characters)",
                ));
            };
            if let Some(problem) = auth::password_problem(&password) {
                return Err(bad_request(problem));
            }
            let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
                .await
                .map_err(|e| ApiError::new(crate::error::ErrorKind::Internal, e.to_string()))?
                .map_err(|e| ApiError::new(crate::error::ErrorKind::Internal, e))?;
            let name = body
                .display_name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map_or_else(
                    || email.split('@').next().unwrap_or("").to_owned(),
                    str::to_owned,
                );
            User::create(&mut conn, &email, &name, Some(&hash)).await?
        }
    };
    User::set_role(&mut conn, &user.id, &who.workspace_id, body.role).await?;
    drop(conn);
    let after = member_json(&user, body.role);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "user.add",
            target_kind: "user",
            target_id: Some(&user.id),
            before: None,
            after: Some(after.clone()),
        },
    )
    .await;
    Ok(HttpResponse::Created().json(after))
}

/// The member `id` of the caller's workspace, with their role: 404 for
/// anyone else.
pub(super) async fn member(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<(User, Role), ApiError> {
    let mut conn = state.app.db.get().await?;
    let role = User::role_in(&mut conn, id, &who.workspace_id).await?;
    let user = User::find_by_id(&mut conn, id).await?;
    match (user, role) {
        (Some(user), Some(role)) => Ok((user, role)),
        _ => Err(not_found("user")),
    }
}

/// Refuses to leave the workspace without an owner.
async fn keep_an_owner(state: &AppState, who: &Principal, leaving: &str) -> Result<(), ApiError> {
    let mut conn = state.app.db.get().await?;
    let owners = User::members(&mut conn, &who.workspace_id)
        .await?
        .into_iter()
        .filter(|m| m.role == Role::Owner && !m.user.disabled && m.user.id != leaving)
        .count();
    if owners == 0 {
        return Err(conflict(
            "the workspace must keep at least one active owner",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberUpdate {
    role: Option<Role>,
    disabled: Option<bool>,
}

async fn update_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    body: Json<MemberUpdate>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Owner)?;
    let (user, role) = member(&state, &who, &id).await?;
    let before = member_json(&user, role);
    let demoted = body.role.is_some_and(|r| r != Role::Owner) && role == Role::Owner;
    if demoted || (body.disabled == Some(true) && role == Role::Owner) {
        keep_an_owner(&state, &who, &user.id).await?;
    }
    let mut conn = state.app.db.get().await?;
    if body.disabled.is_some() && User::memberships(&mut conn, &user.id).await?.len() > 1 {
        // The account is shared with other workspaces: one workspace's
        // owner may not lock it out of the others.
        return Err(conflict(
            "this user belongs to other workspaces too: remove them from this one instead",
        ));
    }
    if let Some(new_role) = body.role {
        User::set_role(&mut conn, &user.id, &who.workspace_id, new_role).await?;
    }
    if let Some(disabled) = body.disabled {
        User::set_disabled(&mut conn, &user.id, disabled).await?;
        if disabled {
            Session::revoke_all(&mut conn, &user.id).await?;
        }
    }
    let (user, role) = member(&state, &who, &id).await?;
    drop(conn);
    let after = member_json(&user, role);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "user.update",
            target_kind: "user",
            target_id: Some(&user.id),
            before: Some(before),
            after: Some(after.clone()),
        },
    )
    .await;
    Ok(HttpResponse::Ok().json(after))
}

async fn remove_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Owner)?;
    let (user, role) = member(&state, &who, &id).await?;
    if role == Role::Owner {
        keep_an_owner(&state, &who, &user.id).await?;
    }
    let mut conn = state.app.db.get().await?;
    User::remove_from(&mut conn, &user.id, &who.workspace_id).await?;
    Session::revoke_in(&mut conn, &user.id, &who.workspace_id).await?;
    // Their API tokens end with them, for good (disabling only pauses them).
    ApiToken::revoke_created_by(&mut conn, &user.id, &who.workspace_id).await?;
    drop(conn);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "user.remove",
            target_kind: "user",
            target_id: Some(&user.id),
            before: Some(member_json(&user, role)),
            after: None,
        },
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

async fn list_tokens(state: web::Data<AppState>, who: Principal) -> Result<HttpResponse, ApiError> {
    who.require(Role::Owner)?;
    let mut conn = state.app.db.get().await?;
    let tokens = ApiToken::list(&mut conn, &who.workspace_id).await?;
    let mut items = Vec::with_capacity(tokens.len());
    for token in tokens {
        // Who answers for it, and the role it acts with now.
        let creator = token.creator(&mut conn).await?;
        let mut item = serde_json::to_value(&token).unwrap_or_default();
        item["owned_by"] = json!(match creator {
            Creator::Workspace => "workspace",
            _ => "creator",
        });
        item["acting_role"] = json!(effective_role(token.role, creator));
        if creator == Creator::Gone {
            item["inactive"] = json!("its creator was disabled or left the workspace");
        }
        items.push(item);
    }
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": null })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
    expires_in_days: Option<i64>,
}

async fn create_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    body: Json<NewToken>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Owner)?;
    let name = super::text_field("name", &body.name, 100)?;
    let expires_at = match body.expires_in_days {
        None => None,
        Some(days) if (1..=3650).contains(&days) => {
            Some(store::db::now() + chrono::Duration::days(days))
        }
        Some(days) => {
            return Err(bad_request(format!(
                "expires_in_days must be 1-3650, not {days}"
            )));
        }
    };
    let secret = auth::new_token(auth::API_TOKEN_PREFIX);
    let mut conn = state.app.db.get().await?;
    let token = ApiToken::create(
        &mut conn,
        &who.workspace_id,
        &name,
        body.role,
        &auth::token_hash(&secret),
        who.user_id(),
        expires_at,
    )
    .await?;
    drop(conn);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "token.create",
            target_kind: "api_token",
            target_id: Some(&token.id),
            before: None,
            after: serde_json::to_value(&token).ok(),
        },
    )
    .await;
    let mut body = serde_json::to_value(&token).unwrap_or_default();
    body["token"] = json!(secret);
    Ok(HttpResponse::Created().json(body))
}

async fn revoke_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Owner)?;
    let mut conn = state.app.db.get().await?;
    let token = ApiToken::revoke(&mut conn, &who.workspace_id, &id)
        .await?
        .ok_or_else(|| not_found("token"))?;
    drop(conn);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "token.revoke",
            target_kind: "api_token",
            target_id: Some(&token.id),
            before: None,
            after: serde_json::to_value(&token).ok(),
        },
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct AuditQuery {
    action: Option<String>,
    actor_id: Option<String>,
    target_kind: Option<String>,
    target_id: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

impl AuditQuery {
    /// The filter; a blank parameter filters nothing (an empty form field).
    fn filter(&self) -> AuditFilter<'_> {
        fn set(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        AuditFilter {
            action: set(&self.action),
            actor_id: set(&self.actor_id),
            target_kind: set(&self.target_kind),
            target_id: set(&self.target_id),
        }
    }

    fn page(&self) -> Page {
        Page {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

async fn audit_log(
    state: web::Data<AppState>,
    who: Principal,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let limit = query.page().limit()?;
    let before = query
        .page()
        .cursor()?
        .and_then(|parts| parts.into_iter().next());
    let mut conn = state.app.db.get().await?;
    let entries = AuditEntry::page(
        &mut conn,
        &who.workspace_id,
        query.filter(),
        before.as_deref(),
        limit + 1,
    )
    .await?;
    let more = entries.len() as i64 > limit;
    let entries: Vec<_> = entries.into_iter().take(limit as usize).collect();
    let next = more
        .then(|| entries.last().map(|e| cursor_of(&[&e.id])))
        .flatten();
    let items: Vec<_> = entries
        .iter()
        .map(|e| {
            let parse = |s: &Option<String>| {
                s.as_deref()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            };
            json!({
                "id": e.id,
                "actor_kind": e.actor_kind,
                "actor_id": e.actor_id,
                "action": e.action,
                "target_kind": e.target_kind,
                "target_id": e.target_id,
                "source_ip": e.source_ip,
                "request_id": e.request_id,
                "before": parse(&e.before_state),
                "after": parse(&e.after_state),
                "created_at": e.created_at,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": next })))
}
