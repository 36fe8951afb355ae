//! Fills a registry with test images, reads it back raw, or scans it with the indexer —
//! the three halves of the scan benchmark (`scripts/bench-scan`).
//!
//! ```text
//! cargo run --release --example populate -- push --registry http://127.0.0.1:5000/ --images 10000 --repos 1000
//! cargo run --release --example populate -- raw  --registry http://127.0.0.1:5000/ --concurrency 16
//! cargo run --release --example populate -- scan --registry http://127.0.0.1:5000/ --concurrency 16
//! cargo run --release --example populate -- raw-rescan --registry http://127.0.0.1:5000/ --concurrency 16
//! cargo run --release --example populate -- apps --registry http://127.0.0.1:5000/
//! cargo run --release --example populate -- store --database /tmp/index.db --images 100000
//! ```
//!
//! `push` writes `--images` tags spread over `--repos` repositories: seven in ten are
//! single images, three in ten multi-arch lists (OCI indexes and Docker lists) of two or
//! three images; every image has a few random labels, a quarter of them Flatpak-style
//! ones. `raw` fetches exactly what a first full scan fetches (catalog, tags, manifests,
//! list children, configs) with the same concurrency and no processing, which is the
//! registry's own rate. `scan` runs a full scan into memory, then a re-scan. `raw-rescan` is
//! the registry's own rate for what a re-scan of an unchanged registry must ask: the catalog,
//! one `tags/list` per repository and one question per tag, asked two ways — a `HEAD`, and a
//! `GET` carrying `If-None-Match: "<known digest>"` that the registry answers `304` without
//! reading the manifest.
//!
//! `store` writes the synthetic registry of the store benchmarks
//! (`flagstate_core::testkit::workload`: ten images per repository, one repository in ten
//! a Flatpak application) straight into a SQLite index at `--database PATH`, no registry
//! involved: `--images N` (rounded up to whole repositories). `flagstate serve --read-only
//! --database PATH` then serves it (`scripts/load-memory` does).
//!
//! `apps` pushes the sample Flatpak applications of the development environment
//! (`scripts/dev-env`): each as `apps/<id>:latest`, with the labels `flatpak build-bundle
//! --oci` writes (valid metadata, AppStream and icon) and a layer `podman pull` can
//! unpack.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flagstate_core::indexer::{Indexer, IndexerConfig, NoProgress};
use flagstate_core::registry::{MANIFEST_ACCEPT, RegistryClient, RegistryConfig, RetryPolicy};
use flagstate_core::testkit::{ImageSpec, ListFormat, Pusher};
use flagstate_core::{MemoryStore, Store};
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

#[allow(dead_code)]
#[path = "../tests/common/images.rs"]
mod images;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    mode: String,
    options: HashMap<String, String>,
}

impl Args {
    fn parse() -> Result<Args, Error> {
        let mut raw = std::env::args().skip(1);
        let mode = raw.next().ok_or("usage: populate push|apps|raw|raw-rescan|scan --registry URL [--images N --repos M --concurrency C --seed S]")?;
        let mut options = HashMap::new();
        while let Some(key) = raw.next() {
            let key = key
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {key:?}"))?;
            let value = raw.next().ok_or_else(|| format!("--{key} needs a value"))?;
            options.insert(key.to_owned(), value);
        }
        Ok(Args { mode, options })
    }

    fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, Error> {
        match self.options.get(key) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: cannot read {v:?}").into()),
            None => Ok(default),
        }
    }

    fn registry(&self) -> Result<String, Error> {
        let url = self
            .options
            .get("registry")
            .ok_or("--registry URL is required")?;
        Ok(if url.ends_with('/') {
            url.clone()
        } else {
            format!("{url}/")
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse()?;
    match args.mode.as_str() {
        "push" => push(&args).await,
        "raw" => raw(&args).await,
        "raw-rescan" => raw_rescan(&args).await,
        "scan" => scan(&args).await,
        "apps" => apps(&args).await,
        "store" => store(&args).await,
        other => Err(format!(
            "unknown mode {other:?}; use push, apps, raw, raw-rescan, scan or store"
        )
        .into()),
    }
}

/// `store`: the benchmark workload written into a SQLite index.
async fn store(args: &Args) -> Result<(), Error> {
    use flagstate_core::testkit::workload::{IMAGES_PER_REPOSITORY, repository};
    let path = args
        .options
        .get("database")
        .ok_or("--database PATH is required")?;
    let images: usize = args.get("images", 10_000)?;
    let repositories = images.div_ceil(IMAGES_PER_REPOSITORY);
    let store = flagstate_sqlite::SqliteStore::open(path)?;
    let started = Instant::now();
    for i in 0..repositories {
        store.replace_repository(&repository(i)).await?;
        if (i + 1) % 1000 == 0 {
            eprintln!("{} of {repositories} repositories", i + 1);
        }
    }
    let took = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {repositories} repositories ({} images) in {took:.1} s",
        repositories * IMAGES_PER_REPOSITORY
    );
    Ok(())
}

const ARCHES: &[&str] = &["amd64", "arm64", "ppc64le", "s390x"];
const WORDS: &[&str] = &[
    "editor", "viewer", "player", "shell", "runtime", "sdk", "tool", "game", "office", "chat",
];

fn image_spec(rng: &mut StdRng, id: u64, arch: &str) -> ImageSpec {
    let mut spec = ImageSpec::new("linux", arch).label("bench.id", &id.to_string());
    for _ in 0..rng.random_range(1..=5) {
        let word = WORDS[rng.random_range(0..WORDS.len())];
        spec = spec.label(
            &format!("org.example.{word}"),
            &format!("{word}-{}", rng.random_range(0..1000)),
        );
    }
    if rng.random_range(0..4) == 0 {
        let word = WORDS[rng.random_range(0..WORDS.len())];
        let app = format!("org.example.{word}{id}");
        spec = spec
            .label("org.flatpak.ref", &format!("app/{app}/x86_64/stable"))
            .label(
                "org.flatpak.metadata",
                &format!("[Application]\nname={app}\n"),
            )
            .label(
                "org.flatpak.download-size",
                &rng.random_range(1_000_000..90_000_000u64).to_string(),
            )
            .label(
                "org.freedesktop.appstream.appdata",
                &format!("<component><id>{app}</id></component>"),
            )
            .annotation("org.opencontainers.image.title", &app);
    }
    if rng.random_range(0..2) == 0 {
        spec = spec.docker();
    }
    spec
}

async fn push(args: &Args) -> Result<(), Error> {
    let registry = args.registry()?;
    let images: u64 = args.get("images", 1000)?;
    let repos: u64 = args.get("repos", 100)?.max(1);
    let concurrency: usize = args.get("concurrency", 16)?;
    let seed: u64 = args.get("seed", 1)?;
    let pusher = Pusher::new(&registry, None);
    let children = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let results: Vec<Result<(), Error>> = stream::iter(0..images)
        .map(|i| {
            let pusher = pusher.clone();
            let children = children.clone();
            async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i));
                let repo = format!("bench/r{:05}", i % repos);
                let tag = format!("t{}", i / repos);
                if i % 10 < 3 {
                    let n = rng.random_range(2..=3);
                    let specs: Vec<ImageSpec> = (0..n)
                        .map(|k| image_spec(&mut rng, i * 10 + k as u64, ARCHES[k]))
                        .collect();
                    let format = if i % 2 == 0 {
                        ListFormat::OciIndex
                    } else {
                        ListFormat::DockerList
                    };
                    pusher.push_list(&repo, &tag, format, &specs).await?;
                    children.fetch_add(n as u64, Ordering::Relaxed);
                } else {
                    let arch = ARCHES[rng.random_range(0..2)];
                    let spec = image_spec(&mut rng, i * 10, arch);
                    pusher.push_image(&repo, Some(&tag), &spec).await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first failure: {e}");
    }
    let took = started.elapsed();
    println!(
        "pushed {} tags ({} list children) over {repos} repositories in {:.1}s: {:.0} tags/s, {failed} failed",
        images - failed as u64,
        children.load(Ordering::Relaxed),
        took.as_secs_f64(),
        images as f64 / took.as_secs_f64()
    );
    if failed > 0 {
        return Err(format!("{failed} pushes failed").into());
    }
    Ok(())
}

async fn apps(args: &Args) -> Result<(), Error> {
    let registry = args.registry()?;
    let pusher = Pusher::new(&registry, None);
    for app in images::SAMPLE_APPS {
        let text = format!("{} {}: a sample application image\n", app.name, app.version);
        let spec = images::pullable(app.image(), &text);
        let pushed = pusher
            .push_image(&app.repository(), Some("latest"), &spec)
            .await?;
        println!("pushed {}:latest ({})", app.repository(), pushed.digest);
    }
    Ok(())
}

/// The registry's own rate: the requests of a first full scan, with the same
/// concurrency, and nothing done with the answers beyond finding the next request.
/// The plain HTTP client of the raw modes: no retries, no processing, 30 s per request.
fn raw_client() -> Result<reqwest::Client, Error> {
    flagstate_core::registry::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Every repository of the catalog, following its `Link` pages.
async fn catalog(http: &reqwest::Client, registry: &str) -> Result<Vec<String>, Error> {
    let mut repositories = Vec::new();
    let mut next = Some(format!("{registry}v2/_catalog?n=1000"));
    while let Some(url) = next.take() {
        let response = http.get(&url).send().await?.error_for_status()?;
        let link = response
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.split_once('<').and_then(|(_, r)| r.split_once('>')))
            .map(|(u, _)| format!("{}{u}", registry.trim_end_matches('/')));
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
        let page: Vec<String> =
            serde_json::from_value(body["repositories"].clone()).unwrap_or_default();
        if page.is_empty() {
            break;
        }
        repositories.extend(page);
        next = link;
    }
    Ok(repositories)
}

async fn raw(args: &Args) -> Result<(), Error> {
    let registry = args.registry()?;
    let concurrency: usize = args.get("concurrency", 16)?;
    let http = raw_client()?;
    let limit = Arc::new(Semaphore::new(concurrency));
    let get = |url: String, accept: bool| {
        let http = http.clone();
        let limit = limit.clone();
        async move {
            let _permit = limit.acquire().await?;
            let mut request = http.get(&url);
            if accept {
                request = request.header("Accept", MANIFEST_ACCEPT);
            }
            let response = request.send().await?.error_for_status()?;
            let link = response
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| {
                    l.split_once('<')
                        .and_then(|(_, r)| r.split_once('>'))
                        .map(|(u, _)| u.to_owned())
                });
            let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
            Ok::<_, Error>((body, link))
        }
    };
    let started = Instant::now();
    let repositories = catalog(&http, &registry).await?;
    let manifests = AtomicU64::new(0);
    let blobs = AtomicU64::new(0);
    let results: Vec<Result<(), Error>> = stream::iter(repositories.iter())
        .map(|repo| {
            let (get, registry, manifests, blobs) = (&get, &registry, &manifests, &blobs);
            async move {
                let (tags, _) = get(format!("{registry}v2/{repo}/tags/list"), false).await?;
                let tags: Vec<String> =
                    serde_json::from_value(tags["tags"].clone()).unwrap_or_default();
                for tag in tags {
                    let (manifest, _) =
                        get(format!("{registry}v2/{repo}/manifests/{tag}"), true).await?;
                    manifests.fetch_add(1, Ordering::Relaxed);
                    let mut images = Vec::new();
                    if let Some(children) = manifest["manifests"].as_array() {
                        for child in children {
                            let digest = child["digest"].as_str().unwrap_or_default();
                            let (m, _) =
                                get(format!("{registry}v2/{repo}/manifests/{digest}"), true)
                                    .await?;
                            manifests.fetch_add(1, Ordering::Relaxed);
                            images.push(m);
                        }
                    } else {
                        images.push(manifest);
                    }
                    for image in images {
                        let config = image["config"]["digest"].as_str().unwrap_or_default();
                        get(format!("{registry}v2/{repo}/blobs/{config}"), false).await?;
                        blobs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let took = started.elapsed();
    let manifests = manifests.load(Ordering::Relaxed);
    println!(
        "raw read of {} repositories: {manifests} manifests + {} configs in {:.2}s: {:.0} manifests/s ({failed} repositories failed)",
        repositories.len(),
        blobs.load(Ordering::Relaxed),
        took.as_secs_f64(),
        manifests as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Reads the catalog, then every repository's tags with their digests (untimed), then
/// times the two ways of asking "has this tag moved?" over the whole registry.
async fn raw_rescan(args: &Args) -> Result<(), Error> {
    let registry = args.registry()?;
    let concurrency: usize = args.get("concurrency", 16)?;
    let http = raw_client()?;
    let repositories = catalog(&http, &registry).await?;
    let tags_of = |repo: String| {
        let http = http.clone();
        let registry = registry.clone();
        async move {
            let response = http
                .get(format!("{registry}v2/{repo}/tags/list"))
                .send()
                .await?
                .error_for_status()?;
            let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
            let tags: Vec<String> =
                serde_json::from_value(body["tags"].clone()).unwrap_or_default();
            Ok::<_, Error>(tags)
        }
    };
    // Untimed: what the store would already know.
    let known: Vec<(String, Vec<(String, String)>)> = stream::iter(repositories.clone())
        .map(|repo| {
            let (http, registry, tags_of) = (&http, &registry, &tags_of);
            async move {
                let mut out = Vec::new();
                for tag in tags_of(repo.clone()).await? {
                    let response = http
                        .head(format!("{registry}v2/{repo}/manifests/{tag}"))
                        .header("Accept", MANIFEST_ACCEPT)
                        .send()
                        .await?
                        .error_for_status()?;
                    let digest = response
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .ok_or("no Docker-Content-Digest")?
                        .to_owned();
                    out.push((tag, digest));
                }
                Ok::<_, Error>((repo, out))
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let tag_count: usize = known.iter().map(|(_, t)| t.len()).sum();
    for conditional in [false, true, false, true] {
        let started = Instant::now();
        let unchanged = AtomicU64::new(0);
        let results: Vec<Result<(), Error>> = stream::iter(known.iter())
            .map(|(repo, tags)| {
                let (http, registry, tags_of, unchanged) = (&http, &registry, &tags_of, &unchanged);
                async move {
                    tags_of(repo.clone()).await?;
                    for (tag, digest) in tags {
                        let url = format!("{registry}v2/{repo}/manifests/{tag}");
                        let request = if conditional {
                            http.get(&url)
                                .header("If-None-Match", format!("\"{digest}\""))
                        } else {
                            http.head(&url)
                        };
                        let response = request.header("Accept", MANIFEST_ACCEPT).send().await?;
                        let status = response.status();
                        response.bytes().await?;
                        if status == reqwest::StatusCode::NOT_MODIFIED || status.is_success() {
                            unchanged.fetch_add(
                                u64::from(
                                    status == reqwest::StatusCode::NOT_MODIFIED || !conditional,
                                ),
                                Ordering::Relaxed,
                            );
                        } else {
                            return Err(format!("{url}: {status}").into());
                        }
                    }
                    Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let took = started.elapsed();
        let failed = results.iter().filter(|r| r.is_err()).count();
        println!(
            "raw re-scan with {}: {} repositories, {tag_count} tags ({} unchanged) in {:.2}s: {:.0} tags/s ({failed} repositories failed)",
            if conditional {
                "conditional GET"
            } else {
                "HEAD"
            },
            known.len(),
            unchanged.load(Ordering::Relaxed),
            took.as_secs_f64(),
            tag_count as f64 / took.as_secs_f64()
        );
    }
    Ok(())
}

async fn scan(args: &Args) -> Result<(), Error> {
    let registry = args.registry()?;
    let concurrency: usize = args.get("concurrency", 16)?;
    let mut cfg = RegistryConfig::new(registry.parse()?);
    cfg.max_concurrency = concurrency;
    cfg.retry = RetryPolicy::default();
    let client = RegistryClient::new(cfg)?;
    let store = Arc::new(MemoryStore::new());
    let indexer = Indexer::new(
        client,
        store.clone() as Arc<dyn Store>,
        IndexerConfig::default()
            .with_concurrency(concurrency)
            .with_full_scan_interval(None)
            .with_gc_interval(None),
    );
    let first = indexer.full_scan(&NoProgress).await?;
    println!(
        "full scan: {} repositories, {} tags, {} manifests + {} configs in {:.2}s: {:.0} manifests/s ({} failed)",
        first.repositories_scanned,
        first.tags_seen,
        first.manifests_fetched,
        first.blobs_fetched,
        first.duration.as_secs_f64(),
        first.manifests_fetched as f64 / first.duration.as_secs_f64(),
        first.repositories_failed.len()
    );
    let before = indexer.client().stats();
    let second = indexer.full_scan(&NoProgress).await?;
    let after = indexer.client().stats();
    println!(
        "re-scan: {:.2}s, {} conditional GETs ({} answered 304), {} HEADs, {} manifest GETs, {} blob GETs: {:.0} tags/s",
        second.duration.as_secs_f64(),
        after.manifest_checks - before.manifest_checks,
        after.manifest_not_modified - before.manifest_not_modified,
        after.manifest_heads - before.manifest_heads,
        after.manifest_gets - before.manifest_gets,
        after.blob_gets - before.blob_gets,
        second.tags_seen as f64 / second.duration.as_secs_f64()
    );
    Ok(())
}
