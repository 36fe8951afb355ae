//! `/index/static` and `/index/dynamic` over a real MemoryStore: body, caching headers,
//! conditional requests, compression, HEAD, the response cache, and every bad input.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use common::*;
use flagstate_core::conformance::fixtures::{delete_tag, flatpak_app, put_image};
use flagstate_core::{MemoryStore, Store};
use flagstate_http::HttpConfig;
use sha2::{Digest as _, Sha256};

fn config() -> HttpConfig {
    {
        let mut fields = HttpConfig::default();
        fields.public_registry_url = "https://registry.example.org/".into();
        fields.max_age_index = Duration::from_secs(123);
        fields
    }
}

fn flatpak_uri() -> String {
    format!("/index/static?{FLATPAK_QUERY}")
}

#[tokio::test]
async fn flatpak_query_answers_with_cacheable_json() {
    let (app, _) = app(filled_store().await, config());
    let r = get(&app, &flatpak_uri(), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("max-age=123"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("content-encoding"), None);
    let hash = hex::encode(Sha256::digest(&r.body));
    assert_eq!(r.header("etag"), Some(format!("\"{hash}\"").as_str()));
    let v = r.json();
    assert_eq!(v["Registry"], "https://registry.example.org/");
    let results = v["Results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{v}");
    assert_eq!(results[0]["Name"], "apps/org.example.app");
    let images = results[0]["Images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["Architecture"], "amd64");
    assert_eq!(images[0]["Tags"], serde_json::json!(["latest"]));
    assert_eq!(
        images[0]["Labels"]["org.flatpak.ref"],
        "app/org.example.App/x86_64/stable"
    );
}

#[tokio::test]
async fn dynamic_has_the_same_body_and_is_not_stored() {
    let (app, _) = app(filled_store().await, config());
    let s = get(&app, &flatpak_uri(), &[]).await;
    let d = get(&app, &format!("/index/dynamic?{FLATPAK_QUERY}"), &[]).await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.header("cache-control"), Some("no-store"));
    assert_eq!(d.body, s.body);
    assert_eq!(d.header("etag"), s.header("etag"));
}

#[tokio::test]
async fn etag_is_the_same_on_every_replica_and_restart() {
    let (a, _) = app(filled_store().await, config());
    let (b, _) = app(filled_store().await, config());
    let ra = get(&a, "/index/static", &[]).await;
    let rb = get(&b, "/index/static", &[]).await;
    assert_eq!(ra.body, rb.body);
    assert_eq!(ra.header("etag"), rb.header("etag"));
    // Parameter order and spelling do not matter: the canonical query is the key.
    let q1 = get(&a, "/index/static?os=linux&architecture=amd64", &[]).await;
    let q2 = get(
        &a,
        "/index/static?architecture=amd64&os=linux&os=linux",
        &[],
    )
    .await;
    assert_eq!(q1.header("etag"), q2.header("etag"));
}

#[tokio::test]
async fn if_none_match_answers_304() {
    let (app, _) = app(filled_store().await, config());
    let first = get(&app, &flatpak_uri(), &[]).await;
    let etag = first.header("etag").unwrap().to_owned();
    let hash = etag.trim_matches('"').to_owned();
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
        format!("\"{hash}-gzip\""),
    ] {
        let r = get(&app, &flatpak_uri(), &[("if-none-match", &inm)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("cache-control"), Some("max-age=123"));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    }
    for inm in [
        "\"other\"",
        &hash,
        "W/\"x\"",
        "\"\"",
        &format!("\"{hash}-lz4\""),
    ] {
        let r = get(&app, &flatpak_uri(), &[("if-none-match", inm)]).await;
        assert_eq!(r.status, StatusCode::OK, "{inm}");
        assert_eq!(r.body, first.body);
    }
    // With compression the 304 names the compressed representation.
    let r = get(
        &app,
        &flatpak_uri(),
        &[("if-none-match", &etag), ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.header("etag"), Some(format!("\"{hash}-gzip\"").as_str()));
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        other => panic!("{other}"),
    }
    out
}

#[tokio::test]
async fn compressed_representations() {
    let (app, _) = app(filled_store().await, config());
    let plain = get(&app, "/index/static", &[]).await;
    let hash = plain.header("etag").unwrap().trim_matches('"').to_owned();
    for (accept, coding) in [
        ("gzip", "gzip"),
        ("zstd", "zstd"),
        ("br", "br"),
        ("gzip, deflate, br, zstd", "br"),
        ("gzip;q=1, br;q=0.1", "gzip"),
    ] {
        let r = get(&app, "/index/static", &[("accept-encoding", accept)]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-encoding"), Some(coding), "{accept}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let suffix = if coding == "br" { "br" } else { coding };
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{hash}-{suffix}\"").as_str())
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        assert_eq!(decode(coding, &r.body), plain.body.to_vec(), "{accept}");
    }
    for accept in ["gzip;q=0", "identity", "deflate", "gzip;q=0, *;q=0"] {
        let r = get(&app, "/index/static", &[("accept-encoding", accept)]).await;
        assert_eq!(r.header("content-encoding"), None, "{accept}");
        assert_eq!(r.body, plain.body);
    }
}

#[tokio::test]
async fn head_sends_the_same_headers_without_body() {
    let (app, _) = app(filled_store().await, config());
    for accept in ["identity", "gzip"] {
        let g = get(&app, &flatpak_uri(), &[("accept-encoding", accept)]).await;
        let h = request(
            &app,
            Method::HEAD,
            &flatpak_uri(),
            &[("accept-encoding", accept)],
            Body::empty(),
        )
        .await;
        assert_eq!(h.status, StatusCode::OK);
        assert!(h.body.is_empty());
        for name in [
            "etag",
            "cache-control",
            "vary",
            "content-type",
            "content-encoding",
        ] {
            assert_eq!(h.header(name), g.header(name), "{name}");
        }
        assert_eq!(
            h.header("content-length"),
            Some(g.body.len().to_string().as_str())
        );
    }
    let bad = request(
        &app,
        Method::HEAD,
        "/index/static?nope=1",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.is_empty());
}

#[tokio::test]
async fn a_store_change_is_seen_at_once() {
    let store = filled_store().await;
    let (app, _) = app(store.clone(), config());
    let before = get(&app, &flatpak_uri(), &[]).await;
    let etag = before.header("etag").unwrap().to_owned();
    let other = flatpak_app("org.example.Other", "amd64").build();
    store
        .apply(&put_image("apps/org.example.other", "latest", &other))
        .await
        .unwrap();
    let after = get(&app, &flatpak_uri(), &[("if-none-match", &etag)]).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_ne!(after.header("etag"), Some(etag.as_str()));
    assert_eq!(after.json()["Results"].as_array().unwrap().len(), 2);
    store
        .apply(&delete_tag("apps/org.example.other", "latest"))
        .await
        .unwrap();
    let back = get(&app, &flatpak_uri(), &[]).await;
    assert_eq!(back.body, before.body);
    assert_eq!(back.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn repeated_queries_cost_no_store_work() {
    let store = Arc::new(common::InstrumentedStore::default());
    fill(&store.inner).await;
    let (app, state) = app(store.clone(), config());
    for accept in ["gzip", "gzip", "identity", "br"] {
        let r = get(&app, &flatpak_uri(), &[("accept-encoding", accept)]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let reordered = "tag=latest&os=linux&architecture=amd64&label:org.flatpak.ref:exists=1";
    get(&app, &format!("/index/static?{reordered}"), &[]).await;
    assert_eq!(store.queries.load(Ordering::SeqCst), 1);
    assert_eq!(state.metrics().cache_misses.get(), 1);
    assert_eq!(state.metrics().cache_hits.get(), 4);
    get(&app, "/index/static?os=linux", &[]).await;
    assert_eq!(store.queries.load(Ordering::SeqCst), 2);
    assert_eq!(state.cache().len(), 2);
}

#[tokio::test]
async fn bad_queries_are_400_naming_the_parameter() {
    let (app, _) = app(filled_store().await, config());
    let long = format!("tag={}", "a".repeat(9000));
    for (query, needle) in [
        ("colour=red", "colour"),
        (
            "label:org.flatpak.ref:exists=2",
            "label:org.flatpak.ref:exists",
        ),
        ("label:=x", "label:"),
        ("tag=", "tag"),
        ("repository=%ff", "repository"),
        ("%ff=1", "%ff"),
        (long.as_str(), "limit"),
    ] {
        for endpoint in ["static", "dynamic"] {
            let r = get(&app, &format!("/index/{endpoint}?{query}"), &[]).await;
            let message = r.expect_error(StatusCode::BAD_REQUEST, "invalid_query");
            assert!(message.contains(needle), "{query}: {message}");
        }
    }
}

#[tokio::test]
async fn store_failures_are_503_or_500() {
    let store = Arc::new(common::InstrumentedStore::default());
    fill(&store.inner).await;
    let (app, _) = app(store.clone(), config());
    store.fault.store(1, Ordering::SeqCst);
    let r = get(&app, &flatpak_uri(), &[]).await;
    r.expect_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    // A bad query is still the client's fault, whatever the store's state.
    get(&app, "/index/static?nope=1", &[])
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_query");
    store.fault.store(2, Ordering::SeqCst);
    let r = get(&app, &flatpak_uri(), &[]).await;
    r.expect_error(StatusCode::INTERNAL_SERVER_ERROR, "store_error");
    store.fault.store(0, Ordering::SeqCst);
    assert_eq!(get(&app, &flatpak_uri(), &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn empty_store_answers_empty_results() {
    let (app, _) = app(Arc::new(MemoryStore::new()), HttpConfig::default());
    let r = get(&app, &flatpak_uri(), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        serde_json::json!({"Registry": "/", "Results": []})
    );
}

/// An answer that takes longer to build than a request may wait: the first requests get
/// `503` at their deadline, the build goes on in its own task, and a later request gets
/// the answer. The store is asked once: a request that gives up does not restart the
/// build (before, every retry started it over and the answer never existed).
#[tokio::test]
async fn an_answer_slower_than_the_request_deadline_is_built_once_and_served_later() {
    let store = Arc::new(InstrumentedStore::default());
    fill(&store.inner).await;
    store.query_delay_ms.store(700, Ordering::SeqCst);
    let (app, _) = app(store.clone(), {
        let mut fields = HttpConfig::default();
        fields.request_timeout = Duration::from_millis(200);
        fields
    });
    let m = get(&app, "/index/static?tag=latest", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert!(m.contains("request timeout"), "{m}");
    let mut answered = None;
    for _ in 0..40 {
        let r = get(&app, "/index/static?tag=latest", &[]).await;
        if r.status == StatusCode::OK {
            answered = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let answered = answered.expect("the answer was never served");
    assert!(!answered.json()["Results"].as_array().unwrap().is_empty());
    assert_eq!(store.queries.load(Ordering::SeqCst), 1, "built once");
}

/// A build that outlasts `build_timeout` is abandoned: `503` naming the limit, nothing
/// cached, and the next request builds again.
#[tokio::test]
async fn a_build_longer_than_the_build_timeout_is_abandoned() {
    let store = Arc::new(InstrumentedStore::default());
    fill(&store.inner).await;
    store.query_delay_ms.store(5_000, Ordering::SeqCst);
    let (app, state) = app(store.clone(), {
        let mut fields = HttpConfig::default();
        fields.build_timeout = Duration::from_millis(200);
        fields
    });
    let m = get(&app, "/index/static", &[])
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert!(m.contains("build timeout"), "{m}");
    assert!(state.cache().is_empty(), "nothing cached");
    store.query_delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(get(&app, "/index/static", &[]).await.status, StatusCode::OK);
    assert_eq!(store.queries.load(Ordering::SeqCst), 2);
}
