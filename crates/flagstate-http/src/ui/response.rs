//! Turning rendered pages into HTTP responses: ETag, `304 Not Modified`, cache and
//! security headers.

use std::time::Duration;

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use super::error::UiError;

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

/// Whether `If-None-Match` in `request` names `etag` (or is `*`). Weak validators
/// compare equal to strong ones, as RFC 9110 prescribes for `If-None-Match`.
pub fn etag_matches(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| {
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
        })
}

/// The strong ETag of a body: a quoted prefix of its SHA-256.
pub fn etag_of(body: &[u8]) -> String {
    let hash = hex::encode(Sha256::digest(body));
    format!("\"{}\"", &hash[..32])
}

/// Renders `template` as a `200` page, or `304` when the client already has it.
pub fn page<T: Template>(
    template: &T,
    request: &HeaderMap,
    max_age: Duration,
) -> Result<Response, UiError> {
    let body = template.render()?;
    let etag = etag_of(body.as_bytes());
    let mut response = if etag_matches(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        html(body)
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={}", max_age.as_secs())) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    security_headers(headers);
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
