//! The one table from errors to HTTP: status, a stable machine-readable code,
//! and the body `{"error":{"code","message","details"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// An error as the HTTP API reports it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind.
    pub kind: ErrorKind,
    /// For people.
    pub message: String,
    /// For programs; `null` when there is nothing more.
    pub details: serde_json::Value,
}

/// The kinds of API error; each has one status and one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is malformed.
    BadRequest,
    /// 401: signature or credentials missing or wrong.
    Unauthorized,
    /// 403: authenticated, but not allowed (or a handshake token mismatch).
    Forbidden,
    /// 404: no such route or object.
    NotFound,
    /// 405: the route exists with other methods.
    MethodNotAllowed,
    /// 409: the object's state does not allow it (e.g. already resolved).
    Conflict,
    /// 413: body over `server.max_body_bytes`.
    PayloadTooLarge,
    /// 415: the body is not of the expected type.
    UnsupportedMediaType,
    /// 422: well-formed, but a platform refused what the caller gave (a bot
    /// token Telegram does not know).
    Unprocessable,
    /// 429: too many attempts; retry later.
    TooManyRequests,
    /// 502: a platform (Telegram, Meta) refused or failed a call made on
    /// the caller's behalf; the message quotes its answer.
    BadGateway,
    /// 503: a dependency is down.
    Unavailable,
    /// 500: a bug or an unexpected failure; details are in the log.
    Internal,
}

impl ErrorKind {
    /// HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable code for programs.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::TooManyRequests => "too_many_requests",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unprocessable => "unprocessable",
            Self::BadGateway => "bad_gateway",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl ApiError {
    /// An error without details.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }
}

impl ApiError {
    /// The same error with details for programs.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// The same error with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.details["retry_after_secs"].as_u64() {
            response.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        response.json(json!({
            "error": {
                "code": self.kind.code(),
                "message": self.message,
                "details": self.details,
            }
        }))
    }
}

impl From<store::db::DbError> for ApiError {
    fn from(error: store::db::DbError) -> Self {
        tracing::error!(%error, "database failure");
        ApiError::new(
            ErrorKind::Unavailable,
            "the database is unavailable; retry later",
        )
    }
}

/// Turns actix's body and JSON extractor errors into [`ApiError`]s, so a
/// client always gets the same error shape.
pub fn from_payload_error(error: &actix_web::error::PayloadError) -> ApiError {
    use actix_web::error::PayloadError;
    match error {
        PayloadError::Overflow => {
            ApiError::new(ErrorKind::PayloadTooLarge, "request body is too large")
        }
        other => ApiError::new(
            ErrorKind::BadRequest,
            format!("cannot read request body: {other}"),
        ),
    }
}
