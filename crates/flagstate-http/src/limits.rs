//! Per-request limits, applied to every route by [`crate::router_with`]: a deadline for
//! producing the response head ([`HttpConfig::request_timeout`](crate::HttpConfig)) and a
//! cap on requests in flight ([`HttpConfig::max_in_flight`](crate::HttpConfig)) beyond
//! which requests are shed at once with `503` and `Retry-After`, instead of queueing
//! until every client times out.
//!
//! The probes `/healthz` and `/readyz` are never shed, so an orchestrator does not kill
//! a server for being busy. `POST /assert` has no deadline here: it waits for a state
//! by design, bounded by its own `timeout` (at most `max_assert_timeout`).
//!
//! A hand-written layer rather than tower's `LoadShed` + `ConcurrencyLimit` +
//! `Timeout`: those answer with errors that need an extra error-handling layer to become
//! responses, and the answers here are this API's JSON errors with `Retry-After`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::HttpError;
use crate::state::AppState;

/// Seconds a shed or timed-out client is asked to wait before retrying.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// The shared counters of the request limits.
#[derive(Debug)]
pub struct RequestLimiter {
    in_flight: Arc<Semaphore>,
    watchers: Arc<Semaphore>,
}

impl RequestLimiter {
    /// Room for `max_in_flight` requests and `max_watchers` change-feed watchers at
    /// once (at least one each).
    pub fn new(max_in_flight: usize, max_watchers: usize) -> Self {
        RequestLimiter {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            watchers: Arc::new(Semaphore::new(max_watchers.max(1))),
        }
    }

    /// A watcher's place, held while it waits or streams; `None` when all are taken.
    pub fn watcher(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.watchers.clone().try_acquire_owned().ok()
    }
}

/// The change feed, which waits by design when asked to (`wait=`, or an event stream):
/// then it takes a watcher's place ([`RequestLimiter::watcher`]) instead of a request's,
/// and bounds its own wait. Its other requests are requests like any other.
pub(crate) const CHANGES_PATH: &str = "/v2/_flagstate/changes";

/// Whether `request` is a change-feed request that waits (see [`CHANGES_PATH`]).
pub(crate) fn is_watcher(request: &Request) -> bool {
    if request.uri().path() != CHANGES_PATH {
        return false;
    }
    let streams = request
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let waits = request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.strip_prefix("wait=").is_some_and(|v| !v.is_empty()))
    });
    streams || waits
}

/// Whether `path` is a probe, never shed (also how the OpenAPI description knows which
/// operations have no `503`).
pub(crate) fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The middleware. See the module docs.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if is_probe(path) || is_watcher(&request) {
        return next.run(request).await;
    }
    let deadline = (path != "/assert").then_some(state.config().request_timeout);
    let Ok(_permit) = state.limiter().in_flight.clone().try_acquire_owned() else {
        state.metrics().requests_shed.inc();
        return HttpError::Overloaded(format!(
            "the server is answering {} requests already; try again shortly",
            state.config().max_in_flight
        ))
        .into_response();
    };
    match deadline {
        None => next.run(request).await,
        Some(deadline) => match tokio::time::timeout(deadline, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                state.metrics().requests_timed_out.inc();
                HttpError::Overloaded(format!(
                    "the answer took longer than the server's request timeout of {}s",
                    deadline.as_secs_f64()
                ))
                .into_response()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, accept: Option<&str>) -> Request {
        let mut builder = axum::http::Request::get(uri);
        if let Some(accept) = accept {
            builder = builder.header("accept", accept);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_waiting_change_feed_requests_are_watchers() {
        assert!(is_watcher(&request(
            "/v2/_flagstate/changes?since=3&wait=30s",
            None
        )));
        assert!(is_watcher(&request(
            "/v2/_flagstate/changes",
            Some("text/event-stream")
        )));
        // Quick reads of the feed are requests like any other.
        assert!(!is_watcher(&request(
            "/v2/_flagstate/changes?since=3",
            None
        )));
        assert!(!is_watcher(&request("/v2/_flagstate/changes?wait=", None)));
        assert!(!is_watcher(&request(
            "/v2/_flagstate/changes?nowait=1",
            None
        )));
        assert!(!is_watcher(&request(
            "/index/static?wait=30s",
            Some("text/event-stream")
        )));
    }
}
