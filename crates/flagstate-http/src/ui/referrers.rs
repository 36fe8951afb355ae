//! What the pages show of manifests pushed by digest: the artifact types the UI names
//! (the one place that maps them), and the referrers of an image (OCI 1.1: manifests whose
//! `subject` is its digest — signatures, SBOMs, attestations).

use flagstate_core::{Digest, PushedManifest, RepositoryName};

use super::UiContext;
use super::error::UiError;
use super::image::byte_size;

/// Untagged manifests, or referrers, one page lists at most; when more exist the page
/// says so and links to the JSON listing that has them all.
pub const MANIFESTS_SHOWN: usize = 100;

/// The annotation a referrer states its creation time in.
const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// The annotation a referrer describes itself in.
const DESCRIPTION_ANNOTATION: &str = "org.opencontainers.image.description";

/// Well-known artifact types (`artifactType`, else the config's media type) and the
/// short name the pages give them.
const ARTIFACT_LABELS: &[(&str, &str)] = &[
    (
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        "Cosign signature",
    ),
    (
        "application/vnd.dev.cosign.simplesigning.v1+json",
        "Cosign signature",
    ),
    (
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "Sigstore bundle",
    ),
    ("application/vnd.cncf.notary.signature", "Notary signature"),
    ("application/vnd.cncf.helm.config.v1+json", "Helm chart"),
    ("application/spdx+json", "SPDX SBOM"),
    ("text/spdx", "SPDX SBOM"),
    ("application/vnd.cyclonedx+json", "CycloneDX SBOM"),
    ("application/vnd.cyclonedx+xml", "CycloneDX SBOM"),
    ("application/vnd.in-toto+json", "in-toto attestation"),
    ("application/vnd.dsse.envelope.v1+json", "DSSE attestation"),
];

/// An artifact type as a page shows it: a short name when it is well known, and the
/// type itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactType {
    /// The short name of a well-known type.
    pub label: Option<&'static str>,
    /// The type, verbatim.
    pub raw: String,
}

impl ArtifactType {
    /// `raw` with its short name, when it has one.
    pub fn of(raw: &str) -> Self {
        ArtifactType {
            label: artifact_label(raw),
            raw: raw.to_owned(),
        }
    }
}

/// The short name of a well-known artifact type.
pub fn artifact_label(artifact_type: &str) -> Option<&'static str> {
    ARTIFACT_LABELS
        .iter()
        .find(|(known, _)| *known == artifact_type)
        .map(|(_, label)| *label)
}

/// One referrer as the Referrers section lists it.
#[derive(Debug, Clone)]
pub struct ReferrerRow {
    /// The referrer's digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its artifact type, when it states one.
    pub artifact: Option<ArtifactType>,
    /// Its size, readable.
    pub size: String,
    /// Its `org.opencontainers.image.created` annotation.
    pub created: Option<String>,
    /// Its `org.opencontainers.image.description` annotation.
    pub description: Option<String>,
    /// What it refers to, when a section lists the referrers of several manifests (a
    /// list's children): the child's platform and digest.
    pub subject: Option<(String, String)>,
}

impl ReferrerRow {
    fn new(referrer: PushedManifest, subject: Option<(String, String)>) -> Self {
        let annotation = |key: &str| {
            referrer
                .annotations
                .get(key)
                .filter(|v| !v.trim().is_empty())
                .cloned()
        };
        ReferrerRow {
            digest: referrer.digest.to_string(),
            size: byte_size(referrer.size),
            artifact: referrer.artifact_type.as_deref().map(ArtifactType::of),
            created: annotation(CREATED_ANNOTATION),
            description: annotation(DESCRIPTION_ANNOTATION),
            media_type: referrer.media_type,
            subject,
        }
    }
}

/// The Referrers section of one manifest's page: at most [`MANIFESTS_SHOWN`] rows.
#[derive(Debug, Clone, Default)]
pub struct Referrers {
    /// The rows, by subject (the manifest itself first), then digest.
    pub rows: Vec<ReferrerRow>,
    /// Whether more referrers exist than the rows show.
    pub more: bool,
}

impl Referrers {
    /// The referrers in `repository` of `digest`, then of each of `children` (a list's
    /// images, each with the platform the page names it by).
    pub async fn of(
        ui: &UiContext,
        repository: &RepositoryName,
        digest: &Digest,
        children: &[(Digest, String)],
    ) -> Result<Self, UiError> {
        let mut section = Referrers::default();
        let subjects = std::iter::once((digest, None))
            .chain(children.iter().map(|(d, platform)| (d, Some(platform))));
        for (subject, platform) in subjects {
            let found = ui
                .store()
                .list_referrers(repository, subject, None)
                .await?
                .unwrap_or_default();
            for referrer in found {
                if section.rows.len() == MANIFESTS_SHOWN {
                    section.more = true;
                    return Ok(section);
                }
                let named = platform.map(|p| (p.clone(), subject.to_string()));
                section.rows.push(ReferrerRow::new(referrer, named));
            }
        }
        Ok(section)
    }
}

#[cfg(test)]
mod tests {
    use super::{ArtifactType, artifact_label};

    #[test]
    fn well_known_types_have_short_names() {
        assert_eq!(
            artifact_label("application/vnd.dev.cosign.artifact.sig.v1+json"),
            Some("Cosign signature")
        );
        assert_eq!(artifact_label("application/spdx+json"), Some("SPDX SBOM"));
        assert_eq!(
            artifact_label("application/vnd.cyclonedx+json"),
            Some("CycloneDX SBOM")
        );
        assert_eq!(
            artifact_label("application/vnd.in-toto+json"),
            Some("in-toto attestation")
        );
        let other = ArtifactType::of("application/vnd.example.thing");
        assert_eq!(other.label, None);
        assert_eq!(other.raw, "application/vnd.example.thing");
    }
}
