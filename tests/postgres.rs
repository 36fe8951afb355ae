//! End to end with PostgreSQL: a writer (`serve`) indexing a real registry into its own
//! schema, a read-only replica (`serve --read-only`) on the same database seeing the
//! writer's changes, and the one-shot commands reading it. Needs
//! `FLAGSTATE_TEST_PG_URL`; skipped loudly without it.

mod common;

use std::time::Duration;

use common::images::{HELLO, WORLD};
use common::{
    EVENTS_TOKEN, Server, flatpak_refs, free_port, hello_registry, http_client, run, text,
};

/// The database URL, or `None` (after a notice) when the test is to be skipped.
fn database_url() -> Option<String> {
    match std::env::var("FLAGSTATE_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if flagstate_core::testkit::registry_required() => {
            panic!("FLAGSTATE_REQUIRE_REGISTRY=1 but FLAGSTATE_TEST_PG_URL is not set")
        }
        _ => {
            eprintln!(
                "\n!!! SKIPPING the PostgreSQL end-to-end test: FLAGSTATE_TEST_PG_URL is not set\n"
            );
            None
        }
    }
}

/// Drops the test's schema when the test ends, however it ends.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        // psql ships with the server the tests need; a leftover schema is harmless.
        let _ = std::process::Command::new("psql")
            .arg(&self.url)
            .arg("-qc")
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_read_only_replica_share_postgres() {
    let Some(url) = database_url() else {
        return;
    };
    let port = free_port();
    let Some(registry) = hello_registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();

    let schema = format!("flagstate_e2e_{}_{port}", std::process::id());
    let _cleanup = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flagstate.yaml");
    std::fs::write(
        &config,
        format!(
            "registry:\n  url: {}\n  public_url: /\nevents:\n  token: {EVENTS_TOKEN}\n\
             database:\n  postgres:\n    url: {url}\n    schema: {schema}\n",
            registry.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let mut writer = Server::start(port, &["--config", config], &[], dir.path()).await;
    let (index, _) = writer.flatpak_index().await;
    assert_eq!(flatpak_refs(&index), [HELLO.flatpak_ref()]);

    let mut replica = Server::start(
        free_port(),
        &["--config", config, "--read-only"],
        &[],
        dir.path(),
    )
    .await;
    let (replica_index, _) = replica.flatpak_index().await;
    assert_eq!(replica_index, index);
    let refused = http_client()
        .post(format!("{}/events", replica.url))
        .bearer_auth(EVENTS_TOKEN)
        .header(
            "content-type",
            "application/vnd.docker.distribution.events.v1+json",
        )
        .body(r#"{"events":[]}"#)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);

    // A push reaches the writer as a notification; the replica sees it through the
    // shared database.
    pusher
        .push_image(&WORLD.repository(), Some("latest"), &WORLD.image())
        .await
        .unwrap();
    let both = [HELLO.flatpak_ref(), WORLD.flatpak_ref()];
    writer
        .wait_for_index("the pushed app on the writer", |i| flatpak_refs(i) == both)
        .await;
    replica
        .wait_for_index("the pushed app on the replica", |i| flatpak_refs(i) == both)
        .await;

    // The one-shot commands read the same store.
    let out = run(&["--config", config, "query", common::FLATPAK_QUERY]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let queried: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(flatpak_refs(&queried), both);
    let out = run(&["--config", config, "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    assert!(replica.terminate().success(), "{}", replica.log());
    assert!(writer.terminate().success(), "{}", writer.log());
}

/// The `Registry` a writer serves with is stored with the index, so a read-only replica
/// configured with the database alone (no registry URL) answers the same bytes and ETag,
/// and so does `query`: two processes behind one load balancer are indistinguishable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_replica_answer_identical_bytes() {
    let Some(url) = database_url() else {
        return;
    };
    let Some(registry) = hello_registry(None).await else {
        return;
    };
    let port = free_port();
    let schema = format!("flagstate_e2e_bytes_{}_{port}", std::process::id());
    let _cleanup = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let database = format!("database:\n  postgres:\n    url: {url}\n    schema: {schema}\n");
    let writer_config = dir.path().join("writer.yaml");
    std::fs::write(
        &writer_config,
        format!("registry:\n  url: {}\n{database}", registry.url()),
    )
    .unwrap();
    let replica_config = dir.path().join("replica.yaml");
    std::fs::write(&replica_config, format!("read_only: true\n{database}")).unwrap();

    let writer = Server::start(
        port,
        &["--config", writer_config.to_str().unwrap()],
        &[],
        dir.path(),
    )
    .await;
    let replica = Server::start(
        free_port(),
        &["--config", replica_config.to_str().unwrap()],
        &[],
        dir.path(),
    )
    .await;
    common::assert_identical_answers(&writer, &replica, &registry.url()).await;
    let out = run(&[
        "--config",
        replica_config.to_str().unwrap(),
        "query",
        common::FLATPAK_QUERY,
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let body = writer
        .get(&format!("/index/static?{}", common::FLATPAK_QUERY))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), format!("{}\n", text(&body)));
}

/// `GET /index/static?<Flatpak query>` on `server`: status, body bytes and ETag.
async fn raw_index(server: &Server) -> (u16, Vec<u8>, String) {
    let answer = server
        .get(&format!("/index/static?{}", common::FLATPAK_QUERY))
        .await;
    let status = answer.status().as_u16();
    let etag = answer
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, answer.bytes().await.unwrap().to_vec(), etag)
}

/// Polls `check` every 100 ms until it yields a value; fails after a generous deadline
/// (nothing here measures speed).
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A writer on a private primary indexing a real registry through its notifications, and
/// a read-only replica on a streaming-replication hot standby of that primary (which
/// delivers no `NOTIFY`): the replica serves the writer's bytes and ETag after a push,
/// answers 503 (readiness and index) while the standby is stopped, and recovers when it
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_on_a_hot_standby_serves_the_writers_answers() {
    use flagstate_core::testkit::PgCluster;
    if database_url().is_none() {
        return;
    }
    let primary = PgCluster::primary().unwrap();
    primary.start().unwrap();
    let standby = primary.standby().unwrap();
    standby.start().unwrap();

    let port = free_port();
    let Some(registry) = hello_registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    let schema = "flagstate_standby";
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, url: String| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "registry:\n  url: {}\n  public_url: /\nevents:\n  token: {EVENTS_TOKEN}\n\
                 database:\n  postgres:\n    url: {url}\n    schema: {schema}\n    \
                 generation_poll: 100ms\n",
                registry.url()
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let writer_config = config("writer.yaml", primary.url());
    let replica_config = config("replica.yaml", standby.url());

    let mut writer = Server::start(port, &["--config", &writer_config], &[], dir.path()).await;
    let (index, _) = writer.flatpak_index().await;
    assert_eq!(flatpak_refs(&index), [HELLO.flatpak_ref()]);

    // The writer's schema reaches the standby by replication; a replica refuses to
    // start on a schema that is not there yet.
    let standby_db = sqlx::PgPool::connect(&standby.url()).await.unwrap();
    let probe = format!("SELECT to_regclass('{schema}.meta') IS NOT NULL");
    eventually("the schema on the standby", async || {
        let (there,): (bool,) = sqlx::query_as(sqlx::AssertSqlSafe(probe.clone()))
            .fetch_one(&standby_db)
            .await
            .ok()?;
        there.then_some(())
    })
    .await;
    standby_db.close().await;
    let mut replica = Server::start(
        free_port(),
        &["--config", &replica_config, "--read-only"],
        &[],
        dir.path(),
    )
    .await;
    // It says how it follows the generation there.
    eventually(
        "the replica logging that it polls a hot standby",
        async || replica.log().contains("hot standby").then_some(()),
    )
    .await;
    let same = async |what: &str, writer: &Server, replica: &Server| {
        let expected = raw_index(writer).await;
        assert_eq!(expected.0, 200);
        assert!(!expected.2.is_empty(), "the writer's answer has an ETag");
        eventually(what, async || {
            (raw_index(replica).await == expected).then_some(())
        })
        .await;
    };
    same("the replica answering like the writer", &writer, &replica).await;

    // A push reaches the writer as a notification; the replica sees it through the
    // standby, byte for byte.
    pusher
        .push_image(&WORLD.repository(), Some("latest"), &WORLD.image())
        .await
        .unwrap();
    let both = [HELLO.flatpak_ref(), WORLD.flatpak_ref()];
    writer
        .wait_for_index("the pushed app on the writer", |i| flatpak_refs(i) == both)
        .await;
    same("the pushed app on the replica", &writer, &replica).await;

    // The standby goes away: the replica is not ready and refuses index requests
    // rather than answering from what it knew last; the writer is unaffected.
    standby.stop().unwrap();
    eventually("the replica not ready", async || {
        (replica.get("/readyz").await.status() == 503).then_some(())
    })
    .await;
    let (status, body, _) = eventually("the replica's index refused", async || {
        let answer = raw_index(&replica).await;
        (answer.0 != 200).then_some(answer)
    })
    .await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "store_unavailable", "{error}");
    assert_eq!(raw_index(&writer).await.0, 200);

    // Back again: ready, and the writer's answer once more.
    standby.start().unwrap();
    eventually("the replica ready again", async || {
        (replica.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    same(
        "the replica answering after the standby's restart",
        &writer,
        &replica,
    )
    .await;

    assert!(replica.terminate().success(), "{}", replica.log());
    assert!(writer.terminate().success(), "{}", writer.log());
}
