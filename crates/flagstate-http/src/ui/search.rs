//! `/search?q=&arch=&os=&label=`: full-text search over repositories, narrowed by
//! platform and label through an index query.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use flagstate_core::{Filter, IndexQuery, RepositoryEntry};

use super::cards::RepoCard;
use super::error::UiError;
use super::home::entries_for;
use super::layout::{Layout, Section};
use super::params::{Pagination, Params, link};
use super::{PAGE_SIZE, UiContext};

/// With filters, text hits are checked against the filter query in batches of this many,
/// best first …
const FILTER_BATCH: u64 = 1000;
/// … up to this many hits, which bounds the work of one request; when the text matches
/// more, the page says that only the best ones were filtered.
pub const FILTERED_HIT_LIMIT: u64 = 5000;

/// Architectures offered as suggestions (any value is accepted).
const ARCHITECTURES: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64",
];
/// Operating systems offered as suggestions.
const SYSTEMS: &[&str] = &["linux", "windows", "freebsd"];

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    layout: Layout,
    q: String,
    arch: String,
    os: String,
    label: String,
    searched: bool,
    /// Text hits in all, when only the best [`FILTERED_HIT_LIMIT`] were filtered.
    filtered_of: Option<u64>,
    filtered_limit: u64,
    cards: Vec<RepoCard>,
    pagination: Pagination,
    architectures: &'static [&'static str],
    systems: &'static [&'static str],
}

/// The filters of a search as an index query; `None` when none is given.
fn filter_query(params: &Params) -> Result<Option<IndexQuery>, UiError> {
    let bad = |e: flagstate_core::QueryError| UiError::BadRequest(e.to_string());
    let mut query = IndexQuery::new();
    if let Some(arch) = params.get("arch") {
        query = query.with(Filter::architecture(arch).map_err(bad)?);
    }
    if let Some(os) = params.get("os") {
        query = query.with(Filter::os(os).map_err(bad)?);
    }
    if let Some(label) = params.get("label") {
        // `KEY` asks for presence, `KEY=VALUE` for a value.
        let filter = match label.split_once('=') {
            Some((key, value)) => Filter::label(key.trim(), value.trim()),
            None => Filter::label_exists(label),
        };
        query = query.with(filter.map_err(bad)?);
    }
    Ok((!query.filters().is_empty()).then_some(query))
}

/// `GET /search`.
#[utoipa::path(
    get,
    path = "/search",
    operation_id = "ui_search",
    tag = "ui",
    summary = "Search",
    params(("page" = Option<u64>, Query, minimum = 1, maximum = 1000000, description = "Page, 1-based."),
        ("q" = Option<String>, Query, description = "Search text."),
        ("arch" = Option<String>, Query, description = "Only images of this architecture."),
        ("os" = Option<String>, Query, description = "Only images of this OS."),
        ("label" = Option<String>, Query, description = "Only images with this label (`KEY`) or label value (`KEY=VALUE`).")),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String,
            headers(
                ("ETag" = String, description = "Strong entity tag: the SHA-256 of the page."),
                ("Cache-Control" = String, description = "`max-age=<http.max_age_html>`."),
                ("Content-Security-Policy" = String, description = "Forbids scripts."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` names the current page.",
            headers(
                ("ETag" = String, description = "The page's entity tag."),
                ("Cache-Control" = String, description = "`max-age=<http.max_age_html>`."),
            )),
        (status = 400, description = "A malformed parameter.", content_type = "text/html", body = String),
        (status = 404, description = "No such repository, image or page.", content_type = "text/html", body = String),
        (status = 503, description = "The store is unavailable.", content_type = "text/html", body = String),
    )
)]
pub async fn page(
    State(ui): State<UiContext>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, UiError> {
    let page_ui = ui.clone();
    ui.cached_page(&headers, &uri, move || async move {
        render(&page_ui, raw).await
    })
    .await
}

async fn render(ui: &UiContext, raw: Option<String>) -> Result<String, UiError> {
    let params = Params::parse(raw.as_deref())?;
    let page_no = params.page()?;
    let text = params.get("q").unwrap_or_default().to_owned();
    let field = |k: &str| params.get(k).unwrap_or_default().to_owned();
    let (arch, os, label) = (field("arch"), field("os"), field("label"));
    let filters = filter_query(&params)?;
    let page_link = |n: usize| {
        let n = n.to_string();
        link(
            "/search",
            &[
                ("q", &text),
                ("arch", &arch),
                ("os", &os),
                ("label", &label),
                ("page", &n),
            ],
        )
    };

    let searched = !text.is_empty() || filters.is_some();
    let mut filtered_of = None;
    let (cards, pagination) = match filters {
        None if text.is_empty() => (Vec::new(), Pagination::new(page_no, 0, page_link)?),
        None => {
            let found = ui
                .store()
                .search(&text, Pagination::offset(page_no), PAGE_SIZE as u64)
                .await?;
            let total = usize::try_from(found.total).unwrap_or(usize::MAX);
            let pagination = Pagination::new(page_no, total, page_link)?;
            let names: Vec<String> = found.hits.iter().map(|h| h.repository.clone()).collect();
            let entries = entries_for(ui.store(), &names, IndexQuery::all()).await?;
            let cards = found
                .hits
                .iter()
                .map(|hit| {
                    let mut card = RepoCard::new(&hit.repository, entries.get(&hit.repository));
                    card.title = card.title.or_else(|| hit.title.clone());
                    card.description = card.description.or_else(|| hit.description.clone());
                    card
                })
                .collect();
            (cards, pagination)
        }
        Some(query) => {
            let matched: Vec<RepositoryEntry> = if text.is_empty() {
                ui.query(&query).await?
            } else {
                let mut matched = Vec::new();
                let mut offset = 0;
                loop {
                    let found = ui.store().search(&text, offset, FILTER_BATCH).await?;
                    let names: Vec<String> = found.hits.into_iter().map(|h| h.repository).collect();
                    if names.is_empty() {
                        break;
                    }
                    offset += names.len() as u64;
                    let mut entries = entries_for(ui.store(), &names, query.clone()).await?;
                    // Keep the relevance order of the text search.
                    matched.extend(names.iter().filter_map(|n| entries.remove(n)));
                    if offset >= found.total {
                        break;
                    }
                    if offset >= FILTERED_HIT_LIMIT {
                        filtered_of = Some(found.total);
                        break;
                    }
                }
                matched
            };
            let pagination = Pagination::new(page_no, matched.len(), page_link)?;
            // Cards show only what matched, e.g. just the arm64 images.
            let cards = matched[pagination.range()]
                .iter()
                .map(|e| RepoCard::new(&e.name, Some(e)))
                .collect();
            (cards, pagination)
        }
    };

    let page = SearchPage {
        layout: ui.layout(Section::Search).with_query(&text),
        q: text.clone(),
        arch,
        os,
        label,
        searched,
        filtered_of,
        filtered_limit: FILTERED_HIT_LIMIT,
        cards,
        pagination,
        architectures: ARCHITECTURES,
        systems: SYSTEMS,
    };
    Ok(page.render()?)
}
