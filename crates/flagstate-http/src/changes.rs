//! `GET /v2/_flagstate/changes`: the change feed (`flagstate_core::changes`) as JSON pages,
//! long polls and Server-Sent Events, with records in the CloudEvents 1.0 structured
//! format (core's [`ChangeEvent`], the same JSON the outgoing webhooks send).
//!
//! - `since=CURSOR` continues after a record's cursor (or the `Flagstate-Cursor` of a
//!   listing); without it the feed starts now. A cursor retention has passed gets `410`
//!   naming the oldest cursor still valid, so the client knows to list again.
//! - `n` (default 100, at most 1000), `namespace`, `repository` and `type` (kinds, comma
//!   separated: `tag.created,tag.deleted`) narrow the page.
//! - `wait=30s` (at most 60 s) holds the request until at least one record passes the
//!   filter or the time is up.
//! - `Accept: text/event-stream` streams the records as they come: `id:` is the cursor,
//!   so `Last-Event-ID` resumes after a reconnect; a comment every 15 s keeps idle
//!   connections open.
//!
//! New records are read once per change by the state's shared reader of the log
//! ([`AppState::change_hub`], core's `ChangeHub`): waiting requests and streams take
//! them from its window of the newest records (`change_buffer_records`) and are woken
//! when it moves on; one further behind reads the store until it is inside. Watchers
//! take a place of their own
//! ([`HttpConfig::max_change_watchers`](crate::HttpConfig)), not a request's.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flagstate_core::changes::{
    ChangeCursor, ChangeEvent, ChangeFilter, ChangeFollower, ChangeHub, ChangeKind, ChangePage,
    DEFAULT_WATCH_FALLBACK,
};
use flagstate_core::{RepositoryName, Store, StoreExt};
use serde::Serialize;
use utoipa::ToSchema;

use crate::discovery::{RegistryError, RegistryErrors, page_size};
use crate::params::{QueryParams, Repeated};
use crate::state::AppState;

/// Longest `wait=` a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The header naming the change cursor a listing reflects.
pub const CURSOR_HEADER: &str = "flagstate-cursor";

/// The body of a page of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Changes {
    /// The records after `since` that pass the filter, oldest first.
    pub changes: Vec<ChangeEvent>,
    /// Where to continue: pass it as `since` of the next request.
    pub next: String,
}

/// What a request asks for.
struct Request {
    since: Option<ChangeCursor>,
    filter: ChangeFilter,
    n: usize,
    wait: Option<Duration>,
}

fn bad(message: String) -> RegistryError {
    RegistryError::bad("UNSUPPORTED", message)
}

impl Request {
    fn parse(raw: Option<&str>, headers: &HeaderMap) -> Result<Self, RegistryError> {
        let params = QueryParams::parse(raw, Repeated::Last).map_err(|e| bad(e.to_string()))?;
        let n = page_size(&params, 1)?;
        let last_event = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let since = match params.get("since").filter(|s| !s.is_empty()).or(last_event) {
            None => None,
            Some(text) => Some(ChangeCursor::parse(text).ok_or_else(|| {
                bad(format!(
                    "parameter \"since\" (or Last-Event-ID) is not a change cursor: {text:?} (pass on an event's id, a page's next or a listing's Flagstate-Cursor)"
                ))
            })?),
        };
        let mut filter = ChangeFilter::default();
        if let Some(text) = params.get("repository").filter(|s| !s.is_empty()) {
            filter.repository = Some(RepositoryName::parse(text).map_err(|e| {
                RegistryError::bad("NAME_INVALID", format!("parameter \"repository\": {e}"))
            })?);
        }
        if let Some(text) = params.get("namespace").filter(|s| !s.is_empty()) {
            let namespace = RepositoryName::parse(text).map_err(|e| {
                RegistryError::bad("NAME_INVALID", format!("parameter \"namespace\": {e}"))
            })?;
            filter.namespace = Some(namespace.to_string());
        }
        if let Some(text) = params.get("type").filter(|s| !s.is_empty()) {
            for name in text.split(',') {
                let name = name.trim();
                let kind = ChangeKind::parse(name.strip_prefix("io.flagstate.").unwrap_or(name))
                    .ok_or_else(|| {
                        let known: Vec<&str> = ChangeKind::ALL.iter().map(|k| k.as_str()).collect();
                        bad(format!(
                            "parameter \"type\": unknown change type {name:?} (known: {})",
                            known.join(", ")
                        ))
                    })?;
                filter.kinds.insert(kind);
            }
        }
        let wait = match params.get("wait").filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => {
                let wait = humantime::parse_duration(text)
                    .or_else(|_| text.parse::<u64>().map(Duration::from_secs))
                    .map_err(|_| {
                        bad(format!(
                            "parameter \"wait\" must be a duration such as 30s or 500ms, got {text:?}"
                        ))
                    })?;
                if wait > MAX_WAIT {
                    return Err(bad(format!(
                        "parameter \"wait\" may be at most {}s, got {text:?}",
                        MAX_WAIT.as_secs()
                    )));
                }
                Some(wait)
            }
        };
        Ok(Request {
            since,
            filter,
            n,
            wait,
        })
    }
}

/// `410 Gone` for a cursor retention has passed, naming the oldest valid one.
fn gone(since: ChangeCursor, oldest: ChangeCursor) -> RegistryError {
    RegistryError::new(
        StatusCode::GONE,
        "CURSOR_EXPIRED",
        format!(
            "cursor {since} is older than the change log keeps; list again and follow from the listing's Flagstate-Cursor, or from the oldest cursor still kept: {oldest}"
        ),
    )
    .with_detail(serde_json::json!({ "oldest": oldest.to_string() }))
}

/// One read of the feed, refusing a cursor retention has passed.
async fn read(
    store: &dyn Store,
    after: ChangeCursor,
    filter: &ChangeFilter,
    n: usize,
) -> Result<ChangePage, RegistryError> {
    let page = store.changes_since(after, filter, n).await?;
    if after < page.oldest {
        return Err(gone(after, page.oldest));
    }
    Ok(page)
}

/// `response` with the `Flagstate-Cursor` header naming `cursor`: the change cursor the
/// answer reflects, from which the feed has every change after it.
pub(crate) fn with_cursor(mut response: Response, cursor: ChangeCursor) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cursor.to_string()) {
        response.headers_mut().insert(CURSOR_HEADER, value);
    }
    response
}

/// The cursor "now": after every record of the current generation.
pub(crate) async fn now(store: &dyn Store) -> Result<ChangeCursor, RegistryError> {
    Ok(ChangeCursor::at_generation(store.generation().await?))
}

/// `GET /v2/_flagstate/changes`: the change feed.
#[utoipa::path(
    get,
    path = "/v2/_flagstate/changes",
    operation_id = "discover_changes",
    tag = "discovery",
    params(
        ("since" = Option<String>, Query, description = "Continue after this cursor (an event's `id`, a page's `next`, a listing's `Flagstate-Cursor`); without it, from now. `Last-Event-ID` does the same for event streams."),
        ("n" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Records per page (default 100, at most 1000)."),
        ("namespace" = Option<String>, Query, description = "Only repositories under `namespace/`."),
        ("repository" = Option<String>, Query, description = "Only this repository."),
        ("type" = Option<String>, Query, description = "Only these kinds, comma separated: `repository.created`, `repository.deleted`, `tag.created`, `tag.updated`, `tag.deleted`, `manifest.untagged.created`, `manifest.untagged.deleted`, `referrer.created`, `referrer.deleted` (with or without the `io.flagstate.` prefix)."),
        ("wait" = Option<String>, Query, description = "Wait up to this long (e.g. `30s`, at most `60s`) for at least one record."),
    ),
    responses(
        (status = 200, description = "A page of records, as CloudEvents; or, with `Accept: text/event-stream`, a stream of them (`id:` the cursor, `data:` the event).",
            body = Changes,
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 400, description = "A malformed parameter, named in the message.", body = RegistryErrors),
        (status = 410, description = "`since` is older than the log keeps (`CURSOR_EXPIRED`); `detail.oldest` is the oldest cursor still valid.", body = RegistryErrors),
        (status = 503, description = "Too many watchers (`TOOMANYREQUESTS`), or the store is unavailable (`UNAVAILABLE`).", body = RegistryErrors),
    )
)]
pub async fn changes(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, RegistryError> {
    let request = Request::parse(raw.as_deref(), &headers)?;
    let store = state.store().clone();
    let since = match request.since {
        Some(since) => since,
        None => now(store.as_ref()).await?,
    };
    let source = store
        .public_registry(&state.config().public_registry_url)
        .await?;
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let waits = streaming || request.wait.is_some();
    let permit = match waits {
        false => None,
        true => Some(state.limiter().watcher().ok_or_else(|| {
            RegistryError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TOOMANYREQUESTS",
                format!(
                    "{} clients are following the change feed already; try again shortly",
                    state.config().max_change_watchers
                ),
            )
        })?),
    };
    if streaming {
        // Refuse an expired cursor before the stream starts, while a status can still say so.
        read(store.as_ref(), since, &request.filter, 1).await?;
        return Ok(stream(
            store,
            state.change_hub(),
            since,
            request.filter,
            request.n,
            source,
            permit,
        ));
    }
    let mut page = read(store.as_ref(), since, &request.filter, request.n).await?;
    if let Some(wait) = request.wait {
        let deadline = tokio::time::Instant::now() + wait;
        // Woken by the shared reader of the log, and reading from its window (one store
        // read per change for every waiting request); behind the window, from the store.
        let hub = state.change_hub();
        let mut subscription = hub.subscribe();
        while page.records.is_empty() && tokio::time::Instant::now() < deadline {
            subscription.mark_seen();
            match hub.read(page.next, &request.filter, request.n) {
                Some(read) => {
                    page.next = read.next;
                    page.records = read.records;
                }
                None => {
                    page = read(store.as_ref(), page.next, &request.filter, request.n).await?;
                }
            }
            if page.records.is_empty() {
                let _ = tokio::time::timeout_at(deadline, subscription.changed()).await;
            }
        }
    }
    drop(permit);
    let body = Changes {
        next: page.next.to_string(),
        changes: page
            .records
            .into_iter()
            .map(|r| ChangeEvent::new(r, &source))
            .collect(),
    };
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The event stream from `since`: every record as it comes, holding `permit` while the
/// client listens. A store failure ends the stream (the client reconnects with
/// `Last-Event-ID`).
fn stream(
    store: std::sync::Arc<dyn Store>,
    hub: ChangeHub,
    since: ChangeCursor,
    filter: ChangeFilter,
    n: usize,
    source: String,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Response {
    let events = async_stream(store, hub, since, filter, n, source, permit);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Reverse proxies that buffer responses (nginx by default) would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn async_stream(
    store: std::sync::Arc<dyn Store>,
    hub: ChangeHub,
    since: ChangeCursor,
    filter: ChangeFilter,
    n: usize,
    source: String,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send {
    // The hub's window serves the follower and wakes it, also while it is behind the
    // window; its own look every fallback period is the safety net.
    let follower =
        ChangeFollower::new(store, since, filter, n, DEFAULT_WATCH_FALLBACK).with_hub(hub);
    // The permit lives as long as the stream: one watcher's place per open stream.
    futures::stream::unfold((follower, permit), move |(mut follower, permit)| {
        let source = source.clone();
        async move {
            let record = follower.next().await.ok()?;
            let id = record.cursor.to_string();
            let event = ChangeEvent::new(record, &source);
            let data = serde_json::to_string(&event).unwrap_or_default();
            Some((Ok(Event::default().id(id).data(data)), (follower, permit)))
        }
    })
}
