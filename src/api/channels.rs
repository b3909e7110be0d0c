//! A bot's channel accounts: list them with what the business must paste
//! where ([`crate::channel_setup`]), add them (a Telegram bot with its token
//! alone: the server makes the secret token and sets the webhook), register
//! a Telegram webhook again, and remove them. Admins only; bots declared by
//! a bot file change in the file (409 here).

use actix_web::{HttpRequest, HttpResponse, web};
use channels::ChannelKind;
use serde_json::{Value, json};

use super::bots::workspace_bot;
use super::{Change, Origin, Route, bad_request, conflict, not_found, record};
use crate::auth::Principal;
use crate::botfiles::{ChannelFile, channel_spec};
use crate::channel_setup;
use crate::error::{ApiError, ErrorKind};
use crate::http::AppState;
use store::crypto::Secret;
use store::models::bot::Bot;
use store::models::channel_account::{AccountActivity, AccountSpec, AccountStatus, ChannelAccount};
use store::models::user::Role;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/bots/{id}/channels",
        role: Some(Role::Admin),
        summary: "The bot's active channel accounts (never their credentials, but Messenger's verify token), each with `connected`, `setup` (what to paste on the platform's side), `last_webhook_at` and `last_delivery_error`; the web chat account is made on first use",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(list_channels),
    },
    Route {
        method: "POST",
        path: "/bots/{id}/channels",
        role: Some(Role::Admin),
        summary: "Add a channel account; credentials are stored encrypted and never returned. Telegram: without `secret_token` the server makes one, and with `server.public_url` set it calls setWebhook first (its refusal is answered 422 for a bad token, 502 otherwise, and nothing is stored)",
        body: &[
            ("kind", "string", true),
            ("id", "string", true),
            ("bot_token", "string", false),
            ("secret_token", "string", false),
            ("page_id", "string", false),
            ("app_secret", "string", false),
            ("page_access_token", "string", false),
            ("verify_token", "string", false),
            ("address", "string", false),
            ("signing_key", "string", false),
        ],
        query: &[],
        ok: 201,
        mount: |r| r.to(create_channel),
    },
    Route {
        method: "DELETE",
        path: "/bots/{id}/channels/{channel_id}",
        role: Some(Role::Admin),
        summary: "Remove a channel account (by id or public id): Telegram's webhook is deleted (best effort), the account disabled, its conversations kept",
        body: &[],
        query: &[],
        ok: 204,
        mount: |r| r.to(delete_channel),
    },
    Route {
        method: "POST",
        path: "/bots/{id}/channels/{channel_id}/webhook",
        role: Some(Role::Admin),
        summary: "Telegram: (re)register the webhook with setWebhook at `server.public_url`, with the stored secret token",
        body: &[],
        query: &[],
        ok: 200,
        mount: |r| r.to(register_webhook),
    },
];

/// An account as the audit log keeps it: no setup (it holds a verify
/// token), no activity.
fn audit_json(account: &ChannelAccount) -> Value {
    json!({
        "id": account.id,
        "public_id": account.public_id,
        "bot_id": account.bot_id,
        "kind": account.kind.as_str(),
        "external_id": account.external_id,
        "status": account.status,
        "webhook_set_at": account.webhook_set_at,
    })
}

/// An account as the API shows it.
fn channel_json(state: &AppState, account: &ChannelAccount, activity: &AccountActivity) -> Value {
    let credentials = account
        .open_credentials(&state.app.master_key)
        .unwrap_or_else(|error| {
            tracing::error!(account = %account.id, %error, "credentials do not open");
            Default::default()
        });
    let mut out = audit_json(account);
    out["webhook"] = match account.kind {
        ChannelKind::Telegram => json!(format!("/webhooks/telegram/{}", account.public_id)),
        ChannelKind::Email => json!(format!("/webhooks/email/{}", account.public_id)),
        ChannelKind::Messenger => json!("/webhooks/messenger"),
        ChannelKind::Whatsapp => json!("/webhooks/whatsapp"),
        ChannelKind::Instagram => json!("/webhooks/instagram"),
        ChannelKind::Webchat => Value::Null,
    };
    out["connected"] = json!(channel_setup::connected(account, activity));
    out["setup"] = channel_setup::setup(
        state.app.settings.server.public_url.as_ref(),
        account,
        &credentials,
    );
    out["last_webhook_at"] = json!(activity.last_inbound_at);
    out["last_delivery_error"] = match &activity.last_delivery_error {
        Some((at, message)) => json!({ "at": at, "message": message }),
        None => Value::Null,
    };
    out["created_at"] = json!(account.created_at);
    out["updated_at"] = json!(account.updated_at);
    out
}

/// `accounts` as the API shows them, their activity read in one go.
async fn channels_json(
    state: &AppState,
    accounts: &[ChannelAccount],
) -> Result<Vec<Value>, ApiError> {
    let ids: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
    let mut conn = state.app.db.get().await?;
    let activity = ChannelAccount::activity(&mut conn, &ids).await?;
    drop(conn);
    let none = AccountActivity::default();
    Ok(accounts
        .iter()
        .map(|a| channel_json(state, a, activity.get(&a.id).unwrap_or(&none)))
        .collect())
}

/// One account as the API shows it.
async fn one_json(state: &AppState, account: &ChannelAccount) -> Result<Value, ApiError> {
    Ok(channels_json(state, std::slice::from_ref(account))
        .await?
        .pop()
        .unwrap_or_default())
}

async fn list_channels(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let bot = workspace_bot(&state, &who, &id).await?;
    // The widget's account, so its embed snippet is there before its first use.
    channel_setup::webchat_account(&state.app, &bot).await?;
    let mut conn = state.app.db.get().await?;
    let accounts: Vec<ChannelAccount> = ChannelAccount::of_bot(&mut conn, &bot.id)
        .await?
        .into_iter()
        .filter(|a| a.status == AccountStatus::Active)
        .collect();
    drop(conn);
    let items = channels_json(&state, &accounts).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": null })))
}

/// 409 for a bot declared by a bot file: `what` it should do there.
fn editable(bot: &Bot, what: &str) -> Result<(), ApiError> {
    match &bot.source_file {
        Some(file) => Err(conflict(format!(
            "this bot is declared in {file}: {what} there"
        ))),
        None => Ok(()),
    }
}

/// The body as an account of `bot_id`. Parsed here, not by an extractor:
/// serde would quote a bad value, and a value may be a credential. A
/// Telegram account without `secret_token` gets a new random one.
fn declared(body: &[u8], bot_id: &str) -> Result<AccountSpec, ApiError> {
    let mut raw: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("invalid JSON body at line {}", e.line())))?;
    if raw["kind"] == "telegram" && raw.get("secret_token").is_none_or(Value::is_null) {
        // 32 random bytes, base64url: within Telegram's 1-256 of A-Z a-z 0-9 _ -.
        raw["secret_token"] = json!(crate::auth::new_token(""));
    }
    let channel: ChannelFile = serde_json::from_value(raw).map_err(|e| {
        bad_request(format!(
            "not a channel: {}",
            crate::botfiles::without_values(&e.to_string())
        ))
    })?;
    // Credentials come inline: `env:` references are for bot files, never
    // for API clients (they would read the server's environment).
    let inline = |key: &str, raw: String| -> Result<Secret, (String, String)> {
        if raw.trim().is_empty() {
            return Err((key.to_owned(), "must not be empty".into()));
        }
        if raw.starts_with("env:") {
            return Err((
                key.to_owned(),
                "env: references are only for bot files; send the value".into(),
            ));
        }
        Ok(Secret::new(raw))
    };
    let loaded = channel_spec(channel, &inline, None)
        .map_err(|(key, message)| bad_request(format!("`{key}` {message}")))?;
    if loaded.public_id.starts_with("webchat-") {
        return Err(bad_request(
            "`id` must not start with `webchat-` (reserved for the chat widget)",
        ));
    }
    Ok(AccountSpec {
        public_id: loaded.public_id,
        bot_id: bot_id.to_owned(),
        kind: loaded.kind,
        external_id: loaded.external_id,
        credentials: loaded.credentials,
    })
}

async fn create_channel(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let bot = workspace_bot(&state, &who, &id).await?;
    editable(&bot, "add the channel to its [[channels]]")?;
    let spec = declared(&body, &bot.id)?;
    let app = &state.app;

    // Everything that would refuse the account is checked before Telegram
    // is told to send this bot's updates here.
    let mut conn = app.db.get().await?;
    let removed = match ChannelAccount::find_by_public_id(&mut conn, &spec.public_id).await? {
        // A removed account of this bot comes back under its id.
        Some(old)
            if old.status == AccountStatus::Disabled
                && old.bot_id == bot.id
                && old.kind == spec.kind =>
        {
            Some(old)
        }
        Some(_) => {
            return Err(conflict(format!(
                "a channel with id `{}` exists already",
                spec.public_id
            )));
        }
        None => None,
    };
    if let Some(external_id) = &spec.external_id
        && ChannelAccount::find_active_by_external_id(&mut conn, spec.kind, external_id)
            .await?
            .is_some()
    {
        return Err(conflict(format!(
            "another active {} account already uses `{external_id}`",
            spec.kind.as_str()
        )));
    }
    drop(conn);

    let registered = spec.kind == ChannelKind::Telegram && app.settings.server.public_url.is_some();
    if registered {
        let secret = |name: &str| spec.credentials.get(name).map_or("", Secret::expose);
        channel_setup::register_telegram(
            app,
            secret("bot_token"),
            &spec.public_id,
            secret("secret_token"),
        )
        .await?;
    }

    let mut conn = app.db.get().await?;
    let stored = if removed.is_some() {
        ChannelAccount::upsert(&mut conn, &app.master_key, &spec)
            .await
            .map(|u| Some(u.row().clone()))
    } else {
        ChannelAccount::create(&mut conn, &app.master_key, &spec).await
    };
    // Insert only: an existing id (anyone's) is a conflict, never taken over.
    let mut account = stored
        .map_err(|e| ApiError::new(ErrorKind::Conflict, e.to_string()))?
        .ok_or_else(|| {
            conflict(format!(
                "a channel with id `{}` exists already",
                spec.public_id
            ))
        })?;
    account.webhook_set_at =
        ChannelAccount::mark_webhook_set(&mut conn, &account.id, registered).await?;
    drop(conn);
    app.accounts.changed(&app.broker).await;
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "channel.create",
            target_kind: "channel_account",
            target_id: Some(&account.id),
            before: removed.as_ref().map(audit_json),
            after: Some(audit_json(&account)),
        },
    )
    .await;
    Ok(HttpResponse::Created().json(one_json(&state, &account).await?))
}

/// The bot's active account `channel_id` (its id or public id).
async fn bot_account(
    state: &AppState,
    bot: &Bot,
    channel_id: &str,
) -> Result<ChannelAccount, ApiError> {
    let mut conn = state.app.db.get().await?;
    ChannelAccount::of_bot(&mut conn, &bot.id)
        .await?
        .into_iter()
        .find(|a| {
            a.status == AccountStatus::Active && (a.id == channel_id || a.public_id == channel_id)
        })
        .ok_or_else(|| not_found("channel"))
}

async fn delete_channel(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let (bot_id, channel_id) = path.into_inner();
    let bot = workspace_bot(&state, &who, &bot_id).await?;
    let account = bot_account(&state, &bot, &channel_id).await?;
    editable(&bot, "remove the channel from its [[channels]]")?;
    if account.kind == ChannelKind::Webchat {
        return Err(conflict(
            "the web chat is part of every bot: limit the pages that may open it with the bot's widget_origins",
        ));
    }
    let app = &state.app;
    // Best effort: the account is removed whatever Telegram says, and its
    // webhooks are refused from now on anyway.
    let mut webhook_error = None;
    if account.kind == ChannelKind::Telegram {
        let token = account
            .open_credentials(&app.master_key)
            .ok()
            .and_then(|c| c.get("bot_token").map(|t| t.expose().to_owned()));
        if let Some(token) = token
            && let Err(e) = app.channels.telegram.delete_webhook(&token).await
        {
            tracing::warn!(account = %account.public_id, error = %e, "Telegram deleteWebhook failed; the account is removed anyway");
            webhook_error = Some(e.description);
        }
    }
    let mut conn = app.db.get().await?;
    let after = ChannelAccount::disable(&mut conn, &account.id).await?;
    drop(conn);
    app.accounts.changed(&app.broker).await;
    let mut after_json = audit_json(&after);
    if account.kind == ChannelKind::Telegram {
        after_json["telegram_delete_webhook"] = json!(webhook_error.as_deref().unwrap_or("ok"));
    }
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "channel.delete",
            target_kind: "channel_account",
            target_id: Some(&account.id),
            before: Some(audit_json(&account)),
            after: Some(after_json),
        },
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

async fn register_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    who.require(Role::Admin)?;
    let (bot_id, channel_id) = path.into_inner();
    let bot = workspace_bot(&state, &who, &bot_id).await?;
    let mut account = bot_account(&state, &bot, &channel_id).await?;
    if account.kind != ChannelKind::Telegram {
        return Err(conflict(format!(
            "only Telegram webhooks are registered by the server; see this {} account's `setup`",
            account.kind.as_str()
        )));
    }
    let app = &state.app;
    let credentials = account
        .open_credentials(&app.master_key)
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    let secret = |name: &str| credentials.get(name).map_or("", Secret::expose);
    channel_setup::register_telegram(
        app,
        secret("bot_token"),
        &account.public_id,
        secret("secret_token"),
    )
    .await?;
    let before = audit_json(&account);
    let mut conn = app.db.get().await?;
    account.webhook_set_at = ChannelAccount::mark_webhook_set(&mut conn, &account.id, true).await?;
    drop(conn);
    record(
        &state,
        &who,
        &Origin::of(&req),
        Change {
            action: "channel.webhook",
            target_kind: "channel_account",
            target_id: Some(&account.id),
            before: Some(before),
            after: Some(audit_json(&account)),
        },
    )
    .await;
    Ok(HttpResponse::Ok().json(one_json(&state, &account).await?))
}
