//! [`HttpError`]: every way an API request can fail, and its JSON answer
//! `{"error": {"code": "...", "message": "..."}}` with the matching status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flagstate_core::indexer::IndexerError;
use flagstate_core::{QueryError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// Why an API request failed. Each variant maps to one status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// An index query string is invalid, or its globs need more matching work than
    /// allowed; `400`. The message names the parameter.
    #[error("{0}")]
    Query(#[from] QueryError),
    /// Any other malformed request; `400`.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code, e.g. `invalid_parameter`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Missing or wrong credentials; `401` with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// Nothing here; `404`.
    #[error("{0}")]
    NotFound(String),
    /// The request body is larger than allowed; `413`.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body's content type is not understood; `415`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// This server only reads the index (no indexer); `503`.
    #[error("{0}")]
    ReadOnly(String),
    /// The server is not ready yet (first scan running); `503`.
    #[error("{0}")]
    NotReady(String),
    /// The server has too much to do (requests in flight at the cap, or an answer not
    /// ready within the request timeout); `503` with `Retry-After`.
    #[error("{0}")]
    Overloaded(String),
    /// The store failed: `503` when it is unavailable, else `500`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Applying registry events failed: `503` when a dependency is unavailable, else `500`.
    /// Either way the registry retries the delivery.
    #[error(transparent)]
    Indexer(#[from] IndexerError),
    /// An unexpected internal failure; `500`.
    #[error("{0}")]
    Internal(String),
}

impl HttpError {
    /// A `400` with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        HttpError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::Query(_) | HttpError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::ReadOnly(_) | HttpError::NotReady(_) | HttpError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::Store(e) => store_status(e),
            HttpError::Indexer(e) => indexer_status(e),
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Query(QueryError::TooExpensive { .. }) => "query_too_expensive",
            HttpError::Query(_) => "invalid_query",
            HttpError::BadRequest { code, .. } => code,
            HttpError::Unauthorized(_) => "unauthorized",
            HttpError::NotFound(_) => "not_found",
            HttpError::PayloadTooLarge { .. } => "payload_too_large",
            HttpError::UnsupportedMediaType(_) => "unsupported_media_type",
            HttpError::ReadOnly(_) => "read_only",
            HttpError::NotReady(_) => "not_ready",
            HttpError::Overloaded(_) => "overloaded",
            HttpError::Store(StoreError::Unavailable { .. }) => "store_unavailable",
            HttpError::Store(_) => "store_error",
            HttpError::Indexer(_) => "events_not_applied",
            HttpError::Internal(_) => "internal_error",
        }
    }
}

fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn indexer_status(e: &IndexerError) -> StatusCode {
    match e {
        IndexerError::Store(s) => store_status(s),
        IndexerError::Registry(_) | IndexerError::NoRepositories(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        IndexerError::Event { source, .. } | IndexerError::Repository { source, .. } => {
            indexer_status(source)
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON body of every API error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    pub error: ErrorDetail<'a>,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Machine-readable code, e.g. `invalid_query`, `unauthorized`, `not_found`,
    /// `overloaded` ([`HttpError::code`]).
    #[schema(example = "invalid_query")]
    pub code: &'a str,
    /// What is wrong, in words; names the offending parameter when there is one.
    pub message: &'a str,
}

/// A JSON error response with `status`, `code` and `message`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail { code, message },
    };
    // Two strings in a struct always serialise.
    let body = serde_json::to_string(&body).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        }
        let mut response = error_response(status, self.code(), &self.to_string());
        if matches!(self, HttpError::Overloaded(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::limits::RETRY_AFTER_SECONDS),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flagstate\""),
            );
        }
        response
    }
}
