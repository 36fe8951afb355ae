//! The digest parser and the repository-name and tag validators, against independent
//! implementations of the grammars they document (regular expressions transcribed from
//! the OCI image spec and the distribution reference grammar).
//!
//! Properties: nothing panics; each validator accepts exactly what its grammar accepts,
//! and `RepositoryName::parse` / `Tag::parse` agree with their validator and keep the
//! text of what they accept; an accepted digest keeps its text, splits into algorithm and encoded part, survives a
//! serde round trip, and can be verified exactly when it is sha256 or sha512.
#![no_main]

use std::sync::LazyLock;

use flagstate_core::name::{validate_repository_name, validate_tag};
use flagstate_core::{Digest, RepositoryName, Tag};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

/// OCI image spec, descriptor.md: `algorithm ":" encoded`, with
/// `algorithm-component (algorithm-separator algorithm-component)*`.
static DIGEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$").expect("digest grammar")
});
/// Registered algorithms: lowercase hex of the digest's length.
static SHA256: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^sha256:[a-f0-9]{64}$").expect("sha256 grammar"));
static SHA512: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^sha512:[a-f0-9]{128}$").expect("sha512 grammar"));
/// distribution/reference: `path-component ("/" path-component)*`, at most 255 bytes.
static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";
    Regex::new(&format!("^{component}(?:/{component})*$")).expect("repository grammar")
});
/// distribution/reference: `[\w][\w.-]{0,127}` with ASCII `\w`.
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("tag grammar"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_digest(text);

    let repository_ok = REPOSITORY.is_match(text) && text.len() <= 255;
    assert_eq!(
        validate_repository_name(text).is_ok(),
        repository_ok,
        "repository name {text:?}: validator {:?}, grammar {repository_ok}",
        validate_repository_name(text)
    );
    assert_eq!(
        validate_tag(text).is_ok(),
        TAG.is_match(text),
        "tag {text:?}: validator {:?}",
        validate_tag(text)
    );
    check_parse(text);
});

/// The typed values accept exactly what the validators accept, keep the text, and
/// explain a refusal with the validator's reason.
fn check_parse(text: &str) {
    match (RepositoryName::parse(text), validate_repository_name(text)) {
        (Ok(name), Ok(())) => {
            assert_eq!(name.as_str(), text);
            let json = serde_json::to_string(&name).expect("a name serialises");
            let back: RepositoryName =
                serde_json::from_str(&json).expect("a serialised name deserialises");
            assert_eq!(back, name);
        }
        (Err(e), Err(problem)) => assert_eq!(e.problem(), problem, "repository {text:?}"),
        (parsed, validated) => {
            panic!("repository {text:?}: parse {parsed:?}, validator {validated:?}")
        }
    }
    match (Tag::parse(text), validate_tag(text)) {
        (Ok(tag), Ok(())) => assert_eq!(tag.as_str(), text),
        (Err(e), Err(problem)) => assert_eq!(e.problem(), problem, "tag {text:?}"),
        (parsed, validated) => panic!("tag {text:?}: parse {parsed:?}, validator {validated:?}"),
    }
}

fn check_digest(text: &str) {
    let registered = match text.split_once(':') {
        Some(("sha256", _)) => Some(SHA256.is_match(text)),
        Some(("sha512", _)) => Some(SHA512.is_match(text)),
        _ => None,
    };
    let grammar_ok = DIGEST.is_match(text) && registered.unwrap_or(true);
    let parsed = Digest::parse(text);
    assert_eq!(
        parsed.is_ok(),
        grammar_ok,
        "digest {text:?}: parser {parsed:?}, grammar {grammar_ok}"
    );
    let Ok(digest) = parsed else {
        return;
    };
    assert_eq!(digest.as_str(), text);
    assert_eq!(digest.to_string(), text);
    assert_eq!(format!("{}:{}", digest.algorithm(), digest.encoded()), text);
    let json = serde_json::to_string(&digest).expect("a digest serialises");
    let back: Digest = serde_json::from_str(&json).expect("a serialised digest deserialises");
    assert_eq!(back, digest);
    let verifiable = matches!(digest.algorithm(), "sha256" | "sha512");
    assert_eq!(digest.verify(b"").is_some(), verifiable);
    if digest.algorithm() == "sha256" {
        assert_eq!(digest.verify(b""), Some(digest == Digest::sha256_of(b"")));
    }
    let own = Digest::sha256_of(text.as_bytes());
    assert_eq!(
        own.verify(text.as_bytes()),
        Some(true),
        "sha256_of disagrees with verify"
    );
}
