//! What every HTTP handler shares: the state actix hands them, the request
//! id, routes that answer 405 for other methods, and the same-origin check
//! for cookie-authenticated browser requests. Below every handler; the
//! server (which mounts them) sits above.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::LoginLimiter;
use crate::context::App;
use crate::error::{ApiError, ErrorKind};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Header carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Database, settings, keys, broker.
    pub app: App,
    /// Prometheus metrics (the app's).
    pub metrics: Arc<Metrics>,
    /// Failed logins, per email and per address.
    pub limiter: Arc<LoginLimiter>,
    /// This node's event subscriptions, shared by its websockets.
    pub hub: Hub,
}

/// The request id of the current request, for handlers and audit entries.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A resource whose other methods get 405 (not the app-wide 404).
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
    .error_response()
}

/// Whether a browser request comes from our own pages: with cookie
/// authentication, a page of another site (or a sibling subdomain) could
/// otherwise act as the agent. Requests without `Origin` are not a
/// browser's cross-site requests.
pub fn same_origin(req: &HttpRequest) -> bool {
    let fetch_site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return false;
    }
    let Some(origin) = req.headers().get("origin").and_then(|o| o.to_str().ok()) else {
        return true; // not a browser
    };
    let host = req.connection_info().host().to_owned();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}
