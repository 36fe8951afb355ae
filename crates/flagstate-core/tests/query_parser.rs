//! The `/index/*` query-string parser: every parameter form, decoding rules, the real
//! Flatpak query, every error (each naming the offending parameter) and the canonical form.

use std::collections::BTreeSet;

use flagstate_core::query::{
    DEFAULT_MAX_PATTERN_BYTES, DEFAULT_MAX_PATTERN_WILDCARDS, QueryLimits, decode_component,
    decode_pairs,
};
use flagstate_core::query::{MAX_PARAMETERS, MAX_QUERY_LEN};
use flagstate_core::{Filter, IndexQuery, Pattern, QueryError, ValueTest};

fn parse(raw: &str) -> IndexQuery {
    IndexQuery::parse(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn pats(values: &[&str]) -> BTreeSet<Pattern> {
    values.iter().map(|v| Pattern::new(v)).collect()
}

fn only(raw: &str) -> Filter {
    let q = parse(raw);
    assert_eq!(q.filters().len(), 1, "{raw:?}: {q:?}");
    q.filters()[0].clone()
}

#[test]
fn every_parameter_form() {
    let label = |key: &str, test| Filter::Label {
        key: key.into(),
        test,
    };
    let annotation = |key: &str, test| Filter::Annotation {
        key: key.into(),
        test,
    };
    let cases = [
        (
            "repository=fedora%2Fapp",
            Filter::Repository(set(&["fedora/app"])),
        ),
        ("tag=latest", Filter::Tag(set(&["latest"]))),
        ("tag:matches=1.*", Filter::TagMatches(pats(&["1.*"]))),
        ("os=linux", Filter::Os(set(&["linux"]))),
        ("architecture=arm64", Filter::Architecture(set(&["arm64"]))),
        ("label:k=v", label("k", ValueTest::Equals(set(&["v"])))),
        ("label:k=", label("k", ValueTest::Equals(set(&[""])))),
        ("label:k:exists=1", label("k", ValueTest::Exists)),
        (
            "label:k:matches=a?*",
            label("k", ValueTest::Matches(pats(&["a?*"]))),
        ),
        (
            "annotation:k=v",
            annotation("k", ValueTest::Equals(set(&["v"]))),
        ),
        ("annotation:k:exists=1", annotation("k", ValueTest::Exists)),
        (
            "annotation:k:matches=*",
            annotation("k", ValueTest::Matches(pats(&["*"]))),
        ),
        // Keys may contain ':'; only a trailing :exists / :matches is an operator.
        ("label:a:b=v", label("a:b", ValueTest::Equals(set(&["v"])))),
        (
            "label:a:exists:exists=1",
            label("a:exists", ValueTest::Exists),
        ),
        (
            "label:a:exists:matches=x",
            label("a:exists", ValueTest::Matches(pats(&["x"]))),
        ),
        (
            "label:exists=1",
            label("exists", ValueTest::Equals(set(&["1"]))),
        ),
        // Values may contain '='; only the first '=' separates.
        ("label:k=a=b", label("k", ValueTest::Equals(set(&["a=b"])))),
    ];
    for (raw, expected) in cases {
        assert_eq!(only(raw), expected, "{raw:?}");
        assert_eq!(
            parse(raw).filters()[0].parameter(),
            raw.split('=').next().unwrap()
        );
    }
}

#[test]
fn plus_is_space_and_percent_decodes() {
    assert_eq!(
        only("label:k=a+b%2Bc%20d"),
        Filter::Label {
            key: "k".into(),
            test: ValueTest::Equals(set(&["a b+c d"]))
        }
    );
    assert_eq!(
        only("label%3Aorg.example%3Aexists=1"),
        Filter::Label {
            key: "org.example".into(),
            test: ValueTest::Exists
        }
    );
    assert_eq!(only("label:my+key=%C3%BC"), only("label%3Amy%20key=ü"));
    assert_eq!(only("tag=%41"), Filter::Tag(set(&["A"])));
}

#[test]
fn the_flatpak_query() {
    let q = parse("label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest");
    assert_eq!(
        q.filters(),
        [
            Filter::Architecture(set(&["amd64"])),
            Filter::Label {
                key: "org.flatpak.ref".into(),
                test: ValueTest::Exists
            },
            Filter::Os(set(&["linux"])),
            Filter::Tag(set(&["latest"])),
        ]
    );
    assert_eq!(
        q.canonical(),
        "architecture=amd64&label%3Aorg.flatpak.ref%3Aexists=1&os=linux&tag=latest"
    );
}

#[test]
fn repeated_values_are_ored_in_one_filter() {
    let q = parse("tag=b&os=linux&tag=a&tag=b&label:k=2&label:k=1&label:k:exists=1");
    assert_eq!(
        q.filters(),
        [
            Filter::Label {
                key: "k".into(),
                test: ValueTest::Equals(set(&["1", "2"]))
            },
            Filter::Label {
                key: "k".into(),
                test: ValueTest::Exists
            },
            Filter::Os(set(&["linux"])),
            Filter::Tag(set(&["a", "b"])),
        ]
    );
    assert_eq!(
        q.canonical(),
        "label%3Ak=1&label%3Ak=2&label%3Ak%3Aexists=1&os=linux&tag=a&tag=b"
    );
    assert_eq!(parse("tag=a&tag=b"), parse("tag=b&tag=a"));
    assert_eq!(
        parse("label:k:exists=1&label:k:exists=1"),
        parse("label:k:exists=1")
    );
}

#[test]
fn empty_pairs_and_empty_query() {
    assert_eq!(parse(""), IndexQuery::all());
    assert_eq!(parse("&&"), IndexQuery::all());
    assert_eq!(parse("&tag=a&&os=linux&"), parse("tag=a&os=linux"));
    assert_eq!(IndexQuery::all().canonical(), "");
}

fn err(raw: &str) -> QueryError {
    match IndexQuery::parse(raw) {
        Ok(q) => panic!("{raw:?} parsed as {q:?}"),
        Err(e) => e,
    }
}

#[test]
fn unknown_parameters_are_named() {
    for (raw, parameter) in [
        ("foo=1", "foo"),
        ("Tag=latest", "Tag"),
        ("labels:k=v", "labels:k"),
        ("label=v", "label"),
        ("=v", ""),
        ("tag%3Aexists=1", "tag:exists"),
        ("q=a+b", "q"),
    ] {
        let e = err(raw);
        assert_eq!(
            e,
            QueryError::UnknownParameter {
                parameter: parameter.into()
            },
            "{raw:?}"
        );
        assert!(e.to_string().contains(&format!("{parameter:?}")), "{e}");
    }
}

#[test]
fn empty_keys_are_named() {
    for (raw, parameter) in [
        ("label:=v", "label:"),
        ("annotation::exists=1", "annotation::exists"),
        ("label::matches=x", "label::matches"),
    ] {
        let e = err(raw);
        assert_eq!(
            e,
            QueryError::EmptyKey {
                parameter: parameter.into()
            },
            "{raw:?}"
        );
        assert!(e.to_string().contains(parameter), "{e}");
    }
}

#[test]
fn empty_values_are_named() {
    for (raw, parameter) in [
        ("repository=", "repository"),
        ("tag=", "tag"),
        ("tag", "tag"),
        ("os=", "os"),
        ("architecture=", "architecture"),
    ] {
        let e = err(raw);
        assert_eq!(
            e,
            QueryError::EmptyValue {
                parameter: parameter.into()
            },
            "{raw:?}"
        );
        assert!(e.to_string().contains(parameter), "{e}");
    }
}

#[test]
fn exists_must_be_one() {
    for (raw, value) in [
        ("label:k:exists=0", "0"),
        ("label:k:exists=true", "true"),
        ("annotation:k:exists=", ""),
        ("annotation:k:exists", ""),
        ("label:k:exists=1+", "1 "),
    ] {
        let e = err(raw);
        let parameter = raw.split('=').next().unwrap();
        assert_eq!(
            e,
            QueryError::ExistsNotOne {
                parameter: parameter.into(),
                value: value.into()
            },
            "{raw:?}"
        );
        assert!(e.to_string().contains(parameter), "{e}");
    }
}

#[test]
fn invalid_encoding_is_named() {
    assert_eq!(
        err("tag=%FF"),
        QueryError::InvalidEncoding {
            parameter: "tag".into()
        }
    );
    assert_eq!(
        err("label%3A%C3=1"),
        QueryError::InvalidEncoding {
            parameter: "label%3A%C3".into()
        }
    );
    assert!(err("label:k=%E2%82").to_string().contains("\"label:k\""));
}

#[test]
fn malformed_percent_escapes_are_refused() {
    for (raw, parameter) in [
        ("tag=%ZZ", "tag"),
        ("tag=%zz%", "tag"),
        ("tag=a%", "tag"),
        ("tag=%4", "tag"),
        ("tag=%4g", "tag"),
        ("os=linux&tag=%ZZ", "tag"),
        ("label:k:matches=*%G0*", "label:k:matches"),
        ("label%3Ak%ZZ=1", "label%3Ak%ZZ"),
        ("ta%g=1", "ta%g"),
    ] {
        let e = err(raw);
        assert_eq!(
            e,
            QueryError::InvalidEncoding {
                parameter: parameter.into()
            },
            "{raw:?}"
        );
        assert!(e.to_string().contains(&format!("{parameter:?}")), "{e}");
    }
    // Well-formed escapes of `%` itself, and hex digits of either case, still decode.
    assert_eq!(only("tag=%25zz%25"), Filter::Tag(set(&["%zz%"])));
    assert_eq!(only("tag=%c3%bc%C3%BC"), Filter::Tag(set(&["üü"])));
}

#[test]
fn strict_decoding_is_shared() {
    assert_eq!(decode_component("a+b%20c%2B"), Some("a b c+".to_owned()));
    assert_eq!(decode_component(""), Some(String::new()));
    for bad in ["%", "%Z", "%ZZ", "x%2", "%FF", "%E2%82"] {
        assert_eq!(decode_component(bad), None, "{bad:?}");
    }
    assert_eq!(
        decode_pairs("q=a+b&&n=5&flag").unwrap(),
        vec![
            ("q".to_owned(), "a b".to_owned()),
            ("n".to_owned(), "5".to_owned()),
            ("flag".to_owned(), String::new()),
        ]
    );
    assert_eq!(
        decode_pairs("n=5&q=%ZZ"),
        Err(QueryError::InvalidEncoding {
            parameter: "q".into()
        })
    );
}

#[test]
fn glob_length_is_limited() {
    let limit = DEFAULT_MAX_PATTERN_BYTES;
    for parameter in ["tag:matches", "label:k:matches", "annotation:k:matches"] {
        let at_limit = format!("{parameter}={}", "a".repeat(limit));
        assert!(IndexQuery::parse(&at_limit).is_ok(), "{parameter}");
        let over = format!("{parameter}={}", "a".repeat(limit + 1));
        let e = err(&over);
        assert_eq!(
            e,
            QueryError::PatternTooLong {
                parameter: parameter.into(),
                length: limit + 1,
                limit
            }
        );
        assert!(e.to_string().contains(&format!("{parameter:?}")), "{e}");
    }
    // The limit is on the decoded pattern, in bytes.
    let encoded = format!("tag:matches={}", "%C3%BC".repeat(limit / 2 + 1));
    assert!(
        matches!(err(&encoded), QueryError::PatternTooLong { length, .. } if length == limit + 2)
    );
    // Exact-match values are not globs and are not limited by it.
    assert!(IndexQuery::parse(&format!("label:k={}", "a".repeat(4 * limit))).is_ok());
}

#[test]
fn glob_wildcards_are_limited() {
    let limit = DEFAULT_MAX_PATTERN_WILDCARDS;
    let glob = |stars: usize| "a*".repeat(stars);
    assert!(IndexQuery::parse(&format!("tag:matches={}", glob(limit))).is_ok());
    let e = err(&format!("label:k:matches={}", glob(limit + 1)));
    assert_eq!(
        e,
        QueryError::TooManyWildcards {
            parameter: "label:k:matches".into(),
            count: limit + 1,
            limit
        }
    );
    assert!(e.to_string().contains("\"label:k:matches\""), "{e}");
    // `?` is bounded by the length limit only.
    assert!(IndexQuery::parse(&format!("tag:matches={}", "?".repeat(100))).is_ok());
}

#[test]
fn limits_are_configurable() {
    let limits = QueryLimits {
        max_pattern_bytes: 4,
        max_pattern_wildcards: 1,
        ..QueryLimits::default()
    };
    assert!(IndexQuery::parse_with("tag:matches=ab*", &limits).is_ok());
    assert!(matches!(
        IndexQuery::parse_with("tag:matches=abcd*", &limits),
        Err(QueryError::PatternTooLong { limit: 4, .. })
    ));
    assert!(matches!(
        IndexQuery::parse_with("tag:matches=*a*", &limits),
        Err(QueryError::TooManyWildcards { limit: 1, .. })
    ));
    let roomy = QueryLimits {
        max_pattern_bytes: 16 * 1024,
        max_pattern_wildcards: 8 * 1024,
        ..QueryLimits::default()
    };
    let long = format!("tag:matches={}b", "*a".repeat(4000));
    assert!(IndexQuery::parse_with(&long, &roomy).is_ok());
    assert!(IndexQuery::parse(&long).is_err());
    // They bound untrusted input only: a glob built by code is trusted.
    let built = IndexQuery::new().with(Filter::tag_matches(Pattern::new("*a*")));
    assert_eq!(IndexQuery::parse("tag:matches=*a*").unwrap(), built);
    assert!(matches!(
        IndexQuery::parse_with(&built.canonical(), &limits),
        Err(QueryError::TooManyWildcards { .. })
    ));
}

#[test]
fn size_limits() {
    let long = format!("tag={}", "a".repeat(MAX_QUERY_LEN));
    assert_eq!(
        err(&long),
        QueryError::TooLong {
            length: long.len(),
            limit: MAX_QUERY_LEN
        }
    );
    let exactly = format!("tag={}", "a".repeat(MAX_QUERY_LEN - 4));
    assert!(IndexQuery::parse(&exactly).is_ok());
    let many = vec!["tag=a"; MAX_PARAMETERS + 1].join("&");
    assert_eq!(
        err(&many),
        QueryError::TooManyParameters {
            count: MAX_PARAMETERS + 1,
            limit: MAX_PARAMETERS
        }
    );
    assert!(IndexQuery::parse(&vec!["tag=a"; MAX_PARAMETERS].join("&")).is_ok());
    // Long names are shortened in errors rather than echoed whole.
    let e = err(&format!("{}=1", "x".repeat(1000)));
    assert!(e.to_string().len() < 400, "{e}");
}

#[test]
fn canonical_form_is_stable() {
    let q = parse("tag=b+c&repository=a%2Fb&label:k%3Amatches=*%26*&annotation:%C3%BC=%E2%9C%93");
    let canonical = q.canonical();
    assert_eq!(
        canonical,
        "annotation%3A%C3%BC=%E2%9C%93&label%3Ak%3Amatches=*%26*&repository=a%2Fb&tag=b+c"
    );
    assert_eq!(parse(&canonical), q);
    assert_eq!(parse(&canonical).canonical(), canonical);
    assert_eq!(q.to_string(), canonical);
    assert_eq!(canonical.parse::<IndexQuery>(), Ok(q));
}

#[test]
fn pattern_is_an_anchored_glob() {
    let p = Pattern::new("app/*.x?");
    assert!(p.matches("app/org.x1"));
    assert!(p.matches("app/.xy"));
    assert!(!p.matches("app/org.x"));
    assert!(!p.matches("xapp/org.x1"));
    assert!(!p.matches("app/org.x12"));
    assert!(!p.is_literal());
    assert_eq!(p.literal_prefix(), "app/");
    let lit = Pattern::new("a.b");
    assert!(lit.is_literal() && lit.matches("a.b") && !lit.matches("axb"));
    assert_eq!(lit.literal_prefix(), "a.b");
    assert!(
        Pattern::new("?").matches("ü"),
        "? is one character, not one byte"
    );
    assert!(Pattern::new("").matches("") && !Pattern::new("").matches("a"));
    assert!(!Pattern::new("A*").matches("a"), "case-sensitive");
}

#[test]
fn filters_are_ordered_by_parameter_name() {
    let q = parse("tag=a&os=b&label:z=1&annotation:a=1&architecture=x&repository=r&tag:matches=*");
    let names: Vec<String> = q.filters().iter().map(Filter::parameter).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn canonical_form_may_outgrow_the_length_limit() {
    // Raw UTF-8 is accepted and percent-encoded in the canonical form, tripling its size:
    // the documented exception to the round trip.
    let raw = format!("tag={}", "é".repeat(3000));
    let q = parse(&raw);
    let canonical = q.canonical();
    assert!(canonical.len() > MAX_QUERY_LEN);
    assert!(matches!(
        IndexQuery::parse(&canonical),
        Err(QueryError::TooLong { .. })
    ));
}
