//! `GET /openapi.json`: the document lists exactly the routes the router serves, each
//! with the answers the server gives, and follows the configuration (web UI, `/assert`).
//! (`tests/openapi.rs` of the root package runs schemathesis against a real server.)

mod common;

use std::collections::BTreeSet;

use axum::Router;
use axum::http::{Method, StatusCode};
use common::*;
use flagstate_http::{AppState, HttpConfig, router_with, ui};
use serde_json::Value;

/// Every operation of the full server (API, `/assert`, web UI), as `METHOD path`.
const EVERY_OPERATION: &[&str] = &[
    "GET /",
    "GET /apps",
    "GET /healthz",
    "GET /i/{digest}",
    "GET /icons/{prefix}/{file}",
    "GET /index/dynamic",
    "GET /index/static",
    "GET /metrics",
    "GET /openapi.json",
    "GET /r/{path}",
    "GET /readyz",
    "GET /search",
    "GET /static/{file}",
    "GET /v1/search",
    "GET /v2/",
    "GET /v2/_catalog",
    "GET /v2/_flagstate/changes",
    "GET /v2/_flagstate/repositories",
    "GET /v2/_oci/ext/discover",
    "GET /v2/{path}",
    "POST /assert",
    "POST /events",
];

async fn full_app() -> Router {
    let config = {
        let mut fields = HttpConfig::default();
        fields.assert_endpoint = true;
        fields
    };
    let state = AppState::new(filled_store().await, None, config);
    router_with(state, ui::routes())
}

async fn document(app: &Router) -> Value {
    let r = get(app, "/openapi.json", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// `METHOD path` of every operation in `doc`.
fn operations(doc: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            found.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    found
}

/// A concrete request path for a documented template (under `/v2/`, `{path}` names one
/// of the discovery extension's per-repository endpoints).
fn concrete(template: &str) -> String {
    let template = template.replace("/v2/{path}", "/v2/apps/hello/_flagstate/tags");
    template
        .replace("{digest}", &format!("sha256:{}", "0".repeat(64)))
        .replace("{prefix}", "ab")
        .replace("{file}", &format!("{}.png", "0".repeat(62)))
        .replace("{path}", "apps/hello")
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_every_route_documented() {
    let app = full_app().await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let expected: BTreeSet<String> = EVERY_OPERATION.iter().map(|s| s.to_string()).collect();
    assert_eq!(operations(&doc), expected);
    // The router answers every documented operation from its handler: not the
    // fallback's 404 and not a 405 for the method.
    for operation in EVERY_OPERATION {
        let (method, template) = operation.split_once(' ').unwrap();
        let method: Method = method.parse().unwrap();
        let r = request(&app, method, &concrete(template), &[], "").await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{operation}");
        if r.status == StatusCode::NOT_FOUND && r.header("content-type") == Some("application/json")
        {
            // This server's error format, or the distribution format under `/v2/`.
            let body = r.json();
            let message = body["error"]["message"]
                .as_str()
                .or(body["errors"][0]["message"].as_str())
                .unwrap()
                .to_owned();
            assert!(
                !message.starts_with("no such endpoint"),
                "{operation}: {message}"
            );
        }
    }
    // And a path that is not documented is not served.
    get(&app, "/not/described", &[])
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_document_follows_the_configuration() {
    let (app, _) = app(filled_store().await, HttpConfig::default());
    let doc = document(&app).await;
    let api_only: BTreeSet<String> = EVERY_OPERATION
        .iter()
        .filter(|op| {
            let path = op.split_once(' ').unwrap().1;
            path.starts_with("/index/")
                || path.starts_with("/v1/")
                || path.starts_with("/v2/")
                || path.starts_with("/icons/")
                || [
                    "/events",
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "/openapi.json",
                ]
                .contains(&path)
        })
        .map(|s| s.to_string())
        .collect();
    assert_eq!(operations(&doc), api_only);
    for absent in ["/", "/assert", "/apps"] {
        assert!(doc["paths"].get(absent).is_none(), "{absent}");
    }
}

#[tokio::test]
async fn answers_statuses_and_headers_are_described() {
    let app = full_app().await;
    let doc = document(&app).await;
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let responses = |path: &str, method: &str| op(path, method)["responses"].clone();

    let index = responses("/index/static", "get");
    for status in ["200", "304", "400", "503"] {
        assert!(index.get(status).is_some(), "index {status}: {index}");
    }
    for header in ["ETag", "Cache-Control"] {
        assert!(index["200"]["headers"].get(header).is_some(), "{header}");
        assert!(index["304"]["headers"].get(header).is_some(), "{header}");
    }
    let index_body = &index["200"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(index_body, "#/components/schemas/IndexResponse");
    let schema = &doc["components"]["schemas"]["IndexResponse"];
    assert_eq!(
        schema["required"],
        serde_json::json!(["Registry", "Results"]),
        "{schema}"
    );
    let index_op = op("/index/static", "get");
    let params: BTreeSet<&str> = index_op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["repository", "tag", "tag:matches", "os", "architecture"] {
        assert!(params.contains(name), "{name}: {params:?}");
    }
    let error = &index["400"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(error, "#/components/schemas/ErrorBody");

    let events = op("/events", "post");
    assert_eq!(
        events["security"],
        serde_json::json!([{"events_token": []}])
    );
    assert!(doc["components"]["securitySchemes"]["events_token"].is_object());
    for status in ["200", "400", "401", "413", "415", "503"] {
        assert!(events["responses"].get(status).is_some(), "events {status}");
    }
    assert!(
        responses("/r/{path}", "get")["200"]["content"]
            .get("text/html")
            .is_some()
    );
    // The request limits shed every route but the probes: a JSON 503 with Retry-After,
    // added to the UI pages' own HTML 503.
    for (path, method) in [("/v1/search", "get"), ("/", "get"), ("/metrics", "get")] {
        let shed = &responses(path, method)["503"];
        assert!(shed["content"].get("application/json").is_some(), "{path}");
        assert!(shed["headers"].get("Retry-After").is_some(), "{path}");
    }
    for probe in ["/healthz", "/readyz"] {
        assert!(
            responses(probe, "get")["503"]["headers"]
                .get("Retry-After")
                .is_none(),
            "{probe}"
        );
    }
    assert!(responses("/healthz", "get").get("503").is_none());
}

#[tokio::test]
async fn the_document_is_cacheable() {
    let app = full_app().await;
    let first = get(&app, "/openapi.json", &[]).await;
    let etag = first.header("etag").expect("ETag").to_owned();
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    let again = get(&app, "/openapi.json", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
}

/// Path segments that do not decode (percent-encoded bytes that are not UTF-8) are
/// answered like any other bad or unknown path of that route, with a documented status
/// and content type, not with the framework's plain-text rejection.
#[tokio::test]
async fn undecodable_paths_get_documented_answers() {
    let app = full_app().await;
    let doc = document(&app).await;
    for (template, uri) in [
        ("/i/{digest}", "/i/%FF"),
        ("/r/{path}", "/r/%FF"),
        ("/r/{path}", "/r/apps/%FF/@sha256:00"),
        ("/static/{file}", "/static/%FF.css"),
        ("/icons/{prefix}/{file}", "/icons/%FF/00.png"),
    ] {
        let r = get(&app, uri, &[]).await;
        let status = r.status.as_u16().to_string();
        let described = &doc["paths"][template]["get"]["responses"][&status];
        assert!(described.is_object(), "{uri}: {status} is not described");
        let content_type = r.header("content-type").unwrap();
        let essence = content_type.split(';').next().unwrap().trim();
        assert!(
            described["content"].get(essence).is_some(),
            "{uri}: {status} {content_type} is not described: {described}"
        );
    }
}
