//! `/apps`: Flatpak applications and runtimes (images labelled `org.flatpak.ref`), named
//! and described from their AppStream data.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::Response;
use flagstate_core::flatpak::{APPDATA_LABEL, AppStream, ICON_KEYS, REF_LABEL};
use flagstate_core::{Filter, ImageEntry, IndexQuery};

use super::UiContext;
use super::cards::{initial_of, newest_first};
use super::error::UiError;
use super::layout::{Layout, Section};
use super::params::{Pagination, Params, link};
use super::reference::find_icon;

/// An image carrying a Flatpak, with the tags that reach it (its own, or its list's).
type Carrier<'a> = (&'a ImageEntry, &'a [String]);

/// One Flatpak application or runtime (id and branch) in one repository, across its
/// architectures and tags.
struct AppCard {
    name: String,
    summary: Option<String>,
    developer: Option<String>,
    icon: Option<String>,
    /// `kind/id//branch`: the ref without architecture, which `flatpak install` completes
    /// with the machine's own.
    install_ref: String,
    /// The full refs, one per architecture.
    refs: Vec<String>,
    kind: &'static str,
    branch: String,
    repository: String,
    tags: Vec<String>,
    architectures: Vec<String>,
}

impl AppCard {
    fn initial(&self) -> String {
        initial_of(&self.name)
    }
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    layout: Layout,
    apps: Vec<AppCard>,
    pagination: Pagination,
    remote: String,
    remote_url: String,
}

/// `GET /apps?page=N`.
#[utoipa::path(
    get,
    path = "/apps",
    operation_id = "ui_apps",
    tag = "ui",
    summary = "Flatpak applications and runtimes",
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
    let (page_ui, page_headers, page_uri) = (ui.clone(), headers.clone(), uri.clone());
    ui.cached_page(&headers, &uri, move || async move {
        render(&page_ui, raw, &page_headers, &page_uri).await
    })
    .await
}

async fn render(
    ui: &UiContext,
    raw: Option<String>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<String, UiError> {
    let params = Params::parse(raw.as_deref())?;
    let page_no = params.page()?;
    let query = IndexQuery::new()
        .with(Filter::label_exists(REF_LABEL).map_err(|e| UiError::BadRequest(e.to_string()))?);
    let entries = ui.query(&query).await?;

    // (repository, ref without architecture) → images carrying it, with the tags that
    // reach them.
    let mut grouped: BTreeMap<(String, String), Vec<Carrier<'_>>> = BTreeMap::new();
    for entry in &entries {
        let direct = entry
            .images
            .iter()
            .map(|i| (i, i.tags.as_deref().unwrap_or_default()));
        let listed = entry
            .lists
            .iter()
            .flat_map(|l| l.images.iter().map(|i| (i, l.tags.as_slice())));
        for (image, tags) in direct.chain(listed) {
            if let Some(reference) = image.labels.get(REF_LABEL) {
                grouped
                    .entry((entry.name.clone(), without_arch(reference)))
                    .or_default()
                    .push((image, tags));
            }
        }
    }
    let mut apps: Vec<AppCard> = grouped
        .into_iter()
        .map(|((repository, reference), images)| app_card(repository, reference, &images))
        .collect();
    apps.sort_by(|a, b| {
        a.name
            .to_lowercase()
            .cmp(&b.name.to_lowercase())
            .then_with(|| a.install_ref.cmp(&b.install_ref))
            .then_with(|| a.repository.cmp(&b.repository))
    });

    let pagination = Pagination::new(page_no, apps.len(), |n| {
        link("/apps", &[("page", &n.to_string())])
    })?;
    let apps: Vec<AppCard> = apps.drain(pagination.range()).collect();
    let remote = ui.remote_name().to_owned();
    let remote_url = remote_url(headers, uri);
    let page = AppsPage {
        layout: ui.layout(Section::Apps),
        apps,
        pagination,
        remote,
        remote_url,
    };
    Ok(page.render()?)
}

/// `kind/id/arch/branch` → `kind/id//branch`; other shapes are kept whole.
fn without_arch(reference: &str) -> String {
    let parts: Vec<&str> = reference.split('/').collect();
    match parts.as_slice() {
        [kind, id, _arch, branch] => format!("{kind}/{id}//{branch}"),
        _ => reference.to_owned(),
    }
}

fn app_card(repository: String, install_ref: String, images: &[Carrier<'_>]) -> AppCard {
    let mut parts = install_ref.split('/');
    let kind = match parts.next() {
        Some("runtime") => "Runtime",
        _ => "Application",
    };
    let id = parts.next().unwrap_or_default().to_owned();
    let branch = parts.nth(1).unwrap_or_default().to_owned();
    let appstream = images
        .iter()
        .filter_map(|(i, _)| i.labels.get(APPDATA_LABEL))
        .find_map(|x| AppStream::parse(x))
        .unwrap_or_default();
    let icon = images
        .iter()
        .find_map(|(i, _)| find_icon(ICON_KEYS, &i.labels, &i.annotations));
    let mut tags: Vec<String> = images
        .iter()
        .flat_map(|(_, t)| t.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    newest_first(&mut tags);
    let architectures = images
        .iter()
        .map(|(i, _)| i.architecture.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let refs = images
        .iter()
        .filter_map(|(i, _)| i.labels.get(REF_LABEL).cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    AppCard {
        name: appstream.name.unwrap_or_else(|| id.clone()),
        summary: appstream.summary,
        developer: appstream.developer,
        icon,
        install_ref,
        refs,
        kind,
        branch,
        repository,
        tags,
        architectures,
    }
}

/// The Flatpak remote URL of this index, as the request reached it (the scheme from
/// [`request_scheme`](super::request_scheme)). The remote's name is configured,
/// [`UiContext::remote_name`], not derived from the host.
fn remote_url(headers: &HeaderMap, uri: &Uri) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = super::request_scheme(headers);
    format!("oci+{scheme}://{host}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_without_architecture() {
        assert_eq!(
            without_arch("app/org.example.Viewer/x86_64/stable"),
            "app/org.example.Viewer//stable"
        );
        assert_eq!(without_arch("odd"), "odd");
    }

    #[test]
    fn remote_url_from_host_and_proto() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "flatpaks.example.org:8443".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(
            remote_url(&h, &Uri::from_static("/apps")),
            "oci+https://flatpaks.example.org:8443/"
        );
        assert_eq!(
            remote_url(&HeaderMap::new(), &Uri::from_static("/apps")),
            "oci+http://localhost/"
        );
    }
}
