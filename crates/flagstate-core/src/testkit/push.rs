//! [`Pusher`]: writes images to a registry over the distribution HTTP API (blob upload
//! `POST` + `PUT`, manifest `PUT`), the way `skopeo` or `podman push` would, but without
//! needing real layers.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header;
use serde_json::{Value, json};

use super::TestkitError;
use crate::digest::Digest;
use crate::model::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::registry::MANIFEST_ACCEPT;
use crate::registry::content::{DOCKER_IMAGE_CONFIG, OCI_IMAGE_CONFIG};

/// Which single-image manifest format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    /// OCI image manifest with an OCI config.
    #[default]
    Oci,
    /// Docker schema 2 manifest with a Docker config.
    Docker,
}

/// Which list format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListFormat {
    /// OCI image index.
    #[default]
    OciIndex,
    /// Docker manifest list.
    DockerList,
}

/// A tiny image to push: one small layer and a config with these facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// GOOS.
    pub os: String,
    /// GOARCH.
    pub architecture: String,
    /// CPU variant.
    pub variant: Option<String>,
    /// Config labels.
    pub labels: BTreeMap<String, String>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// `created` of the config.
    pub created: Option<String>,
    /// Manifest format.
    pub format: ManifestFormat,
    /// Content of the single layer (tiny; the registry does not look inside).
    pub layer: Vec<u8>,
    /// Write an artifact instead of an image: the config gets this media type.
    pub artifact_config_type: Option<String>,
}

impl ImageSpec {
    /// A linux image for `architecture` with no labels, in OCI format.
    pub fn new(os: &str, architecture: &str) -> Self {
        ImageSpec {
            os: os.into(),
            architecture: architecture.into(),
            variant: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            created: Some("2024-01-01T00:00:00Z".into()),
            format: ManifestFormat::Oci,
            layer: b"flagstate test layer".to_vec(),
            artifact_config_type: None,
        }
    }

    /// Adds a config label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a manifest annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Uses the Docker schema 2 format.
    pub fn docker(mut self) -> Self {
        self.format = ManifestFormat::Docker;
        self
    }

    /// Sets the CPU variant.
    pub fn variant(mut self, variant: &str) -> Self {
        self.variant = Some(variant.into());
        self
    }

    /// Turns the image into a non-image artifact whose config has `media_type`.
    pub fn artifact(mut self, media_type: &str) -> Self {
        self.artifact_config_type = Some(media_type.into());
        self
    }

    fn config_json(&self) -> Vec<u8> {
        let mut config = json!({
            "architecture": self.architecture,
            "os": self.os,
            "config": {"Labels": self.labels},
            "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(&self.layer).to_string()]},
        });
        if let Some(variant) = &self.variant {
            config["variant"] = json!(variant);
        }
        if let Some(created) = &self.created {
            config["created"] = json!(created);
        }
        serde_json::to_vec(&config).unwrap_or_default()
    }
}

/// What [`Pusher::push_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// Manifest digest.
    pub digest: Digest,
    /// Manifest media type.
    pub media_type: String,
    /// Config blob digest.
    pub config_digest: Digest,
    /// Manifest size in bytes.
    pub size: u64,
}

/// What [`Pusher::push_list`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedList {
    /// List digest.
    pub digest: Digest,
    /// List media type.
    pub media_type: String,
    /// The children, in list order.
    pub children: Vec<PushedImage>,
}

/// Pushes images to a registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Pusher {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Pusher {
    /// A pusher for the registry at `base_url` (`http://host:port/`), with optional basic
    /// credentials.
    pub fn new(base_url: &str, basic_auth: Option<(String, String)>) -> Self {
        let base = if base_url.ends_with('/') {
            base_url.to_owned()
        } else {
            format!("{base_url}/")
        };
        crate::registry::install_crypto_provider();
        Pusher {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
            base,
            auth: basic_auth,
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.auth {
            Some((user, password)) => r.basic_auth(user, Some(password)),
            None => r,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        method: &str,
        url: &str,
        ok: &[u16],
    ) -> Result<reqwest::Response, TestkitError> {
        let fail = |reason: String| TestkitError::Http {
            method: method.into(),
            url: url.into(),
            reason,
        };
        let response = request.send().await.map_err(|e| fail(e.to_string()))?;
        if ok.contains(&response.status().as_u16()) {
            Ok(response)
        } else {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            Err(fail(format!("HTTP {status}: {}", body.trim())))
        }
    }

    /// Uploads a blob unless the repository already has it; returns its digest.
    pub async fn push_blob(&self, repository: &str, bytes: &[u8]) -> Result<Digest, TestkitError> {
        let digest = Digest::sha256_of(bytes);
        let blob_url = format!("{}v2/{repository}/blobs/{digest}", self.base);
        let head = self
            .request(reqwest::Method::HEAD, &blob_url)
            .send()
            .await
            .map_err(|e| TestkitError::Http {
                method: "HEAD".into(),
                url: blob_url.clone(),
                reason: e.to_string(),
            })?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let start = format!("{}v2/{repository}/blobs/uploads/", self.base);
        let response = self
            .send(
                self.request(reqwest::Method::POST, &start),
                "POST",
                &start,
                &[202],
            )
            .await?;
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| TestkitError::Http {
                method: "POST".into(),
                url: start.clone(),
                reason: "no Location header".into(),
            })?;
        let mut upload = url::Url::parse(&self.base)
            .and_then(|b| b.join(location))
            .map_err(|e| TestkitError::Http {
                method: "POST".into(),
                url: start.clone(),
                reason: format!("bad Location {location:?}: {e}"),
            })?;
        upload
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let upload = upload.to_string();
        self.send(
            self.request(reqwest::Method::PUT, &upload)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.to_vec()),
            "PUT",
            &upload,
            &[201],
        )
        .await?;
        Ok(digest)
    }

    /// Puts a manifest under `reference` (tag or digest); returns its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, TestkitError> {
        let url = format!("{}v2/{repository}/manifests/{reference}", self.base);
        self.send(
            self.request(reqwest::Method::PUT, &url)
                .header(header::CONTENT_TYPE, media_type)
                .body(bytes.to_vec()),
            "PUT",
            &url,
            &[201],
        )
        .await?;
        Ok(Digest::sha256_of(bytes))
    }

    /// Pushes a single-platform image (layer, config, manifest); tags it with `tag`, or
    /// pushes it by digest only when `tag` is `None`.
    pub async fn push_image(
        &self,
        repository: &str,
        tag: Option<&str>,
        spec: &ImageSpec,
    ) -> Result<PushedImage, TestkitError> {
        let (manifest_type, default_config_type, layer_type) = match spec.format {
            ManifestFormat::Oci => (
                OCI_MANIFEST,
                OCI_IMAGE_CONFIG,
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
            ManifestFormat::Docker => (
                DOCKER_MANIFEST,
                DOCKER_IMAGE_CONFIG,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
        };
        let config_type = spec
            .artifact_config_type
            .as_deref()
            .unwrap_or(default_config_type);
        let config = spec.config_json();
        let layer_digest = self.push_blob(repository, &spec.layer).await?;
        let config_digest = self.push_blob(repository, &config).await?;
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest.as_str(), "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": layer_digest.as_str(), "size": spec.layer.len()}],
        });
        if !spec.annotations.is_empty() {
            manifest["annotations"] = json!(spec.annotations);
        }
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let digest = Digest::sha256_of(&bytes);
        let reference = tag.map(str::to_owned).unwrap_or_else(|| digest.to_string());
        self.put_manifest(repository, &reference, manifest_type, &bytes)
            .await?;
        Ok(PushedImage {
            digest,
            media_type: manifest_type.into(),
            config_digest,
            size: bytes.len() as u64,
        })
    }

    /// Pushes a multi-platform list: every child by digest, then the list under `tag`.
    /// Each child's platform entry is taken from its spec.
    pub async fn push_list(
        &self,
        repository: &str,
        tag: &str,
        format: ListFormat,
        children: &[ImageSpec],
    ) -> Result<PushedList, TestkitError> {
        let mut pushed = Vec::with_capacity(children.len());
        let mut entries = Vec::with_capacity(children.len());
        for spec in children {
            let mut spec = spec.clone();
            if format == ListFormat::DockerList {
                spec.format = ManifestFormat::Docker;
            }
            let image = self.push_image(repository, None, &spec).await?;
            let mut platform = json!({"os": spec.os, "architecture": spec.architecture});
            if let Some(variant) = &spec.variant {
                platform["variant"] = json!(variant);
            }
            entries.push(json!({
                "mediaType": image.media_type,
                "digest": image.digest.as_str(),
                "size": image.size,
                "platform": platform,
            }));
            pushed.push(image);
        }
        self.push_raw_list(repository, tag, format, entries, pushed)
            .await
    }

    /// Pushes a list whose entries are given verbatim (for nested lists and other odd
    /// shapes); `children` is returned as given.
    pub async fn push_raw_list(
        &self,
        repository: &str,
        tag: &str,
        format: ListFormat,
        entries: Vec<Value>,
        children: Vec<PushedImage>,
    ) -> Result<PushedList, TestkitError> {
        let media_type = match format {
            ListFormat::OciIndex => OCI_INDEX,
            ListFormat::DockerList => DOCKER_MANIFEST_LIST,
        };
        let list = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": entries});
        let bytes = serde_json::to_vec(&list).unwrap_or_default();
        let digest = self
            .put_manifest(repository, tag, media_type, &bytes)
            .await?;
        Ok(PushedList {
            digest,
            media_type: media_type.into(),
            children,
        })
    }

    /// Deletes a manifest by digest (and so every tag pointing at it).
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), TestkitError> {
        let url = format!("{}v2/{repository}/manifests/{digest}", self.base);
        self.send(
            self.request(reqwest::Method::DELETE, &url),
            "DELETE",
            &url,
            &[202],
        )
        .await?;
        Ok(())
    }

    /// Points `tag` at the existing manifest `digest` (moving it if it exists).
    pub async fn tag(
        &self,
        repository: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), TestkitError> {
        let url = format!("{}v2/{repository}/manifests/{digest}", self.base);
        let response = self
            .send(
                self.request(reqwest::Method::GET, &url)
                    .header(header::ACCEPT, MANIFEST_ACCEPT),
                "GET",
                &url,
                &[200],
            )
            .await?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(OCI_MANIFEST)
            .to_owned();
        let bytes = response.bytes().await.map_err(|e| TestkitError::Http {
            method: "GET".into(),
            url: url.clone(),
            reason: e.to_string(),
        })?;
        self.put_manifest(repository, tag, &media_type, &bytes)
            .await?;
        Ok(())
    }
}
