//! Turning rendered pages into HTTP responses: ETag, `304 Not Modified`, cache and
//! security headers.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::UiError;
use crate::cache::CachedBody;
use crate::conditional::max_age_value;

/// Pages run no script and embed images only from the registry's labels (data: URIs or
/// URLs), so everything else can be refused outright; a label that slips markup past the
/// escaping still cannot run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self' data: http: https:; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Adds the headers every UI response carries.
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// The response for a rendered page (see [`CachedBody::respond`]: ETag, `304`,
/// compression) with `Cache-Control: max-age` and the security headers.
pub async fn respond(
    body: &CachedBody,
    request: &HeaderMap,
    max_age: Duration,
) -> Result<Response, UiError> {
    let mut response = body
        .respond(
            request,
            HeaderValue::from_static("text/html; charset=utf-8"),
            max_age_value(max_age),
        )
        .await?;
    security_headers(response.headers_mut());
    Ok(response)
}

/// A `text/html` response with `body`.
pub fn html(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
