//! One writer and read-only replicas on the same schema; schema versions; options.

mod common;

use std::time::{Duration, Instant};

use flagstate_core::conformance::fixtures::{at, flatpak_app, image, list, put_image, query, repo};
use flagstate_core::discovery::{
    HistoryEntry, HistoryRetention, ListOrder, Listing, RepositoryListing,
};
use flagstate_core::model::{Description, Image, ImageList, TagChange};
use flagstate_core::{MemoryStore, Store, StoreError, Timestamp};
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
                at: Timestamp::from_millis(1),
            })
            .await
            .map(drop),
    );
    read_only(replica.collect_garbage().await.map(drop));
    read_only(
        replica
            .prune_history(&HistoryRetention::default(), Timestamp::now())
            .await
            .map(drop),
    );
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

/// Creates the guard's schema at `version`: the embedded migrations up to it, as the
/// release that shipped them applied them (the SQL of the files, recorded the same way).
async fn schema_at_version(guard: &SchemaGuard, version: i64) {
    guard
        .execute(&format!("CREATE SCHEMA \"{}\"", guard.schema))
        .await;
    let mut old = sqlx::migrate!("./migrations");
    old.dangerous_set_table_name("flagstate_migrations");
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let pool = schema_pool(guard).await;
    old.run(&pool).await.unwrap();
    pool.close().await;
}

/// A one-connection pool working in the guard's schema, for SQL the store API cannot do.
async fn schema_pool(guard: &SchemaGuard) -> sqlx::PgPool {
    let connect = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&guard.url)
        .unwrap()
        .options([("search_path", guard.schema.as_str())]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect)
        .await
        .unwrap()
}

/// A schema at version 1, created by the first release's migration alone and holding
/// data, is upgraded in place by a writer: data and generation kept, no registry URL
/// until the writer stores one, which a replica then reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_upgraded_in_place() {
    let Some(url) = pg_url() else { return };
    let guard = SchemaGuard::new(&url);
    schema_at_version(&guard, 1).await;
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
    let history = writer
        .tag_history(&"old/app".parse().unwrap(), &"stable".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        history
            .iter()
            .map(|h| h.digest.as_str())
            .collect::<Vec<_>>(),
        [digest.as_str()],
        "each tag starts its history at its digest"
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

/// A schema at version 7 holding a referrer pushed by digest (and the record version 7
/// logged for it) is upgraded in place: the referrer is still served, the old record
/// reads back without subject or artifact type, the held manifest can be tagged as an
/// artifact (version 9), and deleting the referrer now records `referrer.deleted` with
/// both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_7_schema_keeps_its_referrers_and_logs_their_deletion() {
    let Some(url) = pg_url() else { return };
    let guard = SchemaGuard::new(&url);
    schema_at_version(&guard, 7).await;
    let image = format!("sha256:{}", "ab".repeat(32));
    let signature = format!("sha256:{}", "cd".repeat(32));
    let oci = "application/vnd.oci.image.manifest.v1+json";
    guard
        .execute(&format!(
            "INSERT INTO repositories (name, created, updated) VALUES ('old/app', 5, 5); \
             INSERT INTO pushed_manifests (repository_id, digest, media_type, size, pushed, \
                                           artifact_type, subject) \
                 SELECT id, '{signature}', '{oci}', 321, 5, 'application/vnd.example.sig', '{image}' \
                 FROM repositories; \
             INSERT INTO change_log (generation, position, time, kind, repository, digest, media_type) \
                 VALUES (7, 0, 5, 6, 'old/app', '{signature}', '{oci}'); \
             UPDATE meta SET generation = 7"
        ))
        .await;
    let writer = PgStore::connect(&url, guard.options(false)).await.unwrap();
    let name: flagstate_core::RepositoryName = "old/app".parse().unwrap();
    let image: flagstate_core::Digest = image.parse().unwrap();
    let signature: flagstate_core::Digest = signature.parse().unwrap();
    let referrers = writer
        .list_referrers(&name, &image, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        referrers.iter().map(|r| &r.digest).collect::<Vec<_>>(),
        [&signature]
    );
    let old = writer
        .changes_since(
            flagstate_core::ChangeCursor::at_generation(0),
            &flagstate_core::ChangeFilter::default(),
            10,
        )
        .await
        .unwrap()
        .records;
    assert_eq!(old.len(), 1);
    assert_eq!(
        (old[0].kind, &old[0].subject, &old[0].artifact_type),
        (
            flagstate_core::ChangeKind::ManifestUntaggedCreated,
            &None,
            &None
        )
    );
    let tagged = flagstate_core::PushedManifest {
        digest: signature.clone(),
        media_type: oci.to_owned(),
        size: 321,
        pushed: Timestamp::now(),
        artifact_type: Some("application/vnd.example.other".to_owned()),
        subject: None,
        annotations: Default::default(),
    };
    writer
        .apply(&TagChange::PutArtifact {
            repository: name.clone(),
            tag: "sig".parse().unwrap(),
            manifest: tagged,
            at: Timestamp::now(),
        })
        .await
        .unwrap();
    let listing = flagstate_core::TagListing::all(flagstate_core::Listing::first(
        flagstate_core::ListOrder::Name,
        10,
    ));
    let tags = writer.list_tags(&name, &listing).await.unwrap().unwrap();
    assert_eq!(
        tags.iter()
            .map(|t| (t.tag.as_str(), t.artifact_type.as_deref()))
            .collect::<Vec<_>>(),
        [("sig", Some("application/vnd.example.sig"))],
        "the tag names the held manifest, with what its first push stated"
    );
    assert!(
        writer
            .repository_tags(&name)
            .await
            .unwrap()
            .unwrap()
            .is_empty(),
        "an artifact tag is not indexed"
    );
    writer
        .apply(&TagChange::DeleteTag {
            repository: name.clone(),
            tag: "sig".parse().unwrap(),
            at: Timestamp::now(),
        })
        .await
        .unwrap();
    let generation = writer.generation().await.unwrap();
    writer
        .apply(&TagChange::DeleteManifest {
            repository: name.clone(),
            digest: signature.clone(),
            at: Timestamp::now(),
        })
        .await
        .unwrap();
    let deleted = writer
        .changes_since(
            flagstate_core::ChangeCursor::at_generation(generation),
            &flagstate_core::ChangeFilter::default(),
            10,
        )
        .await
        .unwrap()
        .records;
    let kinds: Vec<_> = deleted.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            flagstate_core::ChangeKind::ManifestUntaggedDeleted,
            flagstate_core::ChangeKind::ReferrerDeleted
        ]
    );
    assert_eq!(deleted[1].subject.as_ref(), Some(&image));
    assert_eq!(
        deleted[1].artifact_type.as_deref(),
        Some("application/vnd.example.sig")
    );
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

    // Version 3 only added the key columns (with their function and indexes), version 4
    // only the discovery times and history (with their indexes), version 5 only the
    // change log, version 6 only the webhook delivery cursors, version 7 only manifest
    // sizes and the manifests pushed by digest, version 8 only change-log columns and
    // version 9 only artifact tags: without them and their bookkeeping rows, this is the
    // version 2 schema with the same data.
    guard
        .execute(
            "DROP TABLE artifact_tags; \
             DROP TABLE pushed_manifests; \
             ALTER TABLE manifests DROP COLUMN size; \
             DROP TABLE deliveries; \
             DROP TABLE change_log; \
             ALTER TABLE meta DROP COLUMN change_floor_generation, \
                 DROP COLUMN change_floor_position; \
             DROP TABLE tag_history; \
             ALTER TABLE repositories DROP COLUMN created, DROP COLUMN updated; \
             ALTER TABLE tags DROP COLUMN updated; \
             ALTER TABLE manifests DROP COLUMN label_keys, DROP COLUMN annotation_keys; \
             DROP FUNCTION flagstate_keys(jsonb); \
             DELETE FROM flagstate_migrations WHERE version IN (3, 4, 5, 6, 7, 8, 9)",
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

    // Delivery state starts empty and is kept (version 6).
    assert_eq!(writer.delivery_cursor("hook").await.unwrap(), None);
    let delivered = flagstate_core::ChangeCursor::at_generation(generation);
    writer.set_delivery_cursor("hook", delivered).await.unwrap();
    assert_eq!(
        replica.delivery_cursor("hook").await.unwrap(),
        Some(delivered)
    );
    assert!(
        replica
            .set_delivery_cursor("hook", delivered)
            .await
            .is_err(),
        "a replica does not write delivery state"
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

/// Stores `image` with the statement a version-3 writer ran (the key columns are
/// generated by the server).
async fn insert_v3_image(pool: &sqlx::PgPool, image: &Image) {
    let description = Description::resolve(&image.labels, &image.annotations);
    sqlx::query(
        "INSERT INTO manifests (digest, media_type, is_list, os, architecture, variant, \
             labels, annotations, created, config_digest, title, description) \
         VALUES ($1, $2, false, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11)",
    )
    .bind(image.digest.as_str())
    .bind(&image.media_type)
    .bind(&image.platform.os)
    .bind(&image.platform.architecture)
    .bind(image.platform.variant.as_deref())
    .bind(serde_json::to_string(&image.labels).unwrap())
    .bind(serde_json::to_string(&image.annotations).unwrap())
    .bind(image.created.as_deref())
    .bind(image.config_digest.as_ref().map(|d| d.as_str()))
    .bind(description.title)
    .bind(description.description)
    .execute(pool)
    .await
    .unwrap();
}

/// Stores `list` and its entries as a version-3 writer did (its children stored first).
async fn insert_v3_list(pool: &sqlx::PgPool, list: &ImageList, children: &[&Image]) {
    sqlx::query(
        "INSERT INTO manifests (digest, media_type, is_list, annotations) \
         VALUES ($1, $2, true, $3::jsonb)",
    )
    .bind(list.digest.as_str())
    .bind(&list.media_type)
    .bind(serde_json::to_string(&list.annotations).unwrap())
    .execute(pool)
    .await
    .unwrap();
    for (position, entry) in list.entries.iter().enumerate() {
        let child = children.iter().find(|c| c.digest == entry.digest).unwrap();
        let platform = entry.platform.as_ref().unwrap_or(&child.platform);
        sqlx::query(
            "INSERT INTO list_entries (list, position, child, os, architecture, variant, \
                 effective_os, effective_architecture) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(list.digest.as_str())
        .bind(i32::try_from(position).unwrap())
        .bind(entry.digest.as_str())
        .bind(entry.platform.as_ref().map(|p| p.os.as_str()))
        .bind(entry.platform.as_ref().map(|p| p.architecture.as_str()))
        .bind(entry.platform.as_ref().and_then(|p| p.variant.as_deref()))
        .bind(&platform.os)
        .bind(&platform.architecture)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// A schema at version 3 (the files' SQL of migrations 1–3) holding data written with
/// the SQL of the version-3 tables is upgraded in place to version 4 by a writer: every
/// index query answers as a store holding the same content does, the generation is kept,
/// every repository and tag is stamped with the one instant of the upgrade, every tag's
/// history starts there at its current digest, and the discovery reads and writes work
/// on the upgraded schema (on a replica too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_schema_is_upgraded_in_place() {
    let Some(url) = pg_url() else { return };
    let guard = SchemaGuard::new(&url);
    schema_at_version(&guard, 3).await;

    let amd = flatpak_app("org.example.Editor", "amd64")
        .created("2025-01-01T00:00:00Z")
        .build();
    let arm = flatpak_app("org.example.Editor", "arm64").build();
    let editor = list("editor").child(&amd).child(&arm).build();
    let viewer = flatpak_app("org.example.Viewer", "amd64")
        .annotation("org.opencontainers.image.title", "Viewer")
        .created("2025-02-02T02:02:02Z")
        .build();
    let snapshots = [
        repo("apps/editor").list("latest", &editor).build(),
        repo("apps/viewer")
            .image("latest", &viewer)
            .image("1.0", &viewer)
            .build(),
        repo("empty").build(),
    ];
    let reference = MemoryStore::new();
    for snapshot in &snapshots {
        reference.replace_repository(snapshot).await.unwrap();
    }

    let pool = schema_pool(&guard).await;
    for image in [&amd, &arm, &viewer] {
        insert_v3_image(&pool, image).await;
    }
    insert_v3_list(&pool, &editor.list, &[&amd, &arm]).await;
    for snapshot in &snapshots {
        sqlx::query("INSERT INTO repositories (name) VALUES ($1)")
            .bind(snapshot.name.as_str())
            .execute(&pool)
            .await
            .unwrap();
        for (tag, digest) in &snapshot.tags {
            sqlx::query(
                "INSERT INTO tags (repository_id, name, digest) \
                 SELECT id, $2, $3 FROM repositories WHERE name = $1",
            )
            .bind(snapshot.name.as_str())
            .bind(tag.as_str())
            .bind(digest.as_str())
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    sqlx::query("UPDATE meta SET generation = 7")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let message = backend_message(PgStore::connect(&url, guard.options(true)).await);
    assert!(message.contains("older"), "{message}");

    let before = Timestamp::now();
    let writer = PgStore::connect(&url, guard.options(false)).await.unwrap();
    let after = Timestamp::now();
    assert_eq!(writer.generation().await.unwrap(), 7);
    // The change log (version 5) starts at the upgrade: nothing before it can be asked for.
    let log = writer
        .changes_since(
            flagstate_core::ChangeCursor::at_generation(0),
            &flagstate_core::ChangeFilter::default(),
            10,
        )
        .await
        .unwrap();
    assert!(log.records.is_empty());
    assert_eq!(log.oldest, flagstate_core::ChangeCursor::at_generation(7));
    for q in [
        "",
        "label:org.flatpak.ref:exists=1&architecture=arm64&os=linux",
        "annotation:org.opencontainers.image.title=Viewer&tag=1.0",
        "tag=latest",
    ] {
        assert_eq!(
            writer.query(&query(q)).await.unwrap(),
            reference.query(&query(q)).await.unwrap(),
            "{q}"
        );
    }

    // One instant, the upgrade's (read from the server's clock: allow it a little skew).
    let repositories = writer
        .list_repositories(&RepositoryListing {
            namespace: None,
            listing: Listing::first(ListOrder::Name, usize::MAX),
        })
        .await
        .unwrap();
    let upgraded = repositories[0].created;
    let skew = 5_000;
    assert!(
        upgraded.as_millis() >= before.as_millis() - skew
            && upgraded.as_millis() <= after.as_millis() + skew,
        "{upgraded} is not between {before} and {after}"
    );
    let summary: Vec<_> = repositories
        .iter()
        .map(|r| (r.name.as_str(), r.tags, r.created, r.updated))
        .collect();
    assert_eq!(
        summary,
        [
            ("apps/editor", 1, upgraded, upgraded),
            ("apps/viewer", 2, upgraded, upgraded),
            ("empty", 0, upgraded, upgraded),
        ]
    );
    for snapshot in &snapshots {
        for (tag, digest) in &snapshot.tags {
            assert_eq!(
                writer.tag_history(&snapshot.name, tag).await.unwrap(),
                Some(vec![HistoryEntry {
                    digest: digest.clone(),
                    since: upgraded,
                }]),
                "{}:{tag}",
                snapshot.name
            );
        }
    }
    let viewer_name = "apps/viewer".parse().unwrap();
    let tags = writer
        .list_tags(
            &viewer_name,
            &flagstate_core::TagListing::all(Listing::first(ListOrder::Name, 10)),
        )
        .await
        .unwrap()
        .unwrap();
    let tags: Vec<_> = tags
        .iter()
        .map(|t| {
            (
                t.tag.as_str(),
                &t.digest,
                t.media_type.as_str(),
                t.updated,
                t.created.as_deref(),
            )
        })
        .collect();
    let oci = viewer.media_type.as_str();
    let viewer_created = Some("2025-02-02T02:02:02Z");
    assert_eq!(
        tags,
        [
            ("1.0", &viewer.digest, oci, upgraded, viewer_created),
            ("latest", &viewer.digest, oci, upgraded, viewer_created),
        ]
    );
    let editor_tags = writer
        .list_tags(
            &"apps/editor".parse().unwrap(),
            &flagstate_core::TagListing::all(Listing::first(ListOrder::NewestFirst, 10)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(editor_tags.len(), 1);
    assert_eq!(editor_tags[0].media_type, editor.list.media_type);
    assert_eq!(editor_tags[0].created, None, "a list has no config");

    // The upgraded schema records what happens next, and a replica reads it.
    let later = Timestamp::from_millis(upgraded.as_millis() + 60_000);
    let moved = image("viewer 2").created("2026-01-01T00:00:00Z").build();
    let change = at(put_image("apps/viewer", "latest", &moved), later);
    assert_eq!(writer.apply(&change).await.unwrap(), 8);
    let history = writer
        .tag_history(&viewer_name, &"latest".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        history,
        [
            HistoryEntry {
                digest: viewer.digest.clone(),
                since: upgraded,
            },
            HistoryEntry {
                digest: moved.digest.clone(),
                since: later,
            },
        ]
    );
    let replica = PgStore::connect(&url, guard.options(true)).await.unwrap();
    let newest = replica
        .list_repositories(&RepositoryListing {
            namespace: Some("apps".into()),
            listing: Listing::first(ListOrder::NewestFirst, 1),
        })
        .await
        .unwrap();
    assert_eq!(
        newest
            .iter()
            .map(|r| (r.name.as_str(), r.updated))
            .collect::<Vec<_>>(),
        [("apps/viewer", later)]
    );
    replica.close().await;
    writer.close().await;
}
