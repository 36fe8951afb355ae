//! The index query parser on raw query strings, as `/index/*` receives them.
//!
//! Properties: parsing never panics and is deterministic; an accepted query holds one
//! filter per parameter, sorted; its canonical form parses back to an equal query with the
//! same canonical form (the cache key is stable); literal patterns match themselves.
#![no_main]

use flagstate_core::query::{Filter, IndexQuery, MAX_QUERY_LEN, ValueTest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = IndexQuery::parse(raw);
    assert_eq!(parsed, IndexQuery::parse(raw), "parse is not deterministic");
    let Ok(query) = parsed else {
        return;
    };
    check_query(&query);
});

fn check_query(query: &IndexQuery) {
    let names: Vec<String> = query.filters().iter().map(Filter::parameter).collect();
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "filters not sorted by parameter or not unique: {names:?}"
    );
    for filter in query.filters() {
        let patterns = match filter {
            Filter::TagMatches(p) => Some(p),
            Filter::Label { test, .. } | Filter::Annotation { test, .. } => match test {
                ValueTest::Matches(p) => Some(p),
                _ => None,
            },
            _ => None,
        };
        for pattern in patterns.into_iter().flatten() {
            assert!(pattern.as_str().starts_with(pattern.literal_prefix()));
            if pattern.is_literal() {
                assert!(
                    pattern.matches(pattern.as_str()),
                    "literal pattern {pattern:?} does not match itself"
                );
            }
        }
    }
    let canonical = query.canonical();
    assert_eq!(
        query.to_string(),
        canonical,
        "Display differs from canonical()"
    );
    if canonical.len() > MAX_QUERY_LEN {
        // Documented: percent-encoding may push the canonical form over the limit.
        return;
    }
    let reparsed = IndexQuery::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} does not parse: {e}"));
    assert_eq!(
        &reparsed, query,
        "canonical form {canonical:?} parses to another query"
    );
    assert_eq!(
        reparsed.canonical(),
        canonical,
        "canonical form is not a fixed point"
    );
}
