//! Pagination of `_catalog` and `tags/list`: the `Link: <…>; rel="next"` header (often a
//! relative URL) and the `n`/`last` query parameters.

use url::Url;

/// The `rel="next"` target of a `Link` header, resolved against the URL that was
/// requested. Written by hand: the header has one simple shape here and pulling in a
/// general RFC 8288 parser would not add safety.
pub(crate) fn next_link(header: &str, requested: &Url) -> Option<Url> {
    for link in header.split(',') {
        let link = link.trim();
        let Some(rest) = link.strip_prefix('<') else {
            continue;
        };
        let Some((target, params)) = rest.split_once('>') else {
            continue;
        };
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|v| v.trim_matches('"').split_whitespace().any(|r| r == "next"))
                .unwrap_or(false)
        });
        if is_next {
            return requested.join(target).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_links() {
        let base: Url = "http://r.example:5000/v2/_catalog?n=100".parse().unwrap();
        assert_eq!(
            next_link(r#"</v2/_catalog?last=a%2Fb&n=100>; rel="next""#, &base)
                .unwrap()
                .as_str(),
            "http://r.example:5000/v2/_catalog?last=a%2Fb&n=100"
        );
        assert_eq!(
            next_link(
                r#"<https://other/x>; rel="prev", <https://other/y>; rel=next"#,
                &base
            )
            .unwrap()
            .as_str(),
            "https://other/y"
        );
        assert!(next_link(r#"<x>; rel="prev""#, &base).is_none());
        assert!(next_link("garbage", &base).is_none());
    }
}
