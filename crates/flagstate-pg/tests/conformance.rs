//! The shared store conformance suite, run against PostgreSQL (each test in a fresh
//! schema). Needs `FLAGSTATE_TEST_PG_URL` at build time; see `build.rs`.

mod common;

#[cfg(flagstate_pg_tests)]
async fn fresh_store()
-> flagstate_core::conformance::Guarded<flagstate_pg::PgStore, common::SchemaGuard> {
    let url = common::pg_url().expect("FLAGSTATE_TEST_PG_URL was set when this test was built");
    // The schema is dropped after the store's connections closed.
    let test = common::TestStore::new(&url).await;
    flagstate_core::conformance::Guarded::new(test.store, test.guard)
}

#[cfg(flagstate_pg_tests)]
flagstate_core::conformance_tests!(fresh_store);

#[cfg(not(flagstate_pg_tests))]
#[test]
fn conformance_suite_skipped_without_postgres() {
    assert!(common::pg_url().is_none());
}
