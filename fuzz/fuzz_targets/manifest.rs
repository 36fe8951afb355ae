//! The manifest, image index and image config parsers, on the same bytes under every
//! media type the index reads (and one it does not).
//!
//! Properties: nothing panics; an unknown media type is `Unsupported`; an accepted image
//! names a config digest that re-parses to itself; an accepted list keeps at most as many
//! entries as the bytes list, each an image manifest digest; the two list types (and the
//! two image manifest types) read the same bytes alike; an accepted config keeps exactly
//! the string-valued labels, and an image built from it always states an OS and an
//! architecture.
#![no_main]

use flagstate_core::Digest;
use flagstate_core::model::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Platform,
};
use flagstate_core::registry::content::{
    ParsedManifest, build_image, parse_image_config, parse_manifest,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let value: Option<Value> = serde_json::from_slice(bytes).ok();

    let unknown = parse_manifest("application/vnd.example.unknown+json", bytes);
    assert_eq!(shape(&unknown), Shape::Unsupported);

    let oci_list = parse_manifest(OCI_INDEX, bytes);
    let docker_list = parse_manifest(DOCKER_MANIFEST_LIST, bytes);
    assert_eq!(
        shape(&oci_list),
        shape(&docker_list),
        "list media types disagree"
    );
    if let ParsedManifest::List { entries, .. } = &oci_list {
        // `value` is absent when bytes serde skips unread (in unknown fields) are not
        // UTF-8; the count is checked whenever the whole document reads as JSON.
        if let Some(listed) = value.as_ref().and_then(|v| v.get("manifests")) {
            let listed = listed.as_array().map_or(0, Vec::len);
            assert!(entries.len() <= listed, "more entries than the list holds");
        }
        for entry in entries {
            assert_eq!(
                Digest::parse(entry.digest.as_str()).as_ref(),
                Ok(&entry.digest)
            );
        }
    }
    assert!(
        !matches!(oci_list, ParsedManifest::Image { .. }),
        "a list read as an image"
    );

    let oci_image = parse_manifest(OCI_MANIFEST, bytes);
    let docker_image = parse_manifest(DOCKER_MANIFEST, bytes);
    assert_eq!(
        shape(&oci_image),
        shape(&docker_image),
        "image media types disagree"
    );
    if let ParsedManifest::Image { config, .. } = &oci_image {
        assert_eq!(Digest::parse(config.as_str()).as_ref(), Ok(config));
    }
    assert!(
        !matches!(oci_image, ParsedManifest::List { .. }),
        "an image read as a list"
    );

    // serde reads a struct from a JSON array too (`[os, architecture, …]`), so the label
    // comparison below holds for configs written as objects, the only form registries use.
    let object = value.as_ref().is_some_and(Value::is_object);
    if let (Ok(config), true) = (parse_image_config(bytes), object) {
        let labels = value
            .as_ref()
            .and_then(|v| v.get("config"))
            .and_then(|c| c.get("Labels"))
            .and_then(Value::as_object);
        let strings = labels.map_or(0, |l| l.values().filter(|v| v.is_string()).count());
        assert_eq!(
            config.labels.len(),
            strings,
            "labels kept differ from string labels"
        );
        for (key, label) in &config.labels {
            let original = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            assert_eq!(original, Some(label.as_str()), "label {key:?} changed");
        }
        for listed in [
            None,
            Some(Platform::new("", "")),
            Some(Platform::new("linux", "arm64")),
        ] {
            let image = build_image(
                Digest::sha256_of(bytes),
                OCI_MANIFEST.to_owned(),
                Default::default(),
                Digest::sha256_of(b"config"),
                config.clone(),
                listed.as_ref(),
                bytes.len() as u64,
            );
            assert!(!image.platform.os.is_empty(), "built image without an OS");
            assert!(
                !image.platform.architecture.is_empty(),
                "built image without an architecture"
            );
            assert_eq!(image.media_type, OCI_MANIFEST);
            assert_eq!(image.labels, config.labels);
        }
    }
});

/// The parse result without the human-readable reason (which names the media type).
#[derive(Debug, PartialEq)]
enum Shape<'a> {
    Parsed(&'a ParsedManifest),
    Unsupported,
    Unreadable,
}

fn shape(parsed: &ParsedManifest) -> Shape<'_> {
    match parsed {
        ParsedManifest::Unsupported { .. } => Shape::Unsupported,
        ParsedManifest::Unreadable { .. } => Shape::Unreadable,
        other => Shape::Parsed(other),
    }
}
