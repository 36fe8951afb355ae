//! Turning rendered pages into HTTP responses: ETag, `304 Not Modified`, cache and
//! security headers.

use std::time::Duration;

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use super::error::UiError;
use crate::conditional::{Validators, if_none_match};

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

/// The opaque part of a body's strong ETag: a prefix of its SHA-256.
fn tag_of(body: &[u8]) -> String {
    let mut hash = hex::encode(Sha256::digest(body));
    hash.truncate(32);
    hash
}

/// Renders `template` as a `200` page, or `304` when the client already has it.
pub fn page<T: Template>(
    template: &T,
    request: &HeaderMap,
    max_age: Duration,
) -> Result<Response, UiError> {
    let body = template.render()?;
    let tag = tag_of(body.as_bytes());
    let validators = Validators::quoted(&tag).max_age(max_age);
    let mut response = if if_none_match(request, |t| t == tag) {
        validators.not_modified()
    } else {
        validators.apply(html(body))
    };
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
