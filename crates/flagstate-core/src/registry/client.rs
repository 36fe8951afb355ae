//! [`RegistryClient`]: requests with authentication, retries, time limits and a global
//! concurrency bound, and the distribution API operations built on them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::Semaphore;
use url::Url;

use super::auth::{AuthState, Credentials};
use super::paging::next_link;
use super::transport::{Reachability, Redirects};
use super::{
    FetchedManifest, MANIFEST_ACCEPT, ManifestCheck, RegistryConfig, RegistryError, RetryPolicy,
};
use crate::digest::Digest;
use crate::name::{NameError, RepositoryName, Tag};

/// Largest manifest accepted (the distribution registry's own limit is 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest blob accepted: image configs with embedded icons and appdata stay far below.
const MAX_BLOB_BYTES: usize = 64 * 1024 * 1024;
/// Largest catalog / tag list page accepted.
const MAX_LIST_BYTES: usize = 32 * 1024 * 1024;
/// Page size asked of `_catalog` and `tags/list` (the distribution registry's maximum).
const PAGE_SIZE: usize = 1000;
/// Safety net against registries whose `Link` headers loop.
const MAX_PAGES: usize = 100_000;
/// Largest token-endpoint answer accepted: real tokens are a few kilobytes.
pub(super) const MAX_TOKEN_BYTES: usize = 1024 * 1024;

/// Request counters of one client, for tests, benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent to the registry, every attempt counted.
    pub requests: u64,
    /// Attempts repeated after a transient failure.
    pub retries: u64,
    /// Manifest bodies fetched (`GET …/manifests/…`).
    pub manifest_gets: u64,
    /// Manifest `HEAD` requests.
    pub manifest_heads: u64,
    /// Conditional manifest `GET`s (`If-None-Match: "<known digest>"`) sent by
    /// [`RegistryClient::check_manifest`].
    pub manifest_checks: u64,
    /// Of those, the ones the registry answered `304 Not Modified` (no body).
    pub manifest_not_modified: u64,
    /// Blob bodies fetched.
    pub blob_gets: u64,
    /// `tags/list` pages fetched.
    pub tag_pages: u64,
    /// `_catalog` pages fetched.
    pub catalog_pages: u64,
    /// Requests to a bearer-token endpoint.
    pub token_requests: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) manifest_gets: AtomicU64,
    pub(super) manifest_heads: AtomicU64,
    pub(super) manifest_checks: AtomicU64,
    pub(super) manifest_not_modified: AtomicU64,
    pub(super) blob_gets: AtomicU64,
    pub(super) tag_pages: AtomicU64,
    pub(super) catalog_pages: AtomicU64,
    pub(super) token_requests: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A client for one registry. Cheap to clone; clones share connections, the token
/// cache, the concurrency limit and the counters.
#[derive(Clone)]
pub struct RegistryClient {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) http: reqwest::Client,
    pub(super) base: Url,
    pub(super) credentials: Option<Credentials>,
    pub(super) retry: RetryPolicy,
    pub(super) retry_budget: Duration,
    pub(super) reachability: Mutex<Reachability>,
    pub(super) limit: Semaphore,
    pub(super) auth: Mutex<AuthState>,
    pub(super) counters: Counters,
    pub(super) repositories: Vec<RepositoryName>,
    /// Set once the registry answered a conditional manifest `GET` with the unchanged
    /// body: it ignores `If-None-Match`, so checks use `HEAD` from then on.
    pub(super) conditional_ignored: AtomicBool,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base_url", &self.inner.base.as_str())
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

/// A read answer: status, headers and the whole (size-limited) body.
pub(super) struct Answer {
    pub(super) url: Url,
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Answer {
    /// The error matching a non-success status.
    fn error(&self) -> RegistryError {
        let url = self.url.to_string();
        let detail = error_detail(&self.body);
        match self.status.as_u16() {
            404 => RegistryError::NotFound { url, detail },
            s @ (401 | 403) => RegistryError::Unauthorized {
                url,
                status: s,
                detail,
            },
            status => RegistryError::Status {
                url,
                status,
                detail,
            },
        }
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json<T: for<'de> Deserialize<'de>>(&self) -> Result<T, RegistryError> {
        serde_json::from_slice(&self.body).map_err(|e| RegistryError::InvalidResponse {
            url: self.url.to_string(),
            reason: format!("bad JSON: {e}"),
        })
    }
}

/// A manifest read from a `GET` answer: the status checked, the bytes verified against
/// the digest reference (or `Docker-Content-Digest` for a tag), the media type from the
/// body's `mediaType` or else the `Content-Type`.
fn fetched_manifest(answer: &Answer, reference: &str) -> Result<FetchedManifest, RegistryError> {
    if !answer.status.is_success() {
        return Err(answer.error());
    }
    let expected = match Digest::parse(reference) {
        Ok(d) => Some(d),
        Err(_) => answer
            .header(DOCKER_CONTENT_DIGEST)
            .and_then(|d| Digest::parse(d.trim()).ok()),
    };
    let digest = verify(answer, expected)?;
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
    }
    let from_body = serde_json::from_slice::<Probe>(&answer.body)
        .ok()
        .and_then(|p| p.media_type)
        .filter(|m| !m.is_empty());
    let media_type = from_body
        .or_else(|| {
            answer
                .header(header::CONTENT_TYPE)
                .map(|ct| ct.split(';').next().unwrap_or_default().trim().to_owned())
        })
        .filter(|m| !m.is_empty())
        .ok_or_else(|| RegistryError::InvalidResponse {
            url: answer.url.to_string(),
            reason: "manifest states no media type (neither mediaType nor Content-Type)".into(),
        })?;
    Ok(FetchedManifest {
        digest,
        media_type,
        bytes: answer.body.clone(),
    })
}

/// The registry's `{"errors":[{"code","message"}]}` body, shortened, for error messages.
pub(super) fn error_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let text = match serde_json::from_slice::<Errors>(body) {
        Ok(e) => e
            .errors
            .iter()
            .map(|i| format!("{} {}", i.code, i.message).trim().to_owned())
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    text.chars().take(200).collect()
}

impl RegistryClient {
    /// Builds a client. Fails on a URL that is not `http`/`https` or a concurrency of 0.
    pub fn new(cfg: RegistryConfig) -> Result<Self, RegistryError> {
        let RegistryConfig {
            mut url,
            mut credentials,
            timeout,
            max_concurrency,
            retry,
            retry_budget,
            repositories,
        } = cfg;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RegistryError::Config(format!(
                "registry URL must be http or https, got scheme {:?}",
                url.scheme()
            )));
        }
        if url.host_str().is_none() {
            return Err(RegistryError::Config("registry URL has no host".into()));
        }
        if max_concurrency == 0 {
            return Err(RegistryError::Config(
                "max_concurrency must be at least 1".into(),
            ));
        }
        if retry_budget.is_zero() {
            return Err(RegistryError::Config("retry_budget must not be 0".into()));
        }
        if !url.username().is_empty() {
            // Credentials in the URL would end up in every error message and log line.
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            if credentials.is_none() {
                credentials = Some(Credentials::Basic {
                    username: decode(url.username()),
                    password: decode(url.password().unwrap_or_default()),
                });
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        url.set_query(None);
        url.set_fragment(None);
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        super::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("flagstate/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by `execute`, which decides per hop whether the
            // target is one credentials may go to (see `Redirects`).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RegistryError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http,
                base: url,
                credentials,
                retry: RetryPolicy {
                    max_attempts: retry.max_attempts.max(1),
                    ..retry
                },
                retry_budget,
                reachability: Mutex::new(Reachability::default()),
                limit: Semaphore::new(max_concurrency),
                auth: Mutex::new(AuthState::default()),
                counters: Counters::default(),
                repositories,
                conditional_ignored: AtomicBool::new(false),
            }),
        })
    }

    /// The registry's base URL (always ending in `/`, without credentials).
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Repositories configured for registries without `_catalog`.
    pub fn configured_repositories(&self) -> &[RepositoryName] {
        &self.inner.repositories
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            requests: get(&c.requests),
            retries: get(&c.retries),
            manifest_gets: get(&c.manifest_gets),
            manifest_heads: get(&c.manifest_heads),
            manifest_checks: get(&c.manifest_checks),
            manifest_not_modified: get(&c.manifest_not_modified),
            blob_gets: get(&c.blob_gets),
            tag_pages: get(&c.tag_pages),
            catalog_pages: get(&c.catalog_pages),
            token_requests: get(&c.token_requests),
        }
    }

    /// `GET /v2/`: checks that the registry speaks the distribution API and accepts our
    /// credentials.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.url("v2/")?;
        let answer = self
            .execute(
                Method::GET,
                url,
                None,
                &[],
                MAX_LIST_BYTES,
                Redirects::SameOrigin,
            )
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(answer.error())
        }
    }

    /// All repository names from `/v2/_catalog`, following every page, parsed: listed
    /// strings that are not repository names are in [`Listing::invalid`]. Registries
    /// that do not offer the catalog give [`RegistryError::CatalogUnavailable`].
    pub async fn catalog(&self) -> Result<Listing<RepositoryName>, RegistryError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let first = self.url(&format!("v2/_catalog?n={PAGE_SIZE}"))?;
        let mut names = Vec::new();
        self.paginate(first, "registry:catalog:*", true, |answer| {
            let page: Page = answer.json()?;
            let page = page.repositories.unwrap_or_default();
            names.extend(page.iter().cloned());
            Ok(page)
        })
        .await?;
        Ok(Listing::parse(names, |n| RepositoryName::parse(n)))
    }

    /// All tags of a repository from `tags/list`, following every page, parsed: listed
    /// strings that are not tags are in [`Listing::invalid`]. `"tags": null` (a
    /// repository whose manifests were all deleted) gives an empty list; an unknown
    /// repository gives [`RegistryError::NotFound`].
    pub async fn tags(&self, repository: &RepositoryName) -> Result<Listing<Tag>, RegistryError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let first = self.url(&format!("v2/{repository}/tags/list?n={PAGE_SIZE}"))?;
        let mut tags = Vec::new();
        self.paginate(first, &pull_scope(repository), false, |answer| {
            let page: Page = answer.json()?;
            let page = page.tags.unwrap_or_default();
            tags.extend(page.iter().cloned());
            Ok(page)
        })
        .await?;
        Ok(Listing::parse(tags, |t| Tag::parse(t)))
    }

    /// Follows `Link: rel="next"`, or, when a full page comes without one, `last=`.
    /// Stops at an empty page or at a page that adds nothing new (a registry ignoring
    /// `last` would otherwise loop).
    async fn paginate(
        &self,
        first: Url,
        scope: &str,
        catalog: bool,
        mut on_page: impl FnMut(&Answer) -> Result<Vec<String>, RegistryError>,
    ) -> Result<(), RegistryError> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(RegistryError::InvalidResponse {
                    url: url.to_string(),
                    reason: format!("more than {MAX_PAGES} pages"),
                });
            }
            bump(if catalog {
                &self.inner.counters.catalog_pages
            } else {
                &self.inner.counters.tag_pages
            });
            let answer = self
                .execute(
                    Method::GET,
                    url.clone(),
                    Some(scope),
                    &[],
                    MAX_LIST_BYTES,
                    Redirects::SameOrigin,
                )
                .await?;
            if !answer.status.is_success() {
                let status = answer.status.as_u16();
                if catalog && matches!(status, 401 | 403 | 404 | 405) {
                    return Err(RegistryError::CatalogUnavailable {
                        url: url.to_string(),
                        status,
                    });
                }
                return Err(answer.error());
            }
            let page = on_page(&answer)?;
            let before = seen.len();
            let last = page.last().cloned();
            seen.extend(page);
            if seen.len() == before {
                break;
            }
            next = answer
                .header(header::LINK)
                .and_then(|link| next_link(link, &answer.url));
            if let Some(target) = &next
                && !self.is_own_origin(target)
            {
                // The listing fails (and a failed listing never deletes) rather than
                // sending the registry's credentials elsewhere.
                return Err(self.foreign(&answer.url, "next-page link", target));
            }
            if next.is_none()
                && seen.len() - before >= PAGE_SIZE
                && let Some(last) = last
            {
                let mut u = url.clone();
                let query: Vec<(String, String)> = url
                    .query_pairs()
                    .filter(|(k, _)| k != "last")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .chain([("last".to_owned(), last)])
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(query);
                next = Some(u);
            }
        }
        Ok(())
    }

    /// `HEAD` a manifest: its digest and media type, or `None` if it does not exist.
    /// Falls back to `GET` when the registry sends no `Docker-Content-Digest`.
    pub async fn head_manifest(
        &self,
        repository: &RepositoryName,
        reference: &str,
    ) -> Result<Option<(Digest, String)>, RegistryError> {
        let url = self.manifest_url(repository, reference)?;
        bump(&self.inner.counters.manifest_heads);
        let answer = self
            .execute(
                Method::HEAD,
                url,
                Some(&pull_scope(repository)),
                &[(header::ACCEPT, MANIFEST_ACCEPT)],
                0,
                Redirects::SameOrigin,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(answer.error());
        }
        let media_type = answer
            .header(header::CONTENT_TYPE)
            .map(|ct| ct.split(';').next().unwrap_or_default().trim().to_owned())
            .filter(|ct| !ct.is_empty());
        match (answer.header(DOCKER_CONTENT_DIGEST), media_type) {
            (Some(digest), Some(media_type)) => {
                let digest =
                    Digest::parse(digest.trim()).map_err(|e| RegistryError::InvalidResponse {
                        url: answer.url.to_string(),
                        reason: format!("Docker-Content-Digest: {e}"),
                    })?;
                Ok(Some((digest, media_type)))
            }
            _ => match self.get_manifest(repository, reference).await {
                Ok(m) => Ok(Some((m.digest, m.media_type))),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Asks whether `reference` (normally a tag) still points at `known`, the cheapest
    /// way the registry allows: a `GET` with `If-None-Match: "<known>"`, which the
    /// distribution registry answers `304 Not Modified` after resolving the tag and
    /// before reading the manifest, and which returns the new manifest in the same
    /// request when the tag moved. A registry that ignores the condition (it sends the
    /// unchanged body) is remembered, and later checks use `HEAD` instead.
    pub async fn check_manifest(
        &self,
        repository: &RepositoryName,
        reference: &str,
        known: &Digest,
    ) -> Result<ManifestCheck, RegistryError> {
        if self.inner.conditional_ignored.load(Ordering::Relaxed) {
            return Ok(match self.head_manifest(repository, reference).await? {
                None => ManifestCheck::Missing,
                Some((digest, _)) if &digest == known => ManifestCheck::Unchanged,
                Some((digest, _)) => ManifestCheck::Moved {
                    digest,
                    manifest: None,
                },
            });
        }
        let url = self.manifest_url(repository, reference)?;
        bump(&self.inner.counters.manifest_checks);
        let etag = format!("\"{known}\"");
        let answer = self
            .execute(
                Method::GET,
                url,
                Some(&pull_scope(repository)),
                &[
                    (header::ACCEPT, MANIFEST_ACCEPT),
                    (header::IF_NONE_MATCH, etag.as_str()),
                ],
                MAX_MANIFEST_BYTES,
                Redirects::SameOrigin,
            )
            .await?;
        if answer.status == StatusCode::NOT_MODIFIED {
            bump(&self.inner.counters.manifest_not_modified);
            return Ok(ManifestCheck::Unchanged);
        }
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(ManifestCheck::Missing);
        }
        let manifest = fetched_manifest(&answer, reference)?;
        if &manifest.digest == known {
            if !self.inner.conditional_ignored.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    registry = %self.inner.base,
                    "the registry ignores If-None-Match on manifests; re-scans use HEAD"
                );
            }
            return Ok(ManifestCheck::Unchanged);
        }
        Ok(ManifestCheck::Moved {
            digest: manifest.digest.clone(),
            manifest: Some(manifest),
        })
    }

    /// `GET` a manifest by tag or digest. The bytes are verified against the digest
    /// reference, or against `Docker-Content-Digest` for a tag.
    pub async fn get_manifest(
        &self,
        repository: &RepositoryName,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = self.manifest_url(repository, reference)?;
        bump(&self.inner.counters.manifest_gets);
        let answer = self
            .execute(
                Method::GET,
                url,
                Some(&pull_scope(repository)),
                &[(header::ACCEPT, MANIFEST_ACCEPT)],
                MAX_MANIFEST_BYTES,
                Redirects::SameOrigin,
            )
            .await?;
        fetched_manifest(&answer, reference)
    }

    /// `GET` a blob by digest, verifying the bytes. A redirect to the blob's storage on
    /// another origin is followed, without credentials.
    pub async fn get_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Bytes, RegistryError> {
        let url = self.blob_url(repository, digest)?;
        bump(&self.inner.counters.blob_gets);
        let answer = self
            .execute(
                Method::GET,
                url,
                Some(&pull_scope(repository)),
                &[],
                MAX_BLOB_BYTES,
                Redirects::ToStorage,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(answer.error());
        }
        verify(&answer, Some(digest.clone()))?;
        Ok(answer.body)
    }

    /// The URL of blob `digest` of `repository` (for error messages about its content).
    pub fn blob_url(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Url, RegistryError> {
        self.url(&format!("v2/{repository}/blobs/{digest}"))
    }

    fn url(&self, relative: &str) -> Result<Url, RegistryError> {
        self.inner
            .base
            .join(relative)
            .map_err(|e| RegistryError::Config(format!("cannot build URL for {relative}: {e}")))
    }

    /// The URL of manifest `reference` (tag or digest) of `repository`.
    pub fn manifest_url(
        &self,
        repository: &RepositoryName,
        reference: &str,
    ) -> Result<Url, RegistryError> {
        if Digest::parse(reference).is_err() && Tag::parse(reference).is_err() {
            return Err(RegistryError::Config(format!(
                "{reference:?} is neither a tag nor a digest"
            )));
        }
        self.url(&format!("v2/{repository}/manifests/{reference}"))
    }
}

const DOCKER_CONTENT_DIGEST: header::HeaderName =
    header::HeaderName::from_static("docker-content-digest");

fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// What a registry lists (repositories in the catalog, tags of a repository), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// The listed values that parse, in the order listed.
    pub valid: Vec<T>,
    /// The listed strings that do not parse, in the order listed, with why.
    pub invalid: Vec<(String, NameError)>,
}

impl<T> Listing<T> {
    fn parse(listed: Vec<String>, parse: impl Fn(&str) -> Result<T, NameError>) -> Self {
        let mut listing = Listing {
            valid: Vec::with_capacity(listed.len()),
            invalid: Vec::new(),
        };
        for value in listed {
            match parse(&value) {
                Ok(parsed) => listing.valid.push(parsed),
                Err(e) => listing.invalid.push((value, e)),
            }
        }
        listing
    }

    /// How many values were listed, valid or not.
    pub fn len(&self) -> usize {
        self.valid.len() + self.invalid.len()
    }

    /// Whether nothing was listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks the body against `expected` (when known); returns the body's digest.
fn verify(answer: &Answer, expected: Option<Digest>) -> Result<Digest, RegistryError> {
    match expected {
        Some(expected) => match expected.verify(&answer.body) {
            Some(true) => Ok(expected),
            Some(false) => Err(RegistryError::DigestMismatch {
                url: answer.url.to_string(),
                actual: Digest::sha256_of(&answer.body),
                expected,
            }),
            // An algorithm we cannot compute: trust the registry's claim.
            None => Ok(expected),
        },
        None => Ok(Digest::sha256_of(&answer.body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_detail_reads_registry_errors() {
        let body = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{}}]}"#;
        assert_eq!(
            error_detail(body),
            "NAME_UNKNOWN repository name not known to registry"
        );
        assert_eq!(error_detail(b"plain text"), "plain text");
    }

    #[test]
    fn credentials_move_out_of_the_url() {
        let client = RegistryClient::new(RegistryConfig::new(
            "http://al%40ice:p%3Ass@127.0.0.1:1/prefix".parse().unwrap(),
        ))
        .unwrap();
        assert_eq!(client.base_url().as_str(), "http://127.0.0.1:1/prefix/");
        assert_eq!(
            client.inner.credentials,
            Some(Credentials::Basic {
                username: "al@ice".into(),
                password: "p:ss".into()
            })
        );
        assert!(!format!("{client:?}").contains("p:ss"));
        let bad = RegistryClient::new(RegistryConfig::new("ftp://x/".parse().unwrap()));
        assert!(matches!(bad, Err(RegistryError::Config(_))));
    }
}
