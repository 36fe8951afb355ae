//! Shared test support: the server URL from `FLAGSTATE_TEST_PG_URL`, and stores that live
//! in a schema of their own which is dropped when the store is.

#![allow(dead_code)]

use std::io::Write as _;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flagstate_pg::{PgOptions, PgStore};
use sqlx::Connection;

/// The server the tests use, or `None` (after saying so loudly) when none is configured.
pub fn pg_url() -> Option<String> {
    match std::env::var("FLAGSTATE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Written to the stderr handle itself: the test harness captures `eprintln!`
            // of passing tests, and a skip must not go unnoticed.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: FLAGSTATE_TEST_PG_URL is not set, so this PostgreSQL test did \
                 not run. Set it, e.g. postgres://postgres@127.0.0.1:5432/test ***\n"
            );
            None
        }
    }
}

/// A schema name no other test (in this or another process) uses.
pub fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "flagstate_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Drops its schema (and everything in it) when dropped.
#[derive(Debug)]
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl SchemaGuard {
    pub fn new(url: &str) -> Self {
        SchemaGuard {
            url: url.to_owned(),
            schema: unique_schema(),
        }
    }

    /// Options for a store in this schema.
    pub fn options(&self, read_only: bool) -> PgOptions {
        PgOptions::default()
            .with_read_only(read_only)
            .with_schema(Some(self.schema.clone()))
            .with_max_connections(4)
    }

    /// Runs one SQL statement in the schema (for setting up faults the API cannot make).
    pub async fn execute(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        let statement = format!("SET search_path TO \"{}\"; {sql}", self.schema);
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with a
        // runtime of its own can.
        let url = self.url.clone();
        let ddl = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        let result = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(sqlx::AssertSqlSafe(ddl))
                    .execute(&mut conn)
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if let Ok(Err(e)) = result {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

/// A writer in a schema of its own; the schema goes away with it.
#[derive(Debug)]
pub struct TestStore {
    // Declared before `guard` so the store's connections close before the schema drops.
    pub store: PgStore,
    pub guard: SchemaGuard,
}

impl TestStore {
    pub async fn new(url: &str) -> TestStore {
        let guard = SchemaGuard::new(url);
        let store = PgStore::connect(url, guard.options(false)).await.unwrap();
        TestStore { store, guard }
    }

    /// A read-only store on the same schema.
    pub async fn replica(&self) -> PgStore {
        PgStore::connect(&self.guard.url, self.guard.options(true))
            .await
            .unwrap()
    }
}

impl Deref for TestStore {
    type Target = PgStore;
    fn deref(&self) -> &PgStore {
        &self.store
    }
}
