//! Errors of the web UI, answered as HTML pages with the right status.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flagstate_core::StoreError;

use super::layout::{Layout, Section};
use super::response::{html, security_headers};

/// Why a page cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The request is malformed (bad page number, bad filter, bad digest); `400`.
    #[error("{0}")]
    BadRequest(String),
    /// The repository, digest or page does not exist; `404`.
    #[error("{0}")]
    NotFound(String),
    /// The store failed; `503` when it is unreachable, else `500`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A template failed to render; `500`.
    #[error("rendering failed: {0}")]
    Render(#[from] askama::Error),
    /// Serving the rendered page failed (compressing it, or the build limiter); `500`,
    /// or `503` for an overload.
    #[error(transparent)]
    Http(#[from] crate::error::HttpError),
}

impl UiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Store(StoreError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            UiError::Store(_) | UiError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
            UiError::Http(e) => e.status(),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    heading: &'a str,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (heading, message) = match &self {
            UiError::BadRequest(m) => ("Bad request", m.clone()),
            UiError::NotFound(m) => ("Not found", m.clone()),
            other => {
                // Internal details go to the log, not to the visitor.
                tracing::error!(error = %other, "web UI page failed");
                match status {
                    StatusCode::SERVICE_UNAVAILABLE => (
                        "Temporarily unavailable",
                        "The index cannot be read right now. Please try again shortly.".to_owned(),
                    ),
                    _ => (
                        "Internal error",
                        "Something went wrong while building this page.".to_owned(),
                    ),
                }
            }
        };
        let page = ErrorPage {
            layout: Layout::new(Section::Other),
            heading,
            message,
        };
        let body = page.render().unwrap_or_else(|_| format!("{heading}\n"));
        let mut response = (status, html(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        security_headers(headers);
        response
    }
}
