//! The public error type of the registry client.
//!
//! Messages name the HTTP status and the URL that failed. URLs never carry credentials:
//! [`RegistryConfig`](super::RegistryConfig) moves any `user:password@` part of the
//! configured URL into [`Credentials`](super::Credentials), and tokens travel only in
//! headers, which are never printed.

use crate::digest::Digest;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The client configuration cannot work (bad URL scheme, zero concurrency, …).
    #[error("invalid registry configuration: {0}")]
    Config(String),
    /// The request could not be sent or its answer not read (connection refused, reset,
    /// timeout), after all retries.
    #[error("request to {url} failed after {attempts} attempt(s): {reason}")]
    Network {
        /// URL requested.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// What went wrong on the last attempt.
        reason: String,
    },
    /// The registry answered with a status the operation cannot use, after all retries
    /// where the status was retryable.
    #[error("{url} answered HTTP {status}{}", detail_suffix(.detail))]
    Status {
        /// URL requested.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The registry's error code/message when it sent one (first 200 characters).
        detail: String,
    },
    /// The repository, manifest or blob does not exist (HTTP 404).
    #[error("{url} answered HTTP 404 (not found){}", detail_suffix(.detail))]
    NotFound {
        /// URL requested.
        url: String,
        /// The registry's error code/message when it sent one.
        detail: String,
    },
    /// The registry refused the credentials (or their absence): HTTP 401/403 after
    /// authenticating as the registry asked.
    #[error("{url} answered HTTP {status}: not authorized{}", detail_suffix(.detail))]
    Unauthorized {
        /// URL requested.
        url: String,
        /// HTTP status code (401 or 403).
        status: u16,
        /// The registry's error code/message when it sent one.
        detail: String,
    },
    /// `/v2/_catalog` is not offered by this registry or not to these credentials
    /// (HTTP 401, 403, 404 or 405). Configure the repositories to index explicitly.
    #[error(
        "the registry's catalog is unavailable: {url} answered HTTP {status}; list the repositories to index in the configuration"
    )]
    CatalogUnavailable {
        /// URL requested.
        url: String,
        /// HTTP status code.
        status: u16,
    },
    /// The bearer-token endpoint named by the registry's challenge failed.
    #[error("token request to {realm} failed: {reason}")]
    Token {
        /// Token endpoint (the challenge's `realm`).
        realm: String,
        /// What went wrong.
        reason: String,
    },
    /// Fetched content does not hash to the digest it was requested by or announced with.
    #[error("{url}: content digest {actual} does not match expected {expected}")]
    DigestMismatch {
        /// URL requested.
        url: String,
        /// Digest asked for or announced in `Docker-Content-Digest`.
        expected: Digest,
        /// Digest of the bytes received.
        actual: Digest,
    },
    /// The answer is not what the protocol says (bad JSON, bad digest header, …).
    #[error("{url}: invalid response: {reason}")]
    InvalidResponse {
        /// URL requested.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The answer is larger than the client accepts for that kind of content.
    #[error("{url}: response body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// URL requested.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The registry pointed the client (with a `Link` header or a redirect) at another
    /// origin (scheme, host and port) than its own. Such targets are not followed, so
    /// credentials never travel there.
    #[error("{url}: refusing to follow {kind} to {target}: not the registry's origin {origin}")]
    ForeignUrl {
        /// URL requested.
        url: String,
        /// What pointed elsewhere (`redirect`, `next-page link`).
        kind: &'static str,
        /// The refused target.
        target: String,
        /// The registry's origin.
        origin: String,
    },
    /// An `https://` URL reached a server that answered the TLS handshake in plain HTTP:
    /// the registry is configured with the wrong scheme. Not retried.
    #[error("{url}: the registry speaks plain HTTP: use {suggestion}")]
    PlainHttp {
        /// URL requested.
        url: String,
        /// The registry's base URL with `http://`.
        suggestion: String,
    },
    /// No request reached the registry for the client's whole retry budget (every
    /// attempt failed to connect or timed out, with no answer in between). Requests
    /// fail at once, without being sent, until the budget has passed again.
    #[error(
        "registry unreachable: no answer for {:.1} s over {failures} attempt(s); last: {url}: {reason}",
        .unanswered.as_secs_f64()
    )]
    Unreachable {
        /// URL of the last attempt.
        url: String,
        /// Attempts that failed in a row (over all requests of the client).
        failures: u64,
        /// How long the registry has not answered.
        unanswered: std::time::Duration,
        /// What went wrong on the last attempt.
        reason: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl RegistryError {
    /// Whether the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// Whether the registry answered and its answer is unusable however often it is
    /// asked: content not matching its digest, an invalid answer, a body over the
    /// limit, a redirect or link to a foreign origin, plain HTTP on an `https://` URL,
    /// or a 4xx status other than 429
    /// (404 and authentication failures have their own variants and are not included).
    pub fn is_permanent(&self) -> bool {
        match self {
            RegistryError::DigestMismatch { .. }
            | RegistryError::InvalidResponse { .. }
            | RegistryError::TooLarge { .. }
            | RegistryError::ForeignUrl { .. }
            | RegistryError::PlainHttp { .. } => true,
            RegistryError::Status { status, .. } => (400..500).contains(status) && *status != 429,
            _ => false,
        }
    }

    /// Whether the registry could not be reached at all for the client's retry budget
    /// (see [`RegistryError::Unreachable`]): a scan stops at once instead of trying
    /// every remaining repository.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. })
    }

    /// Whether retrying later may succeed (network trouble, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Network { .. } | RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
