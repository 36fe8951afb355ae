//! The private error type of the PostgreSQL store and how it maps onto the public
//! [`StoreError`]: connection trouble becomes [`StoreError::Unavailable`] (retry later),
//! everything else [`StoreError::Backend`], always naming the `postgres` store.

use flagstate_core::StoreError;

/// Name the store reports in every [`StoreError`].
pub(crate) const STORE: &str = "postgres";

/// What can go wrong inside the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PgError {
    /// The server cannot be reached (refused, dropped, shutting down, pool timed out).
    #[error("cannot reach PostgreSQL while {context}: {source}")]
    Unreachable {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// No connection to the server could be opened at all.
    #[error("cannot reach PostgreSQL at {server} while connecting: {source}")]
    Connect {
        /// `host:port`, or the Unix socket path.
        server: String,
        /// Why the last attempt failed.
        #[source]
        source: sqlx::Error,
    },
    /// The server answered with an error.
    #[error("PostgreSQL failed while {context}: {source}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The connection URL does not parse.
    #[error("invalid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    /// The configured schema name is not a plain identifier.
    #[error(
        "invalid schema name {0:?}: use 1 to 63 characters from [a-z0-9_], not starting with a digit"
    )]
    InvalidSchemaName(String),
    /// Applying the embedded migrations failed.
    #[error("applying database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A read-only store found no flagstate tables.
    #[error(
        "schema {schema} holds no flagstate tables; open it read-write once (the writer creates and migrates it)"
    )]
    SchemaMissing { schema: String },
    /// A read-only store found an older schema that it must not migrate itself.
    #[error(
        "schema {schema} is at version {found}, older than the {supported} this build needs; open it read-write once (the writer migrates it)"
    )]
    SchemaTooOld {
        schema: String,
        found: i64,
        supported: i64,
    },
    /// A migration was left half-applied.
    #[error("schema {schema}: migration {version} failed earlier and left the schema dirty")]
    SchemaDirty { schema: String, version: i64 },
    /// A stored value does not decode into the data model.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The server reads but refuses writes (recovery, read-only transactions, privileges).
    #[error("PostgreSQL accepts no writes: {0}")]
    NotWritable(&'static str),
    /// No poll confirmed the generation for longer than the limit: the server (a
    /// standby, say) is not answering, so the known value may be stale.
    #[error(
        "the generation was not confirmed by PostgreSQL {}(the limit is {limit:?}): the server is not answering",
        .since.map(|s| format!("for {s:?} ")).unwrap_or_default()
    )]
    Unconfirmed {
        since: Option<std::time::Duration>,
        limit: std::time::Duration,
    },
    /// An option of [`PgOptions`](crate::PgOptions) is out of range.
    #[error("invalid PostgreSQL store option: {0}")]
    InvalidOption(&'static str),
    /// The repository vanished between two statements of one write (a concurrent removal).
    #[error("repository {0} was removed concurrently; retry the write")]
    ConcurrentRemoval(String),
}

impl PgError {
    /// Wraps a driver error, deciding whether it means "the server is not there".
    pub(crate) fn sql(context: &'static str) -> impl FnOnce(sqlx::Error) -> PgError {
        move |source| {
            if is_unreachable(&source) {
                PgError::Unreachable { context, source }
            } else {
                PgError::Sql { context, source }
            }
        }
    }
}

/// Whether an error means the server (or the path to it) is gone rather than that a
/// statement failed: I/O and TLS failures, pool timeouts, and the SQLSTATEs of class 08
/// (connection exception), 57P01-57P03 (shutdown, crash recovery, starting up) and 53300
/// (too many connections).
fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl From<PgError> for StoreError {
    fn from(error: PgError) -> Self {
        match error {
            PgError::Unreachable { .. } | PgError::Connect { .. } | PgError::Unconfirmed { .. } => {
                StoreError::Unavailable {
                    store: STORE,
                    source: Box::new(error),
                }
            }
            other => StoreError::Backend {
                store: STORE,
                source: Box::new(other),
            },
        }
    }
}

/// Shorthand for `map_err(PgError::sql(context))` followed by the conversion.
pub(crate) trait SqlContext<T> {
    /// Attaches what was being done and converts into a [`StoreError`].
    fn during(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, sqlx::Error> {
    fn during(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| PgError::sql(context)(e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_are_unavailable_and_others_backend() {
        let e: StoreError = PgError::sql("x")(sqlx::Error::PoolTimedOut).into();
        assert!(
            matches!(
                e,
                StoreError::Unavailable {
                    store: "postgres",
                    ..
                }
            ),
            "{e}"
        );
        let e: StoreError = PgError::sql("x")(sqlx::Error::RowNotFound).into();
        assert!(
            matches!(
                e,
                StoreError::Backend {
                    store: "postgres",
                    ..
                }
            ),
            "{e}"
        );
        let e: StoreError = PgError::Corrupt("bad".into()).into();
        assert!(e.to_string().contains("postgres"), "{e}");
    }
}
