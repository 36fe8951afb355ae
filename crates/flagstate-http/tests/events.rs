//! `POST /events`: authentication, read-only replicas, content types, size limit,
//! parsing, and application through a real Indexer (events that need no registry access
//! apply for real; a push of unknown content fails against the unreachable registry and
//! must not be acknowledged).

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::*;
use flagstate_core::conformance::fixtures::{digest, image, repo};
use flagstate_core::{MemoryStore, Store};
use flagstate_http::{AppState, HttpConfig, router};
use serde_json::{Value, json};

const DISTRIBUTION: &str = "application/vnd.docker.distribution.events.v1+json";

/// The registry's captured notifications, kept once, beside core's event parser tests.
fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../flagstate-core/tests/fixtures/registry-events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["body"].clone()
}

/// A token, or (with `None`) explicitly anonymous notifications.
fn config(token: Option<&str>) -> HttpConfig {
    {
        let mut fields = HttpConfig::default();
        fields.events_token = token.map(str::to_owned);
        fields.events_allow_anonymous = token.is_none();
        fields.max_event_body = 4096;
        fields
    }
}

/// A store with `cap/img:v1` pointing at the digest the fixtures name, and the router
/// over it with a real indexer.
async fn writer(token: Option<&str>) -> (axum::Router, AppState, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let pushed = fixture("push-manifest-tagged");
    let d = pushed["events"][0]["target"]["digest"].as_str().unwrap();
    let mut img = image("cap").build();
    img.digest = flagstate_core::Digest::parse(d).unwrap();
    store
        .replace_repository(&repo("cap/img").image("v1", &img).build())
        .await
        .unwrap();
    let indexer = unreachable_indexer(store.clone());
    let state = AppState::new(store.clone(), Some(indexer), config(token));
    (router(state.clone()), state, store)
}

async fn post(
    app: &axum::Router,
    headers: &[(&str, &str)],
    body: impl Into<axum::body::Body>,
) -> Reply {
    request(app, Method::POST, "/events", headers, body).await
}

async fn tags(store: &MemoryStore, name: &str) -> Vec<String> {
    store
        .repository_tags(&name.parse().unwrap())
        .await
        .unwrap()
        .unwrap_or_default()
        .into_keys()
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let (app, state, store) = writer(Some("OPEN_SESAME")).await;
    let body = fixture("delete-tag").to_string();
    let ct = ("content-type", DISTRIBUTION);
    for auth in [
        None,
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer wrong"),
        Some("Bearer OPEN_SESAM"),
        Some("Basic T1BFTl9TRVNBTUU="),
        Some("OPEN_SESAME"),
        Some(""),
    ] {
        let mut headers = vec![ct];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let r = post(&app, &headers, body.clone()).await;
        r.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    }
    // Not even a wrong content type is looked at before authentication.
    let r = post(&app, &[("content-type", "text/plain")], "x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(tags(&store, "cap/img").await, ["v1"]);
    let ok = post(&app, &[ct, ("authorization", "Bearer OPEN_SESAME")], body).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert!(tags(&store, "cap/img").await.is_empty());
    assert!(state.metrics().events_applied.get() == 1);
}

#[tokio::test]
async fn garbled_authorization_header_is_401_not_a_panic() {
    let (app, _, _) = writer(Some("t")).await;
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/events")
        .header("content-type", DISTRIBUTION)
        .header(
            "authorization",
            axum::http::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .body(axum::body::Body::from("{}"))
        .unwrap();
    send(&app, request)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn read_only_replica_refuses_with_503() {
    let (app, _) = app(Arc::new(MemoryStore::new()), config(None));
    let r = post(
        &app,
        &[("content-type", DISTRIBUTION)],
        fixture("delete-tag").to_string(),
    )
    .await;
    let message = r.expect_error(StatusCode::SERVICE_UNAVAILABLE, "read_only");
    assert!(message.contains("read-only"), "{message}");
}

#[tokio::test]
async fn content_types_size_and_syntax_are_checked() {
    let (app, state, store) = writer(None).await;
    let body = fixture("delete-tag").to_string();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/xml"),
        Some("application/jsonx"),
    ] {
        let headers: Vec<_> = ct.map(|c| ("content-type", c)).into_iter().collect();
        post(&app, &headers, body.clone())
            .await
            .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    let big = json!({"events": [], "padding": "x".repeat(5000)}).to_string();
    let m = post(&app, &[("content-type", DISTRIBUTION)], big)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(m.contains("4096"), "{m}");
    // A declared length over the limit is refused without reading the body.
    post(
        &app,
        &[
            ("content-type", DISTRIBUTION),
            ("content-length", "1000000000"),
        ],
        r#"{"events":[]}"#,
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    for (bad, needle) in [
        ("{", "JSON"),
        ("[]", "JSON"),
        ("{}", "events"),
        (
            r#"{"events":[{"id":"x","action":"push","target":{"repository":"a","digest":"sha256:zz"}}]}"#,
            "event #0 (x)",
        ),
        (
            r#"{"events":[{"id":"y","action":"delete","target":{"tag":"t"}}]}"#,
            "repository",
        ),
    ] {
        let m = post(&app, &[("content-type", DISTRIBUTION)], bad)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_notification");
        assert!(m.contains(needle), "{bad}: {m}");
    }
    let m = post(
        &app,
        &[("content-type", "application/cloudevents+json")],
        "42",
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_notification");
    assert!(m.contains("CloudEvent"), "{m}");
    assert_eq!(tags(&store, "cap/img").await, ["v1"]);
    let metrics = get(&app, "/metrics", &[]).await;
    let text = std::str::from_utf8(&metrics.body).unwrap();
    assert!(
        text.contains("flagstate_event_deliveries_rejected_total{reason=\"malformed\"} 6"),
        "{text}"
    );
    assert!(text.contains("reason=\"media_type\"} 4"));
    assert!(text.contains("reason=\"too_large\"} 2"));
    assert_eq!(state.metrics().events_received.get(), 0);
}

#[tokio::test]
async fn distribution_events_apply_and_redelivery_is_acknowledged_once() {
    let (app, state, store) = writer(None).await;
    let ct = [("content-type", DISTRIBUTION)];
    // A tag push of content the store already holds needs no registry access.
    let mut push = fixture("push-manifest-tagged");
    push["events"][0]["target"]["tag"] = json!("v2");
    let r = post(&app, &ct, push.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.json(),
        json!({"received": 1, "applied": 1, "ignored": 0, "failed": 0, "duplicates": 0})
    );
    assert_eq!(tags(&store, "cap/img").await, ["v1", "v2"]);
    let index = get(&app, "/index/static?repository=cap/img&tag=v2", &[]).await;
    assert_eq!(index.json()["Results"][0]["Name"], "cap/img");

    let delete = fixture("delete-tag").to_string();
    let r = post(&app, &ct, delete.clone()).await;
    assert_eq!(r.json()["applied"], 1);
    assert_eq!(tags(&store, "cap/img").await, ["v2"]);
    // Put the tag back behind the webhook's back: a redelivery must not delete it again.
    let v1 = store
        .repository_tags(&"cap/img".parse().unwrap())
        .await
        .unwrap()
        .unwrap()["v2"]
        .clone();
    store
        .replace_repository(&repo("cap/img").digest("v1", &v1).digest("v2", &v1).build())
        .await
        .unwrap();
    let again = post(&app, &ct, delete).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.json(),
        json!({"received": 1, "applied": 0, "ignored": 0, "failed": 0, "duplicates": 1})
    );
    assert_eq!(tags(&store, "cap/img").await, ["v1", "v2"]);
    assert_eq!(state.metrics().events_duplicate.get(), 1);

    for ignored in ["pull-manifest", "push-blob"] {
        let r = post(&app, &ct, fixture(ignored).to_string()).await;
        assert_eq!(r.status, StatusCode::OK, "{ignored}");
        assert_eq!(r.json()["ignored"], 1, "{ignored}");
    }
}

#[tokio::test]
async fn failed_application_is_5xx_and_not_remembered() {
    let (app, state, store) = writer(None).await;
    let ct = [("content-type", DISTRIBUTION)];
    // A push of content the store lacks must be fetched; the registry is unreachable.
    let mut push = fixture("push-manifest-tagged");
    push["events"][0]["target"]["digest"] = json!(digest("unknown").to_string());
    push["events"][0]["target"]["tag"] = json!("v9");
    for _ in 0..2 {
        let r = post(&app, &ct, push.to_string()).await;
        assert!(r.status.is_server_error(), "{:?}", r.status);
        let v = r.json();
        assert_eq!(v["error"]["code"], "events_not_applied");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("cap/img"),
            "{v}"
        );
    }
    assert_eq!(tags(&store, "cap/img").await, ["v1"]);
    assert_eq!(state.metrics().events_duplicate.get(), 0);
    assert_eq!(state.metrics().events_applied.get(), 0);
}

#[tokio::test]
async fn cloudevents_structured_batch_binary_and_plain_json() {
    let (app, _, store) = writer(None).await;
    let d = store
        .repository_tags(&"cap/img".parse().unwrap())
        .await
        .unwrap()
        .unwrap()["v1"]
        .to_string();
    let zot = |id: &str, kind: &str, tag: &str| {
        json!({"specversion": "1.0", "id": id, "source": "zot", "type": kind,
               "data": {"name": "cap/img", "reference": tag, "digest": d,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json"}})
    };
    let r = post(
        &app,
        &[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )],
        zot("c1", "zotregistry.image.updated", "s1").to_string(),
    )
    .await;
    assert_eq!(r.json()["applied"], 1, "{:?}", r.body);
    let batch = json!([
        zot("c2", "zotregistry.image.updated", "s2"),
        zot("c3", "zotregistry.image.deleted", "s1")
    ]);
    let r = post(
        &app,
        &[("content-type", "application/cloudevents-batch+json")],
        batch.to_string(),
    )
    .await;
    assert_eq!(r.json()["applied"], 2);
    assert_eq!(tags(&store, "cap/img").await, ["s2", "v1"]);

    let data = json!({"name": "cap/img", "reference": "s2", "digest": d});
    let headers = [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "c4"),
        ("ce-source", "zot"),
        ("ce-type", "zotregistry.image.deleted"),
    ];
    let r = post(&app, &headers, data.to_string()).await;
    assert_eq!(r.json()["applied"], 1, "{:?}", r.body);
    assert_eq!(tags(&store, "cap/img").await, ["v1"]);
    let r = post(
        &app,
        &[("ce-specversion", "1.0"), ("ce-id", "c5")],
        data.to_string(),
    )
    .await;
    let m = r.expect_error(StatusCode::BAD_REQUEST, "invalid_notification");
    assert!(m.contains("type"), "{m}");
    let r = post(
        &app,
        &[("content-type", "text/xml"), ("ce-type", "x.image.updated")],
        "<a/>",
    )
    .await;
    r.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    // Plain application/json: an envelope or CloudEvents, told apart by `events`.
    let r = post(
        &app,
        &[("content-type", "application/json")],
        fixture("delete-tag").to_string(),
    )
    .await;
    assert_eq!(r.json()["applied"], 1);
    assert!(tags(&store, "cap/img").await.is_empty());
    let r = post(
        &app,
        &[("content-type", "application/json")],
        zot("c6", "zotregistry.image.updated", "back").to_string(),
    )
    .await;
    assert_eq!(r.json()["applied"], 1);
    assert_eq!(tags(&store, "cap/img").await, ["back"]);
}

#[tokio::test]
async fn without_a_token_every_post_is_refused_unless_anonymous_is_allowed() {
    let body = fixture("delete-tag").to_string();
    let ct = ("content-type", DISTRIBUTION);
    let store = Arc::new(MemoryStore::new());
    let refusing = {
        let mut fields = HttpConfig::default();
        fields.max_event_body = 4096;
        fields
    };
    assert!(refusing.events_token.is_none() && !refusing.events_allow_anonymous);
    let indexer = unreachable_indexer(store.clone());
    let app = router(AppState::new(store.clone(), Some(indexer), refusing));
    for auth in [None, Some("Bearer anything")] {
        let mut headers = vec![ct];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let r = post(&app, &headers, body.clone()).await;
        let message = r.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(
            message.contains("events.token") && message.contains("events.allow_anonymous"),
            "{message}"
        );
    }
    // The explicit opt-in accepts the same delivery.
    let (app, _, _) = writer(None).await;
    let r = post(&app, &[ct], body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}
