//! Conditional `GET`: `If-None-Match`, `304 Not Modified` and the validator headers.
//!
//! Every cacheable response (the index, icons, web UI pages and the stylesheet) is
//! answered the same way: when the request's `If-None-Match` names the current
//! representation ([`if_none_match`]) the answer is an empty `304`, else the full `200`;
//! both carry the same `ETag`, `Cache-Control` and (where the representation varies)
//! `Vary` ([`Validators`]).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::encoding::Coding;

/// Whether `If-None-Match` in `request` names the current representation: it is `*`, or
/// one of its entity tags has an opaque part (the text between the quotes) for which
/// `current` answers `true`.
///
/// Weak tags (`W/"…"`) match like strong ones: `If-None-Match` uses the weak comparison
/// (RFC 9110 §13.1.2). Several header fields and comma-separated lists are both read;
/// a field that is not visible ASCII and an unquoted tag match nothing.
pub fn if_none_match(request: &HeaderMap, current: impl Fn(&str) -> bool) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| {
            if tag == "*" {
                return true;
            }
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag.strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .is_some_and(&current)
        })
}

/// Whether `If-None-Match` names a body with this hash: `*`, or any entity tag whose
/// opaque part is the hash, with or without a coding suffix (so a tag of any encoded
/// representation matches them all). Parsing and the weak comparison are
/// [`if_none_match`]'s.
pub fn names_body(headers: &HeaderMap, hash: &str) -> bool {
    if_none_match(headers, |opaque| {
        let base = Coding::COMPRESSED
            .iter()
            .find_map(|c| opaque.strip_suffix(c.etag_suffix()))
            .unwrap_or(opaque);
        base == hash
    })
}

/// The `Cache-Control` value `max-age=<whole seconds of max_age>`.
pub fn max_age_value(max_age: Duration) -> HeaderValue {
    // Digits after an ASCII prefix are always a valid header value.
    HeaderValue::try_from(format!("max-age={}", max_age.as_secs()))
        .unwrap_or(HeaderValue::from_static("max-age=0"))
}

/// The headers a representation carries on both its `200` and its `304`: `ETag`,
/// `Cache-Control` and `Vary`, each only when set.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    etag: Option<HeaderValue>,
    cache_control: Option<HeaderValue>,
    vary: Option<HeaderValue>,
}

impl Validators {
    /// Validators with `etag` (a complete entity tag, quotes included).
    pub fn new(etag: HeaderValue) -> Self {
        Validators {
            etag: Some(etag),
            ..Validators::default()
        }
    }

    /// Validators with the strong entity tag `"opaque"`; without an `ETag` when
    /// `opaque` cannot be a header value.
    pub fn quoted(opaque: &str) -> Self {
        Validators {
            etag: HeaderValue::try_from(format!("\"{opaque}\"")).ok(),
            ..Validators::default()
        }
    }

    /// Sets `Cache-Control`.
    pub fn cache_control(mut self, value: HeaderValue) -> Self {
        self.cache_control = Some(value);
        self
    }

    /// Sets `Cache-Control: max-age=<seconds of max_age>`.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.cache_control = Some(max_age_value(max_age));
        self
    }

    /// Sets `Vary`.
    pub fn vary(mut self, value: HeaderValue) -> Self {
        self.vary = Some(value);
        self
    }

    /// `304 Not Modified` with these headers.
    pub fn not_modified(&self) -> Response {
        self.apply(StatusCode::NOT_MODIFIED.into_response())
    }

    /// `response` (the full representation) with these headers added.
    pub fn apply(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        for (name, value) in [
            (header::ETAG, &self.etag),
            (header::CACHE_CONTROL, &self.cache_control),
            (header::VARY, &self.vary),
        ] {
            if let Some(value) = value {
                headers.insert(name, value.clone());
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn if_none_match_rules() {
        let is_abc = |tag: &str| tag == "abc";
        assert!(!if_none_match(&HeaderMap::new(), is_abc));
        assert!(if_none_match(&request(&["*"]), |_| false));
        assert!(if_none_match(&request(&["\"abc\""]), is_abc));
        assert!(if_none_match(&request(&["W/\"abc\""]), is_abc));
        assert!(if_none_match(&request(&["\"x\", W/\"abc\""]), is_abc));
        assert!(if_none_match(&request(&["\"x\"", "\"abc\""]), is_abc));
        assert!(!if_none_match(&request(&["abc"]), is_abc));
        assert!(!if_none_match(&request(&["\"abc"]), is_abc));
        assert!(!if_none_match(&request(&["\"abd\""]), is_abc));
    }

    #[test]
    fn both_answers_carry_the_validators() {
        let v = Validators::quoted("abc")
            .max_age(Duration::from_secs(60))
            .vary(HeaderValue::from_static("Accept-Encoding"));
        let not_modified = v.not_modified();
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
        let full = v.apply("body".into_response());
        assert_eq!(full.status(), StatusCode::OK);
        for response in [not_modified, full] {
            let h = response.headers();
            assert_eq!(h[header::ETAG], "\"abc\"");
            assert_eq!(h[header::CACHE_CONTROL], "max-age=60");
            assert_eq!(h[header::VARY], "Accept-Encoding");
        }
        let bare = Validators::default().apply(StatusCode::OK.into_response());
        assert!(bare.headers().get(header::ETAG).is_none());
    }
}
