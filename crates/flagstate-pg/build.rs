//! Enables the PostgreSQL conformance tests (`cfg(flagstate_pg_tests)`) when
//! `FLAGSTATE_TEST_PG_URL` names a server at build time; without it they are replaced by
//! one test that announces the skip. The suite's macro expands to plain test functions,
//! so this is the one place the decision can be made.

fn main() {
    println!("cargo::rerun-if-env-changed=FLAGSTATE_TEST_PG_URL");
    // `sqlx::migrate!` embeds the directory; a new migration file must rebuild the crate.
    println!("cargo::rerun-if-changed=migrations");
    println!("cargo::rustc-check-cfg=cfg(flagstate_pg_tests)");
    if std::env::var("FLAGSTATE_TEST_PG_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=flagstate_pg_tests");
    }
}
