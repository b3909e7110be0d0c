//! Webhook routes, one family per channel. Each handler is thin: find the
//! account, verify over the raw bytes, parse, ingest, answer. A bad or
//! missing signature is 401 and stores nothing; a malformed body is 400 with
//! the reason; 200 comes only after every message is stored and queued.
//!
//! | route | account from | verification |
//! |---|---|---|
//! | `GET /webhooks/messenger` | any Messenger account's verify token | `hub.verify_token` |
//! | `POST /webhooks/messenger` | `entry[].id` (page id) | `X-Hub-Signature-256` |
//! | `GET /webhooks/whatsapp`, `/webhooks/instagram` | as Messenger's | `hub.verify_token` |
//! | `POST /webhooks/whatsapp` | `entry[].changes[].value.metadata.phone_number_id` | `X-Hub-Signature-256` |
//! | `POST /webhooks/instagram` | `entry[].id` (Instagram account id) | `X-Hub-Signature-256` |
//! | `POST /webhooks/telegram/{account}` | the path | secret-token header |
//! | `POST /webhooks/email/{account}` (and `…/mime`) | the path | Mailgun signature, window, one-time token |

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use channels::{Channel, ChannelKind, RoutedEvent, Secrets, VerifyError, WebhookRequest};
use serde_json::json;

use crate::accounts::Route;
use crate::error::{ApiError, ErrorKind};
use crate::http::{AppState, resource};
use crate::ingest::{IngestReport, ingest};
use store::models::channel_account::{AccountSecrets, ChannelAccount};

/// How long an accepted email token is remembered: the signature window
/// plus margin for clock skew.
const TOKEN_MEMORY: chrono::Duration = chrono::Duration::minutes(11);

/// The most distinct accounts one batch of Meta's may name (a page's
/// batches name one; Meta batches at most a few accounts of one app).
const MAX_PAGES: usize = 100;

/// Registers the webhook routes. The email routes read their own bodies,
/// under `channels.email.max_body_bytes`, once their account is known.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/webhooks/messenger")
            .route(web::get().to(messenger_subscribe))
            .route(web::post().to(messenger)),
    )
    .service(
        resource("/webhooks/whatsapp")
            .route(web::get().to(whatsapp_subscribe))
            .route(web::post().to(whatsapp)),
    )
    .service(
        resource("/webhooks/instagram")
            .route(web::get().to(instagram_subscribe))
            .route(web::post().to(instagram)),
    )
    .service(resource("/webhooks/telegram/{account}").route(web::post().to(telegram)))
    .service(resource("/webhooks/email/{account}").route(web::post().to(email)))
    // Mailgun posts the raw MIME (`body-mime`) to forward URLs ending in `mime`.
    .service(resource("/webhooks/email/{account}/mime").route(web::post().to(email)));
}

fn request(req: &HttpRequest, body: web::Bytes) -> WebhookRequest {
    WebhookRequest {
        headers: req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        query: req.query_string().to_owned(),
        body,
        received_at: chrono::Utc::now(),
    }
}

fn secrets(route: &Route) -> Result<&AccountSecrets, ApiError> {
    route.secrets.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::Internal,
            "the account's credentials cannot be read",
        )
    })
}

/// The active account named in the path, of the route's kind, from the
/// accounts held in memory.
async fn account_from_path(
    state: &AppState,
    kind: ChannelKind,
    public_id: &str,
) -> Result<Arc<Route>, ApiError> {
    let app = &state.app;
    match app
        .accounts
        .by_public_id(&app.db, &app.master_key, public_id)
        .await?
    {
        Some(route) if route.account.kind == kind => Ok(route),
        _ => {
            state.metrics.webhook(kind, "unknown_account");
            Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no active {kind} account `{public_id}`"),
            ))
        }
    }
}

fn unauthorized(state: &AppState, kind: ChannelKind, error: &VerifyError) -> ApiError {
    state.metrics.webhook(kind, "unauthorized");
    tracing::warn!(channel = %kind, %error, "webhook refused");
    ApiError::new(
        ErrorKind::Unauthorized,
        format!("webhook not verified: {error}"),
    )
}

fn bad_request(state: &AppState, kind: ChannelKind, reason: String) -> ApiError {
    state.metrics.webhook(kind, "bad_request");
    tracing::warn!(channel = %kind, %reason, "webhook body refused");
    ApiError::new(ErrorKind::BadRequest, reason)
}

fn require_json(
    state: &AppState,
    kind: ChannelKind,
    request: &WebhookRequest,
) -> Result<(), ApiError> {
    let essence = request
        .header("content-type")
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/json") {
        Ok(())
    } else {
        state.metrics.webhook(kind, "bad_request");
        Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ))
    }
}

fn accepted(state: &AppState, kind: ChannelKind, report: &IngestReport) -> HttpResponse {
    state.metrics.webhook(kind, "accepted");
    state.metrics.events(kind, &report.counts());
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "stored": report.stored,
        "duplicates": report.duplicates,
        "edits": report.edits,
        "receipts": report.receipts,
        "reactions": report.reactions,
        "skipped": report.skipped,
    }))
}

/// `POST /webhooks/telegram/{account}`
async fn telegram(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let kind = ChannelKind::Telegram;
    let route = account_from_path(&state, kind, &path).await?;
    let request = request(&req, body);
    let adapter = &state.app.channels.telegram;
    adapter
        .verify(&request, secrets(&route)?)
        .map_err(|e| unauthorized(&state, kind, &e))?;
    require_json(&state, kind, &request)?;
    let events = adapter
        .parse(&request)
        .map_err(|e| bad_request(&state, kind, e.to_string()))?;
    let callbacks = channels::telegram::callback_ids(&events);
    let report = ingest(&state.app, &route.account, &route.workspace_id, events).await?;
    if !callbacks.is_empty() {
        // Stop the customer's button spinning; never holds up the answer.
        let telegram = adapter.clone();
        tokio::spawn(async move {
            let Some(secrets) = &route.secrets else {
                return;
            };
            for id in callbacks {
                if let Err(error) = telegram.answer_callback(secrets, &id).await {
                    tracing::debug!(%error, "callback query not acknowledged");
                }
            }
        });
    }
    Ok(accepted(&state, kind, &report))
}

/// `GET /webhooks/messenger`, `/webhooks/whatsapp`, `/webhooks/instagram`:
/// the subscribe handshake. The offered verify token is looked up in
/// memory; nothing is decrypted per request.
async fn meta_subscribe(
    state: web::Data<AppState>,
    req: HttpRequest,
    kind: ChannelKind,
) -> Result<HttpResponse, ApiError> {
    let app = &state.app;
    let query = req.query_string();
    let route = match crate::auth::url_param(query, "hub.verify_token") {
        Some(offered) if !offered.is_empty() => {
            app.accounts
                .by_verify_token(&app.db, &app.master_key, kind, &offered)
                .await?
        }
        _ => None,
    };
    let expected = route
        .as_ref()
        .and_then(|r| r.secrets.as_ref()?.get("verify_token"))
        .unwrap_or_default();
    match channels::meta::subscription_challenge(query, expected) {
        Ok(challenge) if !expected.is_empty() => {
            if let Some(route) = &route {
                tracing::info!(account = %route.account.public_id, channel = %kind, "webhook subscription verified");
            }
            Ok(HttpResponse::Ok()
                .content_type("text/plain")
                .body(challenge))
        }
        Err(e @ (VerifyError::MissingSignature(_) | VerifyError::MalformedSignature(_))) => Err(
            bad_request(&state, kind, format!("subscribe handshake: {e}")),
        ),
        _ => {
            state.metrics.webhook(kind, "unauthorized");
            Err(ApiError::new(
                ErrorKind::Forbidden,
                format!(
                    "subscribe handshake refused: the verify token matches no active {} account",
                    kind.display_name()
                ),
            ))
        }
    }
}

async fn messenger_subscribe(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    meta_subscribe(state, req, ChannelKind::Messenger).await
}

async fn whatsapp_subscribe(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    meta_subscribe(state, req, ChannelKind::Whatsapp).await
}

async fn instagram_subscribe(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    meta_subscribe(state, req, ChannelKind::Instagram).await
}

/// `POST /webhooks/messenger`: a batch for one or more pages of one app.
async fn messenger(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    meta_batch(state, req, body, ChannelKind::Messenger).await
}

/// `POST /webhooks/whatsapp`: a batch for one or more phone numbers.
async fn whatsapp(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    meta_batch(state, req, body, ChannelKind::Whatsapp).await
}

/// `POST /webhooks/instagram`: a batch for one or more accounts.
async fn instagram(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    meta_batch(state, req, body, ChannelKind::Instagram).await
}

/// A batch of one of Meta's platforms: the platform ids it names pick the
/// accounts, whose app secret verifies it; each verified account's events
/// are stored.
async fn meta_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
    kind: ChannelKind,
) -> Result<HttpResponse, ApiError> {
    let request = request(&req, body);
    require_json(&state, kind, &request)?;
    let ids = match kind {
        ChannelKind::Whatsapp => channels::whatsapp::phone_number_ids(&request.body, MAX_PAGES),
        ChannelKind::Instagram => channels::instagram::account_ids(&request.body, MAX_PAGES),
        _ => channels::messenger::page_ids(&request.body, MAX_PAGES),
    }
    .map_err(|e| bad_request(&state, kind, e.to_string()))?;
    let app = &state.app;
    let mut accounts = Vec::new();
    for id in &ids {
        if let Some(route) = app
            .accounts
            .by_external_id(&app.db, &app.master_key, kind, id)
            .await?
        {
            accounts.push(route);
        }
    }
    if accounts.is_empty() {
        state.metrics.webhook(kind, "unknown_account");
        let what = match kind {
            ChannelKind::Whatsapp => "phone number id(s)",
            ChannelKind::Instagram => "account id(s)",
            _ => "page(s)",
        };
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!(
                "no active {} account for {what} {}",
                kind.display_name(),
                ids.join(", ")
            ),
        ));
    }
    let mut verified = Vec::new();
    let mut error = None;
    for route in accounts {
        let checked = secrets(&route)?.require("app_secret").and_then(|secret| {
            channels::meta::verify_signature(
                secret,
                &request.body,
                request.header(channels::meta::SIGNATURE_HEADER),
            )
        });
        match checked {
            Ok(()) => verified.push(route),
            Err(e) => {
                // Accounts of one batch share the app: one that does not
                // verify is misconfigured (another app secret).
                tracing::error!(account = %route.account.public_id, error = %e, "account failed verification; its events are dropped");
                state.metrics.webhook(kind, "unauthorized");
                error = Some(e);
            }
        }
    }
    if verified.is_empty() {
        let error = error.unwrap_or(VerifyError::BadSignature);
        return Err(unauthorized(&state, kind, &error));
    }
    let events = match kind {
        ChannelKind::Whatsapp => channels::whatsapp::parse_batch(&request.body),
        ChannelKind::Instagram => channels::instagram::parse_batch(&request.body),
        _ => channels::messenger::parse_batch(&request.body),
    }
    .map_err(|e| bad_request(&state, kind, e.to_string()))?;
    let mut total = IngestReport::default();
    for route in &verified {
        let account = &route.account;
        let mine: Vec<RoutedEvent> = events
            .iter()
            .filter(|e| e.account.as_deref() == account.external_id.as_deref())
            .cloned()
            .collect();
        let read: Vec<String> = mine
            .iter()
            .filter_map(|e| match &e.event {
                channels::InboundEvent::Message(m) => Some(m.external_id.clone()),
                _ => None,
            })
            .collect();
        let report = ingest(&state.app, account, &route.workspace_id, mine).await?;
        if kind == ChannelKind::Whatsapp && !read.is_empty() {
            mark_read(&state, route.clone(), read);
        }
        total.stored += report.stored;
        total.duplicates += report.duplicates;
        total.edits += report.edits;
        total.receipts += report.receipts;
        total.reactions += report.reactions;
        total.skipped.extend(report.skipped);
    }
    let unverified = events
        .iter()
        .filter(|e| {
            !verified
                .iter()
                .any(|r| r.account.external_id.as_deref() == e.account.as_deref())
        })
        .count();
    if unverified > 0 {
        total.skipped.push(format!(
            "{unverified} event(s) for accounts that did not verify"
        ));
    }
    Ok(accepted(&state, kind, &total))
}

/// Marks stored WhatsApp messages read (the customer's blue ticks), after
/// the answer to the webhook; best effort, never holds it up.
fn mark_read(state: &AppState, route: Arc<Route>, ids: Vec<String>) {
    let whatsapp = state.app.channels.whatsapp.clone();
    tokio::spawn(async move {
        let Some(secrets) = &route.secrets else {
            return;
        };
        let from = channels::Recipient {
            via: route.account.external_id.clone(),
            ..channels::Recipient::chat("")
        };
        for id in ids {
            if let Err(error) = whatsapp.mark_read(secrets, &from, &id).await {
                tracing::debug!(%error, "WhatsApp message not marked read");
            }
        }
    });
}

/// `POST /webhooks/email/{account}`: a Mailgun inbound route. The account
/// comes first: an unknown or disabled one is 404 before a byte of the body
/// is read, whatever its size.
async fn email(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let kind = ChannelKind::Email;
    let route = account_from_path(&state, kind, &path).await?;
    let limit = state.app.settings.channels.email.max_body_bytes;
    let body = read_body(&req, payload, limit).await?;
    let request = request(&req, body);
    let adapter = state.app.channels.email.clone();
    let secrets = secrets(&route)?;
    let token = adapter
        .verify(&request, secrets)
        .map_err(|e| unauthorized(&state, kind, &e))?;
    // Burn the token before anything else, atomically and per signing key:
    // a replay — concurrent, or aimed at another account with the same key —
    // finds it taken.
    let signer = signer(secrets.get("signing_key").unwrap_or_default());
    if let Some(token) = &token {
        let mut conn = state.app.db.get().await?;
        if !ChannelAccount::accept_token(&mut conn, &signer, token, TOKEN_MEMORY).await? {
            return Err(unauthorized(&state, kind, &VerifyError::BadSignature)
                .with_message("webhook not verified: token already used"));
        }
    }
    // MIME parsing is CPU work: off the server's threads.
    let parsed = web::block(move || adapter.parse(&request))
        .await
        .map_err(|_| ApiError::new(ErrorKind::Internal, "email parsing was interrupted"))?;
    let events = parsed.map_err(|e| bad_request(&state, kind, e.to_string()))?;
    match ingest(&state.app, &route.account, &route.workspace_id, events).await {
        Ok(report) => Ok(accepted(&state, kind, &report)),
        Err(error) => {
            // Not stored: the platform's retry must be accepted.
            if let Some(token) = &token
                && let Ok(mut conn) = state.app.db.get().await
            {
                let _ = ChannelAccount::forget_token(&mut conn, &signer, token).await;
            }
            Err(error.into())
        }
    }
}

/// The body, up to `limit` bytes: a declared larger one is refused before
/// it is read, an undeclared one as soon as it passes the limit.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    if let Some(error) = crate::http::declared_too_large(req.headers(), limit) {
        return Err(error);
    }
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(error)) => Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("the request body could not be read: {error}"),
        )),
        Err(_) => Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body of more bytes is over the limit of {limit} bytes"),
        )),
    }
}

/// A short, non-reversible name for a signing key.
fn signer(key: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..12])
}
