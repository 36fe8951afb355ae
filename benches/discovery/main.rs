//! Content discovery benchmark: the `/v2/_flagstate/…` endpoints through the
//! `flagstate-http` router, as an embedder serves it (parsing, store, JSON, ETag), over
//! SQLite and, when `FLAGSTATE_TEST_PG_URL` is set, PostgreSQL; in-process
//! (`tower::ServiceExt::oneshot`) and over local HTTP (`flagstate_http::serve` on a
//! loopback port). The baseline is the CNCF distribution registry of the test kit over
//! HTTP, holding the same many-tag repository, measured in the same rounds (alternating
//! which side goes first).
//!
//! Data: the synthetic registry of `flagstate_core::testkit::workload` (10 images per
//! repository; `FLAGSTATE_BENCH_IMAGES`, default 100 000) plus `bench/many-tags`: one
//! image tagged `FLAGSTATE_BENCH_TAGS` times (default 10 000) in an order that is not
//! name order, in growing snapshots of 100 new tags (one time per snapshot, one second
//! apart), the newest 20 by one `apply` each with a time of its own. The registry holds
//! the same image under the same tags.
//!
//! Run: `FLAGSTATE_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench discovery --features postgres,sqlite`.
//! The PostgreSQL store lives in a fresh schema that is dropped afterwards, and the
//! SQLite store in a temporary directory, unless `FLAGSTATE_BENCH_KEEP` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, header};
use flagstate_core::model::OCI_MANIFEST;
use flagstate_core::testkit::workload::{IMAGES_PER_REPOSITORY, repository};
use flagstate_core::testkit::{ImageSpec, PushedImage, TestRegistry, TestRegistryOptions};
use flagstate_core::{
    Digest, Image, Manifest, Platform, RepositoryName, RepositorySnapshot, Store, Tag, TagChange,
    Timestamp,
};
use flagstate_http::{AppState, HttpConfig, ServerConfig, router};
use futures::StreamExt;
use tower::ServiceExt;

/// The repository with many tags, in the index and in the registry.
const MANY_TAGS: &str = "bench/many-tags";
/// 2026-02-01T00:00:00Z, the first tag time of the many-tag repository: after every
/// time of the workload (one second per repository from 2026-01-01).
const TAG_TIMES_FROM: i64 = 1_769_904_000_000;
/// Requests in flight while tagging the registry.
const TAGGERS: usize = 8;
/// Writers of the workload load (as in `pg_store`).
const WRITERS: usize = 4;
/// Runs of each single-request case in-process.
const RUNS: usize = 300;
/// Runs of each walk in-process.
const WALKS: usize = 10;
/// A/B rounds over HTTP; per round and side, `HTTP_RUNS` single requests and
/// `HTTP_WALKS` walks of each case.
const ROUNDS: usize = 6;
const HTTP_RUNS: usize = 50;
const HTTP_WALKS: usize = 3;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// `VmHWM` (peak resident set) and `VmRSS` of this process, as /proc states them.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "?".to_owned())
    };
    format!("VmHWM {}, VmRSS {}", field("VmHWM:"), field("VmRSS:"))
}

/// One answer: status, `Link` header and body.
struct Answer {
    status: u16,
    link: Option<String>,
    body: Bytes,
}

fn link_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::LINK)
        .map(|l| l.to_str().expect("Link is text").to_owned())
}

/// The URL of a `Link: <URL>; rel="next"` header, verbatim.
fn next_url(link: &str) -> String {
    link.strip_prefix('<')
        .and_then(|l| l.split_once(">; rel=\"next\""))
        .map(|(url, _)| url.to_owned())
        .unwrap_or_else(|| panic!("not a next link: {link}"))
}

/// Where requests go: the router in-process, or a server over HTTP.
#[derive(Clone)]
enum Target {
    Router(axum::Router),
    Http {
        client: reqwest::Client,
        /// `http://127.0.0.1:PORT`, without a trailing slash.
        base: String,
    },
}

impl Target {
    async fn get(&self, uri: &str) -> Answer {
        let answer = match self {
            Target::Router(app) => {
                let request = Request::get(uri).body(Body::empty()).expect("request");
                let response = app.clone().oneshot(request).await.expect("router");
                let status = response.status().as_u16();
                let link = link_of(response.headers());
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .expect("body");
                Answer { status, link, body }
            }
            Target::Http { client, base } => {
                let url = if uri.starts_with("http") {
                    uri.to_owned()
                } else {
                    format!("{base}{uri}")
                };
                let response = client.get(&url).send().await.expect("GET");
                let status = response.status().as_u16();
                let link = link_of(response.headers());
                let body = response.bytes().await.expect("body");
                Answer { status, link, body }
            }
        };
        assert_eq!(
            answer.status,
            200,
            "{uri}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        answer
    }

    /// One request; its time and body size.
    async fn single(&self, uri: &str) -> (Duration, usize) {
        let started = Instant::now();
        let answer = self.get(uri).await;
        let elapsed = started.elapsed();
        (elapsed, answer.body.len())
    }

    /// A walk from `first` following `Link` headers: its time, pages and bytes.
    async fn walk(&self, first: &str) -> (Duration, usize, usize) {
        let started = Instant::now();
        let mut uri = first.to_owned();
        let (mut pages, mut bytes) = (0, 0);
        loop {
            let answer = self.get(&uri).await;
            pages += 1;
            bytes += answer.body.len();
            match answer.link {
                Some(link) => uri = next_url(&link),
                None => break,
            }
        }
        (started.elapsed(), pages, bytes)
    }

    /// A walk that reads the items: the value at JSON pointer `field` of every item of
    /// `list` (or the item itself when it is a string), in walk order.
    async fn walk_items(&self, first: &str, list: &str, field: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut uri = Some(first.to_owned());
        while let Some(next) = uri {
            let answer = self.get(&next).await;
            let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
            for item in body[list].as_array().expect("a list") {
                let name = item
                    .as_str()
                    .or_else(|| item.pointer(field).and_then(|v| v.as_str()));
                seen.push(name.expect("a name").to_owned());
            }
            uri = answer.link.as_deref().map(next_url);
        }
        seen
    }
}

/// Times of one case.
#[derive(Default)]
struct Samples {
    times: Vec<Duration>,
    /// Pages of one walk (1 for a single request).
    pages: usize,
    /// Body bytes of one run.
    bytes: usize,
}

impl Samples {
    fn add(&mut self, time: Duration, pages: usize, bytes: usize) {
        self.times.push(time);
        self.pages = pages;
        self.bytes = bytes;
    }
}

/// One line of the summary table.
struct Row {
    store: &'static str,
    case: String,
    side: &'static str,
    p50: Duration,
    p99: Duration,
    runs: usize,
    per_second: f64,
    pages: usize,
    bytes: usize,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, store: &'static str, case: &str, side: &'static str, mut samples: Samples) {
        samples.times.sort();
        let total: Duration = samples.times.iter().sum();
        let row = Row {
            store,
            case: case.to_owned(),
            side,
            p50: percentile(&samples.times, 0.5),
            p99: percentile(&samples.times, 0.99),
            runs: samples.times.len(),
            per_second: samples.times.len() as f64 * samples.pages as f64 / total.as_secs_f64(),
            pages: samples.pages,
            bytes: samples.bytes,
        };
        println!(
            "{store:<10} {side:<18} {case:<48} p50 {:>8} ms  p99 {:>8} ms  {:>6} runs  {:>8.0} req/s  {} pages, {} bytes",
            ms(row.p50),
            ms(row.p99),
            row.runs,
            row.per_second,
            row.pages,
            row.bytes
        );
        self.rows.push(row);
    }

    fn print_markdown(&self) {
        println!("\n| store | side | case | p50 ms | p99 ms | runs | req/s | pages | bytes/run |");
        println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
                r.store,
                r.side,
                r.case,
                ms(r.p50),
                ms(r.p99),
                r.runs,
                r.per_second,
                r.pages,
                r.bytes
            );
        }
    }
}

/// Tags per snapshot of the many-tag repository's load.
const TAG_BATCH: usize = 100;
/// The newest tags of the many-tag repository, added by one `apply` each.
const APPLIED_TAGS: usize = 20;

/// The many-tag repository's tags, oldest first, with their times: `t00000`… in the
/// order of the SHA-256 of the name, so time order is not name order. All but the newest
/// [`APPLIED_TAGS`] are loaded [`TAG_BATCH`] per snapshot (one time per snapshot, one
/// second apart), the newest by one `apply` each, each a second after the previous.
struct TagPlan {
    tags: Vec<(String, Timestamp)>,
    /// The index of the first tag loaded by `apply`.
    applied_from: usize,
}

impl TagPlan {
    fn new(count: usize) -> Self {
        let mut names: Vec<String> = (0..count).map(|t| format!("t{t:05}")).collect();
        names.sort_by_cached_key(|t| Digest::sha256_of(t.as_bytes()).to_string());
        let applied_from = count.saturating_sub(APPLIED_TAGS);
        let tags = names
            .into_iter()
            .enumerate()
            .map(|(rank, name)| {
                let step = if rank < applied_from {
                    rank / TAG_BATCH
                } else {
                    applied_from.div_ceil(TAG_BATCH) + (rank - applied_from)
                };
                let step = i64::try_from(step).expect("step");
                (name, Timestamp::from_millis(TAG_TIMES_FROM + step * 1000))
            })
            .collect();
        TagPlan { tags, applied_from }
    }

    fn len(&self) -> usize {
        self.tags.len()
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|(name, _)| name.as_str())
    }

    /// The tags in `sort=-updated` order: newest first, ties by name.
    fn newest_first(&self) -> Vec<&str> {
        let mut tags: Vec<&(String, Timestamp)> = self.tags.iter().collect();
        tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        tags.into_iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// The registry baseline: the many-tag repository pushed and tagged.
struct Baseline {
    registry: TestRegistry,
    image: PushedImage,
}

async fn start_registry(tags: &[String]) -> Option<Baseline> {
    let registry = match TestRegistry::start(TestRegistryOptions::default()).await {
        Ok(registry) => registry,
        Err(e) => {
            eprintln!("discovery: no registry baseline, the test registry cannot start: {e}");
            return None;
        }
    };
    let pusher = registry.pusher();
    let started = Instant::now();
    let image = pusher
        .push_image(MANY_TAGS, Some(&tags[0]), &ImageSpec::new("linux", "amd64"))
        .await
        .expect("push the image");
    // The manifest's bytes once, then one PUT per tag (what `Pusher::tag` does after a
    // GET of the same bytes).
    let client = http_client();
    let manifest = client
        .get(format!(
            "{}v2/{MANY_TAGS}/manifests/{}",
            registry.url(),
            image.digest
        ))
        .header(header::ACCEPT, OCI_MANIFEST)
        .send()
        .await
        .expect("GET manifest")
        .bytes()
        .await
        .expect("manifest bytes");
    let puts = futures::stream::iter(tags[1..].iter().map(|tag| {
        let (pusher, manifest, media_type) = (&pusher, &manifest, &image.media_type);
        async move {
            pusher
                .put_manifest(MANY_TAGS, tag, media_type, manifest)
                .await
                .expect("tag");
        }
    }))
    .buffer_unordered(TAGGERS)
    .collect::<Vec<()>>();
    puts.await;
    let took = started.elapsed();
    println!(
        "registry: pushed one image and tagged it {} times ({TAGGERS} PUTs in flight) in {:.1} s, {:.0} tags/s",
        tags.len(),
        took.as_secs_f64(),
        tags.len() as f64 / took.as_secs_f64()
    );
    let target = Target::Http {
        client,
        base: registry.url().trim_end_matches('/').to_owned(),
    };
    let listed = target
        .walk_items(
            &format!("/v2/{MANY_TAGS}/tags/list?n={}", tags.len()),
            "tags",
            "",
        )
        .await;
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(
        (listed.len(), unique.len()),
        (tags.len(), tags.len()),
        "the registry lists every tag once"
    );
    let (_, pages, _) = target
        .walk(&format!("/v2/{MANY_TAGS}/tags/list?n=1000"))
        .await;
    println!(
        "registry: tags/list?n=1000 walk takes {pages} page(s){}",
        if pages == 1 {
            " (this registry ignores n on tags/list)"
        } else {
            ""
        }
    );
    Some(Baseline { registry, image })
}

fn http_client() -> reqwest::Client {
    flagstate_core::registry::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// The many-tag repository's image: the registry's when there is one.
fn many_tags_image(pushed: Option<&PushedImage>) -> Image {
    let spec = ImageSpec::new("linux", "amd64");
    Image {
        digest: pushed.map_or_else(
            || Digest::sha256_of(b"bench many-tags image"),
            |p| p.digest.clone(),
        ),
        media_type: pushed.map_or_else(|| OCI_MANIFEST.to_owned(), |p| p.media_type.clone()),
        platform: Platform::new("linux", "amd64"),
        labels: Default::default(),
        annotations: Default::default(),
        created: spec.created,
        config_digest: pushed.map(|p| p.config_digest.clone()),
        size: Some(pushed.map_or(500, |p| p.size)),
    }
}

/// Loads the workload from WRITERS tasks, then the many-tag repository as the plan says:
/// growing snapshots of [`TAG_BATCH`] new tags each, then one `apply` per tag (timed:
/// the cost of a notification on a repository of that many tags).
async fn load(store: &Arc<dyn Store>, repositories: usize, plan: &TagPlan, image: &Image) {
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
    let took = started.elapsed();
    println!(
        "load: {repositories} repositories, {} images ({WRITERS} writers, one snapshot each) in {:.1} s",
        repositories * IMAGES_PER_REPOSITORY,
        took.as_secs_f64()
    );
    let name = RepositoryName::parse(MANY_TAGS).expect("name");
    let tag = |name: &str| Tag::parse(name).expect("tag");
    let started = Instant::now();
    let mut snapshot = RepositorySnapshot {
        artifacts: Default::default(),
        name: name.clone(),
        tags: BTreeMap::new(),
        manifests: vec![Manifest::Image(image.clone())],
        at: Timestamp::from_millis(TAG_TIMES_FROM),
    };
    let batches = plan.tags[..plan.applied_from].chunks(TAG_BATCH);
    let snapshots = batches.len();
    for batch in batches {
        for (name, _) in batch {
            snapshot.tags.insert(tag(name), image.digest.clone());
        }
        snapshot.at = batch[0].1;
        store.replace_repository(&snapshot).await.expect("snapshot");
    }
    println!(
        "load: {MANY_TAGS}: {} tags in {snapshots} growing snapshots of {TAG_BATCH} new tags in {:.1} s",
        plan.applied_from,
        started.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    for (name, at) in &plan.tags[plan.applied_from..] {
        let change = TagChange::Put {
            repository: snapshot.name.clone(),
            tag: tag(name),
            digest: image.digest.clone(),
            manifests: Vec::new(),
            at: *at,
        };
        let started = Instant::now();
        store.apply(&change).await.expect("apply");
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "load: {MANY_TAGS}: {} more tags, one apply each (distinct times): p50 {} ms, max {} ms per apply",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 1.0))
    );
    println!("memory after the load: {}", memory());
}

/// Serves `app` on a loopback port with `flagstate_http::serve`; returns the base URL
/// and what stops it.
async fn serve(
    state: &AppState,
    app: axum::Router,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stats = state.connections();
    let server = tokio::spawn(async move {
        let mut config = ServerConfig::default();
        // The client keeps its connections across rounds.
        config.idle_timeout = Duration::from_secs(300);
        config.shutdown_timeout = Duration::from_secs(5);
        flagstate_http::serve(listener, app, &config, stats, async {
            let _ = stopped.await;
        })
        .await;
    });
    (format!("http://{address}"), stop, server)
}

/// The checks, untimed (and warming up): walks list every item once; the newest tag.
async fn check(target: &Target, repositories: usize, plan: &TagPlan) {
    for sort in ["name", "-updated"] {
        let first = format!("/v2/_flagstate/repositories?n=1000&sort={sort}");
        let seen = target.walk_items(&first, "repositories", "/name").await;
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            (seen.len(), unique.len()),
            (repositories + 1, repositories + 1),
            "{first} lists every repository once"
        );
        let first = format!("/v2/{MANY_TAGS}/_flagstate/tags?n=1000&sort={sort}");
        let seen = target.walk_items(&first, "tags", "/name").await;
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            (seen.len(), unique.len()),
            (plan.len(), plan.len()),
            "{first} lists every tag once"
        );
        if sort == "-updated" {
            assert!(
                seen.iter().map(String::as_str).eq(plan.newest_first()),
                "{first} lists the tags newest first"
            );
        }
    }
    let first = format!("/v2/{MANY_TAGS}/_flagstate/manifests?n=1000");
    let pointer = "/annotations/org.opencontainers.image.ref.name";
    let seen = target.walk_items(&first, "manifests", pointer).await;
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        (seen.len(), unique.len()),
        (plan.len(), plan.len()),
        "{first} lists every tag's descriptor once"
    );
    let answer = target
        .get(&format!(
            "/v2/{MANY_TAGS}/_flagstate/tags?sort=-updated&n=1"
        ))
        .await;
    let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert_eq!(
        body["tags"][0]["name"].as_str(),
        plan.newest_first().first().copied(),
        "the newest tag"
    );
}

/// The single-request cases: (label, URI).
fn single_cases() -> Vec<(&'static str, String)> {
    vec![
        (
            "1a repositories first page n=100, name",
            "/v2/_flagstate/repositories?n=100".to_owned(),
        ),
        (
            "1b repositories first page n=100, -updated",
            "/v2/_flagstate/repositories?n=100&sort=-updated".to_owned(),
        ),
        (
            "3 newest tag (sort=-updated&n=1)",
            format!("/v2/{MANY_TAGS}/_flagstate/tags?sort=-updated&n=1"),
        ),
    ]
}

/// The walks: (label, first URI).
fn walk_cases() -> Vec<(&'static str, String)> {
    vec![
        (
            "2a repositories walk n=1000, name",
            "/v2/_flagstate/repositories?n=1000".to_owned(),
        ),
        (
            "2b repositories walk n=1000, -updated",
            "/v2/_flagstate/repositories?n=1000&sort=-updated".to_owned(),
        ),
        (
            "4a tags walk n=1000, name",
            format!("/v2/{MANY_TAGS}/_flagstate/tags?n=1000"),
        ),
        (
            "4b tags walk n=1000, -updated",
            format!("/v2/{MANY_TAGS}/_flagstate/tags?n=1000&sort=-updated"),
        ),
        (
            "5 manifests walk n=1000 (OCI index, 10,000 descriptors)",
            format!("/v2/{MANY_TAGS}/_flagstate/manifests?n=1000"),
        ),
    ]
}

/// The registry's cases: (label, URI, is a walk).
fn registry_cases(tags: usize) -> Vec<(String, String, bool)> {
    vec![
        (
            format!("3/4 registry tags/list?n={tags} (all tags, no times)"),
            format!("/v2/{MANY_TAGS}/tags/list?n={tags}"),
            false,
        ),
        (
            "4 registry tags/list walk n=1000".to_owned(),
            format!("/v2/{MANY_TAGS}/tags/list?n=1000"),
            true,
        ),
    ]
}

async fn measure(
    label: &'static str,
    store: Arc<dyn Store>,
    repositories: usize,
    plan: &TagPlan,
    baseline: Option<&Baseline>,
    report: &mut Report,
) {
    let state = AppState::new(store, None, HttpConfig::default());
    let app = router(state.clone());
    let in_process = Target::Router(app.clone());
    check(&in_process, repositories, plan).await;

    for (case, uri) in single_cases() {
        let mut samples = Samples::default();
        for _ in 0..RUNS {
            let (time, bytes) = in_process.single(&uri).await;
            samples.add(time, 1, bytes);
        }
        report.add(label, case, "router in-process", samples);
    }
    for (case, uri) in walk_cases() {
        let mut samples = Samples::default();
        for _ in 0..WALKS {
            let (time, pages, bytes) = in_process.walk(&uri).await;
            samples.add(time, pages, bytes);
        }
        report.add(label, case, "router in-process", samples);
    }
    println!("memory after the in-process reads: {}", memory());

    // Over HTTP, alternating with the registry round by round.
    let (base, stop, server) = serve(&state, app).await;
    let client = http_client();
    let over_http = Target::Http {
        client: client.clone(),
        base,
    };
    let registry = baseline.map(|b| Target::Http {
        client: client.clone(),
        base: b.registry.url().trim_end_matches('/').to_owned(),
    });
    check(&over_http, repositories, plan).await;
    let singles = single_cases();
    let walks = walk_cases();
    let theirs = registry_cases(plan.len());
    let mut ours_samples: Vec<Samples> = (0..singles.len() + walks.len())
        .map(|_| Samples::default())
        .collect();
    let mut their_samples: Vec<Samples> = theirs.iter().map(|_| Samples::default()).collect();
    for round in 0..ROUNDS {
        for side in 0..2 {
            if (round + side) % 2 == 0 {
                for (i, (_, uri)) in singles.iter().enumerate() {
                    for _ in 0..HTTP_RUNS {
                        let (time, bytes) = over_http.single(uri).await;
                        ours_samples[i].add(time, 1, bytes);
                    }
                }
                for (i, (_, uri)) in walks.iter().enumerate() {
                    for _ in 0..HTTP_WALKS {
                        let (time, pages, bytes) = over_http.walk(uri).await;
                        ours_samples[singles.len() + i].add(time, pages, bytes);
                    }
                }
            } else if let Some(registry) = &registry {
                for (i, (_, uri, is_walk)) in theirs.iter().enumerate() {
                    if *is_walk {
                        for _ in 0..HTTP_WALKS {
                            let (time, pages, bytes) = registry.walk(uri).await;
                            their_samples[i].add(time, pages, bytes);
                        }
                    } else {
                        for _ in 0..HTTP_RUNS {
                            let (time, bytes) = registry.single(uri).await;
                            their_samples[i].add(time, 1, bytes);
                        }
                    }
                }
            }
        }
    }
    let cases = singles.iter().chain(walks.iter()).map(|(case, _)| *case);
    for (case, samples) in cases.zip(ours_samples) {
        report.add(label, case, "flagstate HTTP", samples);
    }
    if registry.is_some() {
        for ((case, _, _), samples) in theirs.iter().zip(their_samples) {
            report.add(label, case, "registry HTTP", samples);
        }
    }
    drop((over_http, registry, client));
    let _ = stop.send(());
    server.await.expect("server");
    println!("memory after the reads: {}", memory());
}

fn main() {
    let images: usize = std::env::var("FLAGSTATE_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tag_count: usize = std::env::var("FLAGSTATE_BENCH_TAGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        .max(1);
    let repositories = (images / IMAGES_PER_REPOSITORY).max(1);
    let pg_url = std::env::var("FLAGSTATE_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty());
    // Keeping the data allows looking at query plans afterwards.
    let keep = std::env::var_os("FLAGSTATE_BENCH_KEEP").is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "discovery: {repositories} repositories, {} images, plus {MANY_TAGS} with {tag_count} tags",
            repositories * IMAGES_PER_REPOSITORY
        );
        let plan = TagPlan::new(tag_count);
        let names: Vec<String> = plan.names().map(str::to_owned).collect();
        let baseline = start_registry(&names).await;
        let image = many_tags_image(baseline.as_ref().map(|b| &b.image));
        println!("memory at the start: {}", memory());
        let mut report = Report::default();

        println!("\n== SQLite ==");
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = flagstate_sqlite::SqliteStore::open(dir.path().join("bench.db"))
            .expect("open sqlite");
        let store: Arc<dyn Store> = Arc::new(sqlite);
        load(&store, repositories, &plan, &image).await;
        measure(
            "SQLite",
            store,
            repositories,
            &plan,
            baseline.as_ref(),
            &mut report,
        )
        .await;
        if keep {
            println!("kept {}", dir.keep().join("bench.db").display());
        }

        match pg_url {
            #[cfg(feature = "postgres")]
            Some(url) => {
                use flagstate_pg::{PgOptions, PgStore};
                println!("\n== PostgreSQL ==");
                let schema = format!("flagstate_bench_discovery_{}", std::process::id());
                let options = PgOptions::default()
                    .with_schema(Some(schema.clone()))
                    .with_max_connections(8);
                let pg = PgStore::connect(&url, options).await.expect("connect");
                let store: Arc<dyn Store> = Arc::new(pg.clone());
                load(&store, repositories, &plan, &image).await;
                measure(
                    "PostgreSQL",
                    store,
                    repositories,
                    &plan,
                    baseline.as_ref(),
                    &mut report,
                )
                .await;
                pg.close().await;
                if keep {
                    println!("kept schema {schema}");
                } else {
                    drop_schema(&url, &schema).await;
                }
            }
            #[cfg(not(feature = "postgres"))]
            Some(_) => eprintln!("discovery: built without the postgres feature, skipping it"),
            None => eprintln!("discovery: FLAGSTATE_TEST_PG_URL is not set, skipping PostgreSQL"),
        }
        report.print_markdown();
        drop(baseline);
    });
}

#[cfg(feature = "postgres")]
async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    match sqlx::PgConnection::connect(url).await {
        Ok(mut conn) => {
            let ddl = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            match sqlx::query(sqlx::AssertSqlSafe(ddl))
                .execute(&mut conn)
                .await
            {
                Ok(_) => println!("dropped schema {schema}"),
                Err(e) => eprintln!("could not drop {schema}: {e}"),
            }
        }
        Err(e) => eprintln!("could not drop {schema}: {e}"),
    }
}
