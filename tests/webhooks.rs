//! Outgoing webhooks of the change log (`notifications.endpoints`) end to end: the real
//! registry notifies the real `flagstate serve`, which delivers to receivers in this test
//! (the one allowed stand-in: a webhook consumer). A receiver that fails, then is down,
//! then recovers gets every record exactly once in order; filters hold; a permanently
//! failing endpoint holds back nobody; `kill -9` of the server loses nothing, and
//! redeliveries carry the same CloudEvents `id`. Configuration errors stop the start.
//! Embedded over a `MemoryStore`: the per-request timeout, and an endpoint left behind
//! by retention.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::{EVENTS_TOKEN, Server, free_port, http_client, registry, run, text};
use flagstate_core::conformance::fixtures::{image, put_image};
use flagstate_core::testkit::ImageSpec;
use flagstate_core::webhooks::{Backoff, WebhookEndpoint, Webhooks};
use flagstate_core::{
    ChangeCursor, ChangeEvent, ChangeFilter, ChangeRetention, MemoryStore, Store, Timestamp,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// What a receiver was sent and how it answers.
#[derive(Default)]
struct Inbox {
    /// Answer `500` to this many more deliveries.
    fail_next: AtomicUsize,
    /// Answer `500` to every delivery (and still keep what it carried in `seen`).
    failing: AtomicBool,
    /// Take 2 s before answering this many more deliveries (then take them, if the
    /// sender is still waiting).
    stall_next: AtomicUsize,
    /// Events of the deliveries answered `200`, in arrival order.
    accepted: Mutex<Vec<Value>>,
    /// Events of every delivery that parsed, whatever the answer.
    seen: Mutex<Vec<Value>>,
    /// Deliveries answered `500`.
    failures: AtomicUsize,
    /// Content types and `Authorization` headers of the deliveries.
    content_types: Mutex<Vec<String>>,
    authorizations: Mutex<Vec<String>>,
}

impl Inbox {
    fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }
    fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    inbox
        .content_types
        .lock()
        .unwrap()
        .push(header(header::CONTENT_TYPE));
    inbox
        .authorizations
        .lock()
        .unwrap()
        .push(header(header::AUTHORIZATION));
    let events: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array of events");
    inbox.seen.lock().unwrap().extend(events.iter().cloned());
    if inbox
        .stall_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let fail = inbox.failing.load(Ordering::SeqCst)
        || inbox
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let status = if fail {
        inbox.failures.fetch_add(1, Ordering::SeqCst);
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        inbox.accepted.lock().unwrap().extend(events);
        StatusCode::OK
    };
    // No connection outlives its delivery: a stopped receiver is a closed port.
    (status, [(header::CONNECTION, "close")]).into_response()
}

/// A webhook receiver on 127.0.0.1 that can go down (its port closed) and come back on
/// the same port.
struct Receiver {
    inbox: Arc<Inbox>,
    addr: SocketAddr,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Receiver {
    async fn start(inbox: Arc<Inbox>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut receiver = Receiver {
            inbox,
            addr,
            running: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.inbox.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((stop, task));
    }

    /// Closes the port (waiting for the delivery in flight, if any).
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.await.unwrap();
        }
    }

    /// Listens on the same port again.
    async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot listen on {} again: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        self.serve(listener);
    }
}

/// Every record of the server's change log, as the feed renders them.
async fn feed(server: &Server) -> Vec<Value> {
    let page: Value = http_client()
        .get(format!(
            "{}/v2/_flagstate/changes?since=0&n=1000",
            server.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["changes"].as_array().unwrap().clone()
}

fn kind(event: &Value) -> &str {
    event["type"].as_str().unwrap()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (up to 60 s) until `done` holds.
async fn wait_until(what: &str, server: &Server, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "never saw {what}\nserver log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server logged that every endpoint in `names` started delivering
/// (from now on: records made before would not be sent).
async fn wait_delivering(server: &Server, names: &[&str]) {
    wait_until("every endpoint start delivering", server, async || {
        let log = server.log();
        names.iter().all(|name| {
            log.lines()
                .any(|l| l.contains("delivering the change log") && l.contains(name))
        })
    })
    .await;
}

/// The value of a metric with the label `endpoint="NAME"`.
async fn endpoint_metric(server: &Server, metric: &str, endpoint: &str) -> Option<f64> {
    let body = server.get("/metrics").await.text().await.unwrap();
    let key = format!("{metric}{{endpoint=\"{endpoint}\"}}");
    body.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn write_config(dir: &Path, yaml: &str) -> String {
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

fn spec(architecture: &str) -> ImageSpec {
    ImageSpec::new("linux", architecture)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_once_in_order_after_failures_and_an_outage() {
    let port = free_port();
    let Some(registry) = registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    let flaky = Arc::new(Inbox::default());
    flaky.fail_next.store(3, Ordering::SeqCst);
    let broken = Arc::new(Inbox::default());
    broken.failing.store(true, Ordering::SeqCst);
    let filtered = Arc::new(Inbox::default());
    let mut flaky_receiver = Receiver::start(flaky.clone()).await;
    let broken_receiver = Receiver::start(broken.clone()).await;
    let filtered_receiver = Receiver::start(filtered.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "\
notifications:
  endpoints:
    - name: flaky
      url: {}
      headers:
        Authorization: [Bearer hook-secret]
      timeout: 5s
      backoff: {{initial: 100ms, max: 1s}}
    - name: broken
      url: {}
      backoff: {{initial: 100ms, max: 500ms}}
    - name: filtered
      url: {}
      types: [tag.created, io.flagstate.tag.deleted]
      namespaces: [apps]
      batch_size: 1
      backoff: {{initial: 100ms, max: 1s}}
",
            flaky_receiver.url(),
            broken_receiver.url(),
            filtered_receiver.url()
        ),
    );
    let db = dir.path().join("index.db").to_str().unwrap().to_owned();
    let args = [
        "--config",
        &config,
        "--registry",
        &registry.url(),
        "--database",
        &db,
    ];
    let env = [("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN)];
    let server = Server::start(port, &args, &env, dir.path()).await;
    wait_delivering(&server, &["flaky", "broken", "filtered"]).await;

    // The first deliveries to `flaky` fail with 500; then its port closes.
    pusher
        .push_image("apps/one", Some("v1"), &spec("amd64"))
        .await
        .unwrap();
    wait_until("three failed deliveries", &server, async || {
        flaky.failures.load(Ordering::SeqCst) >= 3
    })
    .await;
    flaky_receiver.stop().await;
    assert!(flaky.accepted().is_empty(), "nothing acknowledged yet");

    // The registry changes while the receiver is down.
    pusher
        .push_image("tools/two", Some("v1"), &spec("arm64"))
        .await
        .unwrap();
    let second = pusher
        .push_image("apps/one", Some("v2"), &spec("s390x"))
        .await
        .unwrap();
    pusher.tag("apps/one", "v1", &second.digest).await.unwrap();
    // The index must have read the moved tag before its manifest is deleted: a manifest
    // gone before the indexer reads it leaves no record of the push (only the delete).
    wait_until("the moved tag in the feed", &server, async || {
        feed(&server)
            .await
            .iter()
            .any(|e| e["subject"] == "apps/one:v1" && kind(e) == "io.flagstate.tag.updated")
    })
    .await;
    pusher
        .delete_manifest("apps/one", &second.digest)
        .await
        .unwrap();
    pusher
        .push_image("apps/three", Some("x"), &spec("ppc64le"))
        .await
        .unwrap();
    wait_until("the last push in the feed", &server, async || {
        feed(&server)
            .await
            .iter()
            .any(|e| e["subject"] == "apps/three:x" && kind(e) == "io.flagstate.tag.created")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(flaky.accepted().is_empty(), "the receiver was down");

    // It recovers: every record arrives, in order, exactly once, as the feed renders it.
    flaky_receiver.restart().await;
    wait_until(
        "the flaky receiver catch up with the feed",
        &server,
        async || flaky.accepted() == feed(&server).await,
    )
    .await;
    let log = feed(&server).await;
    let kinds: Vec<&str> = log.iter().map(kind).collect();
    for expected in [
        "io.flagstate.repository.created",
        "io.flagstate.tag.created",
        "io.flagstate.tag.updated",
        "io.flagstate.tag.deleted",
    ] {
        assert!(kinds.contains(&expected), "{kinds:?}");
    }
    let delivered = ids(&flaky.accepted());
    let unique: std::collections::BTreeSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len(), "no record twice");

    // The filtered endpoint got exactly its part of the log, in order, one per batch.
    let wanted: Vec<Value> = log
        .iter()
        .filter(|e| {
            matches!(
                kind(e),
                "io.flagstate.tag.created" | "io.flagstate.tag.deleted"
            ) && e["data"]["repository"]
                .as_str()
                .is_some_and(|r| r.starts_with("apps/"))
        })
        .cloned()
        .collect();
    assert!(wanted.len() >= 3, "{wanted:?}");
    wait_until("the filtered receiver catch up", &server, async || {
        filtered.accepted() == wanted
    })
    .await;

    // The broken endpoint is still retrying; it held back nobody.
    assert!(broken.accepted().is_empty());
    assert!(broken.failures.load(Ordering::SeqCst) >= 2);
    let content_types = flaky.content_types.lock().unwrap().clone();
    assert!(
        content_types
            .iter()
            .all(|t| t == "application/cloudevents-batch+json"),
        "{content_types:?}"
    );
    let authorizations = flaky.authorizations.lock().unwrap().clone();
    assert!(authorizations.iter().all(|a| a == "Bearer hook-secret"));
    assert!(
        filtered
            .authorizations
            .lock()
            .unwrap()
            .iter()
            .all(String::is_empty),
        "headers belong to their endpoint"
    );

    // Metrics per endpoint.
    let metric = async |name: &str, endpoint: &str| {
        endpoint_metric(&server, name, endpoint)
            .await
            .unwrap_or_else(|| panic!("{name} of {endpoint} missing"))
    };
    // The deliverer counts a batch once it has read the answer.
    wait_until("the deliveries counted", &server, async || {
        endpoint_metric(&server, "flagstate_webhook_delivered_total", "flaky").await
            == Some(log.len() as f64)
            && endpoint_metric(&server, "flagstate_webhook_lag_seconds", "flaky").await == Some(0.0)
    })
    .await;
    assert!(metric("flagstate_webhook_failed_total", "flaky").await >= 3.0);
    assert_eq!(
        metric("flagstate_webhook_delivered_total", "broken").await,
        0.0
    );
    assert!(metric("flagstate_webhook_failed_total", "broken").await >= 2.0);
    assert!(metric("flagstate_webhook_lag_seconds", "broken").await > 0.0);
    assert_eq!(
        metric("flagstate_webhook_retention_skips_total", "flaky").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_between_deliveries_loses_nothing() {
    let port = free_port();
    let Some(registry) = registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    let inbox = Arc::new(Inbox::default());
    let receiver = Receiver::start(inbox.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "\
notifications:
  endpoints:
    - name: audit
      url: {}
      batch_size: 2
      backoff: {{initial: 100ms, max: 500ms}}
",
            receiver.url()
        ),
    );
    let db = dir.path().join("index.db").to_str().unwrap().to_owned();
    let args = [
        "--config",
        &config,
        "--registry",
        &registry.url(),
        "--database",
        &db,
    ];
    let env = [("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN)];
    let mut server = Server::start(port, &args, &env, dir.path()).await;
    wait_delivering(&server, &["audit"]).await;

    pusher
        .push_image("apps/one", Some("v1"), &spec("amd64"))
        .await
        .unwrap();
    wait_until("the first records delivered", &server, async || {
        let log = feed(&server).await;
        !log.is_empty() && inbox.accepted() == log
    })
    .await;
    let acknowledged = ids(&inbox.accepted());

    // The receiver takes the next batches but its answers fail (as if lost): they
    // were never acknowledged when the server dies.
    inbox.failing.store(true, Ordering::SeqCst);
    pusher
        .push_image("apps/one", Some("v2"), &spec("arm64"))
        .await
        .unwrap();
    pusher
        .push_image("apps/two", Some("v1"), &spec("s390x"))
        .await
        .unwrap();
    wait_until(
        "a failed delivery of the new records",
        &server,
        async || inbox.failures.load(Ordering::SeqCst) >= 2,
    )
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    server.wait_exit();
    inbox.failing.store(false, Ordering::SeqCst);

    // Restarted on the same database, it resumes from the stored cursor.
    let server = Server::start(port, &args, &env, dir.path()).await;
    pusher
        .push_image("apps/three", Some("x"), &spec("ppc64le"))
        .await
        .unwrap();
    let mut first_copies: BTreeMap<String, Value> = BTreeMap::new();
    wait_until(
        "every record delivered after the restart",
        &server,
        async || {
            let log = feed(&server).await;
            let mut in_order = Vec::new();
            first_copies.clear();
            for event in inbox.accepted() {
                let id = event["id"].as_str().unwrap().to_owned();
                if let std::collections::btree_map::Entry::Vacant(slot) = first_copies.entry(id) {
                    slot.insert(event.clone());
                    in_order.push(event);
                }
            }
            log.iter().any(|e| e["subject"] == "apps/three:x") && in_order == log
        },
    )
    .await;
    // Redeliveries are the same events, same `id`; what was acknowledged before the
    // kill came once.
    let seen = inbox.seen();
    let accepted = inbox.accepted();
    for event in seen.iter().chain(&accepted) {
        let id = event["id"].as_str().unwrap();
        assert_eq!(&first_copies[id], event, "a redelivery differs");
    }
    let seen_ids = ids(&seen);
    let distinct: std::collections::BTreeSet<&String> = seen_ids.iter().collect();
    assert!(
        distinct.len() < seen_ids.len(),
        "the batch that was never acknowledged came again"
    );
    for id in &acknowledged {
        assert_eq!(
            ids(&accepted).iter().filter(|a| *a == id).count(),
            1,
            "{id} was acknowledged before the kill and must not come again"
        );
    }
}

#[test]
fn bad_endpoints_stop_the_start_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, key) in [
        (
            "notifications:\n  endpoints:\n    - name: a\n      url: http://h.example/\n    - name: a\n      url: http://h.example/\n",
            "notifications.endpoints[1].name",
        ),
        (
            "notifications:\n  endpoints:\n    - name: a\n      url: hooks.example:80\n",
            "notifications.endpoints[0].url",
        ),
        (
            "notifications:\n  endpoints:\n    - name: a\n      url: http://h.example/\n      timeout: 0\n",
            "notifications.endpoints[0].timeout",
        ),
        (
            "notifications:\n  endpoints:\n    - name: a\n      url: http://h.example/\n      colour: red\n",
            "colour",
        ),
    ] {
        let config = write_config(dir.path(), yaml);
        let db = dir.path().join("index.db");
        let out = run(&[
            "serve",
            "--config",
            &config,
            "--registry",
            "http://127.0.0.1:9",
            "--database",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        assert!(!out.status.success(), "{yaml}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(key), "{yaml}: {stderr}");
    }
}

/// The events `store`'s whole log renders to, with `source`.
async fn rendered(store: &dyn Store, source: &str) -> Vec<Value> {
    let page = store
        .changes_since(
            ChangeCursor::at_generation(0),
            &ChangeFilter::default(),
            1000,
        )
        .await
        .unwrap();
    page.records
        .into_iter()
        .map(|r| serde_json::to_value(ChangeEvent::new(r, source)).unwrap())
        .collect()
}

/// Waits (up to 30 s) until `done` holds, in process.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn quick(name: &str, url: &str) -> WebhookEndpoint {
    let mut endpoint = WebhookEndpoint::new(name, url.parse().unwrap());
    endpoint.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    endpoint
}

/// Embedded over a `MemoryStore`: an answer slower than `timeout` is a failure, and
/// the batch comes again (the receiver took the first copy anyway: at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_than_the_timeout_is_a_failure_and_the_batch_comes_again() {
    let inbox = Arc::new(Inbox::default());
    inbox.stall_next.store(1, Ordering::SeqCst);
    let receiver = Receiver::start(inbox.clone()).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut endpoint = quick("slow", &receiver.url());
    endpoint.timeout = Duration::from_millis(300);
    let shutdown = CancellationToken::new();
    let webhooks = Webhooks::start(
        vec![endpoint],
        store.clone(),
        "http://r.example".into(),
        shutdown.clone(),
    )
    .unwrap();
    eventually("the cursor stored", async || {
        store.delivery_cursor("slow").await.unwrap().is_some()
    })
    .await;
    store
        .apply(&put_image("app", "v1", &image("a").build()))
        .await
        .unwrap();
    let log = rendered(store.as_ref(), "http://r.example").await;
    assert_eq!(log.len(), 2);
    eventually("the batch delivered", async || {
        inbox.accepted().ends_with(&log)
    })
    .await;
    let seen = inbox.seen();
    assert_eq!(seen[..2], log[..], "the stalled copy");
    assert_eq!(seen[2..4], log[..], "the same events again");
    // The deliverer counts the batch once it has read the answer.
    let monitor = webhooks.monitor();
    eventually("the batch counted", async || {
        monitor.status()[0].delivered == 2
    })
    .await;
    let status = monitor.status();
    assert!(status[0].failed >= 1, "{status:?}");
    shutdown.cancel();
    webhooks.join().await;
}

/// An endpoint whose cursor retention has passed continues from the oldest record
/// kept, and counts the skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_behind_retention_continues_from_the_oldest_record_kept() {
    let inbox = Arc::new(Inbox::default());
    let receiver = Receiver::start(inbox.clone()).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = image("a").build();
    for i in 0..6 {
        store
            .apply(&put_image("app", &format!("t{i}"), &a))
            .await
            .unwrap();
    }
    store
        .set_delivery_cursor("late", ChangeCursor::at_generation(0))
        .await
        .unwrap();
    let retention = ChangeRetention {
        max_records: 2,
        max_age: None,
    };
    assert_eq!(
        store
            .prune_changes(&retention, Timestamp::now())
            .await
            .unwrap(),
        5
    );
    let kept = rendered(store.as_ref(), "/").await;
    assert_eq!(kept.len(), 2);
    let shutdown = CancellationToken::new();
    let webhooks = Webhooks::start(
        vec![quick("late", &receiver.url())],
        store.clone(),
        "/".into(),
        shutdown.clone(),
    )
    .unwrap();
    eventually("the kept records delivered", async || {
        inbox.accepted() == kept
    })
    .await;
    let monitor = webhooks.monitor();
    eventually("the batch counted", async || {
        monitor.status()[0].delivered == 2
    })
    .await;
    let status = monitor.status();
    assert_eq!(status[0].retention_skips, 1, "{status:?}");
    shutdown.cancel();
    webhooks.join().await;
}
