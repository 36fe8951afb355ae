//! The registry client: everything flagstate asks of an OCI distribution registry.
//!
//! [`RegistryClient`] speaks the distribution HTTP API: `/v2/` ping, `_catalog` and
//! `tags/list` with both pagination styles, manifest `HEAD`/`GET` with digest
//! verification, conditional manifest checks (`If-None-Match` on the known digest), and
//! blob `GET`. It authenticates anonymously, with HTTP basic
//! credentials, or through the bearer-token flow; it bounds concurrency globally,
//! times out every request and retries transient failures with exponential backoff and
//! jitter, honouring `Retry-After`. A registry that answers nothing for the retry
//! budget is reported [unreachable](RegistryError::Unreachable) once instead of being
//! retried request by request.
//!
//! **Credentials stay with their origin.** Registry credentials (basic, or the bearer
//! token) are only ever sent to the registry's own origin (scheme, host, port); basic
//! credentials also go to the token endpoint the registry's own challenge names, and
//! nowhere else. `Link` next-page targets and redirects to another origin are refused
//! ([`RegistryError::ForeignUrl`]), except a blob's redirect to its storage (how
//! registries on S3, GCS or a CDN serve blobs): that one is followed without any
//! credentials, and the bytes are verified against the digest. Every body read is
//! size-limited, token answers included.
//!
//! [`content`] turns fetched manifests and image configs into the index's model.

mod auth;
mod client;
pub mod content;
mod error;
mod paging;
mod transport;

use std::fmt;
use std::time::Duration;

use crate::name::RepositoryName;

pub use auth::Credentials;
pub use client::{ClientStats, Listing, RegistryClient};
pub use error::RegistryError;

/// Installs `rustls`' ring crypto provider as the process default, once. reqwest is
/// built without a provider of its own, so this must run before any `reqwest::Client`
/// is built; [`RegistryClient::new`] calls it. Harmless if a provider is already set.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The `Accept` header sent for manifests: all four types the index understands. A
/// registry that is not offered a type may refuse the manifest or convert it (changing
/// its digest), so all four are always listed.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Default of [`RegistryConfig::timeout`]: one request, body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`RegistryConfig::max_concurrency`], the value every measured scan uses
/// (`docs/performance.md`).
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// Default of [`RegistryConfig::retry_budget`]: long enough to ride out a registry
/// restart, short enough that a dead registry is reported within seconds rather than
/// after every remaining request has been retried.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(20);

/// How transient failures (network errors, HTTP 429 and 5xx) are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled on each further retry.
    pub base_delay: Duration,
    /// Upper bound of any single delay, including one asked for by `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }
}

/// How to reach one registry. Build it with [`RegistryConfig::new`] and the `with_*`
/// methods (or by assigning fields); new fields may be added without a major release.
#[derive(Clone)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Base URL of the registry, e.g. `https://registry.example.org/`. A path prefix is
    /// kept (`/v2/` is appended to it). `user:password@` in the URL is moved into
    /// `credentials` by [`RegistryClient::new`].
    pub url: url::Url,
    /// Credentials, or `None` for anonymous access.
    pub credentials: Option<Credentials>,
    /// Time limit of every single request, body included.
    pub timeout: Duration,
    /// Most requests in flight at once, over all operations of the client.
    pub max_concurrency: usize,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    /// How long the registry may answer nothing at all (every attempt of every request
    /// failing to connect or timing out) before it counts as unreachable: the failing
    /// request then ends with [`RegistryError::Unreachable`], and further requests fail
    /// the same way without being sent until this much time has passed again or an
    /// earlier request gets an answer. A request whose every attempt failed while no
    /// other request got an answer is reported unreachable at once.
    pub retry_budget: Duration,
    /// Repositories to index when the registry does not offer `_catalog`.
    pub repositories: Vec<RepositoryName>,
}

impl RegistryConfig {
    /// A configuration with defaults: anonymous, a [`DEFAULT_TIMEOUT`] per request,
    /// [`DEFAULT_MAX_CONCURRENCY`] requests at once, the default retry policy, a retry
    /// budget of [`DEFAULT_RETRY_BUDGET`] and no configured repositories.
    pub fn new(url: url::Url) -> Self {
        RegistryConfig {
            url,
            credentials: None,
            timeout: DEFAULT_TIMEOUT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            retry: RetryPolicy::default(),
            retry_budget: DEFAULT_RETRY_BUDGET,
            repositories: Vec::new(),
        }
    }

    /// Sets [`credentials`](Self::credentials).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`max_concurrency`](Self::max_concurrency).
    #[must_use]
    pub fn with_max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max;
        self
    }

    /// Sets [`retry`](Self::retry).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`retry_budget`](Self::retry_budget).
    #[must_use]
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Sets [`repositories`](Self::repositories).
    #[must_use]
    pub fn with_repositories(mut self, repositories: Vec<RepositoryName>) -> Self {
        self.repositories = repositories;
        self
    }
}

/// `url` as it may be shown or logged: a password written into it is replaced by
/// `redacted` (the user name stays, so the URL still says who connects).
pub fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("redacted"));
    }
    shown.into()
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &redacted(&self.url).as_str())
            .field("credentials", &self.credentials)
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("retry", &self.retry)
            .field("retry_budget", &self.retry_budget)
            .field("repositories", &self.repositories)
            .finish()
    }
}

/// A manifest as fetched: verified bytes, their digest and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// Digest of `bytes` (verified against the reference or `Docker-Content-Digest`).
    pub digest: crate::Digest,
    /// Media type from the body's `mediaType`, else the `Content-Type` header.
    pub media_type: String,
    /// The manifest exactly as served.
    pub bytes: bytes::Bytes,
}

/// What [`RegistryClient::check_manifest`] learned about a reference whose digest was
/// known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestCheck {
    /// It still points at the known digest.
    Unchanged,
    /// It points at another manifest now. `manifest` holds its verified body when the
    /// answer carried it (a conditional `GET`), `None` after a `HEAD`.
    Moved {
        /// The digest it points at now.
        digest: crate::Digest,
        /// The new manifest, when the answer carried it.
        manifest: Option<FetchedManifest>,
    },
    /// It no longer exists.
    Missing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_hides_url_password() {
        let cfg = RegistryConfig::new("https://bob:pa55@r.example/".parse().unwrap());
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("pa55"), "{shown}");
        assert!(shown.contains("bob"));
    }

    #[test]
    fn redacted_hides_only_the_password() {
        let with = "https://bob:pa55@r.example/v2/".parse().unwrap();
        assert_eq!(redacted(&with), "https://bob:redacted@r.example/v2/");
        let without = "https://bob@r.example/".parse().unwrap();
        assert_eq!(redacted(&without), "https://bob@r.example/");
    }
}
