//! Connection loss: a throwaway PostgreSQL cluster is stopped under a store and started
//! again. While it is down every operation fails with `StoreError::Unavailable`; once it is
//! back the same store (and its replica) recover without being reopened.
//!
//! The cluster is the test kit's [`PgCluster`]: `initdb` in a temporary directory, on a
//! free port, run as the `postgres` user when the tests run as root (the server refuses
//! root). It never touches the shared server on port 5432.

mod common;

use std::time::{Duration, Instant};

use flagstate_core::conformance::fixtures::{image, put_image, query, repo};
use flagstate_core::store::StoreNotReady;
use flagstate_core::testkit::PgCluster;
use flagstate_core::{Store, StoreError};
use flagstate_pg::{PgOptions, PgStore};

fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Unavailable {
            store: "postgres",
            source,
        }) => {
            let message = source.to_string();
            assert!(
                message.contains("cannot reach PostgreSQL"),
                "{what}: {message}"
            );
        }
        other => panic!("{what}: expected Unavailable while the server is down, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_fail_while_the_server_is_down_and_recover_after() {
    // Runs wherever the other PostgreSQL tests run; needs initdb, not the shared server.
    if common::pg_url().is_none() {
        return;
    }
    let cluster = PgCluster::primary().unwrap();
    cluster.start().unwrap();
    let options = |read_only| {
        PgOptions::default()
            .with_read_only(read_only)
            .with_acquire_timeout(Duration::from_secs(1))
            .with_max_connections(2)
            .with_schema(Some("outage".into()))
    };
    let writer = PgStore::connect(&cluster.url(), options(false))
        .await
        .unwrap();
    let replica = PgStore::connect(&cluster.url(), options(true))
        .await
        .unwrap();
    let before = image("before").build();
    let g1 = writer
        .replace_repository(&repo("r").image("v1", &before).build())
        .await
        .unwrap();
    let all = query("");
    let answer = writer.query(&all).await.unwrap();
    assert_eq!(answer.len(), 1);
    writer.readiness().await.unwrap();
    replica.readiness().await.unwrap();

    cluster.stop().unwrap();
    for (what, store) in [("writer", &writer), ("replica", &replica)] {
        match store.readiness().await {
            Err(StoreNotReady::Unreadable(e)) => assert_unavailable(what, Err::<(), _>(e)),
            other => panic!("{what}: expected unreadable while the server is down, got {other:?}"),
        }
    }
    assert_unavailable("query", writer.query(&all).await);
    assert_unavailable("replica query", replica.query(&all).await);
    assert_unavailable("repositories", writer.repositories().await);
    assert_unavailable("search", replica.search("r", 0, 10).await);
    let after = image("after").build();
    assert_unavailable("write", writer.apply(&put_image("r", "v2", &after)).await);

    cluster.start().unwrap();
    // The pools reconnect on demand; give the server a moment to accept connections.
    let started = Instant::now();
    let recovered = loop {
        match writer.query(&all).await {
            Ok(answer) => break answer,
            Err(StoreError::Unavailable { .. }) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("store did not recover: {e}"),
        }
    };
    assert_eq!(recovered, answer, "nothing indexed was lost");
    let g2 = writer.apply(&put_image("r", "v2", &after)).await.unwrap();
    assert_eq!(g2, g1 + 1, "the failed write left no trace");
    // The replica's listener reconnects too: it follows the writer again.
    let started = Instant::now();
    while replica.generation().await.ok() != Some(g2) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replica did not catch up after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        replica.query(&all).await.unwrap(),
        writer.query(&all).await.unwrap()
    );
    writer.readiness().await.unwrap();
    replica.readiness().await.unwrap();

    // A server that reads but refuses writes (here: read-only transactions by default,
    // as after `ALTER SYSTEM` on a server being drained) makes the writer not ready,
    // while the replica, which never writes, stays ready.
    let admin = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    let set_read_only = |on: bool| {
        let admin = admin.clone();
        async move {
            let statement = if on {
                "ALTER SYSTEM SET default_transaction_read_only = on"
            } else {
                "ALTER SYSTEM RESET default_transaction_read_only"
            };
            let mut conn = admin.acquire().await.unwrap();
            sqlx::query("SET default_transaction_read_only = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query(statement).execute(&mut *conn).await.unwrap();
            sqlx::query("SELECT pg_reload_conf()")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    };
    set_read_only(true).await;
    // Sessions pick the reloaded setting up at their next command.
    let started = Instant::now();
    let refusal = loop {
        match writer.readiness().await {
            Err(StoreNotReady::NotWritable(e)) => break e.to_string(),
            Ok(()) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("expected not writable, got {other:?}"),
        }
    };
    assert!(refusal.contains("read-only"), "{refusal}");
    // What readiness says is what writes find.
    let refused = image("refused").build();
    assert!(writer.apply(&put_image("r", "v3", &refused)).await.is_err());
    replica.readiness().await.unwrap();
    set_read_only(false).await;
    let started = Instant::now();
    while writer.readiness().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "writer did not become ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.close().await;
    writer.close().await;
    replica.close().await;
}
