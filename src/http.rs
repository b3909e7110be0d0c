//! What every HTTP handler shares: the state actix hands them, the request
//! id, routes that answer 405 for other methods, and the same-origin check
//! for cookie-authenticated browser requests. Below every handler; the
//! server (which mounts them) sits above.

use std::sync::Arc;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

use crate::auth::LoginGate;
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
    /// Login attempts per email and per address, and password checks.
    pub logins: Arc<LoginGate>,
    /// This node's event subscriptions, shared by its websockets.
    pub hub: Hub,
    /// The answer pipeline, for questions tried from the console.
    pub answerer: Arc<crate::answerer::Answerer>,
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

/// 413 for a body whose `Content-Length` is over `limit`, before anyone
/// reads it; `None` when it is within the limit or undeclared.
pub fn declared_too_large(
    headers: &actix_web::http::header::HeaderMap,
    limit: usize,
) -> Option<crate::error::ApiError> {
    let length = headers
        .get(actix_web::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&length| length > limit as u64)?;
    Some(crate::error::ApiError::new(
        crate::error::ErrorKind::PayloadTooLarge,
        format!("request body of {length} bytes is over the limit of {limit} bytes"),
    ))
}

/// Where a request comes from, for audit entries and rate limits.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Client address (the TCP peer).
    pub ip: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// Whether the browser reached us over HTTPS: a TLS connection of our
    /// own, or a trusted proxy's `X-Forwarded-Proto: https`.
    pub https: bool,
}

impl Origin {
    /// Of `req`: the TCP peer, or when the peer is a trusted proxy, the
    /// nearest untrusted address of `X-Forwarded-For`.
    pub fn of(req: &HttpRequest) -> Self {
        let trusted = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.app.settings.server.trusted_proxies.clone())
            .unwrap_or_default();
        let forwarded = forwarded_for(req);
        let peer = req.peer_addr().map(|a| a.ip());
        let via_proxy = peer.is_some_and(|p| trusted.contains(&p));
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().eq_ignore_ascii_case("https"));
        Self {
            ip: client_ip(peer, &forwarded, &trusted).map(|ip| ip.to_string()),
            request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
            https: req.app_config().secure() || (via_proxy && proto == Some(true)),
        }
    }
}

/// Every `X-Forwarded-For` line as one list: several lines are one list, in
/// order (RFC 9110 §5.3), and a proxy may append its own line after the
/// client's. An unreadable line counts as garbage, which stops the walk.
fn forwarded_for(req: &HttpRequest) -> String {
    let lines: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| v.to_str().unwrap_or("?"))
        .collect();
    lines.join(",")
}

/// The client's address: walking `X-Forwarded-For` from the right (the
/// hop nearest us) while the sender is a trusted proxy. A client cannot
/// forge its way past the first untrusted hop.
fn client_ip(
    peer: Option<std::net::IpAddr>,
    forwarded: &str,
    trusted: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    let mut client = peer?;
    for hop in forwarded.rsplit(',') {
        if !trusted.contains(&client) {
            break;
        }
        match hop.trim().parse() {
            Ok(ip) => client = ip,
            Err(_) => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::{client_ip, forwarded_for};

    #[test]
    fn every_forwarded_line_is_read_the_last_one_nearest() {
        let req = actix_web::test::TestRequest::default()
            .append_header(("x-forwarded-for", "6.6.6.6, 7.7.7.7"))
            .append_header(("x-forwarded-for", "1.2.3.4"))
            .to_http_request();
        let chain = forwarded_for(&req);
        assert_eq!(chain, "6.6.6.6, 7.7.7.7,1.2.3.4");
        let proxy = "10.0.0.1".parse().ok();
        let trusted = ["10.0.0.1".parse().expect("ip")];
        assert_eq!(
            client_ip(proxy, &chain, &trusted),
            "1.2.3.4".parse().ok(),
            "the proxy's own line (the last) names the client"
        );
        let two_proxies = [
            "10.0.0.1".parse().expect("ip"),
            "1.2.3.4".parse().expect("ip"),
        ];
        assert_eq!(
            client_ip(proxy, &chain, &two_proxies),
            "7.7.7.7".parse().ok()
        );
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let proxy = "10.0.0.1".parse().ok();
        let trusted = ["10.0.0.1".parse().expect("ip")];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().ok();
        // No trusted proxy: the peer, whatever the header says.
        assert_eq!(client_ip(proxy, "1.2.3.4", &[]), proxy);
        // Behind the proxy: the address it saw.
        assert_eq!(client_ip(proxy, "1.2.3.4", &trusted), ip("1.2.3.4"));
        // A client prepending a fake hop gets its own address anyway.
        assert_eq!(
            client_ip(proxy, "6.6.6.6, 1.2.3.4", &trusted),
            ip("1.2.3.4")
        );
        // Garbage stops the walk at the proxy.
        assert_eq!(client_ip(proxy, "nonsense", &trusted), proxy);
        assert_eq!(client_ip(None, "1.2.3.4", &trusted), None);
    }
}
