//! Store benchmark, PostgreSQL section, with SQLite side by side when the `sqlite`
//! feature is on: bulk load, the Flatpak query (p50/p99), a whole-index dump, and the
//! Flatpak query from 4 concurrent readers (and, for PostgreSQL, the floor under it: fetching
//! just the answer's manifests), on the synthetic registry of `flagstate_core::testkit::workload`
//! (the SQLite benchmark's data).
//!
//! Run: `FLAGSTATE_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench pg_store`.
//! `FLAGSTATE_BENCH_IMAGES` sets the size (default 100 000). The PostgreSQL store lives in
//! a fresh schema that is dropped afterwards, unless `FLAGSTATE_BENCH_KEEP_SCHEMA` is set;
//! `FLAGSTATE_BENCH_SCHEMA=NAME` measures the reads on a schema an earlier run kept (same
//! `FLAGSTATE_BENCH_IMAGES`), without loading or dropping it; `FLAGSTATE_BENCH_SKIP_SQLITE`
//! skips SQLite.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstate_core::{IndexQuery, Store};
use flagstate_pg::{PgOptions, PgStore};

use flagstate_core::testkit::workload::{IMAGES_PER_REPOSITORY, repository};

const FLATPAK_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
const WRITERS: usize = 4;
const READERS: usize = 4;
const READ_FOR: Duration = Duration::from_secs(10);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn timed_queries(store: &dyn Store, query: &IndexQuery, runs: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let answer = store.query(query).await.expect("query");
        times.push(started.elapsed());
        std::hint::black_box(answer);
    }
    times.sort();
    times
}

async fn run(label: &str, store: Arc<dyn Store>, repositories: usize, load: bool) {
    let images = repositories * IMAGES_PER_REPOSITORY;
    println!("\n== {label}: {repositories} repositories, {images} images ==");
    if load {
        load_and_rescan(&store, repositories).await;
    }
    read(store, images).await;
}

/// Bulk load from WRITERS tasks, then an unchanged re-scan of up to 1,000 repositories.
async fn load_and_rescan(store: &Arc<dyn Store>, repositories: usize) {
    let images = repositories * IMAGES_PER_REPOSITORY;

    // One snapshot per repository, from WRITERS tasks at once (a server store commits
    // them concurrently; SQLite serialises them on its single writer).
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..repositories).step_by(WRITERS) {
                store
                    .replace_repository(&repository(i))
                    .await
                    .expect("load");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let load = started.elapsed();
    println!(
        "bulk load ({WRITERS} writers, one snapshot per repository): {:.1} s, {:.0} snapshots/s, {:.0} images/s",
        load.as_secs_f64(),
        repositories as f64 / load.as_secs_f64(),
        images as f64 / load.as_secs_f64()
    );
    let rescan = repositories.min(1000);
    let snapshots: Vec<_> = (0..rescan).map(repository).collect();
    let started = Instant::now();
    for snapshot in &snapshots {
        store.replace_repository(snapshot).await.expect("rescan");
    }
    println!(
        "unchanged re-scan (1 writer): {:.0} snapshots/s",
        rescan as f64 / started.elapsed().as_secs_f64()
    );
}

/// The read measurements: the Flatpak query, a whole-index dump, concurrent readers and
/// search.
async fn read(store: Arc<dyn Store>, images: usize) {
    let flatpak = IndexQuery::parse(FLATPAK_QUERY).expect("query");
    let answer = store.query(&flatpak).await.expect("query");
    let matched: usize = answer
        .iter()
        .map(|r| r.images.len() + r.lists.iter().map(|l| l.images.len()).sum::<usize>())
        .sum();
    let times = timed_queries(store.as_ref(), &flatpak, 50).await;
    println!(
        "Flatpak query ({} repositories, {matched} images): p50 {}, p99 {}",
        answer.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );

    let all = IndexQuery::all();
    let times = timed_queries(store.as_ref(), &all, 3).await;
    println!(
        "full dump ({images} images): p50 {}, max {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 1.0))
    );

    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let store = store.clone();
        let flatpak = flatpak.clone();
        readers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while started.elapsed() < READ_FOR {
                let t = Instant::now();
                std::hint::black_box(store.query(&flatpak).await.expect("query"));
                times.push(t.elapsed());
            }
            times
        }));
    }
    let mut times = Vec::new();
    for reader in readers {
        times.extend(reader.await.expect("reader"));
    }
    times.sort();
    println!(
        "{READERS} concurrent readers, Flatpak query: {:.1} queries/s, p50 {}, p99 {}",
        times.len() as f64 / started.elapsed().as_secs_f64(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );

    let started = Instant::now();
    for i in 0..20 {
        std::hint::black_box(
            store
                .search(&format!("app{i}"), 0, 25)
                .await
                .expect("search"),
        );
    }
    println!(
        "search (prefix term, first page): mean {}",
        ms(started.elapsed() / 20)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; there are no other arguments to honour.
    let Some(url) = std::env::var("FLAGSTATE_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "pg_store: set FLAGSTATE_TEST_PG_URL to a PostgreSQL server to run this benchmark"
        );
        return;
    };
    let images: usize = std::env::var("FLAGSTATE_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let repositories = (images / IMAGES_PER_REPOSITORY).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let reused = std::env::var("FLAGSTATE_BENCH_SCHEMA")
            .ok()
            .filter(|s| !s.is_empty());
        let schema = reused
            .clone()
            .unwrap_or_else(|| format!("flagstate_bench_{}", std::process::id()));
        let options = PgOptions::default()
            .with_schema(Some(schema.clone()))
            .with_max_connections(8);
        let store = PgStore::connect(&url, options).await.expect("connect");
        run(
            "PostgreSQL",
            Arc::new(store.clone()),
            repositories,
            reused.is_none(),
        )
        .await;
        transfer_floor(&url, &schema, &store).await;
        store.close().await;
        // Keeping the data allows looking at query plans afterwards.
        if reused.is_some() || std::env::var_os("FLAGSTATE_BENCH_KEEP_SCHEMA").is_some() {
            println!("kept schema {schema}");
        } else {
            drop_schema(&url, &schema).await;
        }

        #[cfg(feature = "sqlite")]
        if std::env::var_os("FLAGSTATE_BENCH_SKIP_SQLITE").is_none() {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = flagstate_sqlite::SqliteStore::open(dir.path().join("bench.db"))
                .expect("open sqlite");
            run("SQLite", Arc::new(store), repositories, true).await;
        }
    });
}

/// The floor under the PostgreSQL Flatpak query: one trivial statement fetching exactly
/// the answer's manifests (tagged images, lists and the children shown) by digest, their
/// labels and annotations decoded as the store decodes them; p50 over 50 runs.
async fn transfer_floor(url: &str, schema: &str, store: &PgStore) {
    use std::collections::BTreeMap;

    use sqlx::Connection;
    use sqlx::types::Json;
    let flatpak = IndexQuery::parse(FLATPAK_QUERY).expect("query");
    let answer = store.query(&flatpak).await.expect("query");
    let mut digests: Vec<String> = Vec::new();
    for repository in &answer {
        digests.extend(repository.images.iter().map(|i| i.digest.to_string()));
        for list in &repository.lists {
            digests.push(list.digest.to_string());
            digests.extend(list.images.iter().map(|i| i.digest.to_string()));
        }
    }
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let path = format!("SET search_path TO \"{schema}\"");
    sqlx::query(sqlx::AssertSqlSafe(path))
        .execute(&mut conn)
        .await
        .expect("search_path");
    type Row = (
        String,
        Json<BTreeMap<String, String>>,
        Json<BTreeMap<String, String>>,
    );
    let mut times = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT m.digest, m.labels, m.annotations FROM manifests m \
             JOIN unnest($1::text[]) AS w(digest) ON w.digest = m.digest",
        )
        .bind(&digests)
        .fetch_all(&mut conn)
        .await
        .expect("floor query");
        times.push(started.elapsed());
        std::hint::black_box(rows);
    }
    times.sort();
    println!(
        "floor: fetching the Flatpak answer's {} manifests in one statement: p50 {}",
        digests.len(),
        ms(percentile(&times, 0.5))
    );
}

async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    match sqlx::PgConnection::connect(url).await {
        Ok(mut conn) => {
            let ddl = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(ddl))
                .execute(&mut conn)
                .await
            {
                eprintln!("could not drop {schema}: {e}");
            }
        }
        Err(e) => eprintln!("could not drop {schema}: {e}"),
    }
}
