//! `/`: the repository list.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use flagstate_core::{Filter, IndexQuery, RepositoryEntry, RepositoryName, Store};

use super::UiContext;
use super::cards::RepoCard;
use super::error::UiError;
use super::layout::{Layout, Section};
use super::params::{Pagination, Params, link};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    cards: Vec<RepoCard>,
    pagination: Pagination,
}

/// `GET /?page=N`.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "ui_home",
    tag = "ui",
    summary = "Repositories",
    params(("page" = Option<u64>, Query, minimum = 1, maximum = 1000000, description = "Page, 1-based.")),
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
    let page = params.page()?;
    let names: Vec<String> = (ui.store().repositories().await?)
        .into_iter()
        .map(String::from)
        .collect();
    let pagination = Pagination::new(page, names.len(), |n| {
        link("/", &[("page", &n.to_string())])
    })?;
    let cards = cards_for(ui.store(), &names[pagination.range()]).await?;
    let page = HomePage {
        layout: ui.layout(Section::Repositories),
        cards,
        pagination,
    };
    Ok(page.render()?)
}

/// Cards for `names`, in that order, from one store query. A repository without tags
/// still gets a (bare) card.
pub async fn cards_for(store: &dyn Store, names: &[String]) -> Result<Vec<RepoCard>, UiError> {
    let entries = entries_for(store, names, IndexQuery::all()).await?;
    Ok(names
        .iter()
        .map(|n| RepoCard::new(n, entries.get(n)))
        .collect())
}

/// The query results of `base` restricted to `names`, by repository name. The names
/// come from the store, which keeps only valid ones; a string that is not a repository
/// name can have no entry, so it is left out of the query.
pub async fn entries_for(
    store: &dyn Store,
    names: &[String],
    base: IndexQuery,
) -> Result<BTreeMap<String, RepositoryEntry>, UiError> {
    let mut query = base;
    let mut restricted = false;
    for name in names
        .iter()
        .filter_map(|n| RepositoryName::parse(n.as_str()).ok())
    {
        query = query.with(Filter::repository(&name));
        restricted = true;
    }
    // Without a repository filter the query would answer for every repository.
    if !restricted {
        return Ok(BTreeMap::new());
    }
    Ok(store
        .query(&query)
        .await?
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect())
}
