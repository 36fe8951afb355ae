//! The index query built filter by filter from the typed constructors, with arbitrary
//! keys and values (any Unicode, including `&`, `=`, `+`, `%`, and keys ending in an
//! operator), the way the web UI and the library compose queries.
//!
//! Properties: no constructor panics; a constructor refuses exactly what the parser
//! refuses for the same pair (and a key it cannot write); the canonical form of the
//! built query parses back to an equal query, whatever characters the values hold, and
//! is a fixed point.
#![no_main]

use flagstate_core::query::{
    Filter, IndexQuery, MAX_PARAMETERS, MAX_QUERY_LEN, Pattern, QueryError, QueryLimits,
};
use flagstate_core::{RepositoryName, Tag};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// The typed constructors, with the key they take.
#[derive(Debug, Arbitrary)]
enum Parameter {
    Repository,
    Tag,
    TagMatches,
    Os,
    Architecture,
    Label(String),
    LabelExists(String),
    LabelMatches(String),
    Annotation(String),
    AnnotationExists(String),
    AnnotationMatches(String),
}

impl Parameter {
    /// The filter for `value`; `None` for a repository or tag that is not valid.
    fn filter(&self, value: &str) -> Option<Result<Filter, QueryError>> {
        let pattern = || Pattern::new(value);
        Some(match self {
            Parameter::Repository => Ok(Filter::repository(&RepositoryName::parse(value).ok()?)),
            Parameter::Tag => Ok(Filter::tag(&Tag::parse(value).ok()?)),
            Parameter::TagMatches => Ok(Filter::tag_matches(pattern())),
            Parameter::Os => Filter::os(value),
            Parameter::Architecture => Filter::architecture(value),
            Parameter::Label(k) => Filter::label(k.as_str(), value),
            Parameter::LabelExists(k) => Filter::label_exists(k.as_str()),
            Parameter::LabelMatches(k) => Filter::label_matches(k.as_str(), pattern()),
            Parameter::Annotation(k) => Filter::annotation(k.as_str(), value),
            Parameter::AnnotationExists(k) => Filter::annotation_exists(k.as_str()),
            Parameter::AnnotationMatches(k) => Filter::annotation_matches(k.as_str(), pattern()),
        })
    }

    /// The pair the parser reads for this filter.
    fn pair(&self, value: &str) -> (String, String) {
        let (name, value) = match self {
            Parameter::Repository => ("repository".into(), value),
            Parameter::Tag => ("tag".into(), value),
            Parameter::TagMatches => ("tag:matches".into(), value),
            Parameter::Os => ("os".into(), value),
            Parameter::Architecture => ("architecture".into(), value),
            Parameter::Label(k) => (format!("label:{k}"), value),
            Parameter::LabelExists(k) => (format!("label:{k}:exists"), "1"),
            Parameter::LabelMatches(k) => (format!("label:{k}:matches"), value),
            Parameter::Annotation(k) => (format!("annotation:{k}"), value),
            Parameter::AnnotationExists(k) => (format!("annotation:{k}:exists"), "1"),
            Parameter::AnnotationMatches(k) => (format!("annotation:{k}:matches"), value),
        };
        (name, value.to_owned())
    }
}

/// Limits that admit every glob: code-built globs are trusted.
const TRUSTING: QueryLimits = QueryLimits {
    max_pattern_bytes: usize::MAX,
    max_pattern_wildcards: usize::MAX,
    max_match_cost: u64::MAX,
};

fuzz_target!(|pairs: Vec<(Parameter, String)>| {
    let mut query = IndexQuery::new();
    let mut count = 0;
    for (parameter, value) in &pairs {
        let Some(filter) = parameter.filter(value) else {
            continue;
        };
        let (name, raw_value) = parameter.pair(value);
        let raw = form_urlencoded::Serializer::new(String::new())
            .append_pair(&name, &raw_value)
            .finish();
        let parsed = IndexQuery::parse_with(&raw, &TRUSTING);
        match filter {
            Ok(filter) => {
                let alone = IndexQuery::new().with(filter.clone());
                assert_eq!(parsed, Ok(alone), "{name:?}={raw_value:?}");
                query = query.with(filter);
                count += 1;
            }
            // Written out, the key would read as an operator, so the parser cannot be
            // asked for this filter: nothing to compare.
            Err(QueryError::OperatorKey { .. }) => {}
            Err(e) => assert_eq!(parsed, Err(e), "{name:?}={raw_value:?}"),
        }
    }
    let canonical = query.canonical();
    if canonical.len() > MAX_QUERY_LEN || count > MAX_PARAMETERS {
        return;
    }
    let reparsed = IndexQuery::parse_with(&canonical, &TRUSTING)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} does not parse: {e}"));
    assert_eq!(
        reparsed, query,
        "canonical form {canonical:?} parses to another query"
    );
    assert_eq!(
        reparsed.canonical(),
        canonical,
        "canonical form is not a fixed point"
    );
});
