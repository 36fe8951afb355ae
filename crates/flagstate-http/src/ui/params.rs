//! Query-string parameters of the UI pages, and pagination.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;

use crate::params::{QueryParams, Repeated};

use super::PAGE_SIZE;
use super::error::UiError;

/// Highest page number accepted; far beyond any real listing, low enough that
/// `page * PAGE_SIZE` cannot overflow.
const MAX_PAGE: usize = 1_000_000;

/// Decoded query-string parameters. Forms submit empty fields as `key=`, so an empty
/// value means "not given". Unknown parameters are ignored: links from elsewhere may carry
/// tracking parameters, and a page is still meaningful without them.
///
/// A parameter given more than once counts by its first value, like most form handling
/// ([`Repeated::First`]).
#[derive(Debug)]
pub struct Params(QueryParams);

impl Params {
    /// Parses a raw query string (`None` when the URL has no `?`). Malformed
    /// percent-encoding is a bad request naming the parameter.
    pub fn parse(raw: Option<&str>) -> Result<Self, UiError> {
        QueryParams::parse(raw, Repeated::First)
            .map(Params)
            .map_err(|e| UiError::BadRequest(e.to_string()))
    }

    /// A trimmed, non-empty value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The 1-based `page` parameter (default 1).
    pub fn page(&self) -> Result<usize, UiError> {
        let Some(raw) = self.get("page") else {
            return Ok(1);
        };
        match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(UiError::BadRequest(format!(
                "page must be a whole number from 1 to {MAX_PAGE}, got {:?}",
                raw.chars().take(40).collect::<String>()
            ))),
        }
    }
}

/// The page's path parameter. One that does not decode (percent-encoded bytes that are
/// not UTF-8) is a bad request answered as a page, not axum's plain-text rejection.
pub fn path_parameter(path: Result<Path<String>, PathRejection>) -> Result<String, UiError> {
    path.map(|Path(value)| value)
        .map_err(|rejection| UiError::BadRequest(rejection.body_text()))
}

/// Where a page sits in a listing of `total` items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pagination {
    /// Current page, 1-based.
    pub page: usize,
    /// Number of pages (at least 1, so an empty listing still has its first page).
    pub pages: usize,
    /// Number of items in the whole listing.
    pub total: usize,
    /// Link to the previous page, when there is one.
    pub prev: Option<String>,
    /// Link to the next page, when there is one.
    pub next: Option<String>,
}

impl Pagination {
    /// Paginates `total` items; `link(n)` builds the URL of page `n`. A page past the
    /// last is `NotFound`.
    pub fn new(page: usize, total: usize, link: impl Fn(usize) -> String) -> Result<Self, UiError> {
        let pages = total.div_ceil(PAGE_SIZE).max(1);
        if page > pages {
            return Err(UiError::NotFound(format!(
                "page {page} does not exist; there {} {pages} page{}",
                if pages == 1 { "is" } else { "are" },
                if pages == 1 { "" } else { "s" },
            )));
        }
        Ok(Pagination {
            page,
            pages,
            total,
            prev: (page > 1).then(|| link(page - 1)),
            next: (page < pages).then(|| link(page + 1)),
        })
    }

    /// Index range of the current page's items.
    pub fn range(&self) -> std::ops::Range<usize> {
        let start = (self.page - 1) * PAGE_SIZE;
        start.min(self.total)..(start + PAGE_SIZE).min(self.total)
    }

    /// Offset of the current page, for stores that page themselves.
    pub fn offset(page: usize) -> u64 {
        ((page - 1) * PAGE_SIZE) as u64
    }
}

/// A URL with a query string built from `pairs` (empty values left out).
pub fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(k, v);
        any = true;
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_numbers() {
        let parse = |raw| Params::parse(raw).unwrap();
        assert_eq!(parse(None).page().unwrap(), 1);
        assert_eq!(parse(Some("page=3")).page().unwrap(), 3);
        assert_eq!(parse(Some("page=")).page().unwrap(), 1);
        for bad in [
            "page=0",
            "page=-1",
            "page=x",
            "page=1.5",
            "page=99999999999999999999",
        ] {
            assert!(
                matches!(parse(Some(bad)).page(), Err(UiError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_encoding_is_a_bad_request_naming_the_parameter() {
        for bad in ["q=%ZZ", "page=1&q=abc%", "q=%FF"] {
            match Params::parse(Some(bad)) {
                Err(UiError::BadRequest(m)) => assert!(m.contains("\"q\""), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let p = Params::parse(Some("q=a+b%26c&q=second")).unwrap();
        assert_eq!(p.get("q"), Some("a b&c"));
    }

    #[test]
    fn pagination_bounds() {
        let p = Pagination::new(1, 0, |n| n.to_string()).unwrap();
        assert_eq!((p.pages, p.range()), (1, 0..0));
        let p = Pagination::new(2, PAGE_SIZE + 1, |n| n.to_string()).unwrap();
        assert_eq!(p.range(), PAGE_SIZE..PAGE_SIZE + 1);
        assert_eq!((p.prev.as_deref(), p.next.as_deref()), (Some("1"), None));
        assert!(matches!(
            Pagination::new(3, PAGE_SIZE + 1, |n| n.to_string()),
            Err(UiError::NotFound(_))
        ));
    }

    #[test]
    fn links_skip_empty_values() {
        assert_eq!(
            link("/search", &[("q", ""), ("page", "2")]),
            "/search?page=2"
        );
        assert_eq!(link("/search", &[("q", "a b&c")]), "/search?q=a+b%26c");
        assert_eq!(link("/", &[]), "/");
    }
}
