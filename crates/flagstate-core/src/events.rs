//! Registry notifications: parsing the webhook bodies registries send into
//! [`RegistryEvent`]s the indexer applies.
//!
//! Three encodings are understood:
//! - the CNCF distribution registry's envelope `{"events":[…]}`
//!   (`application/vnd.docker.distribution.events.v1+json`, and v2) — [`parse_distribution`];
//! - CloudEvents in structured mode (`application/cloudevents+json`, one object) and
//!   batch mode (`application/cloudevents-batch+json`, an array) — [`parse_cloudevents`];
//! - CloudEvents in binary mode (attributes in `ce-*` headers, data in the body) —
//!   [`parse_cloudevent_binary`].
//!
//! CloudEvents types mapped (anything else becomes [`EventAction::Other`] and is
//! ignored by the indexer):
//! - zot: `*.image.updated` → push, `*.image.deleted` → delete (zot lets the type
//!   prefix be configured, so only the suffix is matched); data
//!   `{name, reference, digest, mediaType}` where `reference` is a tag or a digest.
//!   `*.image.lint_failed` is reported when zot *refused* a manifest, so it maps to
//!   `Other`: nothing changed in the registry. `*.repository.created` is `Other` too: a
//!   new repository becomes visible through its first image push.
//! - Azure Container Registry (Event Grid, CloudEvents schema):
//!   `Microsoft.ContainerRegistry.ImagePushed` → push, `…ImageDeleted` → delete; data
//!   is a distribution-style event `{id, action, target: {repository, tag, digest,
//!   mediaType}}`. The Event Grid schema (`eventType` instead of `type`) is accepted
//!   the same way.
//! - Any CloudEvent whose data is itself a distribution-style event (`action` +
//!   `target`) is read as that event.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::digest::Digest;
use crate::timestamp::Timestamp;

/// What happened in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// A manifest or blob was pushed (or a tag moved).
    Push,
    /// A manifest or blob was pulled.
    Pull,
    /// A blob was mounted from another repository.
    Mount,
    /// A manifest, tag or blob was deleted.
    Delete,
    /// Anything else, with the action or event type as sent.
    Other(String),
}

impl EventAction {
    fn from_action(action: &str) -> Self {
        match action {
            "push" => EventAction::Push,
            "pull" => EventAction::Pull,
            "mount" => EventAction::Mount,
            "delete" => EventAction::Delete,
            other => EventAction::Other(other.to_owned()),
        }
    }
}

/// One registry event, reduced to what indexing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEvent {
    /// The sender's event id (for logs and de-duplication).
    pub id: String,
    /// What happened.
    pub action: EventAction,
    /// Repository name (may be empty for [`EventAction::Other`] events that name none).
    pub repository: String,
    /// Tag, when the event concerns one.
    pub tag: Option<String>,
    /// Digest of the manifest or blob, when stated.
    pub digest: Option<Digest>,
    /// Media type of the target, when stated (`application/octet-stream` for blobs).
    pub media_type: Option<String>,
    /// When it happened, as the sender states it (the distribution event's `timestamp`,
    /// the CloudEvent's `time`); `None` when absent or not RFC 3339.
    pub timestamp: Option<Timestamp>,
}

/// A sender's timestamp text, when it is one.
fn timestamp(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| Timestamp::parse_rfc3339(t).ok())
}

/// Why a notification body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The body is not JSON of the expected shape.
    #[error("notification body is not valid JSON of the expected shape: {0}")]
    Json(String),
    /// A binary-mode CloudEvent lacks a required attribute.
    #[error("CloudEvent lacks the required attribute {0:?}")]
    MissingAttribute(&'static str),
    /// One event of the body is invalid.
    #[error("event #{index} ({id}): {reason}")]
    Invalid {
        /// Position of the event in the body, from 0.
        index: usize,
        /// Its id, when it has one.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<DistributionEvent>,
}

#[derive(Deserialize, Default)]
struct DistributionEvent {
    #[serde(default)]
    id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    target: Target,
}

#[derive(Deserialize, Default)]
struct Target {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

/// Parses the distribution registry's `{"events":[…]}` envelope.
pub fn parse_distribution(body: &[u8]) -> Result<Vec<RegistryEvent>, EventError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    envelope
        .events
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let action = EventAction::from_action(&e.action);
            let at = timestamp(e.timestamp.as_deref());
            distribution_event(index, e.id, action, e.target).map(|event| RegistryEvent {
                timestamp: at,
                ..event
            })
        })
        .collect()
}

fn distribution_event(
    index: usize,
    id: String,
    action: EventAction,
    target: Target,
) -> Result<RegistryEvent, EventError> {
    let invalid = |reason: String| EventError::Invalid {
        index,
        id: id.clone(),
        reason,
    };
    let repository = target.repository.unwrap_or_default();
    if repository.is_empty() && !matches!(action, EventAction::Other(_)) {
        return Err(invalid("target names no repository".into()));
    }
    let digest = match target.digest.filter(|d| !d.is_empty()) {
        Some(d) => Some(Digest::parse(&d).map_err(|e| invalid(e.to_string()))?),
        None => None,
    };
    Ok(RegistryEvent {
        id,
        action,
        repository,
        tag: target.tag.filter(|t| !t.is_empty()),
        digest,
        media_type: target.media_type.filter(|m| !m.is_empty()),
        timestamp: None,
    })
}

/// Parses a structured-mode CloudEvent (one JSON object) or a batch (a JSON array of
/// them). Event Grid schema events (`eventType`, `data`) are accepted too.
pub fn parse_cloudevents(body: &[u8]) -> Result<Vec<RegistryEvent>, EventError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(EventError::Json(
                "expected a CloudEvent object or an array of them".into(),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let Value::Object(mut object) = item else {
                return Err(EventError::Invalid {
                    index,
                    id: String::new(),
                    reason: "not a JSON object".into(),
                });
            };
            let text = |v: Option<Value>| match v {
                Some(Value::String(s)) => s,
                _ => String::new(),
            };
            let id = text(object.remove("id"));
            let time = match object.remove("time") {
                Some(Value::String(s)) => Some(s),
                _ => Some(text(object.remove("eventTime"))),
            };
            let kind = match object.remove("type") {
                Some(Value::String(s)) => s,
                _ => text(object.remove("eventType")),
            };
            if kind.is_empty() {
                return Err(EventError::Invalid {
                    index,
                    id,
                    reason: "no \"type\" attribute".into(),
                });
            }
            let data = match object.remove("data") {
                // `data` may arrive JSON-encoded in a string when the producer set no
                // JSON datacontenttype.
                Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::Null),
                Some(v) => v,
                None => Value::Null,
            };
            let at = timestamp(time.as_deref());
            cloudevent(index, id, &kind, data).map(|event| RegistryEvent {
                timestamp: event.timestamp.or(at),
                ..event
            })
        })
        .collect()
}

/// Parses a binary-mode CloudEvent: `attrs` are the `ce-*` headers without the prefix
/// (`type`, `id`, `source`, …, keys lowercase), `body` is the data.
pub fn parse_cloudevent_binary(
    attrs: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<RegistryEvent, EventError> {
    let kind = attrs
        .get("type")
        .filter(|t| !t.is_empty())
        .ok_or(EventError::MissingAttribute("type"))?;
    let id = attrs.get("id").cloned().unwrap_or_default();
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?
    };
    let at = timestamp(attrs.get("time").map(String::as_str));
    cloudevent(0, id, kind, data).map(|event| RegistryEvent {
        timestamp: event.timestamp.or(at),
        ..event
    })
}

/// zot's event data.
#[derive(Deserialize, Default)]
struct ZotData {
    #[serde(default)]
    name: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    digest: String,
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

fn cloudevent(
    index: usize,
    id: String,
    kind: &str,
    data: Value,
) -> Result<RegistryEvent, EventError> {
    let invalid = |reason: String| EventError::Invalid {
        index,
        id: id.clone(),
        reason,
    };
    let zot_action = if kind.ends_with(".image.updated") {
        Some(EventAction::Push)
    } else if kind.ends_with(".image.deleted") {
        Some(EventAction::Delete)
    } else {
        None
    };
    if let Some(action) = zot_action {
        let data: ZotData =
            serde_json::from_value(data).map_err(|e| invalid(format!("{kind} data: {e}")))?;
        // `reference` is the tag, or the digest when the manifest was addressed by digest.
        let (tag, reference_digest) = match Digest::parse(&data.reference) {
            Ok(d) => (None, Some(d)),
            Err(_) => (Some(data.reference).filter(|r| !r.is_empty()), None),
        };
        let digest = match (data.digest.is_empty(), reference_digest) {
            (false, _) => Some(Digest::parse(&data.digest).map_err(|e| invalid(e.to_string()))?),
            (true, d) => d,
        };
        if data.name.is_empty() {
            return Err(invalid(format!("{kind} data names no repository")));
        }
        return Ok(RegistryEvent {
            id,
            action,
            repository: data.name,
            tag,
            digest,
            media_type: Some(data.media_type).filter(|m| !m.is_empty()),
            timestamp: None,
        });
    }
    let acr_action = match kind {
        "Microsoft.ContainerRegistry.ImagePushed" => Some(EventAction::Push),
        "Microsoft.ContainerRegistry.ImageDeleted" => Some(EventAction::Delete),
        _ => None,
    };
    let wrapped: Option<DistributionEvent> = match &data {
        Value::Object(o) if o.contains_key("target") => serde_json::from_value(data.clone())
            .map(Some)
            .map_err(|e| invalid(format!("{kind} data: {e}")))?,
        _ => None,
    };
    // A wrapped distribution event's own `timestamp` wins over the envelope's `time`.
    let stamped = |event: RegistryEvent, at: Option<String>| RegistryEvent {
        timestamp: timestamp(at.as_deref()),
        ..event
    };
    match (acr_action, wrapped) {
        (Some(action), Some(event)) => {
            distribution_event(index, id, action, event.target).map(|e| stamped(e, event.timestamp))
        }
        (Some(_), None) => Err(invalid(format!("{kind} data has no target"))),
        (None, Some(event)) if !event.action.is_empty() => {
            let action = EventAction::from_action(&event.action);
            distribution_event(index, id, action, event.target).map(|e| stamped(e, event.timestamp))
        }
        _ => {
            let repository = match &data {
                Value::Object(o) => o
                    .get("name")
                    .or_else(|| o.get("repository"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            };
            Ok(RegistryEvent {
                id,
                action: EventAction::Other(kind.to_owned()),
                repository,
                tag: None,
                digest: None,
                media_type: None,
                timestamp: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[test]
    fn distribution_envelope() {
        let body = serde_json::json!({"events": [
            {"id": "1", "action": "push", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
              "digest": digest("m").to_string(), "repository": "a/b", "tag": "v1"}},
            {"id": "2", "action": "delete", "target": {"repository": "a/b", "tag": "v1"}},
            {"id": "3", "action": "frobnicate", "target": {}}
        ]});
        let events = parse_distribution(body.to_string().as_bytes()).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].action, EventAction::Push);
        assert_eq!(events[0].tag.as_deref(), Some("v1"));
        assert_eq!(events[0].digest, Some(digest("m")));
        assert_eq!(events[1].digest, None);
        assert_eq!(events[2].action, EventAction::Other("frobnicate".into()));
    }

    #[test]
    fn distribution_errors_name_the_problem() {
        assert!(matches!(parse_distribution(b"{"), Err(EventError::Json(_))));
        assert!(matches!(
            parse_distribution(b"{}"),
            Err(EventError::Json(_))
        ));
        let bad_digest = br#"{"events":[{"id":"x","action":"push","target":{"repository":"a","digest":"sha256:nothex"}}]}"#;
        let err = parse_distribution(bad_digest).unwrap_err();
        assert!(err.to_string().contains("event #0 (x)"), "{err}");
        let no_repo = br#"{"events":[{"id":"y","action":"delete","target":{"tag":"t"}}]}"#;
        assert!(parse_distribution(no_repo).is_err());
    }

    #[test]
    fn zot_structured_and_binary() {
        let ce = serde_json::json!({
            "specversion": "1.0", "id": "z1", "source": "zotregistry.dev",
            "type": "zotregistry.image.updated", "datacontenttype": "application/json",
            "data": {"name": "golang", "reference": "latest", "digest": digest("g").to_string(),
                     "mediaType": "application/vnd.oci.image.manifest.v1+json", "manifest": "{}"}
        });
        let events = parse_cloudevents(ce.to_string().as_bytes()).unwrap();
        assert_eq!(events[0].action, EventAction::Push);
        assert_eq!(events[0].repository, "golang");
        assert_eq!(events[0].tag.as_deref(), Some("latest"));

        let mut attrs = BTreeMap::new();
        attrs.insert(
            "type".to_owned(),
            "com.example.registry.image.deleted".to_owned(),
        );
        attrs.insert("id".to_owned(), "z2".to_owned());
        let data = serde_json::json!({"name": "golang", "reference": digest("g").to_string(),
            "digest": digest("g").to_string(), "mediaType": "application/vnd.oci.image.manifest.v1+json"});
        let e = parse_cloudevent_binary(&attrs, data.to_string().as_bytes()).unwrap();
        assert_eq!(e.action, EventAction::Delete);
        assert_eq!(e.tag, None);
        assert_eq!(e.digest, Some(digest("g")));

        attrs.insert(
            "type".to_owned(),
            "zotregistry.image.lint_failed".to_owned(),
        );
        let e = parse_cloudevent_binary(&attrs, data.to_string().as_bytes()).unwrap();
        assert_eq!(
            e.action,
            EventAction::Other("zotregistry.image.lint_failed".into())
        );
        assert_eq!(
            parse_cloudevent_binary(&BTreeMap::new(), b"{}"),
            Err(EventError::MissingAttribute("type"))
        );
    }

    #[test]
    fn acr_batch_and_event_grid_schema() {
        let batch = serde_json::json!([
            {"specversion": "1.0", "id": "a1", "source": "/subscriptions/x", "type": "Microsoft.ContainerRegistry.ImagePushed",
             "data": {"id": "d1", "action": "push", "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
               "digest": digest("p").to_string(), "repository": "hello", "tag": "v1"}}},
            {"id": "a2", "eventType": "Microsoft.ContainerRegistry.ImageDeleted",
             "data": {"action": "delete", "target": {"digest": digest("p").to_string(), "repository": "hello"}}},
            {"specversion": "1.0", "id": "a3", "type": "Microsoft.ContainerRegistry.ChartPushed", "data": {}}
        ]);
        let events = parse_cloudevents(batch.to_string().as_bytes()).unwrap();
        assert_eq!(events[0].action, EventAction::Push);
        assert_eq!(events[0].repository, "hello");
        assert_eq!(events[1].action, EventAction::Delete);
        assert_eq!(events[1].tag, None);
        assert!(matches!(events[2].action, EventAction::Other(_)));
        assert!(parse_cloudevents(b"42").is_err());
        assert!(parse_cloudevents(br#"[{"id":"n"}]"#).is_err());
    }
}
