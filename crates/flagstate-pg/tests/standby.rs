//! A query replica on a hot standby: a private primary and a streaming-replication
//! standby of it (the test kit's [`PgCluster`]), a writer on the primary and a read-only
//! store on the standby. The standby delivers no notifications, so the replica follows
//! the writer by polling the generation row; when the standby stops, the replica's
//! generation (and readiness) fail with `Unavailable` instead of serving what it knew
//! last, and both recover when it is back.

mod common;

use std::time::{Duration, Instant};

use flagstate_core::conformance::fixtures::{image, put_image, query, repo};
use flagstate_core::store::StoreNotReady;
use flagstate_core::testkit::PgCluster;
use flagstate_core::{Generation, Store, StoreError};
use flagstate_pg::{PgOptions, PgStore};

/// Generous: nothing here measures speed.
const DEADLINE: Duration = Duration::from_secs(30);

fn options(read_only: bool) -> PgOptions {
    PgOptions::default()
        .with_read_only(read_only)
        .with_schema(Some("standby".into()))
        .with_max_connections(2)
        .with_acquire_timeout(Duration::from_secs(1))
        .with_generation_poll(Duration::from_millis(100))
        .with_unconfirmed_limit(Some(Duration::from_millis(600)))
}

/// Polls `check` every 50 ms until it yields a value, failing after [`DEADLINE`].
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reaches(store: &PgStore, want: Generation) {
    eventually(&format!("the replica at generation {want}"), async || {
        (store.generation().await.ok() == Some(want)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_on_a_hot_standby_follows_polls_and_fails_closed() {
    // Runs wherever the other PostgreSQL tests run; needs initdb, not the shared server.
    if common::pg_url().is_none() {
        return;
    }
    let primary = PgCluster::primary().unwrap();
    primary.start().unwrap();
    let standby = primary.standby().unwrap();
    standby.start().unwrap();

    let writer = PgStore::connect(&primary.url(), options(false))
        .await
        .unwrap();
    let g1 = writer
        .replace_repository(&repo("r").image("v1", &image("one").build()).build())
        .await
        .unwrap();
    // The schema reaches the standby by replication; until then a replica refuses it.
    let replica = eventually("the schema on the standby", async || {
        PgStore::connect(&standby.url(), options(true)).await.ok()
    })
    .await;
    reaches(&replica, g1).await;
    let all = query("");
    assert_eq!(
        replica.query(&all).await.unwrap(),
        writer.query(&all).await.unwrap()
    );
    replica.readiness().await.unwrap();
    // A writer on the standby would not be ready: it cannot write there.
    let misplaced = PgStore::connect(&standby.url(), options(false)).await;
    assert!(misplaced.is_err(), "a writer cannot migrate on a standby");

    // Several commits: the replica ends on the last one, with the same answer.
    let mut last = g1;
    for i in 0..3 {
        last = writer
            .apply(&put_image(
                "r",
                &format!("t{i}"),
                &image(&format!("i{i}")).build(),
            ))
            .await
            .unwrap();
    }
    reaches(&replica, last).await;
    assert_eq!(
        replica.query(&all).await.unwrap(),
        writer.query(&all).await.unwrap()
    );

    // The standby goes away: the replica stops vouching for its generation.
    standby.stop().unwrap();
    let refused = eventually("the replica's generation refused", async || {
        match replica.generation().await {
            Err(StoreError::Unavailable { source, .. }) => Some(source.to_string()),
            Ok(_) => None,
            Err(other) => panic!("expected Unavailable, got {other}"),
        }
    })
    .await;
    assert!(refused.contains("not confirmed"), "{refused}");
    match replica.readiness().await {
        Err(StoreNotReady::Unreadable(StoreError::Unavailable { .. })) => {}
        other => panic!("expected unreadable while the standby is down, got {other:?}"),
    }
    assert!(matches!(
        replica.query(&all).await,
        Err(StoreError::Unavailable { .. })
    ));
    // The writer on the primary is unaffected and keeps writing.
    let g_down = writer
        .apply(&put_image("r", "while-down", &image("down").build()))
        .await
        .unwrap();
    assert_eq!(writer.generation().await.unwrap(), g_down);

    // Back again: the replica catches up with what it missed, without being reopened.
    standby.start().unwrap();
    reaches(&replica, g_down).await;
    replica.readiness().await.unwrap();
    assert_eq!(
        replica.query(&all).await.unwrap(),
        writer.query(&all).await.unwrap()
    );
    replica.close().await;
    writer.close().await;
}
