use std::time::Duration;

use super::*;
use crate::changes::ChangeCursor;
use crate::{Digest, Tag};

fn endpoint() -> WebhookEndpoint {
    WebhookEndpoint::new("hook", "http://127.0.0.1:9/in".parse().unwrap())
}

fn record(repository: &str, kind: ChangeKind) -> ChangeRecord {
    ChangeRecord {
        cursor: ChangeCursor::default(),
        time: Timestamp::from_millis(0),
        kind,
        repository: RepositoryName::parse(repository).unwrap(),
        tag: Some(Tag::parse("v1").unwrap()),
        digest: Some(Digest::sha256_of(b"x")),
        previous_digest: None,
        media_type: None,
        subject: None,
        artifact_type: None,
    }
}

#[test]
fn backoff_doubles_up_to_its_maximum_with_equal_jitter() {
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1000),
    };
    for (failures, full) in [
        (1, 100),
        (2, 200),
        (3, 400),
        (4, 800),
        (5, 1000),
        (60, 1000),
    ] {
        for _ in 0..20 {
            let delay = backoff.delay(failures).as_millis() as u64;
            assert!(
                full / 2 <= delay && delay <= full,
                "failure {failures}: {delay} ms outside [{}, {full}]",
                full / 2
            );
        }
    }
}

#[test]
fn subscriptions_select_kinds_and_any_of_their_namespaces() {
    let all = Subscription::default();
    assert!(all.admits(&record("a/b", ChangeKind::TagDeleted)));
    assert_eq!(all.store_filter(), ChangeFilter::default());

    let two = Subscription {
        kinds: [ChangeKind::TagCreated].into(),
        namespaces: vec![
            RepositoryName::parse("apps").unwrap(),
            RepositoryName::parse("tools/x").unwrap(),
        ],
    };
    assert!(two.admits(&record("apps/one", ChangeKind::TagCreated)));
    assert!(two.admits(&record("tools/x/y", ChangeKind::TagCreated)));
    assert!(!two.admits(&record("apps/one", ChangeKind::TagDeleted)));
    assert!(!two.admits(&record("apps", ChangeKind::TagCreated)));
    assert!(!two.admits(&record("appsx/one", ChangeKind::TagCreated)));
    assert!(!two.admits(&record("tools/xy", ChangeKind::TagCreated)));
    assert_eq!(
        two.store_filter().namespace,
        None,
        "two are checked in Rust"
    );
    assert_eq!(two.store_filter().kinds, two.kinds);

    let one = Subscription {
        kinds: Default::default(),
        namespaces: vec![RepositoryName::parse("apps").unwrap()],
    };
    assert_eq!(one.store_filter().namespace.as_deref(), Some("apps"));
}

#[test]
fn endpoints_refuse_bad_urls_headers_and_limits() {
    assert!(endpoint().validate().unwrap().is_empty());
    let mut e = endpoint();
    e.headers
        .insert("Authorization".into(), "Bearer s3cret".into());
    let headers = e.validate().unwrap();
    assert!(headers["authorization"].is_sensitive());

    let refused = |change: &dyn Fn(&mut WebhookEndpoint)| {
        let mut e = endpoint();
        change(&mut e);
        e.validate().unwrap_err().to_string()
    };
    let msg = refused(&|e| e.url = "ftp://example.com/".parse().unwrap());
    assert!(msg.contains("http:// or https://"), "{msg}");
    let msg = refused(&|e| e.timeout = Duration::ZERO);
    assert!(msg.contains("timeout"), "{msg}");
    let msg = refused(&|e| e.batch_size = 0);
    assert!(msg.contains("batch_size"), "{msg}");
    let msg = refused(&|e| e.backoff.initial = Duration::ZERO);
    assert!(msg.contains("backoff.initial"), "{msg}");
    let msg = refused(&|e| e.backoff.max = Duration::from_millis(1));
    assert!(msg.contains("backoff.max"), "{msg}");
    let msg = refused(&|e| {
        e.headers.insert("bad header".into(), "x".into());
    });
    assert!(msg.contains("bad header"), "{msg}");
    let msg = refused(&|e| {
        e.headers.insert("X-Token".into(), "line\nbreak".into());
    });
    assert!(msg.contains("X-Token"), "{msg}");
    let msg = refused(&|e| {
        e.headers.insert("Content-Type".into(), "text/plain".into());
    });
    assert!(msg.contains("set by flagstate"), "{msg}");
}

#[tokio::test]
async fn duplicate_names_are_refused_before_anything_starts() {
    let store: Arc<dyn Store> = Arc::new(crate::MemoryStore::new());
    let shutdown = CancellationToken::new();
    let e = Webhooks::start(
        vec![endpoint(), endpoint()],
        store.clone(),
        "/".into(),
        shutdown.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(e, WebhookError::DuplicateName(ref n) if n == "hook"),
        "{e}"
    );
    assert_eq!(store.delivery_cursor("hook").await.unwrap(), None);
}

#[tokio::test]
async fn a_new_endpoint_starts_from_now_and_stores_it_at_once() {
    let store: Arc<dyn Store> = Arc::new(crate::MemoryStore::new());
    let shutdown = CancellationToken::new();
    let webhooks = Webhooks::start(
        vec![endpoint()],
        store.clone(),
        "/".into(),
        shutdown.clone(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.delivery_cursor("hook").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "never stored a cursor"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.delivery_cursor("hook").await.unwrap(),
        Some(ChangeCursor::at_generation(0))
    );
    let status = webhooks.monitor().status();
    assert_eq!(status.len(), 1);
    assert_eq!(
        (status[0].delivered, status[0].failed, status[0].lag),
        (0, 0, Duration::ZERO)
    );
    shutdown.cancel();
    webhooks.join().await;
}

#[test]
fn debug_output_shows_no_credentials() {
    let mut e = WebhookEndpoint::new("hook", "https://bot:pa55@h.example/in".parse().unwrap());
    e.headers
        .insert("Authorization".into(), "Bearer s3cret".into());
    let text = format!("{e:?}");
    assert!(!text.contains("pa55") && !text.contains("s3cret"), "{text}");
    assert!(text.contains("Authorization"), "{text}");
}
