//! Hostile query strings: malformed percent-encoding is a `400` naming the parameter on
//! every endpoint that reads a query string, and globs are bounded in size and in the
//! matching work one answer may cost.

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::{Reply, app, filled_store, get, request};
use flagstate_core::Store;
use flagstate_core::conformance::fixtures::{image, repo};
use flagstate_core::query::QueryLimits;
use flagstate_http::{AppState, HttpConfig, router_with, ui};
use serde_json::json;

/// Asserts the JSON `400` of a malformed query naming `parameter`.
fn expect_encoding_error(reply: &Reply, parameter: &str) {
    let message = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_query");
    assert!(
        message.contains(&format!(
            "parameter {parameter:?} is not valid percent-encoded"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_percent_encoding_is_refused_on_every_api_endpoint() {
    let config = {
        let mut fields = HttpConfig::default();
        fields.assert_endpoint = true;
        fields
    };
    let (app, _) = app(filled_store().await, config);
    for uri in [
        "/index/static?tag=%ZZ",
        "/index/dynamic?tag=%ZZ",
        "/index/static?os=linux&tag=abc%",
        "/v1/search?q=editor&tag=%ZZ",
        "/v2/_catalog?tag=%ZZ",
    ] {
        expect_encoding_error(&get(&app, uri, &[]).await, "tag");
    }
    // `/v1/search` no longer searches for a literal `%ZZ`.
    expect_encoding_error(&get(&app, "/v1/search?q=%ZZ", &[]).await, "q");
    // `/assert` reads its own query string and the query in its body.
    let body = json!({"Query": "tag=latest", "Assertions": []}).to_string();
    let headers = [("content-type", "application/json")];
    let r = request(&app, Method::POST, "/assert?tag=%ZZ", &headers, body).await;
    expect_encoding_error(&r, "tag");
    let body = json!({"Query": "tag=%ZZ", "Assertions": []}).to_string();
    let r = request(&app, Method::POST, "/assert", &headers, body).await;
    expect_encoding_error(&r, "tag");
    // Well-formed escapes still work.
    let ok = get(&app, "/index/static?tag=%6Catest", &[]).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(!ok.json()["Results"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_percent_encoding_is_a_bad_request_page_in_the_ui() {
    let store: Arc<dyn Store> = filled_store().await;
    let state = AppState::new(store, None, HttpConfig::default());
    let app = router_with(state, ui::routes());
    for (uri, parameter) in [
        ("/search?tag=%ZZ", "tag"),
        ("/search?q=%ZZ", "q"),
        ("/?page=1%", "page"),
        ("/apps?q=%G1", "q"),
    ] {
        let r = get(&app, uri, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            r.header("content-type").unwrap().starts_with("text/html"),
            "{uri}"
        );
        let body = String::from_utf8_lossy(&r.body);
        let named = [
            format!("&quot;{parameter}&quot;"),
            format!("&#34;{parameter}&#34;"),
        ];
        assert!(
            named.iter().any(|n| body.contains(n.as_str())),
            "{uri}: {body}"
        );
        assert!(body.contains("not valid percent-encoded"), "{uri}: {body}");
    }
}

/// Five images whose label `k` is 60 KB of `a` (and a tag of `a`s), as in the audit.
async fn big_label_store() -> Arc<dyn Store> {
    let store = Arc::new(flagstate_core::MemoryStore::new());
    let value = "a".repeat(60 * 1024);
    let mut snapshot = repo("big/labels");
    for i in 0..5 {
        let img = image(&format!("big {i}")).label("k", &value).build();
        snapshot = snapshot.image(&format!("{}{i}", "a".repeat(100)), &img);
    }
    store.replace_repository(&snapshot.build()).await.unwrap();
    store
}

/// The audit's pathological query: `*` and about 8 KB of `a`, then `b`.
fn pathological() -> String {
    format!("label:k:matches=*{}b", "a".repeat(8000))
}

#[tokio::test]
async fn pathological_glob_is_refused_by_the_default_limits() {
    let (app, _) = app(big_label_store().await, HttpConfig::default());
    let r = get(&app, &format!("/index/static?{}", pathological()), &[]).await;
    let message = r.expect_error(StatusCode::BAD_REQUEST, "invalid_query");
    assert!(
        message.contains("\"label:k:matches\"") && message.contains("the limit is 256"),
        "{message}"
    );
    let stars = format!("/index/dynamic?tag:matches={}", "*a".repeat(17));
    let message = get(&app, &stars, &[])
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_query");
    assert!(
        message.contains("\"tag:matches\"") && message.contains("17 `*`"),
        "{message}"
    );
}

#[tokio::test]
async fn long_globs_allowed_by_configuration_answer_correctly() {
    let config = {
        let mut fields = HttpConfig::default();
        fields.query_limits = QueryLimits {
            max_pattern_bytes: 16 * 1024,
            max_pattern_wildcards: 8 * 1024,
            ..QueryLimits::default()
        };
        fields
    };
    let (app, _) = app(big_label_store().await, config);
    let none = get(&app, &format!("/index/static?{}", pathological()), &[]).await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.json()["Results"], json!([]));
    let stars = format!("/index/static?label:k:matches={}", "*a".repeat(4000));
    let all = get(&app, &stars, &[]).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        all.json()["Results"][0]["Images"].as_array().unwrap().len(),
        5
    );
}

#[tokio::test]
async fn globs_over_the_cost_budget_are_refused() {
    let config = {
        let mut fields = HttpConfig::default();
        fields.query_limits = QueryLimits {
            max_match_cost: 1024 * 1024,
            ..QueryLimits::default()
        };
        fields
    };
    let (app, _) = app(big_label_store().await, config);
    // Within the size limits, but each comparison re-checks the segment at every `a`.
    let expensive = format!("/index/static?label:k:matches=*{}b*", "a?".repeat(100));
    // The second request builds from the remembered parsed query, with a budget of its
    // own: refused again, and for the same reason.
    for _ in 0..2 {
        let message = get(&app, &expensive, &[])
            .await
            .expect_error(StatusCode::BAD_REQUEST, "query_too_expensive");
        assert!(message.contains("\"label:k:matches\""), "{message}");
    }
    // A cheap glob over the same values is answered.
    let cheap = get(&app, "/index/static?label:k:matches=aaa*", &[]).await;
    assert_eq!(cheap.status, StatusCode::OK);
    assert_eq!(
        cheap.json()["Results"][0]["Images"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn a_remembered_query_is_rebuilt_with_a_fresh_budget_after_a_change() {
    // `*b*` scans each 60 KiB value once: about 300 K units per answer, within a budget
    // of 400 K but not twice over, so a rebuild that inherited the first answer's spent
    // budget would be refused.
    let config = {
        let mut fields = HttpConfig::default();
        fields.query_limits = QueryLimits {
            max_match_cost: 400_000,
            ..QueryLimits::default()
        };
        fields
    };
    let store = big_label_store().await;
    let (app, _) = app(store.clone(), config);
    let uri = "/index/static?label:k:matches=*b*";
    let first = get(&app, uri, &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["Results"], json!([]));
    // A change: the remembered raw query misses and is answered from its parsed query.
    let img = image("small").label("k", "xbx").build();
    store
        .replace_repository(&repo("small/app").image("latest", &img).build())
        .await
        .unwrap();
    for _ in 0..2 {
        let again = get(&app, uri, &[]).await;
        assert_eq!(again.status, StatusCode::OK, "{:?}", again.json());
        let results = again.json()["Results"].clone();
        assert_eq!(results.as_array().unwrap().len(), 1, "{results}");
        assert_eq!(results[0]["Name"], "small/app");
    }
}
