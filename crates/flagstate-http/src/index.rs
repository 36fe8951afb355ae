//! `GET|HEAD /index/static` and `/index/dynamic`: the registry index protocol.
//!
//! Both parse the raw query string with [`IndexQuery::parse`] and answer the same JSON
//! body. `static` is meant for shared caches (`Cache-Control: max-age=…`), `dynamic`
//! for answers built from user interaction (`no-store`). The ETag is the SHA-256 of the
//! uncompressed body, so it is the same on every replica and across restarts for the
//! same data; a compressed representation carries the same hash with a `-gzip`, `-zstd`
//! or `-br` suffix, and `If-None-Match` with any of them answers `304`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use flagstate_core::icons::{IconReport, IconStore};
use flagstate_core::{
    EntryStream, IndexQuery, IndexResponse, ResponseWriter, StoreExt, WriteError,
};

use crate::body::{Body, Spool};
use crate::cache::{Built, CachedBody, Lookup, ParsedQuery};
use crate::error::{ErrorBody, HttpError};
use crate::state::AppState;

/// Which of the two index endpoints answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Static,
    Dynamic,
}

/// `GET /index/static`.
#[utoipa::path(
    get,
    path = "/index/static",
    operation_id = "index_static",
    tag = "index",
    summary = "Query the index (cacheable)",
    params(crate::openapi::IndexParams),
    responses(
        (status = 200, description = "The matching repositories with their images and lists. \
            Compressed (gzip, zstd, br) as `Accept-Encoding` allows.",
            body = IndexResponse,
            headers(
                ("ETag" = String, description = "Strong entity tag: the SHA-256 of the uncompressed body, with a `-gzip`, `-zstd` or `-br` suffix for a compressed one."),
                ("Cache-Control" = String, description = "`max-age=<http.max_age_index>`: meant for shared caches."),
                ("Vary" = String, description = "`Accept-Encoding`."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` names the current answer (in any encoding).",
            headers(
                ("ETag" = String, description = "The current answer's entity tag."),
                ("Cache-Control" = String, description = "`max-age=<http.max_age_index>`: meant for shared caches."),
            )),
        (status = 400, description = "Invalid query (`invalid_query`, naming the parameter), or one whose globs need more matching work than allowed (`query_too_expensive`).",
            body = ErrorBody),
        (status = 503, description = "The store is unavailable (`store_unavailable`).", body = ErrorBody),
    )
)]
pub async fn static_index(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    serve(&state, Kind::Static, raw.as_deref().unwrap_or(""), &headers).await
}

/// `GET /index/dynamic`.
#[utoipa::path(
    get,
    path = "/index/dynamic",
    operation_id = "index_dynamic",
    tag = "index",
    summary = "Query the index (not cached by clients)",
    params(crate::openapi::IndexParams),
    responses(
        (status = 200, description = "The matching repositories with their images and lists. \
            Compressed (gzip, zstd, br) as `Accept-Encoding` allows.",
            body = IndexResponse,
            headers(
                ("ETag" = String, description = "Strong entity tag: the SHA-256 of the uncompressed body, with a `-gzip`, `-zstd` or `-br` suffix for a compressed one."),
                ("Cache-Control" = String, description = "`no-store`."),
                ("Vary" = String, description = "`Accept-Encoding`."),
                ("Flagstate-Cursor" = String, description = "The change cursor the answer reflects: `/v2/_flagstate/changes?since=` from it has every change after it."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` names the current answer (in any encoding).",
            headers(
                ("ETag" = String, description = "The current answer's entity tag."),
                ("Cache-Control" = String, description = "`no-store`."),
                ("Flagstate-Cursor" = String, description = "The change cursor the answer reflects."),
            )),
        (status = 400, description = "Invalid query (`invalid_query`, naming the parameter), or one whose globs need more matching work than allowed (`query_too_expensive`).",
            body = ErrorBody),
        (status = 503, description = "The store is unavailable (`store_unavailable`).", body = ErrorBody),
    )
)]
pub async fn dynamic_index(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    serve(
        &state,
        Kind::Dynamic,
        raw.as_deref().unwrap_or(""),
        &headers,
    )
    .await
}

/// The (cached) answer to a raw query string at the store's current generation.
///
/// A raw query seen before skips parsing: its parsed query and canonical key are
/// remembered (as many as the cache has entries), and a miss builds from that query, so
/// a raw query is parsed once while it stays remembered. The query is
/// validated (with the configured [`QueryLimits`](flagstate_core::query::QueryLimits))
/// before the store is asked anything, so a bad query is a `400` even while the store is
/// down. Building an answer is metered: a query whose globs need more matching work than
/// the limit is a `400` too (`query_too_expensive`), because the query itself is what
/// is expensive and asking again cannot help.
pub async fn answer(state: &AppState, raw_query: &str) -> Result<Arc<CachedBody>, HttpError> {
    let cache = state.cache();
    let limits = &state.config().query_limits;
    let parsed = match cache.parsed(raw_query) {
        Some(parsed) => parsed,
        None => {
            let parsed = ParsedQuery::new(IndexQuery::parse_with(raw_query, limits)?);
            cache.remember_parsed(raw_query, parsed.clone());
            parsed
        }
    };
    let generation = state.store().generation().await?;
    let build = {
        let state = state.clone();
        let parsed = parsed.clone();
        let max_match_cost = limits.max_match_cost;
        move || async move {
            // Each build evaluates a copy of the remembered query with a budget of its
            // own: the remembered query is never metered, so no spent budget carries
            // over to the next miss.
            let (query, budget) = parsed.metered(max_match_cost);
            let built = write_answer(&state, &query).await;
            // An exhausted budget leaves the answer incomplete, so it wins over it.
            budget.check()?;
            built
        }
    };
    let (body, lookup) = cache.get_or_build(parsed.key(), generation, build).await?;
    match lookup {
        Lookup::Hit => state.metrics().cache_hits.inc(),
        Lookup::Miss => state.metrics().cache_misses.inc(),
    };
    Ok(body)
}

/// Builds the answer to `query` a repository at a time, straight from the store's
/// stream into a spool (memory, or a content-addressed file for a large answer), moving
/// `data:` icons into the icon directory on the way. Runs once per (query,
/// generation): the result is cached. Holds one repository's entry at a time, so memory
/// stays flat however large the answer.
async fn write_answer(state: &AppState, query: &IndexQuery) -> Result<Built, HttpError> {
    let spool = state.spool().await?;
    let entries = state.store().query_stream(query).await?;
    let registry = state
        .store()
        .public_registry(&state.config().public_registry_url)
        .await?;
    let icons = state.icon_store().cloned();
    let writer = spool.spool();
    let (body, hash, report) =
        tokio::task::spawn_blocking(move || write_entries(entries, &registry, icons, writer))
            .await
            .map_err(|e| HttpError::Internal(format!("writing the answer stopped: {e}")))??;
    for warning in &report.warnings {
        tracing::warn!("icon left out of the index: {warning}");
    }
    Ok(Built::spooled(body, hash, spool))
}

/// The blocking part of [`write_answer`].
fn write_entries(
    mut entries: EntryStream,
    registry: &str,
    icons: Option<IconStore>,
    spool: Spool,
) -> Result<(Body, String, IconReport), HttpError> {
    let failed = |e: WriteError| HttpError::Internal(e.to_string());
    let mut writer = ResponseWriter::new(spool, registry).map_err(failed)?;
    let mut report = IconReport::default();
    while let Some(entry) = entries.blocking_next() {
        let mut entry = entry?;
        if let Some(icons) = &icons {
            icons
                .rewrite_entry(&mut entry, &mut report)
                .map_err(|e| HttpError::Internal(e.to_string()))?;
        }
        writer.push(entry).map_err(failed)?;
    }
    let (body, hash) = writer
        .finish()
        .map_err(failed)?
        .finish(|hash| format!("{hash}.json"))
        .map_err(|e| HttpError::Internal(format!("writing the answer failed: {e}")))?;
    Ok((body, hash, report))
}

async fn serve(
    state: &AppState,
    kind: Kind,
    raw_query: &str,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let body = answer(state, raw_query).await?;
    let cache_control = match kind {
        Kind::Static => state.index_cache_control().clone(),
        Kind::Dynamic => HeaderValue::from_static("no-store"),
    };
    let response = body
        .respond(
            headers,
            HeaderValue::from_static("application/json"),
            cache_control,
        )
        .await?;
    Ok(match kind {
        // List-then-watch: the change feed from this cursor has everything after the answer.
        Kind::Dynamic => crate::changes::with_cursor(
            response,
            flagstate_core::ChangeCursor::at_generation(body.generation()),
        ),
        Kind::Static => response,
    })
}
