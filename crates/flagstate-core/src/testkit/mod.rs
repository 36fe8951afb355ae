//! Test support (feature `testkit`): a real CNCF distribution registry started as a
//! child process ([`TestRegistry`]), and image pushing over the registry HTTP API
//! ([`Pusher`]); private PostgreSQL servers — a primary and hot standbys of it
//! ([`PgCluster`]).
//!
//! The registry binary is the Debian package `docker-registry`, found through
//! `FLAGSTATE_REGISTRY_BIN`, the tools cache (`target/test-tools/`, filled by
//! `scripts/install-test-deps`), or `PATH`; failing all three, it is unpacked into the
//! cache with `apt-get download` + `dpkg-deb -x` (no service is installed or started).
//!
//! Tests call [`TestRegistry::start_or_skip`]: when the registry cannot be started the
//! test is skipped with a loud message, unless `FLAGSTATE_REQUIRE_REGISTRY=1` is set (as
//! in CI), where it fails instead.

mod binary;
mod postgres;
mod push;
mod registry;
pub mod workload;

pub use binary::registry_binary;
pub use postgres::{PgCluster, postgres_bin_dir};
pub use push::{ImageSpec, ListFormat, ManifestFormat, PushedImage, PushedList, Pusher};
pub use registry::{Notifications, TestRegistry, TestRegistryOptions};

/// Why the test registry or a push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// The registry binary is neither present nor installable.
    #[error("docker-registry binary not available: {0}")]
    Binary(String),
    /// The registry process did not come up.
    #[error("test registry did not start: {0}")]
    Start(String),
    /// A PostgreSQL tool is missing, or `initdb`, `pg_basebackup` or `pg_ctl` failed.
    #[error("test PostgreSQL: {0}")]
    Postgres(String),
    /// A file-system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// An HTTP exchange with the registry failed.
    #[error("registry request {method} {url} failed: {reason}")]
    Http {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Status and body, or the transport error.
        reason: String,
    },
}

/// Whether tests must fail (rather than skip) when no registry can be started: the
/// environment variable `FLAGSTATE_REQUIRE_REGISTRY` is `1`.
pub fn registry_required() -> bool {
    std::env::var("FLAGSTATE_REQUIRE_REGISTRY").is_ok_and(|v| v.trim() == "1")
}
