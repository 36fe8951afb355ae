//! The change feed (`GET /v2/_flagstate/changes`): list-then-watch against the real
//! registry with notifications, over Server-Sent Events across a server restart
//! (`Last-Event-ID`), long polls, bad input; and, in process, expired cursors (`410`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::images::HELLO;
use common::{EVENTS_TOKEN, Server, free_port, http_client, registry};
use flagstate_core::conformance::fixtures::{image, put_image};
use flagstate_core::testkit::ImageSpec;
use flagstate_core::{ChangeRetention, MemoryStore, Store, Timestamp};
use flagstate_http::{AppState, HttpConfig, router};
use serde_json::Value;
use tower::ServiceExt;

/// repository → tag → digest.
type Mirror = BTreeMap<String, BTreeMap<String, String>>;

/// Lists everything through the discovery listings; returns the state and the
/// `Flagstate-Cursor` of the first listing (read before everything else).
async fn list(server: &Server) -> (Mirror, String) {
    let client = http_client();
    let response = client
        .get(format!("{}/v2/_flagstate/repositories?n=1000", server.url))
        .send()
        .await
        .unwrap();
    let cursor = response.headers()["flagstate-cursor"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let mut mirror = Mirror::new();
    for repository in body["repositories"].as_array().unwrap() {
        let name = repository["name"].as_str().unwrap();
        let url = format!("{}/v2/{name}/_flagstate/tags?n=1000", server.url);
        let tags: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        let tags = tags["tags"].as_array().unwrap().iter().map(|t| {
            let tag = t["name"].as_str().unwrap().to_owned();
            (tag, t["digest"].as_str().unwrap().to_owned())
        });
        mirror.insert(name.to_owned(), tags.collect());
    }
    (mirror, cursor)
}

/// Applies one change event to `mirror`.
fn apply(mirror: &mut Mirror, event: &Value) {
    let data = &event["data"];
    let repository = data["repository"].as_str().unwrap().to_owned();
    let tag = data["tag"].as_str().map(str::to_owned);
    match event["type"].as_str().unwrap() {
        "io.flagstate.repository.created" => {
            mirror.entry(repository).or_default();
        }
        "io.flagstate.repository.deleted" => {
            mirror.remove(&repository);
        }
        "io.flagstate.tag.created" | "io.flagstate.tag.updated" => {
            let digest = data["digest"].as_str().unwrap().to_owned();
            mirror
                .entry(repository)
                .or_default()
                .insert(tag.unwrap(), digest);
        }
        "io.flagstate.tag.deleted" => {
            if let Some(tags) = mirror.get_mut(&repository) {
                tags.remove(&tag.unwrap());
            }
        }
        other => panic!("unknown event type {other}"),
    }
}

/// An event stream: `(id, event)` pairs as they arrive.
struct Watcher {
    response: reqwest::Response,
    buffer: String,
}

impl Watcher {
    async fn open(server: &Server, since: Option<&str>, last_event_id: Option<&str>) -> Watcher {
        let mut url = format!("{}/v2/_flagstate/changes", server.url);
        if let Some(since) = since {
            url.push_str(&format!("?since={since}"));
        }
        let mut request = http_client().get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Watcher {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, within 30 s.
    async fn next(&mut self) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return (id, data);
                }
                continue; // a keep-alive comment
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .expect("an event within 30 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until `mirror` equals `wanted` (within 30 s); returns the last id.
    async fn until(&mut self, mirror: &mut Mirror, wanted: &Mirror, last: &mut String) {
        while mirror != wanted {
            let (id, event) = self.next().await;
            assert_eq!(event["id"], id.as_str(), "the CloudEvents id is the cursor");
            assert_eq!(event["specversion"], "1.0");
            apply(mirror, &event);
            *last = id;
        }
    }
}

async fn wait_listed(server: &Server, what: &str, done: impl Fn(&Mirror) -> bool) -> Mirror {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (mirror, _) = list(server).await;
        if done(&mirror) {
            return mirror;
        }
        assert!(Instant::now() < deadline, "never listed {what}: {mirror:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_listed_first_ends_with_the_registry_state_across_a_restart() {
    let port = free_port();
    let Some(registry) = registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    let hello = HELLO.repository();
    pusher
        .push_image(&hello, Some("latest"), &HELLO.image())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db").to_str().unwrap().to_owned();
    let args = ["--registry", &registry.url(), "--database", &db];
    let env = [("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN)];
    let mut server = Server::start(port, &args, &env, dir.path()).await;

    let (mut mirror, cursor) = list(&server).await;
    assert!(mirror[&hello].contains_key("latest"));
    let mut watcher = Watcher::open(&server, Some(&cursor), None).await;
    let spec = |arch: &str| ImageSpec::new("linux", arch);
    pusher
        .push_image("apps/two", Some("v1"), &spec("arm64"))
        .await
        .unwrap();
    let moved = pusher
        .push_image(&hello, Some("latest"), &spec("s390x"))
        .await
        .unwrap();
    let wanted = wait_listed(&server, "both pushes", |m| {
        m.get("apps/two").is_some_and(|t| t.contains_key("v1"))
            && m[&hello]["latest"] == moved.digest.as_str()
    })
    .await;
    let mut last = String::new();
    watcher.until(&mut mirror, &wanted, &mut last).await;
    drop(watcher);

    // The server goes away; the registry changes meanwhile (its notifications fail, the
    // scan at start finds them); the watcher resumes with Last-Event-ID.
    server.terminate();
    let gone = pusher
        .push_image("apps/two", Some("v2"), &spec("ppc64le"))
        .await
        .unwrap();
    pusher.delete_manifest(&hello, &moved.digest).await.unwrap();
    let server = Server::start(port, &args, &env, dir.path()).await;
    let mut watcher = Watcher::open(&server, None, Some(&last)).await;
    pusher
        .push_image("apps/three", Some("x"), &spec("amd64"))
        .await
        .unwrap();
    let wanted = wait_listed(&server, "the changes while down and after", |m| {
        m.get("apps/three").is_some_and(|t| t.contains_key("x"))
            && m["apps/two"].get("v2").map(String::as_str) == Some(gone.digest.as_str())
            && !m[&hello].contains_key("latest")
    })
    .await;
    watcher.until(&mut mirror, &wanted, &mut last).await;
    assert_eq!(
        mirror,
        list(&server).await.0,
        "the watcher ends with the listing"
    );

    // A long poll returns as soon as something changes.
    let client = http_client();
    let page: Value = client
        .get(format!("{}/v2/_flagstate/changes?since={last}", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["changes"].as_array().map(Vec::len), Some(0), "{page}");
    let next = page["next"].as_str().unwrap().to_owned();
    let url = format!(
        "{}/v2/_flagstate/changes?since={next}&wait=20s&type=tag.created",
        server.url
    );
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let page: Value = http_client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (page, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pusher
        .push_image("apps/four", Some("y"), &spec("amd64"))
        .await
        .unwrap();
    let (page, took) = poll.await.unwrap();
    assert!(took < Duration::from_secs(15), "the poll waited {took:?}");
    let changes = page["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{page}");
    assert_eq!(changes[0]["type"], "io.flagstate.tag.created");
    assert_eq!(changes[0]["subject"], "apps/four:y");

    // Bad input, in the distribution error format.
    for (query, code) in [
        ("since=garbage", "UNSUPPORTED"),
        ("type=tag.moved", "UNSUPPORTED"),
        ("wait=61s", "UNSUPPORTED"),
        ("wait=soon", "UNSUPPORTED"),
        ("n=0", "PAGINATION_NUMBER_INVALID"),
        ("n=1001", "PAGINATION_NUMBER_INVALID"),
        ("repository=Not..Valid", "NAME_INVALID"),
    ] {
        let response = client
            .get(format!("{}/v2/_flagstate/changes?{query}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{query}: {body}");
    }
}

/// A cursor older than retention gets `410` naming the oldest cursor still valid; a
/// reader continues from that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cursor_is_gone_with_the_oldest_valid_one() {
    let store = Arc::new(MemoryStore::new());
    let a = image("a").build();
    for i in 0..5 {
        store
            .apply(&put_image("app", &format!("t{i}"), &a))
            .await
            .unwrap();
    }
    let keep = ChangeRetention {
        max_records: 2,
        max_age: None,
    };
    assert_eq!(
        store.prune_changes(&keep, Timestamp::now()).await.unwrap(),
        4
    );
    let app = router(AppState::new(store, None, HttpConfig::default()));
    let get = |uri: String| {
        let app = app.clone();
        async move {
            let response = app
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, body) = get("/v2/_flagstate/changes?since=0".into()).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["errors"][0]["code"], "CURSOR_EXPIRED");
    let oldest = body["errors"][0]["detail"]["oldest"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = get(format!("/v2/_flagstate/changes?since={oldest}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let subjects: Vec<&str> = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["app:t3", "app:t4"]);
    // The dynamic index names the cursor it reflects, like the listings.
    let response = app
        .clone()
        .oneshot(Request::get("/index/dynamic").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["flagstate-cursor"], "5");
    // Without `since` the feed starts now: nothing yet.
    let (status, body) = get("/v2/_flagstate/changes".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["changes"].as_array().map(Vec::len), Some(0));
}
