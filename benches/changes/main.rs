//! Change feed benchmark: the real `flagstate serve` binary (release, SQLite) beside the
//! real distribution registry with notifications, `WATCHERS` clients following
//! `GET /v2/_flagstate/changes` as Server-Sent Events and `ENDPOINTS` outgoing webhook
//! endpoints (`notifications.endpoints`, receivers in this process), while `PUSHES` tags
//! are pushed through the registry API at `RATE` per second.
//!
//! Reported: from the moment the registry answered a tag's `PUT` to the moment each
//! watcher received its `tag.created` event, p50/p99/max over all watchers and pushes;
//! pushes every watcher received; the same for each webhook endpoint's receipt of the
//! batch carrying the event; the server's peak RSS (`VmHWM`). The baseline is the
//! same path without the feed: the time until `/v2/<name>/_flagstate/tags` lists the
//! tag, polled by one client every 5 ms, which is what the index itself makes visible
//! (event → store → answer) and what a client would see by polling.
//!
//! Run: `cargo bench --bench changes` (`FLAGSTATE_BENCH_WATCHERS`, `…_ENDPOINTS`,
//! `…_PUSHES`, `…_RATE` change the load; defaults 100 watchers, 2 endpoints, 1,000
//! pushes, 100/s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flagstate_core::testkit::{ImageSpec, Notifications, TestRegistry, TestRegistryOptions};

const TOKEN: &str = "bench-events-token";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// When each tag was seen, by whom.
type Seen = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// One watcher: follows the feed from `since`, recording when each `tag.created`
/// arrived, until its task is aborted.
async fn watch(url: String, since: String, seen: Seen) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut response = client
        .get(format!(
            "{url}/v2/_flagstate/changes?since={since}&type=tag.created"
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("open the stream");
    assert_eq!(response.status(), 200, "the feed refused a watcher");
    let mut buffer = String::new();
    loop {
        let Ok(Some(chunk)) = response.chunk().await else {
            return;
        };
        let now = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let event: serde_json::Value =
                        serde_json::from_str(data.trim()).expect("event JSON");
                    if let Some(tag) = event["data"]["tag"].as_str() {
                        let mut seen = seen.lock().expect("lock");
                        seen.entry(tag.to_owned()).or_default().push(now);
                    }
                }
            }
        }
    }
}

/// One webhook endpoint's receipts: when each `tag.created` arrived.
type Received = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(
    axum::extract::State(received): axum::extract::State<Received>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let now = Instant::now();
    let events: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("an event batch");
    let mut received = received.lock().expect("lock");
    for event in events {
        if event["type"] == "io.flagstate.tag.created"
            && let Some(tag) = event["data"]["tag"].as_str()
        {
            received.entry(tag.to_owned()).or_insert(now);
        }
    }
    axum::http::StatusCode::OK
}

/// A webhook receiver on 127.0.0.1; returns its URL.
async fn receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a receiver");
    let addr = listener.local_addr().expect("receiver address");
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(received);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let watchers = env("FLAGSTATE_BENCH_WATCHERS", 100);
    let endpoints = env("FLAGSTATE_BENCH_ENDPOINTS", 2);
    let pushes = env("FLAGSTATE_BENCH_PUSHES", 1000);
    let rate = env("FLAGSTATE_BENCH_RATE", 100).max(1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let registry = TestRegistry::start(TestRegistryOptions {
        notifications: Some(Notifications {
            url: format!("http://127.0.0.1:{port}/events"),
            bearer_token: Some(TOKEN.to_owned()),
            ignore_blobs_and_pulls: true,
        }),
        basic_auth: None,
    })
    .await
    .expect("start the registry");
    let pusher = registry.pusher();
    let repository = "bench/feed";
    let image = pusher
        .push_image(repository, Some("base"), &ImageSpec::new("linux", "amd64"))
        .await
        .expect("push the image");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("index.db");
    let mut received: Vec<Received> = Vec::new();
    let mut config = String::from("notifications:\n  endpoints:\n");
    for i in 0..endpoints {
        let inbox = Received::default();
        let url = receiver(inbox.clone()).await;
        config.push_str(&format!("    - name: bench{i}\n      url: {url}\n"));
        received.push(inbox);
    }
    if endpoints == 0 {
        config = String::new();
    }
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config).expect("write the configuration");
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_flagstate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config_path)
        .args(["--registry", &registry.url(), "--database"])
        .arg(&db)
        .env("FLAGSTATE_DEFAULT_CONFIG", "")
        .env("FLAGSTATE_EVENTS__TOKEN", TOKEN)
        .env("FLAGSTATE_LOG__FILTER", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start flagstate serve");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listing = client
        .get(format!("{url}/v2/_flagstate/repositories"))
        .send()
        .await
        .expect("list");
    let since = listing.headers()["flagstate-cursor"]
        .to_str()
        .expect("cursor")
        .to_owned();

    println!(
        "== change feed: {watchers} watchers, {endpoints} webhook endpoints, {pushes} pushes at {rate}/s, SQLite, release binary =="
    );
    let seen: Seen = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        tasks.push(tokio::spawn(watch(
            url.clone(),
            since.clone(),
            seen.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The baseline: one client polling the tag listing for each pushed tag.
    let pushed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let visible: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let poller = {
        let (url, pushed, visible) = (url.clone(), pushed.clone(), visible.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client");
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let Ok(answer) = client
                    .get(format!(
                        "{url}/v2/{repository}/_flagstate/tags?n=1000&sort=-updated"
                    ))
                    .send()
                    .await
                else {
                    continue;
                };
                let now = Instant::now();
                let Ok(body) = answer.json::<serde_json::Value>().await else {
                    continue;
                };
                let waiting: Vec<String> = {
                    let pushed = pushed.lock().expect("lock");
                    let visible = visible.lock().expect("lock");
                    pushed
                        .keys()
                        .filter(|t| !visible.contains_key(*t))
                        .cloned()
                        .collect()
                };
                let listed = body["tags"].as_array().cloned().unwrap_or_default();
                let mut visible = visible.lock().expect("lock");
                for tag in waiting {
                    if listed.iter().any(|t| t["name"] == tag.as_str()) {
                        visible.insert(tag, now);
                    }
                }
            }
        })
    };

    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    for i in 0..pushes {
        let due = started + every * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let tag = format!("t{i:05}");
        pusher
            .tag(repository, &tag, &image.digest)
            .await
            .expect("tag through the registry");
        pushed.lock().expect("lock").insert(tag, Instant::now());
    }
    let pushing = started.elapsed();
    // Wait for the stragglers (at most 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let complete = {
            let seen = seen.lock().expect("lock");
            seen.len() == pushes && seen.values().all(|v| v.len() == watchers)
        } && received.iter().all(|r| {
            let received = r.lock().expect("lock");
            received.keys().filter(|t| t.starts_with('t')).count() >= pushes
        });
        if complete || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Streams never end by themselves: stop the watchers and the poller.
    for task in &tasks {
        task.abort();
    }
    poller.abort();

    let pushed = pushed.lock().expect("lock");
    let seen = seen.lock().expect("lock");
    let mut feed = Vec::new();
    let mut complete = 0;
    for (tag, at) in pushed.iter() {
        if let Some(times) = seen.get(tag) {
            complete += usize::from(times.len() == watchers);
            feed.extend(times.iter().map(|t| t.saturating_duration_since(*at)));
        }
    }
    feed.sort();
    let visible = visible.lock().expect("lock");
    let mut listed: Vec<Duration> = pushed
        .iter()
        .filter_map(|(tag, at)| visible.get(tag).map(|t| t.saturating_duration_since(*at)))
        .collect();
    listed.sort();
    println!(
        "pushing took {:.1} s ({:.0}/s)",
        pushing.as_secs_f64(),
        pushes as f64 / pushing.as_secs_f64()
    );
    println!(
        "feed (push -> every watcher's event): {} deliveries, {complete}/{pushes} pushes reached all {watchers} watchers; p50 {}, p99 {}, max {}",
        feed.len(),
        ms(percentile(&feed, 0.5)),
        ms(percentile(&feed, 0.99)),
        ms(feed.last().copied().unwrap_or_default())
    );
    println!(
        "baseline (push -> listed by a 5 ms poller): {}/{pushes} seen; p50 {}, p99 {}, max {}",
        listed.len(),
        ms(percentile(&listed, 0.5)),
        ms(percentile(&listed, 0.99)),
        ms(listed.last().copied().unwrap_or_default())
    );
    for (i, inbox) in received.iter().enumerate() {
        let inbox = inbox.lock().expect("lock");
        let mut hooks: Vec<Duration> = pushed
            .iter()
            .filter_map(|(tag, at)| inbox.get(tag).map(|t| t.saturating_duration_since(*at)))
            .collect();
        hooks.sort();
        println!(
            "webhook bench{i} (push -> batch received): {}/{pushes} received; p50 {}, p99 {}, max {}",
            hooks.len(),
            ms(percentile(&hooks, 0.5)),
            ms(percentile(&hooks, 0.99)),
            ms(hooks.last().copied().unwrap_or_default())
        );
    }
    println!("server peak RSS: {} MiB", peak_rss_kib(server.id()) / 1024);
    let _ = server.kill();
    let _ = server.wait();
}
