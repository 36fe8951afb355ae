//! Properties of the query parser: the canonical form round-trips and is idempotent, and
//! no input — arbitrary text or arbitrary percent-encoded bytes — makes parsing panic.

use flagstate_core::{IndexQuery, Pattern};
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
        pairs.into_iter().fold(IndexQuery::all(), |q, (p, v)| {
            q.clone().and(&p, &v).unwrap_or(q)
        })
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
