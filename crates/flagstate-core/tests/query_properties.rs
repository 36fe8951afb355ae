//! Properties of the query parser: the canonical form round-trips and is idempotent, and
//! no input — arbitrary text or arbitrary percent-encoded bytes — makes parsing panic.

use flagstate_core::{Filter, IndexQuery, Pattern, RepositoryName, Tag};
use proptest::prelude::*;

/// One decoded `parameter=value` pair of any form, with arbitrary keys and values.
fn pair() -> impl Strategy<Value = (String, String)> {
    let text = "\\PC{0,12}";
    prop_oneof![
        text.prop_map(|v| ("repository".to_owned(), v)),
        text.prop_map(|v| ("tag".to_owned(), v)),
        text.prop_map(|v| ("tag:matches".to_owned(), v)),
        text.prop_map(|v| ("os".to_owned(), v)),
        text.prop_map(|v| ("architecture".to_owned(), v)),
        (
            prop_oneof![Just("label"), Just("annotation")],
            text,
            prop_oneof![Just(""), Just(":exists"), Just(":matches")],
            text
        )
            .prop_map(|(kind, key, op, value)| {
                let value = if op == ":exists" {
                    "1".to_owned()
                } else {
                    value
                };
                (format!("{kind}:{key}{op}"), value)
            }),
    ]
}

/// A query built from decoded pairs; pairs the parser would reject are skipped.
fn query() -> impl Strategy<Value = IndexQuery> {
    prop::collection::vec(pair(), 0..8).prop_map(|pairs| {
        let accepted: Vec<String> = pairs
            .iter()
            .map(|(p, v)| {
                form_urlencoded::Serializer::new(String::new())
                    .append_pair(p, v)
                    .finish()
            })
            .filter(|pair| IndexQuery::parse(pair).is_ok())
            .collect();
        IndexQuery::parse(&accepted.join("&")).expect("pairs accepted alone are accepted together")
    })
}

/// One filter from the typed constructors, with arbitrary keys and values (keys may end
/// in an operator); `None` when the constructor refuses it.
fn typed_filter() -> impl Strategy<Value = Option<Filter>> {
    let text = "\\PC{0,12}";
    let key = (
        text,
        prop_oneof![Just(""), Just(":exists"), Just(":matches")],
    )
        .prop_map(|(key, op)| format!("{key}{op}"));
    prop_oneof![
        "[a-z0-9]{1,6}(/[a-z0-9]{1,6})?"
            .prop_map(|r| Some(Filter::repository(&RepositoryName::parse(r).unwrap()))),
        "[A-Za-z0-9_][A-Za-z0-9._-]{0,10}".prop_map(|t| Some(Filter::tag(&Tag::parse(t).unwrap()))),
        text.prop_map(|p| Some(Filter::tag_matches(Pattern::new(&p)))),
        text.prop_map(|v| Filter::os(v).ok()),
        text.prop_map(|v| Filter::architecture(v).ok()),
        (
            prop::bool::ANY,
            key,
            prop_oneof![Just(0), Just(1), Just(2)],
            text
        )
            .prop_map(|(label, key, op, value)| {
                match (label, op) {
                    (true, 0) => Filter::label(key, value),
                    (true, 1) => Filter::label_exists(key),
                    (true, _) => Filter::label_matches(key, Pattern::new(&value)),
                    (false, 0) => Filter::annotation(key, value),
                    (false, 1) => Filter::annotation_exists(key),
                    (false, _) => Filter::annotation_matches(key, Pattern::new(&value)),
                }
                .ok()
            }),
    ]
}

/// A query built by code from typed filters.
fn typed_query() -> impl Strategy<Value = IndexQuery> {
    prop::collection::vec(typed_filter(), 0..8).prop_map(|filters| {
        filters
            .into_iter()
            .flatten()
            .fold(IndexQuery::new(), IndexQuery::with)
    })
}

/// Text built from the characters that carry meaning in a query string.
fn structured() -> impl Strategy<Value = String> {
    "([a-z:%&=+*?]|%[0-9A-Fa-f]{2}|label:|annotation:|:exists|:matches|tag){0,40}"
}

#[path = "support/glob.rs"]
mod reference;
use reference::glob;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_round_trips(q in query()) {
        let canonical = q.canonical();
        let parsed = IndexQuery::parse(&canonical);
        prop_assert_eq!(parsed.as_ref(), Ok(&q), "canonical {:?}", canonical);
        prop_assert_eq!(parsed.map(|p| p.canonical()), Ok(canonical));
    }

    #[test]
    fn canonical_of_a_typed_query_round_trips(q in typed_query()) {
        let canonical = q.canonical();
        let parsed = IndexQuery::parse(&canonical);
        prop_assert_eq!(parsed.as_ref(), Ok(&q), "canonical {:?}", canonical);
        prop_assert_eq!(parsed.map(|p| p.canonical()), Ok(canonical));
    }

    #[test]
    fn parse_never_panics_on_text(raw in "\\PC{0,200}") {
        let _ = IndexQuery::parse(&raw);
    }

    #[test]
    fn parse_never_panics_on_encoded_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        cut in 0usize..300,
    ) {
        // Every byte percent-encoded, then part of it turned back into structure.
        let mut raw: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
        let cut = (cut * 3).min(raw.len());
        raw.insert_str(cut, "&label:x=");
        let _ = IndexQuery::parse(&raw);
        let _ = IndexQuery::parse(&raw[3.min(raw.len())..]);
    }

    #[test]
    fn accepted_input_canonicalises_to_a_fixed_point(raw in structured()) {
        if let Ok(q) = IndexQuery::parse(&raw) {
            let canonical = q.canonical();
            let again = IndexQuery::parse(&canonical);
            prop_assert_eq!(again.as_ref(), Ok(&q), "{:?} -> {:?}", raw, canonical);
            prop_assert_eq!(again.map(|p| p.canonical()), Ok(canonical));
        }
    }

    #[test]
    fn pattern_matches_like_the_reference_glob(
        pattern in "[ab*?]{0,8}",
        text in "[ab]{0,8}",
    ) {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(Pattern::new(&pattern).matches(&text), glob(&p, &t));
    }
}
