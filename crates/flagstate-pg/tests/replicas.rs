//! One writer and read-only replicas on the same schema; schema versions; options.

mod common;

use std::time::{Duration, Instant};

use flagstate_core::conformance::fixtures::{flatpak_app, image, list, put_image, query, repo};
use flagstate_core::model::TagChange;
use flagstate_core::{Store, StoreError};
use flagstate_pg::{PgOptions, PgStore};

use common::{SchemaGuard, TestStore, pg_url};

/// Waits (generously; this is not a speed test) until `store` reports `want`.
async fn await_generation(store: &PgStore, want: u64) -> Duration {
    let started = Instant::now();
    loop {
        let got = store.generation().await.unwrap();
        if got == want {
            return started.elapsed();
        }
        assert!(got < want, "replica overshot: {got} > {want}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "replica still at generation {got}, writer at {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_follows_the_writer() {
    let Some(url) = pg_url() else { return };
    let writer = TestStore::new(&url).await;
    let replica = writer.replica().await;
    assert!(replica.is_read_only());
    assert_eq!(replica.schema(), writer.guard.schema);
    assert_eq!(replica.generation().await.unwrap(), 0);

    let app = flatpak_app("org.example.App", "amd64").build();
    let g1 = writer
        .replace_repository(&repo("apps/one").image("latest", &app).build())
        .await
        .unwrap();
    let waited = await_generation(&replica, g1).await;
    eprintln!("replica saw generation {g1} after {waited:?}");
    let flatpak = query("label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest");
    assert_eq!(
        replica.query(&flatpak).await.unwrap(),
        writer.query(&flatpak).await.unwrap()
    );
    assert_eq!(replica.repositories().await.unwrap(), ["apps/one"]);

    // Several bumps in a row: the replica ends on the last one.
    let mut last = g1;
    for i in 0..5 {
        let img = image(&format!("img{i}")).build();
        last = writer
            .apply(&put_image("apps/two", "latest", &img))
            .await
            .unwrap();
    }
    assert_eq!(last, g1 + 5);
    await_generation(&replica, last).await;
    assert_eq!(
        replica
            .repository_tags(&"apps/two".parse().unwrap())
            .await
            .unwrap(),
        writer
            .repository_tags(&"apps/two".parse().unwrap())
            .await
            .unwrap()
    );
    drop(replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_refuses_every_write() {
    let Some(url) = pg_url() else { return };
    let writer = TestStore::new(&url).await;
    let app = image("a").build();
    writer
        .replace_repository(&repo("r").image("t", &app).build())
        .await
        .unwrap();
    let replica = writer.replica().await;
    let read_only = |r: Result<_, StoreError>| match r {
        Err(StoreError::ReadOnly { store: "postgres" }) => {}
        other => panic!("expected ReadOnly, got {other:?}"),
    };
    read_only(
        replica
            .replace_repository(&repo("r").build())
            .await
            .map(drop),
    );
    read_only(
        replica
            .remove_repository(&"r".parse().unwrap())
            .await
            .map(drop),
    );
    read_only(replica.apply(&put_image("r", "u", &app)).await.map(drop));
    read_only(
        replica
            .apply(&TagChange::DeleteTag {
                repository: "r".parse().unwrap(),
                tag: "t".parse().unwrap(),
            })
            .await
            .map(drop),
    );
    read_only(replica.collect_garbage().await.map(drop));
    assert_eq!(
        replica
            .repository_tags(&"r".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .len(),
        1,
        "nothing changed"
    );
    assert_eq!(writer.generation().await.unwrap(), 1);
    drop(replica);
}

fn backend_message(result: Result<PgStore, StoreError>) -> String {
    match result {
        Err(StoreError::Backend {
            store: "postgres",
            source,
        }) => source.to_string(),
        other => panic!("expected a Backend error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_refuses_a_missing_or_older_schema() {
    let Some(url) = pg_url() else { return };
    let guard = SchemaGuard::new(&url);
    let message = backend_message(PgStore::connect(&url, guard.options(true)).await);
    assert!(message.contains("read-write"), "{message}");

    // Created by a writer, then rolled back to "before the newest migration".
    let writer = PgStore::connect(&url, guard.options(false)).await.unwrap();
    writer.close().await;
    guard
        .execute("DELETE FROM flagstate_migrations WHERE version = (SELECT max(version) FROM flagstate_migrations)")
        .await;
    let message = backend_message(PgStore::connect(&url, guard.options(true)).await);
    assert!(message.contains("older"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_is_refused_by_writer_and_replica() {
    let Some(url) = pg_url() else { return };
    let store = TestStore::new(&url).await;
    store.close().await;
    store
        .guard
        .execute(
            "INSERT INTO flagstate_migrations (version, description, success, checksum, execution_time) \
             VALUES (999999, 'from the future', true, '\\x00', 0)",
        )
        .await;
    for read_only in [false, true] {
        match PgStore::connect(&url, store.guard.options(read_only)).await {
            Err(StoreError::SchemaTooNew {
                store: "postgres",
                found: 999999,
                supported,
            }) => assert!(supported >= 1),
            other => panic!("read_only={read_only}: expected SchemaTooNew, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_and_generation() {
    let Some(url) = pg_url() else { return };
    let store = TestStore::new(&url).await;
    let img = image("keep").build();
    let g = store
        .replace_repository(&repo("keep/me").image("v1", &img).build())
        .await
        .unwrap();
    let again = PgStore::connect(&url, store.guard.options(false))
        .await
        .unwrap();
    assert_eq!(again.generation().await.unwrap(), g);
    assert_eq!(again.repositories().await.unwrap(), ["keep/me"]);
    assert!(again.manifest(&img.digest).await.unwrap().is_some());
}

#[tokio::test]
async fn bad_options_are_clear_errors() {
    let Some(url) = pg_url() else { return };
    let options = |schema: &str| PgOptions::default().with_schema(Some(schema.to_owned()));
    let message = backend_message(PgStore::connect(&url, options("Bad-Name\";drop")).await);
    assert!(message.contains("invalid schema name"), "{message}");
    let never = options("never_polled").with_generation_poll(Duration::ZERO);
    let message = backend_message(PgStore::connect(&url, never).await);
    assert!(message.contains("generation_poll"), "{message}");
    let impatient = options("impatient")
        .with_generation_poll(Duration::from_secs(1))
        .with_unconfirmed_limit(Some(Duration::from_millis(10)));
    let message = backend_message(PgStore::connect(&url, impatient).await);
    assert!(message.contains("unconfirmed_limit"), "{message}");
    assert_eq!(
        PgOptions::default().effective_unconfirmed_limit(),
        flagstate_pg::DEFAULT_GENERATION_POLL * flagstate_pg::UNCONFIRMED_POLLS
    );
    for url in ["mysql://host/db", "postgres://host:notaport/db"] {
        let message = backend_message(PgStore::connect(url, PgOptions::default()).await);
        assert!(
            message.contains("invalid PostgreSQL URL"),
            "{url}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_and_nothing_is_stored() {
    let Some(url) = pg_url() else { return };
    let store = TestStore::new(&url).await;
    let bad = image("nul").label("k", "a\0b").build();
    match store
        .replace_repository(&repo("r").image("t", &bad).build())
        .await
    {
        Err(StoreError::Invalid(message)) => assert!(message.contains("NUL"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(store.repositories().await.unwrap().is_empty());
    assert!(store.manifest(&bad.digest).await.unwrap().is_none());
    assert_eq!(store.generation().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_cancels_slow_statements() {
    let Some(url) = pg_url() else { return };
    let guard = SchemaGuard::new(&url);
    let fast = guard
        .options(false)
        .with_statement_timeout(Some(Duration::from_millis(1)));
    // Migrating takes longer than a millisecond: the server cancels it, and says so.
    match PgStore::connect(&url, fast).await {
        Err(e @ StoreError::Backend { .. }) => {
            let text = format!("{e}: {:?}", e);
            assert!(text.contains("statement timeout"), "{text}");
        }
        Ok(_) => panic!("a 1 ms statement timeout let the migration through"),
        Err(other) => panic!("expected a Backend error, got {other:?}"),
    }
}

/// A schema at version 1, created by the first release's migration alone and holding
/// data, is upgraded in place by a writer: data and generation kept, no registry URL
/// until the writer stores one, which a replica then reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_upgraded_in_place() {
    let Some(url) = pg_url() else { return };
    let guard = SchemaGuard::new(&url);
    guard
        .execute(&format!("CREATE SCHEMA \"{}\"", guard.schema))
        .await;
    let mut v1 = sqlx::migrate!("./migrations");
    v1.dangerous_set_table_name("flagstate_migrations");
    v1.migrations = v1
        .migrations
        .iter()
        .filter(|m| m.version == 1)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let connect = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .options([("search_path", guard.schema.as_str())]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect)
        .await
        .unwrap();
    v1.run(&pool).await.unwrap();
    pool.close().await;
    let digest = format!("sha256:{}", "ab".repeat(32));
    guard
        .execute(&format!(
            "INSERT INTO manifests (digest, media_type, is_list, os, architecture) \
             VALUES ('{digest}', 'application/vnd.oci.image.manifest.v1+json', false, 'linux', 'amd64'); \
             INSERT INTO repositories (name) VALUES ('old/app'); \
             INSERT INTO tags (repository_id, name, digest) SELECT id, 'stable', '{digest}' FROM repositories; \
             UPDATE meta SET generation = 7"
        ))
        .await;
    let message = backend_message(PgStore::connect(&url, guard.options(true)).await);
    assert!(message.contains("older"), "{message}");

    let writer = PgStore::connect(&url, guard.options(false)).await.unwrap();
    assert_eq!(writer.generation().await.unwrap(), 7);
    assert_eq!(writer.repositories().await.unwrap(), ["old/app"]);
    let tags = writer
        .repository_tags(&"old/app".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        tags.iter()
            .map(|(t, d)| (t.as_str(), d.as_str()))
            .collect::<Vec<_>>(),
        [("stable", digest.as_str())]
    );
    assert_eq!(writer.registry_url().await.unwrap(), None);
    let g = writer.set_registry_url("http://r.example").await.unwrap();
    assert_eq!(g, 8);
    let replica = PgStore::connect(&url, guard.options(true)).await.unwrap();
    assert_eq!(
        replica.registry_url().await.unwrap().as_deref(),
        Some("http://r.example")
    );
    replica.close().await;
    writer.close().await;
}

/// Every manifest's digest with its label and annotation keys, sorted.
async fn manifest_keys(guard: &SchemaGuard) -> Vec<(String, Vec<String>, Vec<String>)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&guard.url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET search_path TO \"{}\"",
        guard.schema
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut rows: Vec<(String, Vec<String>, Vec<String>)> =
        sqlx::query_as("SELECT digest, label_keys, annotation_keys FROM manifests")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for (_, labels, annotations) in &mut rows {
        labels.sort();
        annotations.sort();
    }
    rows.sort();
    rows
}

/// A schema at version 2 holding data a writer stored (Flatpak images directly and in a
/// list, labels, annotations) is upgraded in place to version 3: the migration derives
/// the label and annotation keys of the stored manifests as they are for manifests stored
/// at version 3, and every query answers as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_schema_is_upgraded_in_place() {
    let Some(url) = pg_url() else { return };
    let guard = SchemaGuard::new(&url);
    let writer = PgStore::connect(&url, guard.options(false)).await.unwrap();
    let amd = flatpak_app("org.example.Editor", "amd64").build();
    let arm = flatpak_app("org.example.Editor", "arm64").build();
    let editor = list("editor").child(&amd).child(&arm).build();
    let viewer = flatpak_app("org.example.Viewer", "amd64")
        .annotation("org.opencontainers.image.title", "Viewer")
        .build();
    let service = image("service")
        .label("vendor", "Example Corp")
        .label("version", "2.1")
        .annotation("org.opencontainers.image.source", "https://example.org/s")
        .build();
    let old = image("service old").label("version", "1.0").build();
    writer
        .replace_repository(&repo("apps/editor").list("latest", &editor).build())
        .await
        .unwrap();
    writer
        .replace_repository(
            &repo("apps/viewer")
                .image("latest", &viewer)
                .image("1.0", &viewer)
                .build(),
        )
        .await
        .unwrap();
    writer
        .replace_repository(
            &repo("services/s")
                .image("latest", &service)
                .image("1", &old)
                .build(),
        )
        .await
        .unwrap();
    let queries = [
        "label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest",
        "label:org.flatpak.ref:exists=1",
        "label:version=2.1",
        "label:version:matches=1.*",
        "label:vendor:exists=1&label:version:exists=1",
        "annotation:org.opencontainers.image.source:exists=1",
        "annotation:org.opencontainers.image.title=Viewer&architecture=amd64",
        "os=linux&architecture=arm64",
        "tag=latest",
        "",
    ];
    let mut before = Vec::new();
    for q in queries {
        let answer = writer.query(&query(q)).await.unwrap();
        before.push(answer);
    }
    assert!(!before[0].is_empty() && !before[3].is_empty() && !before[5].is_empty());
    let keys = manifest_keys(&guard).await;
    let service_keys = keys.iter().find(|(d, _, _)| d == service.digest.as_str());
    assert_eq!(
        service_keys.map(|(_, l, a)| (l.clone(), a.clone())),
        Some((
            vec!["vendor".to_owned(), "version".to_owned()],
            vec!["org.opencontainers.image.source".to_owned()]
        )),
        "{keys:?}"
    );
    let generation = writer.generation().await.unwrap();
    writer.close().await;

    // Version 3 only added the key columns (with their function and indexes): without
    // them and their bookkeeping row, this is the version 2 schema with the same data.
    guard
        .execute(
            "ALTER TABLE manifests DROP COLUMN label_keys, DROP COLUMN annotation_keys; \
             DROP FUNCTION flagstate_keys(jsonb); \
             DELETE FROM flagstate_migrations WHERE version = 3",
        )
        .await;
    let message = backend_message(PgStore::connect(&url, guard.options(true)).await);
    assert!(message.contains("older"), "{message}");

    let writer = PgStore::connect(&url, guard.options(false)).await.unwrap();
    assert_eq!(manifest_keys(&guard).await, keys);
    assert_eq!(writer.generation().await.unwrap(), generation);
    for (q, answer) in queries.iter().zip(&before) {
        assert_eq!(&writer.query(&query(q)).await.unwrap(), answer, "{q}");
    }
    let replica = PgStore::connect(&url, guard.options(true)).await.unwrap();
    assert_eq!(
        &replica.query(&query(queries[0])).await.unwrap(),
        &before[0]
    );

    // The upgraded schema keeps working: new manifests come with their keys.
    let new = image("new").label("tier", "gold").build();
    writer
        .replace_repository(&repo("services/s").image("latest", &new).build())
        .await
        .unwrap();
    let found = writer.query(&query("label:tier:exists=1")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].images[0].digest, new.digest);
    // The images with a `version` label are no longer tagged.
    let untagged = writer
        .query(&query("label:version:exists=1"))
        .await
        .unwrap();
    assert!(untagged.is_empty(), "{untagged:?}");
    replica.close().await;
    writer.close().await;
}
