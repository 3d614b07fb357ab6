//! The API error type: a small, closed set of codes, each mapped to one HTTP status.
//!
//! Handlers return `Result<_, ApiError>`. Internal failures are logged with their cause and
//! answered with a generic 500, so no storage detail ever reaches a client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body is not what the endpoint accepts (invalid JSON, missing batch…).
    #[error("{0}")]
    InvalidRequest(String),
    /// The request is larger than allowed (measured after decompression).
    #[error("{0}")]
    TooLarge(String),
    /// No or an unknown/revoked write key or token.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token without the scope this endpoint needs.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The name or key is already taken.
    #[error("{0}")]
    Conflict(String),
    /// An audience rule that does not parse, refers to something unknown, or closes a cycle
    /// between audiences. With a position when there is one (answered as `line`, `column`,
    /// `offset`, `expected`, `found`, so a UI can point at it).
    #[error("{0}")]
    InvalidRule(String, Option<Box<spoor_core::audience::ParseError>>),
    /// Spoor is saturated; the client should retry after the given seconds.
    #[error("spoor is busy; retry after {0} s")]
    Busy(u64),
    /// Something failed inside Spoor; the cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::TooLarge(_) => "request_too_large",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::InvalidRule(..) => "invalid_rule",
            Self::Busy(_) => "busy",
            Self::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            // Segment answers 400 for oversized requests too; clients key retries on it.
            Self::InvalidRequest(_) | Self::TooLarge(_) | Self::InvalidRule(..) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<spoor_store::StoreError> for ApiError {
    fn from(e: spoor_store::StoreError) -> Self {
        match e {
            spoor_store::StoreError::Busy => Self::Busy(1),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            Self::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut body = json!({"code": self.code(), "message": message});
        if let Self::InvalidRule(_, Some(at)) = &self {
            body["line"] = json!(at.line);
            body["column"] = json!(at.column);
            body["offset"] = json!(at.offset);
            body["expected"] = json!(at.expected);
            body["found"] = json!(at.found);
        }
        let mut resp = (self.status(), Json(body)).into_response();
        if let Self::Busy(secs) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
