//! The one CloudEvents 1.0 rendering of a change record: the HTTP feed's pages and event
//! streams and the outgoing webhooks send exactly this JSON (structured mode, or an array
//! of it in batched mode), so a consumer sees the same `id` for a record however it
//! reads it.

use serde::Serialize;

use super::ChangeRecord;

/// The `data` of a change event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeData {
    /// The repository.
    pub repository: String,
    /// The tag, for tag changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The digest the tag points at now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The digest it pointed at before.
    #[serde(rename = "previousDigest", skip_serializing_if = "Option::is_none")]
    pub previous_digest: Option<String>,
    /// The media type of `digest`'s manifest.
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type of `digest`'s manifest, where known.
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The digest of the manifest `digest` refers to (its OCI 1.1 `subject`), for
    /// referrers and manifests pushed by digest.
    #[serde(rename = "subjectDigest", skip_serializing_if = "Option::is_none")]
    pub subject_digest: Option<String>,
}

/// One change, as a CloudEvents 1.0 event in structured JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeEvent {
    /// `1.0`.
    pub specversion: &'static str,
    /// The record's cursor: unique in this index, the same on every delivery.
    pub id: String,
    /// The index: its public registry URL.
    pub source: String,
    /// `io.flagstate.` and the kind, e.g. `io.flagstate.tag.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// `repository:tag` for tag changes, `repository@digest` for untagged manifests and
    /// referrers, `repository` for the repository's own.
    pub subject: String,
    /// `application/json`.
    pub datacontenttype: &'static str,
    /// What changed.
    pub data: ChangeData,
}

/// The media type of one event in structured mode.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// The media type of a batch of events (a JSON array of structured events).
pub const CLOUDEVENTS_BATCH_JSON: &str = "application/cloudevents-batch+json";

impl ChangeEvent {
    /// The event of `record` in the index whose public registry URL is `source`.
    pub fn new(record: ChangeRecord, source: &str) -> Self {
        let subject = match (&record.tag, &record.digest) {
            (Some(tag), _) => format!("{}:{tag}", record.repository),
            (None, Some(digest)) => format!("{}@{digest}", record.repository),
            (None, None) => record.repository.to_string(),
        };
        ChangeEvent {
            specversion: "1.0",
            id: record.cursor.to_string(),
            source: source.to_owned(),
            kind: format!("io.flagstate.{}", record.kind.as_str()),
            time: record.time.to_rfc3339(),
            subject,
            datacontenttype: "application/json",
            data: ChangeData {
                repository: record.repository.to_string(),
                tag: record.tag.map(|t| t.to_string()),
                digest: record.digest.map(|d| d.to_string()),
                previous_digest: record.previous_digest.map(|d| d.to_string()),
                media_type: record.media_type,
                artifact_type: record.artifact_type,
                subject_digest: record.subject.map(|d| d.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::{ChangeCursor, ChangeKind};
    use crate::{Digest, RepositoryName, Tag, Timestamp};

    #[test]
    fn a_tag_change_renders_as_a_structured_cloudevent() {
        let digest = Digest::sha256_of(b"a");
        let record = ChangeRecord {
            cursor: ChangeCursor {
                generation: 7,
                index: 1,
            },
            time: Timestamp::from_millis(0),
            kind: ChangeKind::TagCreated,
            repository: RepositoryName::parse("apps/one").unwrap(),
            tag: Some(Tag::parse("v1").unwrap()),
            digest: Some(digest.clone()),
            previous_digest: None,
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            subject: None,
            artifact_type: None,
        };
        let json = serde_json::to_value(ChangeEvent::new(record, "http://r.example")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "specversion": "1.0",
                "id": "7.1",
                "source": "http://r.example",
                "type": "io.flagstate.tag.created",
                "time": "1970-01-01T00:00:00.000Z",
                "subject": "apps/one:v1",
                "datacontenttype": "application/json",
                "data": {
                    "repository": "apps/one",
                    "tag": "v1",
                    "digest": digest.to_string(),
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                },
            })
        );
    }

    #[test]
    fn a_referrer_renders_with_its_subject_and_artifact_type() {
        let digest = Digest::sha256_of(b"sig");
        let subject = Digest::sha256_of(b"image");
        let record = ChangeRecord {
            cursor: ChangeCursor {
                generation: 9,
                index: 2,
            },
            time: Timestamp::from_millis(0),
            kind: ChangeKind::ReferrerCreated,
            repository: RepositoryName::parse("apps/one").unwrap(),
            tag: None,
            digest: Some(digest.clone()),
            previous_digest: None,
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            subject: Some(subject.clone()),
            artifact_type: Some("application/vnd.example.sig".into()),
        };
        let json = serde_json::to_value(ChangeEvent::new(record, "http://r.example")).unwrap();
        assert_eq!(json["type"], "io.flagstate.referrer.created");
        assert_eq!(json["subject"], format!("apps/one@{digest}"));
        assert_eq!(
            json["data"],
            serde_json::json!({
                "repository": "apps/one",
                "digest": digest.to_string(),
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.example.sig",
                "subjectDigest": subject.to_string(),
            })
        );
    }
}
