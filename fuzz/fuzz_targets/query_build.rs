//! The index query built pair by pair from arbitrary decoded parameters and values (any
//! Unicode, including `&`, `=`, `+`, `%`), the way the web UI and the library compose
//! queries.
//!
//! Properties: `and` never panics; an accepted query's canonical form parses back to an
//! equal query, whatever characters the values hold, and is a fixed point; accepting a
//! pair depends only on that pair (a pair `and` accepts alone is accepted after others).
#![no_main]

use flagstate_core::query::{IndexQuery, MAX_QUERY_LEN};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// Parameter shapes the protocol defines, plus free text for unknown parameters.
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
    Free(String),
}

impl Parameter {
    fn name(&self) -> String {
        match self {
            Parameter::Repository => "repository".into(),
            Parameter::Tag => "tag".into(),
            Parameter::TagMatches => "tag:matches".into(),
            Parameter::Os => "os".into(),
            Parameter::Architecture => "architecture".into(),
            Parameter::Label(k) => format!("label:{k}"),
            Parameter::LabelExists(k) => format!("label:{k}:exists"),
            Parameter::LabelMatches(k) => format!("label:{k}:matches"),
            Parameter::Annotation(k) => format!("annotation:{k}"),
            Parameter::AnnotationExists(k) => format!("annotation:{k}:exists"),
            Parameter::AnnotationMatches(k) => format!("annotation:{k}:matches"),
            Parameter::Free(name) => name.clone(),
        }
    }
}

fuzz_target!(|pairs: Vec<(Parameter, String)>| {
    let mut query = IndexQuery::all();
    for (parameter, value) in &pairs {
        let name = parameter.name();
        let alone = IndexQuery::all().and(&name, value);
        match query.clone().and(&name, value) {
            Ok(next) => {
                assert!(
                    alone.is_ok(),
                    "{name:?}={value:?} accepted only after other pairs"
                );
                query = next;
            }
            Err(e) => {
                assert_eq!(
                    alone.err(),
                    Some(e),
                    "{name:?}={value:?}: error depends on context"
                );
            }
        }
    }
    let canonical = query.canonical();
    if canonical.len() > MAX_QUERY_LEN {
        return;
    }
    let reparsed = IndexQuery::parse(&canonical)
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
