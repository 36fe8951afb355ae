//! Query-string parameters of the endpoints that are not index queries (`/v1/search`,
//! `/v2/_catalog`, `/assert`, the web UI): one reader over
//! [`decode_pairs`](flagstate_core::query::decode_pairs), the strict decoder the index
//! queries use too.
//!
//! The endpoints differ in one observable rule, kept on purpose and named here
//! ([`Repeated`]): the registry search API answers a repeated parameter by its last
//! value, as podman and Docker Hub do, while web forms take the first.

use flagstate_core::QueryError;
use flagstate_core::query::decode_pairs;

/// Which value of a parameter given more than once counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeated {
    /// The first (form handling).
    First,
    /// The last (the registry search API, `/assert`).
    Last,
}

/// Decoded query-string parameters, read by one [`Repeated`] rule.
#[derive(Debug, Clone)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
    repeated: Repeated,
}

impl QueryParams {
    /// Decodes a raw query string (`None` when the URL has no `?`). Malformed
    /// percent-encoding is an error naming the parameter.
    pub fn parse(raw: Option<&str>, repeated: Repeated) -> Result<Self, QueryError> {
        Ok(QueryParams {
            pairs: decode_pairs(raw.unwrap_or_default())?,
            repeated,
        })
    }

    /// The value of `name` (as given, possibly empty), by the [`Repeated`] rule.
    pub fn get(&self, name: &str) -> Option<&str> {
        let mut values = self
            .pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        match self.repeated {
            Repeated::First => values.next(),
            Repeated::Last => values.next_back(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_follow_the_rule() {
        let raw = Some("q=a&n=&q=b%20c&x");
        let first = QueryParams::parse(raw, Repeated::First).unwrap();
        let last = QueryParams::parse(raw, Repeated::Last).unwrap();
        assert_eq!(first.get("q"), Some("a"));
        assert_eq!(last.get("q"), Some("b c"));
        assert_eq!(last.get("n"), Some(""));
        assert_eq!(last.get("x"), Some(""));
        assert_eq!(last.get("y"), None);
        assert!(
            QueryParams::parse(None, Repeated::Last)
                .unwrap()
                .get("q")
                .is_none()
        );
        assert!(QueryParams::parse(Some("q=%zz"), Repeated::First).is_err());
    }
}
