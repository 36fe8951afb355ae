//! Reading fetched manifests and image configs into the index's model.
//!
//! Manifests are parsed with `oci-spec`'s types (Docker schema 2 manifests and lists
//! share the OCI shapes). Image configs are parsed with a small lenient structure
//! instead of `oci_spec::image::ImageConfiguration`, because that type rejects configs
//! without `rootfs` and fails on a single non-string label, while the index only needs
//! `os`, `architecture`, `variant`, `created` and the string-valued labels.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::Digest;
use crate::model::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Image, OCI_INDEX, OCI_MANIFEST, Platform,
    is_list_media_type,
};

/// Media type of an OCI image config.
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a Docker image config.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Whether `media_type` is one of the four manifest types the index understands.
pub fn is_manifest_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

/// Whether a config blob of this media type describes a runnable image (as opposed to
/// an artifact such as a Helm chart, signature or attestation).
pub fn is_image_config_media_type(media_type: &str) -> bool {
    media_type == OCI_IMAGE_CONFIG || media_type == DOCKER_IMAGE_CONFIG
}

/// What a manifest is, as far as the index cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedManifest {
    /// A single-platform image whose config must be fetched.
    Image {
        /// Digest of the config blob.
        config: Digest,
        /// Manifest annotations.
        annotations: BTreeMap<String, String>,
    },
    /// An image list; entries that are not image manifests are already dropped.
    List {
        /// List annotations.
        annotations: BTreeMap<String, String>,
        /// Child image manifests with the platform the list states for them.
        entries: Vec<ListChild>,
    },
    /// An image manifest whose config is not an image's: an artifact (a Helm chart, a
    /// signature, an SBOM). The index does not hold it as an image, but a tag pointing
    /// at it is listed as an artifact tag.
    Artifact {
        /// The config's media type, for the debug log.
        config_media_type: String,
    },
    /// Something the index does not hold (nested list entry, schema 1, …).
    Unsupported {
        /// Why, for the debug log.
        reason: String,
    },
    /// Bytes that are not what their (indexed) media type says: not JSON, nested deeper
    /// than the JSON parser's recursion limit, a required field missing. Unlike
    /// `Unsupported`, this is a fault of the registry's content, reported as such.
    Unreadable {
        /// What is wrong, naming the media type.
        reason: String,
    },
}

/// One child of an image list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChild {
    /// Digest of the child manifest.
    pub digest: Digest,
    /// Platform stated by the list, when any.
    pub platform: Option<Platform>,
}

/// What the referrers API needs of a manifest, read from its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferrerFacts {
    /// `artifactType`, else `config.mediaType`.
    pub artifact_type: Option<String>,
    /// `subject.digest`, when it is a digest.
    pub subject: Option<Digest>,
    /// The string-valued `annotations`.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct FactsJson {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    subject: Option<DigestJson>,
    config: Option<MediaTypeJson>,
    annotations: Option<HashMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct DigestJson {
    digest: String,
}

#[derive(Deserialize)]
struct MediaTypeJson {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
}

/// Reads [`ReferrerFacts`] from a manifest or index; bytes that are not such JSON give
/// none (the manifest is still kept, just never a referrer).
pub fn referrer_facts(bytes: &[u8]) -> ReferrerFacts {
    let Ok(json) = serde_json::from_slice::<FactsJson>(bytes) else {
        return ReferrerFacts::default();
    };
    let artifact_type = json
        .artifact_type
        .filter(|t| !t.is_empty())
        .or_else(|| json.config.and_then(|c| c.media_type))
        .filter(|t| !t.is_empty());
    let annotations = string_values(json.annotations);
    ReferrerFacts {
        artifact_type,
        subject: json.subject.and_then(|s| Digest::parse(&s.digest).ok()),
        annotations,
    }
}

/// A tag that names what refers to a manifest rather than an image of its own: the OCI
/// referrers tag schema, or a cosign attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferrerTag {
    /// `sha256-<hex>`: the referrers tag schema of OCI 1.1 for registries without the
    /// referrers API. The tag points at an image index whose `manifests` are the
    /// referrers of `sha256:<hex>`.
    Index {
        /// The manifest referred to.
        subject: Digest,
    },
    /// `sha256-<hex>.<name>` (cosign's `.sig`, `.att`, `.sbom`): the tag points at one
    /// manifest that refers to `sha256:<hex>`.
    Attachment {
        /// The manifest referred to.
        subject: Digest,
        /// The attachment's name (`sig`, `att`, `sbom`, …).
        name: String,
    },
}

impl ReferrerTag {
    /// The referrer tag `tag` is, if it is one: `sha256-` and 64 lowercase hex digits,
    /// optionally followed by `.` and a name of letters and digits.
    pub fn parse(tag: &str) -> Option<Self> {
        let rest = tag.strip_prefix("sha256-")?;
        let (hex, name) = match rest.split_once('.') {
            Some((hex, name)) => (hex, Some(name)),
            None => (rest, None),
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let subject = Digest::parse(&format!("sha256:{hex}")).ok()?;
        match name {
            None => Some(ReferrerTag::Index { subject }),
            Some(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Some(ReferrerTag::Attachment {
                    subject,
                    name: name.to_owned(),
                })
            }
            Some(_) => None,
        }
    }

    /// The manifest the tag's referrers refer to.
    pub fn subject(&self) -> &Digest {
        match self {
            ReferrerTag::Index { subject } | ReferrerTag::Attachment { subject, .. } => subject,
        }
    }
}

/// The artifact type cosign gives an attachment named `name` when it writes OCI 1.1
/// referrers (`application/vnd.dev.cosign.artifact.<name>.v1+json`): what an attachment
/// tag's manifest is filtered by when it states no `artifactType` of its own.
pub fn cosign_artifact_type(name: &str) -> String {
    format!("application/vnd.dev.cosign.artifact.{name}.v1+json")
}

/// One descriptor of a referrers index (the manifest a [`ReferrerTag::Index`] tag
/// points at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedReferrer {
    /// The referrer's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its `artifactType`, when the descriptor states one.
    pub artifact_type: Option<String>,
    /// The descriptor's string-valued annotations.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ReferrersIndexJson {
    #[serde(default)]
    manifests: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ReferrerDescriptorJson {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    annotations: Option<HashMap<String, serde_json::Value>>,
}

/// The referrers a referrers index lists: its `manifests` descriptors that name a
/// manifest media type, a digest and a size; other entries are skipped. Bytes that are
/// not such an index list none.
pub fn referrers_index(bytes: &[u8]) -> Vec<IndexedReferrer> {
    let Ok(index) = serde_json::from_slice::<ReferrersIndexJson>(bytes) else {
        return Vec::new();
    };
    index
        .manifests
        .into_iter()
        .filter_map(|entry| serde_json::from_value::<ReferrerDescriptorJson>(entry).ok())
        .filter(|d| is_manifest_media_type(&d.media_type))
        .filter_map(|d| {
            Some(IndexedReferrer {
                digest: Digest::parse(&d.digest).ok()?,
                media_type: d.media_type,
                size: d.size,
                artifact_type: d.artifact_type.filter(|t| !t.is_empty()),
                annotations: string_values(d.annotations),
            })
        })
        .collect()
}

/// The string-valued entries of a JSON annotations object.
fn string_values(map: Option<HashMap<String, serde_json::Value>>) -> BTreeMap<String, String> {
    map.unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
        .collect()
}

/// Interprets a manifest's bytes according to its media type.
pub fn parse_manifest(media_type: &str, bytes: &[u8]) -> ParsedManifest {
    let unsupported = |reason: String| ParsedManifest::Unsupported { reason };
    let unreadable = |e: serde_json::Error| ParsedManifest::Unreadable {
        reason: format!("unreadable {media_type}: {e}"),
    };
    if is_list_media_type(media_type) {
        let index: ImageIndex = match serde_json::from_slice(bytes) {
            Ok(i) => i,
            Err(e) => return unreadable(e),
        };
        let entries = index
            .manifests()
            .iter()
            .filter_map(|d| match list_child(d) {
                Ok(child) => Some(child),
                Err(reason) => {
                    tracing::debug!(digest = %d.digest(), reason, "list entry skipped");
                    None
                }
            })
            .collect();
        ParsedManifest::List {
            annotations: sorted(index.annotations().as_ref()),
            entries,
        }
    } else if media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST {
        let manifest: ImageManifest = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => return unreadable(e),
        };
        let config_type = manifest.config().media_type().to_string();
        if !is_image_config_media_type(&config_type) {
            return ParsedManifest::Artifact {
                config_media_type: config_type,
            };
        }
        match Digest::parse(manifest.config().digest().as_ref()) {
            Ok(config) => ParsedManifest::Image {
                config,
                annotations: sorted(manifest.annotations().as_ref()),
            },
            Err(e) => unsupported(format!("config digest: {e}")),
        }
    } else {
        unsupported(format!("media type {media_type} is not indexed"))
    }
}

fn list_child(d: &Descriptor) -> Result<ListChild, String> {
    let media_type = d.media_type().to_string();
    if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(format!(
            "entry of media type {media_type} is not an image manifest"
        ));
    }
    let digest = Digest::parse(d.digest().as_ref()).map_err(|e| e.to_string())?;
    let platform = d.platform().as_ref().map(|p| Platform {
        os: p.os().to_string(),
        architecture: p.architecture().to_string(),
        variant: p.variant().clone().filter(|v| !v.is_empty()),
    });
    Ok(ListChild { digest, platform })
}

fn sorted(map: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// What the index keeps of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    /// `os`, `architecture`, `variant`; empty strings when the config omits them.
    pub platform: Platform,
    /// String-valued `config.Labels`; other values are dropped.
    pub labels: BTreeMap<String, String>,
    /// `created`, verbatim.
    pub created: Option<String>,
}

/// Why an image config could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable image config: {0}")]
pub struct ConfigError(String);

/// Parses an image config blob leniently (see the module docs).
pub fn parse_image_config(bytes: &[u8]) -> Result<ImageConfig, ConfigError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        os: Option<serde_json::Value>,
        #[serde(default)]
        architecture: Option<serde_json::Value>,
        #[serde(default)]
        variant: Option<serde_json::Value>,
        #[serde(default)]
        created: Option<serde_json::Value>,
        #[serde(default, deserialize_with = "config_object")]
        config: Option<RawConfig>,
    }
    #[derive(Deserialize)]
    struct RawConfig {
        #[serde(rename = "Labels", default)]
        labels: Option<serde_json::Map<String, serde_json::Value>>,
    }
    /// `config` as the image spec writes it, an object (or `null`). serde would also
    /// read the struct from a JSON array, positionally, turning `[{…}]` into labels.
    fn config_object<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<RawConfig>, D::Error> {
        struct ObjectOrNull;
        impl<'de> serde::de::Visitor<'de> for ObjectOrNull {
            type Value = Option<RawConfig>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object or null")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                RawConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
            }
        }
        deserializer.deserialize_any(ObjectOrNull)
    }
    // The same for the document itself: an image config is a JSON object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError("an image config must be a JSON object".into()));
    }
    let string = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| ConfigError(e.to_string()))?;
    let labels = raw
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect();
    Ok(ImageConfig {
        platform: Platform {
            os: string(raw.os).unwrap_or_default(),
            architecture: string(raw.architecture).unwrap_or_default(),
            variant: string(raw.variant),
        },
        labels,
        created: string(raw.created),
    })
}

/// Builds the indexed image from its manifest facts and config. A config that names no
/// OS or architecture borrows them from `listed` (the list's platform entry), else
/// `unknown`, because the index format must always state both.
pub fn build_image(
    digest: Digest,
    media_type: String,
    annotations: BTreeMap<String, String>,
    config_digest: Digest,
    config: ImageConfig,
    listed: Option<&Platform>,
    size: u64,
) -> Image {
    let mut platform = config.platform;
    if platform.os.is_empty() {
        platform.os = listed
            .map(|p| p.os.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
    }
    if platform.architecture.is_empty() {
        platform.architecture = listed
            .map(|p| p.architecture.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
    }
    Image {
        digest,
        media_type,
        platform,
        labels: config.labels,
        annotations,
        created: config.created,
        config_digest: Some(config_digest),
        size: Some(size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> String {
        Digest::sha256_of(s.as_bytes()).to_string()
    }

    #[test]
    fn referrer_tags_are_recognised_by_name() {
        let hex = "ab".repeat(32);
        let subject = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(
            ReferrerTag::parse(&format!("sha256-{hex}")),
            Some(ReferrerTag::Index {
                subject: subject.clone()
            })
        );
        assert_eq!(
            ReferrerTag::parse(&format!("sha256-{hex}.sig")),
            Some(ReferrerTag::Attachment {
                subject: subject.clone(),
                name: "sig".into()
            })
        );
        for not_one in [
            "latest".to_owned(),
            format!("sha256-{}", &hex[..63]),
            format!("sha256-{hex}0"),
            format!("sha256-{}", hex.to_uppercase()),
            format!("sha512-{hex}"),
            format!("sha256-{hex}."),
            format!("sha256-{hex}.s-g"),
            format!("sha256-{hex}.sig.x"),
        ] {
            assert_eq!(ReferrerTag::parse(&not_one), None, "{not_one}");
        }
        assert_eq!(
            cosign_artifact_type("sig"),
            "application/vnd.dev.cosign.artifact.sig.v1+json"
        );
    }

    #[test]
    fn a_referrers_index_lists_its_manifest_descriptors() {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d("sbom"), "size": 412,
                 "artifactType": "application/spdx+json",
                 "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z", "n": 1}},
                {"mediaType": OCI_MANIFEST, "digest": d("plain"), "size": 7},
                {"mediaType": "application/octet-stream", "digest": d("blob"), "size": 1},
                {"mediaType": OCI_MANIFEST, "digest": "not a digest", "size": 1},
                {"mediaType": OCI_MANIFEST, "digest": d("no size")},
                "not an object"
            ]
        });
        let found = referrers_index(&serde_json::to_vec(&index).unwrap());
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].digest.to_string(), d("sbom"));
        assert_eq!(found[0].size, 412);
        assert_eq!(
            found[0].artifact_type.as_deref(),
            Some("application/spdx+json")
        );
        assert_eq!(
            found[0].annotations.keys().collect::<Vec<_>>(),
            ["org.opencontainers.image.created"]
        );
        assert_eq!(found[1].artifact_type, None);
        assert!(referrers_index(b"not json").is_empty());
        assert!(referrers_index(b"{}").is_empty());
    }

    #[test]
    fn image_manifest_and_artifact() {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_IMAGE_CONFIG, "digest": d("c"), "size": 2},
            "layers": [],
            "annotations": {"b": "2", "a": "1"}
        });
        match parse_manifest(DOCKER_MANIFEST, m.to_string().as_bytes()) {
            ParsedManifest::Image {
                config,
                annotations,
            } => {
                assert_eq!(config.to_string(), d("c"));
                assert_eq!(annotations.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        let artifact = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": d("h"), "size": 2},
            "layers": []
        });
        assert_eq!(
            parse_manifest(OCI_MANIFEST, artifact.to_string().as_bytes()),
            ParsedManifest::Artifact {
                config_media_type: "application/vnd.cncf.helm.config.v1+json".into()
            }
        );
        assert!(matches!(
            parse_manifest(
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
                b"{}"
            ),
            ParsedManifest::Unsupported { .. }
        ));
        assert!(matches!(
            parse_manifest(OCI_MANIFEST, b"not json"),
            ParsedManifest::Unreadable { .. }
        ));
    }

    /// serde reads structs from JSON arrays too; a config (or its `config`) written as
    /// an array is not an image config, and must not turn into labels.
    #[test]
    fn configs_are_objects() {
        let positional = br#"{"os":"linux","config":[{"mediaType":"x","size":7}]}"#;
        let e = parse_image_config(positional).unwrap_err();
        assert!(e.to_string().contains("an object or null"), "{e}");
        let e = parse_image_config(br#" ["linux","amd64"]"#).unwrap_err();
        assert!(e.to_string().contains("JSON object"), "{e}");
        let ok = parse_image_config(br#" {"os":"linux","config":null}"#).unwrap();
        assert!(ok.labels.is_empty());
        let ok = parse_image_config(br#"{"config":{"Labels":{"a":"1","n":2}}}"#).unwrap();
        assert_eq!(ok.labels.len(), 1);
    }

    /// JSON nested deeper than serde_json's recursion limit (128) in a field the index
    /// reads is an error naming the limit, never a stack overflow and never a silently
    /// empty result.
    #[test]
    fn deeply_nested_json_is_unreadable() {
        let depth = 200_000;
        let deep = |inner: &str| format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth));
        let config = format!(
            r#"{{"os":"linux","config":{{"Labels":{{"x":{}}}}}}}"#,
            deep("1")
        );
        let e = parse_image_config(config.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
        // A field the index does not read is skipped without recursion: still usable.
        let unknown_field = format!(r#"{{"os":"linux","history":{}}}"#, deep(""));
        let cfg = parse_image_config(unknown_field.as_bytes()).unwrap();
        assert_eq!(cfg.platform.os, "linux");
        let manifest = format!(r#"{{"schemaVersion":2,"annotations":{}}}"#, deep(""));
        match parse_manifest(OCI_MANIFEST, manifest.as_bytes()) {
            ParsedManifest::Unreadable { reason } => {
                assert!(
                    reason.starts_with("unreadable application/vnd.oci"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_drops_nested_lists() {
        let l = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d("1"), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI_INDEX, "digest": d("2"), "size": 1},
                {"mediaType": DOCKER_MANIFEST, "digest": d("3"), "size": 1}
            ]
        });
        let ParsedManifest::List { entries, .. } =
            parse_manifest(OCI_INDEX, l.to_string().as_bytes())
        else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].platform,
            Some(Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: Some("v8".into())
            })
        );
        assert_eq!(entries[1].platform, None);
    }

    #[test]
    fn config_keeps_string_labels_only() {
        let c = br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{"Labels":{"a":"x","n":1,"z":null}}}"#;
        let cfg = parse_image_config(c).unwrap();
        assert_eq!(cfg.platform, Platform::new("linux", "amd64"));
        assert_eq!(cfg.labels.len(), 1);
        assert_eq!(cfg.created.as_deref(), Some("2024-01-01T00:00:00Z"));
        let bare = parse_image_config(b"{}").unwrap();
        let img = build_image(
            Digest::sha256_of(b"m"),
            OCI_MANIFEST.into(),
            BTreeMap::new(),
            Digest::sha256_of(b"c"),
            bare,
            Some(&Platform::new("linux", "s390x")),
            321,
        );
        assert_eq!(img.platform, Platform::new("linux", "s390x"));
        assert!(parse_image_config(b"[").is_err());
    }
}
