//! `GET /icons/{hh}/{rest}.png`: application icons extracted from image labels.
//!
//! Files are named by the SHA-256 of their content (`<icons_dir>/<hex[0:2]>/<hex[2:]>.png`),
//! so a name never changes meaning: responses are cacheable forever. Paths are validated
//! strictly (two and sixty-two lowercase hex digits, `.png`) before touching the file
//! system, which rules out traversal and probing of other files.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::conditional::Validators;
use crate::conditional::names_body;
use crate::error::{ErrorBody, HttpError};
use crate::state::AppState;

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The icon's full hex digest when the path names one validly.
fn icon_hash(prefix: &str, file: &str) -> Option<String> {
    let rest = file.strip_suffix(".png")?;
    (is_lower_hex(prefix, 2) && is_lower_hex(rest, 62)).then(|| format!("{prefix}{rest}"))
}

/// `GET /icons/{hh}/{file}`.
#[utoipa::path(
    get,
    path = "/icons/{prefix}/{file}",
    operation_id = "icon",
    tag = "icons",
    params(
        ("prefix" = String, Path, pattern = "^[0-9a-f]{2}$", description = "The first two hex digits of the icon's SHA-256."),
        ("file" = String, Path, pattern = "^[0-9a-f]{62}\\.png$", description = "The other 62 hex digits, then `.png`."),
    ),
    responses(
        (status = 200, description = "The icon.", content_type = "image/png", body = Vec<u8>,
            headers(
                ("ETag" = String, description = "The quoted SHA-256."),
                ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`: a name never changes meaning."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` names the icon.",
            headers(("ETag" = String, description = "The quoted SHA-256."))),
        (status = 404, description = "No such icon (`not_found`), or icons are not served.", body = ErrorBody),
    )
)]
pub async fn serve(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    // A path that does not even decode is as absent as any other unknown icon.
    let Ok(Path((prefix, file))) = path else {
        return Err(HttpError::NotFound("no such icon".into()));
    };
    let not_found = || HttpError::NotFound(format!("no icon /icons/{prefix}/{file}"));
    let hash = icon_hash(&prefix, &file).ok_or_else(not_found)?;
    let dir = state.config().icons_dir.as_ref().ok_or_else(not_found)?;
    let validators = Validators::quoted(&hash).cache_control(HeaderValue::from_static(
        "public, max-age=31536000, immutable",
    ));
    if names_body(&headers, &hash) {
        return Ok(validators.not_modified());
    }
    let path = dir.join(&prefix).join(&file);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => {
            return Err(HttpError::Internal(format!(
                "reading icon {}: {e}",
                path.display()
            )));
        }
    };
    let length = bytes.len();
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(validators.apply(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_names() {
        let rest = "0".repeat(62);
        assert!(icon_hash("ab", &format!("{rest}.png")).is_some());
        for (p, f) in [
            ("AB", format!("{rest}.png")),
            ("a", format!("{rest}.png")),
            ("ab", format!("{rest}.PNG")),
            ("ab", rest.clone()),
            ("ab", format!("{}.png", "0".repeat(61))),
            ("..", format!("{rest}.png")),
            ("ab", format!("../{}.png", "0".repeat(59))),
            ("ab", format!("{}g.png", "0".repeat(61))),
        ] {
            assert!(icon_hash(p, &f).is_none(), "{p}/{f}");
        }
    }
}
