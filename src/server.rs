//! The HTTP server: one [`build`], called by [`crate::app::start`].
//!
//! Every request passes through `observe`: it gets a request id (the
//! client's `X-Request-Id` when sane, else a new one, echoed in the response),
//! a tracing span carrying that id, and a place in the Prometheus metrics
//! (count and latency by route pattern and status). Bodies are limited to
//! `server.max_body_bytes`. On SIGTERM/SIGINT the server stops accepting and
//! lets in-flight requests finish for up to `server.shutdown_timeout_secs`.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App as ActixApp, HttpMessage, HttpResponse, HttpServer, web};
use prometheus::Encoder;
use serde_json::json;
use tracing::Instrument;

use crate::answerer::Answerer;
use crate::context::App;
use crate::error::{ApiError, ErrorKind};
use crate::http::{AppState, REQUEST_ID, RequestId, resource};
use broker::{AnyBroker, Broker};

/// Builds the server on `listener` (bind port 0 in tests). The caller awaits
/// or spawns the returned [`Server`]; the address is where it listens.
pub fn build(
    app: App,
    answerer: Arc<Answerer>,
    listener: TcpListener,
) -> anyhow::Result<(Server, SocketAddr)> {
    let addr = listener.local_addr()?;
    let settings = app.settings.clone();
    let state = AppState {
        metrics: app.metrics.clone(),
        logins: Arc::new(crate::auth::LoginGate::new(
            app.broker.clone(),
            settings.auth.login_attempts,
            Duration::from_secs(settings.auth.login_window_secs),
            settings.auth.password_checks,
            settings.auth.login_queue,
        )),
        hub: crate::hub::Hub::new(app.clone()),
        answerer,
        app,
    };
    let limit = settings.server.max_body_bytes;
    let mut server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(web::PayloadConfig::new(limit))
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(|e, _| json_error(&e).into()),
            )
            .app_data(web::FormConfig::default().limit(limit))
            .wrap(from_fn(observe))
            .service(resource("/healthz").route(web::get().to(healthz)))
            .service(resource("/readyz").route(web::get().to(readyz)))
            .service(resource("/metrics").route(web::get().to(metrics)))
            .configure(crate::webhooks::configure)
            .configure(crate::api::configure)
            .configure(crate::realtime::configure)
            .configure(crate::console::configure)
            .default_service(web::to(not_found))
    })
    .shutdown_timeout(settings.server.shutdown_timeout_secs)
    // Signals are ours to handle (see `stop_on_signals`): actix would treat
    // SIGINT as a forced stop that drops in-flight requests.
    .disable_signals()
    .listen(listener)?;
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    tracing::info!(%addr, "listening");
    Ok((server.run(), addr))
}

/// On the first SIGTERM or SIGINT: tells `stop` (the workers finish their
/// current turn) and stops `server` gracefully (no new connections,
/// in-flight requests finish, up to `server.shutdown_timeout_secs`). A
/// second signal exits at once.
pub fn stop_on_signals(handle: Option<ServerHandle>, stop: tokio::sync::watch::Sender<bool>) {
    tokio::spawn(async move {
        let signal = shutdown_signal().await;
        // Stop first, log after: logging must never stand between a signal
        // and the shutdown.
        let _ = stop.send(true);
        let graceful = async {
            if let Some(handle) = &handle {
                handle.stop(true).await;
            }
        };
        tracing::info!(
            signal,
            "shutting down: finishing in-flight work (signal again to force)"
        );
        tokio::select! {
            () = graceful => {}
            signal = shutdown_signal() => {
                tracing::warn!(signal, "second signal: exiting now");
                std::process::exit(130);
            }
        }
        // Workers may still be finishing their turn; a second signal still
        // cuts them short.
        let signal = shutdown_signal().await;
        tracing::warn!(signal, "second signal: exiting now");
        std::process::exit(130);
    });
}

/// The next SIGTERM or SIGINT (Ctrl-C elsewhere).
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "ctrl-c"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

fn json_error(error: &actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match error {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => {
            ApiError::new(ErrorKind::PayloadTooLarge, "request body is too large")
        }
        E::ContentType => ApiError::new(
            ErrorKind::BadRequest,
            "expected Content-Type: application/json",
        ),
        E::Payload(e) => crate::error::from_payload_error(e),
        other => ApiError::new(ErrorKind::BadRequest, format!("invalid JSON body: {other}")),
    }
}

/// Request id, span, metrics and an access log line around every request.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    // A client chooses the method: unknown ones share one label so they
    // cannot create unbounded metric series.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let metrics = state.as_ref().map(|s| s.metrics.clone());
    // Refuse a declared oversized body before anyone reads it; extractors
    // enforce the same limit on bodies without Content-Length. The email
    // routes check their account first (404 before 413) and their own limit.
    let too_large = state
        .as_ref()
        .filter(|_| !route.starts_with("/webhooks/email/"))
        .and_then(|s| {
            crate::http::declared_too_large(req.headers(), s.app.settings.server.max_body_bytes)
        });
    let span = tracing::info_span!("request", request_id = %request_id, %method, %route);
    let started = Instant::now();

    // Never hold a clone of the HttpRequest across this call: routing needs
    // the request uniquely owned.
    let result = match too_large {
        Some(error) => {
            use actix_web::ResponseError;
            let (http_req, _) = req.into_parts();
            Ok(ServiceResponse::new(http_req, error.error_response()).map_into_right_body())
        }
        None => next
            .call(req)
            .instrument(span.clone())
            .await
            .map(ServiceResponse::map_into_left_body),
    };
    let elapsed = started.elapsed();
    let status = match &result {
        Ok(res) => res.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    if let Some(metrics) = metrics {
        let labels = [method.as_str(), route.as_str(), status.as_str()];
        metrics.http_requests.with_label_values(&labels).inc();
        metrics
            .http_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }
    let mut res = result?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    let _entered = span.enter();
    let latency_ms = (elapsed.as_secs_f64() * 100_000.0).round() / 100.0;
    if matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::debug!(status = status.as_u16(), latency_ms, "answered");
    } else if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), latency_ms, "answered");
    } else {
        tracing::info!(status = status.as_u16(), latency_ms, "answered");
    }
    Ok(res)
}

/// `GET /healthz`: the process is up.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Whether the caller may read internals (error texts of `/readyz`):
/// connected from this machine (no proxy in between), or carrying the
/// metrics token, a session or an API token.
async fn privileged(state: &AppState, req: &actix_web::HttpRequest) -> bool {
    let forwarded = req.headers().contains_key("x-forwarded-for");
    if !forwarded && req.peer_addr().is_some_and(|a| a.ip().is_loopback()) {
        return true;
    }
    let Some(token) = crate::auth::token_of(req, false) else {
        return false;
    };
    if metrics_token_matches(state, &token) == Some(true) {
        return true;
    }
    crate::auth::authenticate(&state.app, Some(&token))
        .await
        .is_ok()
}

/// Whether `token` is the metrics token; `None` when none is configured.
fn metrics_token_matches(state: &AppState, token: &str) -> Option<bool> {
    let expected = state.app.settings.security.metrics_token.as_deref()?;
    Some(channels::constant_time_eq(
        token.as_bytes(),
        expected.as_bytes(),
    ))
}

/// `GET /readyz`: the database and (when configured) Redis answer, and the
/// bot files were applied. 503 with the failing checks otherwise. Why a
/// check fails is shown to local and authenticated callers only: error
/// texts name hosts, paths and versions.
async fn readyz(state: web::Data<AppState>, req: actix_web::HttpRequest) -> HttpResponse {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let database = match tokio::time::timeout(TIMEOUT, state.app.db.ping()).await {
        Ok(Ok(())) => {
            json!({ "ok": true, "backend": format!("{:?}", state.app.db.backend()).to_lowercase() })
        }
        Ok(Err(e)) => json!({ "ok": false, "error": e.to_string() }),
        Err(_) => json!({ "ok": false, "error": "no answer within 2 s" }),
    };
    let mut checks = serde_json::Map::new();
    checks.insert("database".into(), database);
    if let AnyBroker::Redis(_) = &state.app.broker {
        let redis = match tokio::time::timeout(TIMEOUT, state.app.broker.ping()).await {
            Ok(Ok(())) => json!({ "ok": true }),
            Ok(Err(e)) => json!({ "ok": false, "error": e.to_string() }),
            Err(_) => json!({ "ok": false, "error": "no answer within 2 s" }),
        };
        checks.insert("redis".into(), redis);
    }
    checks.insert(
        "bot_files".into(),
        json!({ "ok": true, "files": state.app.bot_files.files }),
    );
    let synced = state
        .app
        .knowledge_synced
        .load(std::sync::atomic::Ordering::SeqCst);
    let mut knowledge =
        json!({ "ok": synced, "startup_sync": if synced { "done" } else { "running" } });
    match state.app.knowledge.embedder_status() {
        Some(Ok(())) => knowledge["search"] = json!("hybrid"),
        Some(Err(why)) => {
            knowledge["search"] = json!("bm25_only");
            knowledge["degraded"] = json!(why);
        }
        None => knowledge["search"] = json!("loading"),
    }
    // A missing reranker is a warning, not unreadiness: search still works.
    match state.app.knowledge.reranker_status() {
        Some(Ok(())) => knowledge["reranker"] = json!(knowledge::models::RERANKER_ID),
        Some(Err(why)) => {
            knowledge["reranker"] = json!("off");
            knowledge["warnings"] = json!([why]);
        }
        None if state.app.settings.embedding.rerank => knowledge["reranker"] = json!("loading"),
        None => knowledge["reranker"] = json!("off"),
    }
    checks.insert("knowledge".into(), knowledge);
    let ready = checks.values().all(|c| c["ok"] == json!(true));
    if !privileged(&state, &req).await {
        for check in checks.values_mut() {
            if let Some(check) = check.as_object_mut() {
                for key in ["error", "degraded", "warnings", "files"] {
                    if check.remove(key).is_some() && key != "files" {
                        check.insert(
                            key.into(),
                            json!("hidden: ask from this machine or with a token"),
                        );
                    }
                }
            }
        }
    }
    let body = json!({ "status": if ready { "ready" } else { "not_ready" }, "checks": checks });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: Prometheus text format; with `security.metrics_token`
/// set, only for `Authorization: Bearer` with that token.
async fn metrics(state: web::Data<AppState>, req: actix_web::HttpRequest) -> HttpResponse {
    let token = crate::auth::token_of(&req, false).unwrap_or_default();
    if metrics_token_matches(&state, &token) == Some(false) {
        use actix_web::ResponseError;
        return ApiError::new(
            ErrorKind::Unauthorized,
            "GET /metrics needs Authorization: Bearer with security.metrics_token",
        )
        .error_response();
    }
    let mut buffer = Vec::new();
    match prometheus::TextEncoder::new().encode(&state.metrics.registry.gather(), &mut buffer) {
        Ok(()) => HttpResponse::Ok()
            .content_type(prometheus::TEXT_FORMAT)
            .body(buffer),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::new(
        ErrorKind::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    )
    .error_response()
}
