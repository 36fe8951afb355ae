//! The crate's private error type and its conversion into the public [`StoreError`].
//!
//! Everything inside the crate returns [`Error`]; only the public `Store` methods convert,
//! so that the mapping from SQLite result codes to meanings (busy → unavailable, not a
//! database → backend failure naming the file) lives in one place.

use std::path::PathBuf;

use flagstate_core::{Digest, StoreError};
use rusqlite::ErrorCode;

/// Backend name stamped into every [`StoreError`].
pub(crate) const STORE: &str = "sqlite";

/// What can go wrong inside the SQLite store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A failed SQLite call.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file cannot be opened (missing, permissions, bad directory).
    #[error("{path}: cannot open SQLite database: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The file exists but SQLite cannot read it as a database.
    #[error("{path}: not a SQLite database, or the file is corrupt: {source}")]
    NotADatabase {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// `PRAGMA quick_check` found damage.
    #[error(
        "{path}: the database is corrupt; PRAGMA quick_check reported: {report}. Restore it from a backup, or move it away and let flagstate rebuild the index from the registry"
    )]
    Corrupt { path: PathBuf, report: String },
    /// A writer was pointed at a file it cannot write.
    #[error(
        "{path}: the database file cannot be written (file permissions, immutable attribute or read-only file system); give the writer write access, or serve it read-only (read_only: true)"
    )]
    NotWritable { path: PathBuf },
    /// The writer runs with a `PRAGMA synchronous` level flagstate never sets.
    #[error("the writer runs with PRAGMA synchronous = {0}, a level flagstate never sets")]
    UnexpectedSynchronous(i64),
    /// A SQLite database that some other program created.
    #[error(
        "{path}: this SQLite database was not created by flagstate (application_id {application_id:#x}, {tables} tables); refusing to modify it"
    )]
    ForeignDatabase {
        path: PathBuf,
        application_id: i64,
        tables: i64,
    },
    /// A read-only open of a database that still needs a schema upgrade.
    #[error(
        "{path}: database schema version {found} is older than {supported}; open it read-write once to upgrade it"
    )]
    SchemaTooOld {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The database comes from a newer flagstate.
    #[error("database schema version {found} is newer than {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
    /// A write on a read-only store.
    #[error("store is read-only")]
    ReadOnly,
    /// A stored manifest whose JSON no longer decodes.
    #[error("stored manifest {digest} cannot be decoded: {source}")]
    Decode {
        digest: String,
        source: serde_json::Error,
    },
    /// A manifest that cannot be encoded for storage.
    #[error("manifest {digest} cannot be encoded: {source}")]
    Encode {
        digest: String,
        source: serde_json::Error,
    },
    /// A digest column holding something that is not a digest.
    #[error("stored digest {value:?} is invalid: {source}")]
    BadDigest {
        value: String,
        source: flagstate_core::DigestError,
    },
    /// A name or tag column holding something that is not one (it was valid when
    /// written, so the database was changed behind the store's back).
    #[error("stored {0}")]
    BadName(#[from] flagstate_core::NameError),
    /// See [`StoreError::MissingManifest`].
    #[error("repository {repository}: manifest {digest} is neither supplied nor stored")]
    MissingManifest { repository: String, digest: Digest },
    /// See [`StoreError::Invalid`].
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A blocking task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Whether a SQLite error means "try again later" rather than "this is broken".
fn is_transient(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::OutOfMemory
        )
    )
}

/// Whether a SQLite error says the file is not (or no longer) a readable database.
pub(crate) fn is_not_a_database(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

impl From<Error> for StoreError {
    fn from(error: Error) -> Self {
        match error {
            Error::MissingManifest { repository, digest } => {
                StoreError::MissingManifest { repository, digest }
            }
            Error::Invalid(message) => StoreError::Invalid(message),
            Error::ReadOnly => StoreError::ReadOnly { store: STORE },
            Error::SchemaTooNew { found, supported } => StoreError::SchemaTooNew {
                store: STORE,
                found,
                supported,
            },
            Error::Sqlite(e) if is_transient(&e) => StoreError::Unavailable {
                store: STORE,
                source: Box::new(e),
            },
            other => StoreError::Backend {
                store: STORE,
                source: Box::new(other),
            },
        }
    }
}

/// Shorthand for results inside the crate.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
