//! The database schema: embedded migrations, applied by a writer at open, and the version
//! checks that keep a replica from reading a schema it does not understand.
//!
//! Migrations only ever add (tables, columns, indexes); none drops data. Their bookkeeping
//! lives in `flagstate_migrations` rather than sqlx's default table name, so flagstate can
//! share a schema with another sqlx application without their version numbers clashing.

use std::borrow::Cow;
use std::sync::LazyLock;

use flagstate_core::StoreError;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::error::{PgError, STORE, SqlContext};

/// Bookkeeping table of applied migrations.
const MIGRATIONS_TABLE: &str = "flagstate_migrations";

/// The embedded migrations, recorded in [`MIGRATIONS_TABLE`].
static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(Cow::Borrowed(MIGRATIONS_TABLE));
    migrator
});

/// The newest schema version this build knows.
pub(crate) fn supported_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Checks that `name` is a plain lowercase identifier, so it can be quoted into DDL and
/// `search_path` without any escaping question.
pub(crate) fn validate_schema_name(name: &str) -> Result<(), PgError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PgError::InvalidSchemaName(name.chars().take(100).collect()))
    }
}

/// What the database says about the schema the connections use.
#[derive(Debug)]
pub(crate) struct SchemaState {
    /// `current_schema()`, or `None` when no schema on the search path exists.
    pub schema: Option<String>,
    /// Highest successfully applied version, `None` when never migrated.
    pub version: Option<i64>,
    /// A version whose migration failed, if any.
    pub dirty: Option<i64>,
}

/// Reads the schema name and migration state.
pub(crate) async fn inspect(pool: &PgPool) -> Result<SchemaState, StoreError> {
    let (schema, has_table): (Option<String>, bool) = sqlx::query_as(
        "SELECT current_schema()::text, to_regclass('flagstate_migrations') IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .during("reading the schema")?;
    if !has_table {
        return Ok(SchemaState {
            schema,
            version: None,
            dirty: None,
        });
    }
    let (version, dirty): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT max(version) FILTER (WHERE success), min(version) FILTER (WHERE NOT success) \
         FROM flagstate_migrations",
    )
    .fetch_one(pool)
    .await
    .during("reading the schema version")?;
    Ok(SchemaState {
        schema,
        version,
        dirty,
    })
}

fn too_new(found: i64) -> StoreError {
    StoreError::SchemaTooNew {
        store: STORE,
        found,
        supported: supported_version(),
    }
}

/// Writer side: creates the schema if needed, refuses a newer one, applies migrations.
pub(crate) async fn migrate(pool: &PgPool, schema: Option<&str>) -> Result<(), StoreError> {
    if let Some(schema) = schema {
        // `schema` passed `validate_schema_name`: a plain identifier, safe to quote.
        let ddl = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        sqlx::query(sqlx::AssertSqlSafe(ddl))
            .execute(pool)
            .await
            .during("creating the schema")?;
    }
    let state = inspect(pool).await?;
    if let Some(found) = state.version.filter(|v| *v > supported_version()) {
        return Err(too_new(found));
    }
    MIGRATOR.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(source) => {
            StoreError::from(PgError::sql("applying migrations")(source))
        }
        other => StoreError::from(PgError::Migrate(other)),
    })
}

/// Replica side: the schema must exist at exactly the supported version.
pub(crate) async fn check_readable(pool: &PgPool) -> Result<(), StoreError> {
    let state = inspect(pool).await?;
    let schema = state.schema.clone().unwrap_or_else(|| "(none)".to_owned());
    if let Some(version) = state.dirty {
        return Err(PgError::SchemaDirty { schema, version }.into());
    }
    let supported = supported_version();
    match state.version {
        None => Err(PgError::SchemaMissing { schema }.into()),
        Some(found) if found > supported => Err(too_new(found)),
        Some(found) if found < supported => Err(PgError::SchemaTooOld {
            schema,
            found,
            supported,
        }
        .into()),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["a", "flagstate", "t_1", "_x"] {
            assert!(validate_schema_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "A", "a-b", "a\"b", "a b", &"a".repeat(64)] {
            assert!(validate_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn migrations_are_embedded() {
        assert!(supported_version() >= 1);
    }
}
