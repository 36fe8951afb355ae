//! What `docker search` / `podman search` need: `GET /v2/` (the registry ping; podman
//! gives up on a server that does not answer it with `200` or `401`), the Docker Hub v1
//! search API `GET /v1/search`, and `GET /v2/_catalog` (podman walks it for an empty
//! search term), paginated with `Link` like the distribution registry.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use flagstate_core::discovery::{ListOrder, Listing, Position, RepositoryListing};

use crate::error::{ErrorBody, HttpError};
use crate::params::{QueryParams, Repeated};
use crate::state::AppState;

/// Results per page of `/v1/search` when `n` is not given.
pub const DEFAULT_SEARCH_PAGE: u64 = 25;
/// Largest `n` of `/v1/search`; larger values are capped (podman's `--limit` may exceed it).
pub const MAX_SEARCH_PAGE: u64 = 100;
/// Repositories per `/v2/_catalog` page when `n` is not given.
pub const DEFAULT_CATALOG_PAGE: usize = 100;
/// Largest `n` of `/v2/_catalog` (the distribution registry's limit).
pub const MAX_CATALOG_PAGE: usize = 1000;

/// The body of `GET /v2/`: an empty object, as the distribution registry answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ping {}

/// `GET /v2/`: the registry API version check.
#[utoipa::path(
    get,
    path = "/v2/",
    operation_id = "registry_ping",
    tag = "search",
    responses(
        (status = 200, description = "This server speaks enough of the registry API for `podman search`.",
            body = Ping,
            headers(("Docker-Distribution-Api-Version" = String, description = "`registry/2.0`."))),
    )
)]
pub async fn ping() -> Response {
    let mut response = Json(Ping {}).into_response();
    response.headers_mut().insert(
        "Docker-Distribution-Api-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

/// The decoded query-string parameters, a repeated one read by its last value as podman
/// and Docker Hub do; malformed percent-encoding is a `400` naming the parameter.
fn params(raw: Option<&str>) -> Result<QueryParams, HttpError> {
    Ok(QueryParams::parse(raw, Repeated::Last)?)
}

fn positive(params: &QueryParams, name: &str) -> Result<Option<u64>, HttpError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(HttpError::bad_request(
                "invalid_parameter",
                format!("parameter {name:?} must be a whole number of at least 1, got {v:?}"),
            )),
        },
    }
}

/// One hit of `/v1/search`, in Docker Hub's format.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    /// Repository name.
    pub name: String,
    /// The repository's description, else its title, else empty.
    pub description: String,
    /// Always 0 (the registry has no stars).
    pub star_count: u64,
    /// Always `false`.
    pub is_official: bool,
    /// Always `false`.
    pub is_automated: bool,
}

/// The body of `/v1/search`, in Docker Hub's format.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    /// The search text as given.
    pub query: String,
    /// Hits in all pages.
    pub num_results: u64,
    /// This page, 1-based.
    pub page: u64,
    /// Number of pages.
    pub num_pages: u64,
    /// Hits per page.
    pub page_size: u64,
    /// This page's hits, best first.
    pub results: Vec<SearchResult>,
}

/// The body of `/v2/_catalog`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Catalog {
    /// Repository names of this page, in bytewise order.
    pub repositories: Vec<String>,
}

/// `GET /v1/search?q=&n=&page=`: full-text search in Docker Hub's format.
#[utoipa::path(
    get,
    path = "/v1/search",
    operation_id = "search_v1",
    tag = "search",
    params(
        ("q" = Option<String>, Query, description = "Search text (words in names, titles, descriptions); empty finds nothing."),
        ("n" = Option<u64>, Query, minimum = 1, description = "Hits per page (default 25, at most 100; larger values are capped)."),
        ("page" = Option<u64>, Query, minimum = 1, description = "Page, 1-based (default 1)."),
    ),
    responses(
        (status = 200, description = "One page of hits.", body = SearchResponse,
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 400, description = "A malformed parameter (`invalid_parameter`, naming it).", body = ErrorBody),
        (status = 503, description = "The store is unavailable (`store_unavailable`).", body = ErrorBody),
    )
)]
pub async fn v1_search(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, HttpError> {
    let params = params(raw.as_deref())?;
    let query = params.get("q").unwrap_or("").to_owned();
    let page_size = positive(&params, "n")?
        .unwrap_or(DEFAULT_SEARCH_PAGE)
        .min(MAX_SEARCH_PAGE);
    let page = positive(&params, "page")?.unwrap_or(1);
    let offset = (page - 1).checked_mul(page_size).ok_or_else(|| {
        HttpError::bad_request("invalid_parameter", format!("page {page} is out of range"))
    })?;
    let found = state.store().search(&query, offset, page_size).await?;
    let results = found
        .hits
        .into_iter()
        .map(|hit| SearchResult {
            name: hit.repository,
            description: hit.description.or(hit.title).unwrap_or_default(),
            star_count: 0,
            is_official: false,
            is_automated: false,
        })
        .collect();
    let body = SearchResponse {
        query,
        num_results: found.total,
        page,
        num_pages: found.total.div_ceil(page_size),
        page_size,
        results,
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /v2/_catalog?n=&last=`: repository names in bytewise order, paginated.
#[utoipa::path(
    get,
    path = "/v2/_catalog",
    operation_id = "registry_catalog",
    tag = "search",
    params(
        ("n" = Option<u64>, Query, minimum = 1, description = "Names per page (default 100, at most 1000)."),
        ("last" = Option<String>, Query, description = "Start after this name (from the previous page's `Link`)."),
    ),
    responses(
        (status = 200, description = "One page of repository names.", body = Catalog,
            headers(("Link" = String, description = "`</v2/_catalog?last=…&n=…>; rel=\"next\"` when more names follow."))),
        (status = 400, description = "A malformed parameter or `n` over 1000 (`invalid_parameter`).", body = ErrorBody),
        (status = 503, description = "The store is unavailable (`store_unavailable`).", body = ErrorBody),
    )
)]
pub async fn catalog(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, HttpError> {
    let params = params(raw.as_deref())?;
    let n = match positive(&params, "n")? {
        None => DEFAULT_CATALOG_PAGE,
        Some(n) if n as usize <= MAX_CATALOG_PAGE => n as usize,
        Some(n) => {
            return Err(HttpError::bad_request(
                "invalid_parameter",
                format!("parameter \"n\" must be at most {MAX_CATALOG_PAGE}, got {n}"),
            ));
        }
    };
    let after = params.get("last").filter(|l| !l.is_empty());
    let listing = RepositoryListing {
        namespace: None,
        listing: Listing {
            order: ListOrder::Name,
            after: after.map(|l| Position::Name(l.to_owned())),
            limit: n + 1,
        },
    };
    let mut found = state.store().list_repositories(&listing).await?;
    let more = found.len() > n;
    found.truncate(n);
    let page: Vec<String> = found.into_iter().map(|r| r.name.to_string()).collect();
    let next = page.last().cloned();
    let mut response = Json(Catalog { repositories: page }).into_response();
    if let (true, Some(next)) = (more, next) {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("last", &next)
            .append_pair("n", &n.to_string())
            .finish();
        if let Ok(link) = HeaderValue::from_str(&format!("</v2/_catalog?{query}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    Ok(response)
}
