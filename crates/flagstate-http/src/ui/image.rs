//! `/i/<digest>` and `/r/<name>/@<digest>`: everything known about one image or list (seen
//! from a repository, also its referrers).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use flagstate_core::flatpak::{
    APPDATA_LABEL, AppStream, DOWNLOAD_SIZE_LABEL, ICON_KEYS, INSTALLED_SIZE_LABEL, REF_LABEL,
};
use flagstate_core::model::Description;
use flagstate_core::query::effective_platform;
use flagstate_core::{Digest, Image, Manifest, RepositoryName};

use super::UiContext;
use super::cards::{KeyValue, describe_pairs, newest_first, rows};
use super::error::UiError;
use super::layout::{Layout, Section};
use super::params::path_parameter;
use super::reference::{PullCommand, RegistryHost, find_icon};
use super::referrers::Referrers;
use super::repository::{known_repository, repository_entry, repository_name};

/// What an image says about the Flatpak it carries.
pub struct FlatpakView {
    reference: String,
    appstream: AppStream,
    download_size: Option<String>,
    installed_size: Option<String>,
}

impl FlatpakView {
    /// The Flatpak view of an image's labels, when it carries a Flatpak.
    pub fn of(labels: &BTreeMap<String, String>) -> Option<Self> {
        let reference = labels.get(REF_LABEL)?.clone();
        let size = |k: &str| labels.get(k).and_then(|v| human_size(v));
        Some(FlatpakView {
            reference,
            appstream: labels
                .get(APPDATA_LABEL)
                .and_then(|x| AppStream::parse(x))
                .unwrap_or_default(),
            download_size: size(DOWNLOAD_SIZE_LABEL),
            installed_size: size(INSTALLED_SIZE_LABEL),
        })
    }
}

/// A child of a list.
struct ChildView {
    digest: String,
    platform: String,
    media_type: String,
    title: Option<String>,
}

#[derive(Template)]
#[template(path = "image.html")]
struct ImagePage {
    layout: Layout,
    digest: String,
    repository: Option<String>,
    /// `/r/<name>/@` or `/i/`: where links to other manifests go.
    link_base: String,
    tags: Vec<String>,
    parents: Vec<String>,
    is_list: bool,
    media_type: String,
    title: Option<String>,
    description: Option<String>,
    icon: Option<String>,
    facts: Vec<KeyValue>,
    flatpak: Option<FlatpakView>,
    labels: Vec<KeyValue>,
    annotations: Vec<KeyValue>,
    children: Vec<ChildView>,
    pull: Vec<PullCommand>,
    /// The manifest's referrers (and a list's children's), read in its repository.
    referrers: Referrers,
}

impl ImagePage {
    fn heading(&self) -> String {
        match &self.title {
            Some(t) => t.clone(),
            None if self.is_list => "Image list".to_owned(),
            None => "Image".to_owned(),
        }
    }
}

/// `GET /i/{digest}`.
#[utoipa::path(
    get,
    path = "/i/{digest}",
    operation_id = "ui_image",
    tag = "ui",
    summary = "One image or list by digest",
    params(("digest" = String, Path, pattern = "^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$", description = "The manifest digest, `sha256:<hex>`.")),
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
    digest: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, UiError> {
    let digest = path_parameter(digest)?;
    let page_ui = ui.clone();
    ui.cached_page(&headers, &uri, move || async move {
        let digest = parse_digest(&digest)?;
        let manifest = load(&page_ui, &digest).await?;
        let page = build(&page_ui, manifest, None, Vec::new(), Vec::new(), Vec::new()).await?;
        Ok(page.render()?)
    })
    .await
}

/// `GET /r/<name>/@<digest>`: like `/i/<digest>`, but only for manifests the repository
/// references (by tag, or as a child of a tagged list), with its tags and pull commands.
pub async fn in_repository(
    ui: &UiContext,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<String, UiError> {
    let repository = repository_name(name)?;
    let tags_map = known_repository(ui, &repository).await?;
    let digest = parse_digest(digest)?;
    let mut tags: Vec<String> = tags_map
        .iter()
        .filter(|(_, d)| **d == digest)
        .map(|(t, _)| t.clone())
        .collect();
    newest_first(&mut tags);
    let parents: Vec<String> = repository_entry(ui, &repository)
        .await?
        .iter()
        .flat_map(|e| &e.lists)
        .filter(|l| l.images.iter().any(|i| i.digest == digest))
        .map(|l| l.digest.to_string())
        .collect();
    if tags.is_empty() && parents.is_empty() {
        return Err(UiError::NotFound(format!(
            "Repository {name:?} has no manifest {digest}."
        )));
    }
    let host = RegistryHost::resolve(&ui.public_registry().await?, headers, uri);
    let mut pull = host.pull_commands(name, &format!("@{digest}"));
    if let Some(tag) = tags.first() {
        pull.extend(host.pull_commands(name, &format!(":{tag}")));
    }
    let manifest = load(ui, &digest).await?;
    let page = build(ui, manifest, Some(&repository), tags, parents, pull).await?;
    Ok(page.render()?)
}

fn parse_digest(raw: &str) -> Result<Digest, UiError> {
    Digest::parse(raw).map_err(|e| UiError::BadRequest(e.to_string()))
}

async fn load(ui: &UiContext, digest: &Digest) -> Result<Manifest, UiError> {
    ui.store()
        .manifest(digest)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("No manifest {digest} is indexed.")))
}

async fn build(
    ui: &UiContext,
    manifest: Manifest,
    repository: Option<&RepositoryName>,
    tags: Vec<String>,
    parents: Vec<String>,
    pull: Vec<PullCommand>,
) -> Result<ImagePage, UiError> {
    let link_base = match repository {
        Some(name) => format!("/r/{name}/@"),
        None => "/i/".to_owned(),
    };
    let mut page = ImagePage {
        layout: ui.layout(Section::Other),
        digest: manifest.digest().to_string(),
        repository: repository.map(RepositoryName::to_string),
        link_base,
        tags,
        parents,
        is_list: false,
        media_type: manifest.media_type().to_owned(),
        title: None,
        description: None,
        icon: None,
        facts: Vec::new(),
        flatpak: None,
        labels: Vec::new(),
        annotations: Vec::new(),
        children: Vec::new(),
        pull,
        referrers: Referrers::default(),
    };
    // A list's children, for their referrers.
    let mut children = Vec::new();
    match &manifest {
        Manifest::Image(image) => describe_image(&mut page, image),
        Manifest::List(list) => {
            page.is_list = true;
            let d = Description::resolve(&BTreeMap::new(), &list.annotations);
            page.title = d.title;
            page.description = d.description;
            page.annotations = rows(&list.annotations);
            for entry in &list.entries {
                let Some(Manifest::Image(child)) = ui.store().manifest(&entry.digest).await? else {
                    continue;
                };
                let p = effective_platform(entry.platform.as_ref(), &child);
                let cd = describe_pairs([(&child.labels, &child.annotations)]);
                page.title = page.title.or(cd.title.clone());
                page.description = page.description.or(cd.description);
                page.icon = page.icon.or_else(|| {
                    find_icon(
                        ICON_KEYS.iter().rev().copied(),
                        &child.labels,
                        &child.annotations,
                    )
                });
                let platform = platform_text(&p.os, &p.architecture, p.variant.as_deref());
                children.push((child.digest.clone(), platform.clone()));
                page.children.push(ChildView {
                    digest: child.digest.to_string(),
                    platform,
                    media_type: child.media_type.clone(),
                    title: cd.title,
                });
            }
        }
    }
    // Referrers are kept per repository: a page seen from one lists them.
    if let Some(repository) = repository {
        page.referrers = Referrers::of(ui, repository, manifest.digest(), &children).await?;
    }
    Ok(page)
}

fn describe_image(page: &mut ImagePage, image: &Image) {
    let d = describe_pairs([(&image.labels, &image.annotations)]);
    page.title = d.title;
    page.description = d.description;
    page.icon = find_icon(
        ICON_KEYS.iter().rev().copied(),
        &image.labels,
        &image.annotations,
    );
    let p = &image.platform;
    let mut facts = vec![KeyValue {
        key: "Platform".into(),
        value: platform_text(&p.os, &p.architecture, p.variant.as_deref()),
    }];
    if let Some(created) = &image.created {
        facts.push(KeyValue {
            key: "Created".into(),
            value: created.clone(),
        });
    }
    if let Some(config) = &image.config_digest {
        facts.push(KeyValue {
            key: "Config digest".into(),
            value: config.to_string(),
        });
    }
    page.facts = facts;
    page.flatpak = FlatpakView::of(&image.labels);
    page.labels = rows(&image.labels);
    page.annotations = rows(&image.annotations);
}

fn platform_text(os: &str, architecture: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{architecture}/{v}"),
        _ => format!("{os}/{architecture}"),
    }
}

/// A byte count label as `12.3 MiB`; `None` when the label is not a number.
pub fn human_size(raw: &str) -> Option<String> {
    raw.trim().parse().ok().map(byte_size)
}

/// A byte count as `512 B`, `12.3 MiB`.
pub fn byte_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes() {
        assert_eq!(human_size("512").as_deref(), Some("512 B"));
        assert_eq!(human_size("1536").as_deref(), Some("1.5 KiB"));
        assert_eq!(human_size("52428800").as_deref(), Some("50.0 MiB"));
        assert_eq!(human_size("lots"), None);
    }
}
