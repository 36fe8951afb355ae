//! # flagstate-http
//!
//! The HTTP face of flagstate, and the only crate that knows HTTP. It serves:
//!
//! | path | what | module |
//! |---|---|---|
//! | `GET\|HEAD /index/static`, `/index/dynamic` | the registry index protocol (cached, ETag, gzip/zstd/br) | [`index`], [`cache`], [`encoding`] |
//! | `POST /events` | registry notifications (distribution envelopes, CloudEvents) | [`events`] |
//! | `GET /v1/search`, `/v2/`, `/v2/_catalog` | `docker search` / `podman search` | [`search`] |
//! | `POST /assert` | wait until a query's answer satisfies assertions (opt-in) | [`assert`](mod@assert) |
//! | `GET /icons/{hh}/{rest}.png` | extracted application icons | [`icons`] |
//! | `GET /healthz`, `/readyz`, `/metrics` | liveness, readiness, Prometheus metrics | [`health`], [`metrics`] |
//! | `GET /openapi.json` | the OpenAPI 3.1 description of all of the above (and the UI's pages when merged) | [`openapi`] |
//!
//! Unknown paths answer `404` and known paths with the wrong method `405` (with `Allow`),
//! both as JSON `{"error": {"code", "message"}}` like every other API error
//! ([`HttpError`]).
//!
//! Serve a router with [`serve`] (or over TLS with [`serve_tls`] and a [`TlsConfig`]),
//! which bounds connections, TLS handshakes, header reads, idle and stalled clients
//! ([`ServerConfig`]); every route is also bounded per request
//! ([`limits`]: a deadline and a cap on requests in flight).
//!
//! Build the router with [`router`] from an [`AppState`] (store, optional indexer,
//! [`HttpConfig`]); merge more routes (such as the web UI, [`ui::routes`]) with
//! [`router_with`]. Routes are registered from their OpenAPI descriptions
//! (`#[utoipa::path]` on each handler, [`OpenApiRouter`]), so `/openapi.json` lists
//! exactly the routes the router serves. Handlers stay thin: query semantics, event parsing and indexing live
//! in `flagstate-core`.

#![warn(missing_docs)]

pub mod assert;
pub mod body;
pub mod cache;
pub mod changes;
pub mod conditional;
pub mod config;
pub mod detached;
pub mod discovery;
pub mod encoding;
pub mod error;
pub mod events;
pub mod health;
pub mod icons;
pub mod index;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod search;
pub mod server;
pub mod state;
pub mod tls;
pub mod ui;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::middleware::from_fn_with_state;
use axum::{Extension, Router};
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use config::{BuildInfo, HttpConfig};
pub use error::HttpError;
pub use server::{ServerConfig, serve, serve_tls};
pub use state::AppState;
pub use tls::{TlsConfig, TlsError};

/// The API's routes with their OpenAPI descriptions, without state, fallback, middleware
/// or `/openapi.json`. [`router_with`] adds those; use this only to compose a router by
/// hand.
pub fn api_routes(config: &HttpConfig) -> OpenApiRouter<AppState> {
    let mut routes = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(index::static_index))
        .routes(routes!(index::dynamic_index))
        .routes(routes!(events::receive).layer(DefaultBodyLimit::max(config.max_event_body)))
        .routes(routes!(search::v1_search))
        .routes(routes!(search::ping))
        .routes(routes!(search::catalog))
        .routes(routes!(changes::changes))
        .routes(routes!(discovery::discover))
        .routes(routes!(discovery::repositories))
        .routes(routes!(discovery::repository))
        .routes(routes!(icons::serve))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::render));
    if config.assert_endpoint {
        routes = routes
            .routes(routes!(assert::check).layer(DefaultBodyLimit::max(assert::MAX_ASSERT_BODY)));
    }
    routes
}

/// The complete API router over `state`.
pub fn router(state: AppState) -> Router {
    router_with(state, OpenApiRouter::new())
}

/// The API router with `extra` routes merged in (e.g. `ui::routes()`); `extra` must not
/// define a path the API defines. Requests to `extra` are measured by `/metrics` too, and
/// `/openapi.json` describes them with the API (a plain [`Router`] converts with `into()`
/// and is served undescribed).
pub fn router_with(state: AppState, extra: OpenApiRouter<AppState>) -> Router {
    let (routes, api) = api_routes(state.config())
        .merge(extra)
        .routes(routes!(openapi::serve))
        .split_for_parts();
    routes
        .layer(Extension(Arc::new(openapi::Document::new(api))))
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), limits::limit))
        .layer(from_fn_with_state(state.clone(), metrics::observe))
        .with_state(state)
}

async fn not_found(uri: Uri) -> HttpError {
    HttpError::NotFound(format!("no such endpoint: {}", uri.path()))
}
