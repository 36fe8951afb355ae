//! Event → visible latency: how long after a registry notification reaches `/events`
//! the new tag is in the index, at a steady rate of notifications.
//!
//! ```text
//! cargo run --release --example bench_events -- [--rate 100] [--events 1000]
//!     [--synchronous full|normal|both] [--rounds 1]
//! ```
//!
//! Starts a real distribution registry, pushes `--events` distinct images by digest only
//! (untagged, as the registry holds a manifest before its tag is linked), and serves a
//! SQLite-backed index with its indexer on a loopback port. Then it sends one
//! distribution-format push notification per image at `--rate` per second, each naming
//! a new (repository, tag, digest) — the envelope the registry sends — and measures, per
//! notification, the time until `/index/static?repository=R&tag=T` answers with the
//! image. Every notification needs its manifest and config fetched from the registry,
//! as a real push does. Prints p50/p90/p99/max.
//!
//! `--synchronous` picks the SQLite writer's durability (`full`, the default, or
//! `normal`); `both` alternates them, A/B in one process over the same pushed images,
//! for `--rounds` rounds (each measurement on a fresh database; the order flips every
//! round), and ends with the per-setting medians of p50/p90/p99/max over the rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstate::sqlite::{Durability, SqliteOptions};
use flagstate_core::Store;
use flagstate_core::indexer::{Indexer, IndexerConfig};
use flagstate_core::registry::{RegistryClient, RegistryConfig};
use flagstate_core::testkit::{ImageSpec, PushedImage, TestRegistry, TestRegistryOptions};
use futures::stream::{self, StreamExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> Result<T, Error> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number").into()),
        None => Ok(default),
    }
}

/// The `--synchronous` settings to measure, in the order of the first round.
fn settings() -> Result<Vec<Durability>, Error> {
    let args: Vec<String> = std::env::args().collect();
    let value = match args.iter().position(|a| a == "--synchronous") {
        Some(i) => args
            .get(i + 1)
            .map(String::as_str)
            .ok_or("--synchronous needs full, normal or both")?,
        None => "full",
    };
    match value {
        "full" => Ok(vec![Durability::Full]),
        "normal" => Ok(vec![Durability::Normal]),
        "both" => Ok(vec![Durability::Full, Durability::Normal]),
        other => Err(format!("--synchronous {other:?}: use full, normal or both").into()),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let rate: u64 = arg("--rate", 100)?;
    let count: usize = arg("--events", 1000)?;
    let rounds: usize = arg("--rounds", 1)?;
    let settings = settings()?;
    let registry = TestRegistry::start(TestRegistryOptions::default()).await?;
    let pusher = registry.pusher();

    eprintln!("pushing {count} untagged images");
    let started = Instant::now();
    let pushed: Vec<_> = stream::iter(0..count)
        .map(|i| {
            let pusher = pusher.clone();
            async move {
                let spec = ImageSpec::new("linux", "amd64")
                    .label(
                        "org.flatpak.ref",
                        &format!("app/org.bench.App{i}/x86_64/stable"),
                    )
                    .label("name", &format!("App {i}"));
                let repository = format!("bench/app{}", i % 100);
                let image = pusher.push_image(&repository, None, &spec).await?;
                Ok::<_, Error>((repository, format!("v{i}"), image))
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    eprintln!("pushed in {:.1?}", started.elapsed());

    let mut results: Vec<(Durability, Summary)> = Vec::new();
    for round in 0..rounds.max(1) {
        let mut order = settings.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for durability in order {
            let summary = measure(&registry, &pushed, rate, durability).await?;
            println!(
                "round {} synchronous={}: {count} notifications at {rate}/s (achieved {:.0}/s): event → visible p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}",
                round + 1,
                durability.pragma(),
                summary.achieved,
                summary.p50,
                summary.p90,
                summary.p99,
                summary.max,
            );
            results.push((durability, summary));
        }
    }
    if rounds > 1 {
        for durability in settings {
            let of = |pick: fn(&Summary) -> Duration| {
                let mut values: Vec<Duration> = results
                    .iter()
                    .filter(|(d, _)| *d == durability)
                    .map(|(_, s)| pick(s))
                    .collect();
                values.sort();
                percentile(&values, 0.5)
            };
            println!(
                "median of {rounds} rounds, synchronous={}: p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}",
                durability.pragma(),
                of(|s| s.p50),
                of(|s| s.p90),
                of(|s| s.p99),
                of(|s| s.max),
            );
        }
    }
    Ok(())
}

/// One measurement's figures.
struct Summary {
    achieved: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

/// Serves a fresh database with `durability` and sends one notification per pushed
/// image at `rate` per second.
async fn measure(
    registry: &TestRegistry,
    pushed: &[(String, String, PushedImage)],
    rate: u64,
    durability: Durability,
) -> Result<Summary, Error> {
    let count = pushed.len();
    let dir = tempfile::tempdir()?;
    let options = {
        let mut fields = SqliteOptions::default();
        fields.durability = durability;
        fields
    };
    let store: Arc<dyn Store> = Arc::new(flagstate::sqlite::SqliteStore::open_with(
        dir.path().join("bench.db"),
        options,
    )?);
    let client = RegistryClient::new(RegistryConfig::new(registry.url().parse()?))?;
    let indexer = Arc::new(Indexer::new(
        client,
        store.clone(),
        IndexerConfig::default()
            .with_full_scan_interval(None)
            .with_gc_interval(None)
            // Reconciles follow each event as in production; keep them out of the window.
            .with_reconcile_debounce(Duration::from_secs(60)),
    ));
    let state = flagstate::http::AppState::new(store, Some(indexer), {
        let mut fields = flagstate::http::HttpConfig::default();
        fields.events_allow_anonymous = true;
        fields
    });
    let connections = state.connections();
    let app = flagstate::http::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let config = flagstate::http::ServerConfig::default();
        flagstate::http::serve(listener, app, &config, connections, std::future::pending()).await
    });

    let http = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    let mut tasks = Vec::with_capacity(count);
    let window = Instant::now();
    for (i, (repository, tag, image)) in pushed.iter().cloned().enumerate() {
        ticker.tick().await;
        let http = http.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let envelope = serde_json::json!({"events": [{
                "id": format!("bench-{i}"),
                "timestamp": "2026-01-01T00:00:00Z",
                "action": "push",
                "target": {
                    "mediaType": image.media_type,
                    "digest": image.digest.to_string(),
                    "size": image.size,
                    "repository": repository,
                    "tag": tag,
                },
                "request": {"method": "PUT"},
            }]});
            let sent = Instant::now();
            let answer = http
                .post(format!("{base}/events"))
                .header(
                    "content-type",
                    "application/vnd.docker.distribution.events.v1+json",
                )
                .body(envelope.to_string())
                .send()
                .await?;
            if !answer.status().is_success() {
                return Err(format!("/events answered {}", answer.status()).into());
            }
            let query = format!("{base}/index/static?repository={repository}&tag={tag}");
            loop {
                let body = http.get(&query).send().await?.text().await?;
                if body.contains(image.digest.as_str()) {
                    return Ok::<_, Error>(sent.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.push(task.await??);
    }
    let elapsed = window.elapsed();
    latencies.sort();
    Ok(Summary {
        achieved: count as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p90: percentile(&latencies, 0.90),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}
