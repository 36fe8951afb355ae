//! The registry notification parsers: the distribution envelope, CloudEvents in
//! structured and batch mode, and CloudEvents in binary mode, all on the same body.
//!
//! Properties: no parser panics; every accepted event is well formed (a repository unless
//! the action is `Other`, digests that re-parse to themselves, no empty tag or media type);
//! the envelope yields one event per element of `events`, a batch one per element; and the
//! parsers agree: a distribution event relayed as the data of a CloudEvent (structured or
//! binary) reads as the same event.
#![no_main]

use std::collections::BTreeMap;

use flagstate_core::Digest;
use flagstate_core::events::{
    EventAction, RegistryEvent, parse_cloudevent_binary, parse_cloudevents, parse_distribution,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// A CloudEvent type that is neither zot's nor Azure's, so its data is read as a
/// distribution-style event when it has one.
const RELAY_TYPE: &str = "org.example.registry.relay";

/// Types the binary-mode parser is driven with, one per branch of the mapping.
const BINARY_TYPES: &[&str] = &[
    "zotregistry.image.updated",
    "dev.zot.image.deleted",
    "zotregistry.image.lint_failed",
    "Microsoft.ContainerRegistry.ImagePushed",
    "Microsoft.ContainerRegistry.ImageDeleted",
    RELAY_TYPE,
];

fuzz_target!(|body: &[u8]| {
    let value: Option<Value> = serde_json::from_slice(body).ok();

    if let Ok(events) = parse_distribution(body) {
        events.iter().for_each(check_event);
        // serde also reads the envelope from a JSON array (`[[…events]]`); the element
        // checks hold for the object form registries send.
        if let Some(Value::Object(envelope)) = &value {
            let elements = envelope
                .get("events")
                .and_then(Value::as_array)
                .expect("an accepted envelope object has an events array");
            assert_eq!(
                events.len(),
                elements.len(),
                "one event per envelope element"
            );
            for (event, element) in events.iter().zip(elements) {
                check_relayed(event, element);
            }
        }
    }

    if let Ok(events) = parse_cloudevents(body) {
        events.iter().for_each(check_event);
        let expected = match value.as_ref().expect("accepted CloudEvents are JSON") {
            Value::Array(items) => items.len(),
            Value::Object(_) => 1,
            other => panic!("accepted a CloudEvents body that is {other}"),
        };
        assert_eq!(events.len(), expected, "one event per CloudEvent");
    }

    for kind in BINARY_TYPES {
        let attrs = BTreeMap::from([
            ("type".to_owned(), (*kind).to_owned()),
            ("id".to_owned(), "fuzz".to_owned()),
        ]);
        if let Ok(event) = parse_cloudevent_binary(&attrs, body) {
            check_event(&event);
            assert_eq!(event.id, "fuzz");
        }
    }
});

fn check_event(event: &RegistryEvent) {
    if !matches!(event.action, EventAction::Other(_)) {
        assert!(
            !event.repository.is_empty(),
            "{:?} event without a repository",
            event.action
        );
    }
    if let Some(digest) = &event.digest {
        assert_eq!(Digest::parse(digest.as_str()).as_ref(), Ok(digest));
    }
    assert_ne!(event.tag.as_deref(), Some(""), "empty tag");
    assert_ne!(event.media_type.as_deref(), Some(""), "empty media type");
}

/// A distribution event wrapped as CloudEvent data must read the same in both modes.
fn check_relayed(event: &RegistryEvent, element: &Value) {
    let Value::Object(fields) = element else {
        return;
    };
    let has_action = matches!(fields.get("action"), Some(Value::String(a)) if !a.is_empty());
    if !has_action || !fields.contains_key("target") {
        // Without both, a CloudEvent's data is not read as a distribution event.
        return;
    }
    let structured = serde_json::json!({
        "specversion": "1.0",
        "id": event.id,
        "source": "fuzz",
        "type": RELAY_TYPE,
        "data": element,
    });
    let relayed = parse_cloudevents(structured.to_string().as_bytes());
    assert_eq!(
        relayed.as_deref(),
        Ok(std::slice::from_ref(event)),
        "structured relay differs"
    );

    let attrs = BTreeMap::from([
        ("type".to_owned(), RELAY_TYPE.to_owned()),
        ("id".to_owned(), event.id.clone()),
    ]);
    let binary = parse_cloudevent_binary(&attrs, element.to_string().as_bytes());
    assert_eq!(binary.as_ref(), Ok(event), "binary relay differs");
}
