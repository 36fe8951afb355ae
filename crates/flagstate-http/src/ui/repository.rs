//! `/r/<name>`: one repository with its tags, images, lists, pull commands, and the
//! manifests pushed to it by digest that no tag reaches.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use flagstate_core::discovery::{ListOrder, Listing, ManifestListing, TagListing, Untagged};
use flagstate_core::flatpak::ICON_128_LABEL;
use flagstate_core::{
    Digest, Filter, ImageEntry, IndexQuery, Manifest, RepositoryEntry, RepositoryName, Tag,
};

use super::UiContext;
use super::cards::{KeyValue, describe_pairs, newest_first, newest_looking_cmp, rows};
use super::error::UiError;
use super::image::{self, byte_size};
use super::layout::{Layout, Section};
use super::params::{Params, path_parameter};
use super::reference::{PullCommand, RegistryHost};
use super::referrers::{ArtifactType, MANIFESTS_SHOWN};

/// A tag and what it points at.
struct TagRow {
    tag: String,
    digest: String,
    kind: &'static str,
    platforms: String,
    /// What the tag points at, when it is an artifact.
    artifact: Option<ArtifactType>,
    /// When the index first saw the tag at this digest (RFC 3339).
    updated: String,
}

/// The history of one tag (`?history=TAG`): every digest it pointed at, newest first.
struct HistoryView {
    tag: String,
    entries: Vec<HistoryRow>,
}

/// One digest of a [`HistoryView`].
struct HistoryRow {
    digest: String,
    since: String,
    /// Whether the repository still holds the manifest (a link to it works).
    current: bool,
}

/// The manifests pushed to the repository by digest that no tag reaches, by digest: at
/// most [`MANIFESTS_SHOWN`].
struct UntaggedView {
    entries: Vec<UntaggedRow>,
    /// Whether more exist than the entries show.
    more: bool,
}

/// One manifest of an [`UntaggedView`].
struct UntaggedRow {
    digest: String,
    media_type: String,
    artifact: Option<ArtifactType>,
    /// Readable; `None` for a manifest indexed before sizes were kept.
    size: Option<String>,
    /// When it was pushed (RFC 3339).
    pushed: Option<String>,
}

/// A directly tagged image.
struct ImageView {
    digest: String,
    media_type: String,
    platform: String,
    tags: Vec<String>,
    labels: Vec<KeyValue>,
    annotations: Vec<KeyValue>,
}

/// An image list and its children.
struct ListView {
    digest: String,
    media_type: String,
    tags: Vec<String>,
    annotations: Vec<KeyValue>,
    children: Vec<ChildRow>,
}

/// One child of a list.
struct ChildRow {
    digest: String,
    platform: String,
    title: Option<String>,
}

#[derive(Template)]
#[template(path = "repository.html")]
struct RepositoryPage {
    layout: Layout,
    name: String,
    title: Option<String>,
    description: Option<String>,
    icon: Option<String>,
    pull_tag: Option<String>,
    pull: Vec<PullCommand>,
    tags: Vec<TagRow>,
    history: Option<HistoryView>,
    untagged: Option<UntaggedView>,
    images: Vec<ImageView>,
    lists: Vec<ListView>,
}

impl RepositoryPage {
    fn heading(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.name)
    }
}

/// `GET /r/{*path}`: a repository, or `/r/<name>/@<digest>` for one of its manifests.
#[utoipa::path(
    get,
    path = "/r/{*path}",
    operation_id = "ui_repository",
    tag = "ui",
    summary = "One repository, or one of its manifests",
    params(
        ("path" = String, Path, description = "A repository name, or `<name>/@<digest>` for one of its manifests."),
        ("history" = Option<String>, Query, description = "A tag whose history (every digest it pointed at) the repository page shows."),
    ),
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
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, UiError> {
    let path = path_parameter(path)?;
    let history = Params::parse(raw.as_deref())?
        .get("history")
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let (page_ui, page_headers, page_uri) = (ui.clone(), headers.clone(), uri.clone());
    ui.cached_page(&headers, &uri, move || async move {
        render(
            &page_ui,
            &path,
            history.as_deref(),
            &page_headers,
            &page_uri,
        )
        .await
    })
    .await
}

async fn render(
    ui: &UiContext,
    path: &str,
    history_of: Option<&str>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<String, UiError> {
    if let Some((name, digest)) = path.split_once("/@") {
        return image::in_repository(ui, name, digest, headers, uri).await;
    }
    let name = path.trim_end_matches('/');
    let repository = repository_name(name)?;
    // Newest first by when the index saw each tag take its digest; tags one scan found
    // at once (the same time) newest-looking first.
    let mut listed = ui
        .store()
        .list_tags(
            &repository,
            &TagListing::all(Listing::first(ListOrder::NewestFirst, usize::MAX)),
        )
        .await?
        .ok_or_else(|| unknown(name))?;
    listed.sort_by(|a, b| {
        b.updated
            .cmp(&a.updated)
            .then_with(|| newest_looking_cmp(a.tag.as_str(), b.tag.as_str()))
    });
    let tags: BTreeMap<String, Digest> = listed
        .iter()
        .map(|t| (t.tag.to_string(), t.digest.clone()))
        .collect();
    let history = match history_of {
        None => None,
        Some(tag) => Some(history_view(ui, &repository, tag, &tags).await?),
    };
    let entry = repository_entry(ui, &repository).await?;
    let mut list_manifests = BTreeMap::new();
    for list in entry.iter().flat_map(|e| &e.lists) {
        if let Some(Manifest::List(l)) = ui.store().manifest(&list.digest).await? {
            list_manifests.insert(list.digest.clone(), l);
        }
    }

    let newest = listed.first().map(|t| t.tag.to_string());
    let empty = RepositoryEntry {
        name: name.to_owned(),
        images: Vec::new(),
        lists: Vec::new(),
    };
    let entry = entry.as_ref().unwrap_or(&empty);

    // Title, description and icon: the newest tag's manifest speaks first (a list's own
    // annotations before its children), then everything else.
    let no_labels = BTreeMap::new();
    let mut pairs = Vec::new();
    let newest_digest = newest.as_ref().and_then(|t| tags.get(t));
    for list in &entry.lists {
        if Some(&list.digest) == newest_digest {
            if let Some(l) = list_manifests.get(&list.digest) {
                pairs.push((&no_labels, &l.annotations));
            }
            pairs.extend(list.images.iter().map(|i| (&i.labels, &i.annotations)));
        }
    }
    pairs.extend(
        entry
            .images
            .iter()
            .filter(|i| Some(&i.digest) == newest_digest)
            .map(|i| (&i.labels, &i.annotations)),
    );
    for list in &entry.lists {
        if let Some(l) = list_manifests.get(&list.digest) {
            pairs.push((&no_labels, &l.annotations));
        }
    }
    pairs.extend(super::cards::images_of(entry).map(|i| (&i.labels, &i.annotations)));
    let mut described = describe_pairs(pairs.iter().copied());
    // The page is about one repository: prefer the large icon.
    if let Some(icon) = super::cards::images_of(entry)
        .find_map(|i| super::reference::find_icon([ICON_128_LABEL], &i.labels, &i.annotations))
    {
        described.icon = Some(icon);
    }

    let platforms_of = |digest: &Digest| -> (&'static str, String) {
        if let Some(i) = entry.images.iter().find(|i| &i.digest == digest) {
            return ("image", platform(i));
        }
        if let Some(l) = entry.lists.iter().find(|l| &l.digest == digest) {
            let set: BTreeSet<String> = l.images.iter().map(platform).collect();
            return ("list", set.into_iter().collect::<Vec<_>>().join(", "));
        }
        ("unresolved", String::new())
    };
    let tag_rows = listed
        .iter()
        .map(|t| {
            let (kind, platforms) = match &t.artifact_type {
                Some(_) => ("artifact", String::new()),
                None => platforms_of(&t.digest),
            };
            TagRow {
                tag: t.tag.to_string(),
                digest: t.digest.to_string(),
                kind,
                platforms,
                artifact: t.artifact_type.as_deref().map(ArtifactType::of),
                updated: t.updated.to_rfc3339(),
            }
        })
        .collect();

    let images = entry
        .images
        .iter()
        .map(|i| ImageView {
            digest: i.digest.to_string(),
            media_type: i.media_type.clone(),
            platform: platform(i),
            tags: sorted_tags(i.tags.as_deref().unwrap_or_default()),
            labels: rows(&i.labels),
            annotations: rows(&i.annotations),
        })
        .collect();
    let lists = entry
        .lists
        .iter()
        .map(|l| ListView {
            digest: l.digest.to_string(),
            media_type: l.media_type.clone(),
            tags: sorted_tags(&l.tags),
            annotations: list_manifests
                .get(&l.digest)
                .map(|m| rows(&m.annotations))
                .unwrap_or_default(),
            children: l
                .images
                .iter()
                .map(|i| ChildRow {
                    digest: i.digest.to_string(),
                    platform: platform(i),
                    title: describe_pairs([(&i.labels, &i.annotations)]).title,
                })
                .collect(),
        })
        .collect();
    let untagged = untagged_view(ui, &repository).await?;

    let host = RegistryHost::resolve(&ui.public_registry().await?, headers, uri);
    let pull = newest
        .as_ref()
        .map(|t| host.pull_commands(name, &format!(":{t}")))
        .unwrap_or_default();
    let page = RepositoryPage {
        layout: ui.layout(Section::Repositories),
        name: name.to_owned(),
        title: described.title,
        description: described.description,
        icon: described.icon,
        pull_tag: newest,
        pull,
        tags: tag_rows,
        history,
        untagged,
        images,
        lists,
    };
    Ok(page.render()?)
}

/// The repository's untagged manifests, `None` when it has none.
async fn untagged_view(
    ui: &UiContext,
    repository: &RepositoryName,
) -> Result<Option<UntaggedView>, UiError> {
    // One more than shown, to learn whether more exist.
    let listing = ManifestListing {
        untagged: Untagged::Only,
        after: None,
        limit: MANIFESTS_SHOWN + 1,
    };
    let mut found = ui
        .store()
        .list_manifests(repository, &listing)
        .await?
        .unwrap_or_default();
    if found.is_empty() {
        return Ok(None);
    }
    let more = found.len() > MANIFESTS_SHOWN;
    found.truncate(MANIFESTS_SHOWN);
    Ok(Some(UntaggedView {
        more,
        entries: found
            .into_iter()
            .map(|m| UntaggedRow {
                digest: m.digest.to_string(),
                artifact: m.artifact_type.as_deref().map(ArtifactType::of),
                size: m.size.map(byte_size),
                pushed: m.pushed.map(|t| t.to_rfc3339()),
                media_type: m.media_type,
            })
            .collect(),
    }))
}

/// The history `?history=TAG` asks for; `NotFound` when the index has none of that tag.
async fn history_view(
    ui: &UiContext,
    repository: &RepositoryName,
    tag: &str,
    tags: &BTreeMap<String, Digest>,
) -> Result<HistoryView, UiError> {
    let none = || UiError::NotFound(format!("The index has no history of the tag {tag:?}."));
    let parsed = Tag::parse(tag).map_err(|_| none())?;
    let mut entries = ui
        .store()
        .tag_history(repository, &parsed)
        .await?
        .unwrap_or_default();
    if entries.is_empty() {
        return Err(none());
    }
    entries.reverse();
    let held: BTreeSet<&Digest> = tags.values().collect();
    Ok(HistoryView {
        tag: tag.to_owned(),
        entries: entries
            .into_iter()
            .map(|e| HistoryRow {
                current: held.contains(&e.digest),
                digest: e.digest.to_string(),
                since: e.since.to_rfc3339(),
            })
            .collect(),
    })
}

fn unknown(name: &str) -> UiError {
    UiError::NotFound(format!("There is no repository named {name:?}."))
}

/// The repository a URL names; `NotFound` for a malformed name.
pub fn repository_name(name: &str) -> Result<RepositoryName, UiError> {
    RepositoryName::parse(name).map_err(|_| unknown(name))
}

/// The tags of a known repository; `NotFound` for an unknown one.
pub async fn known_repository(
    ui: &UiContext,
    name: &RepositoryName,
) -> Result<BTreeMap<String, Digest>, UiError> {
    let tags = ui.store().repository_tags(name).await?;
    let tags = tags.ok_or_else(|| unknown(name))?;
    Ok(tags
        .into_iter()
        .map(|(tag, digest)| (tag.into_string(), digest))
        .collect())
}

/// Everything the repository shows (its query result without filters), if it has tags.
pub async fn repository_entry(
    ui: &UiContext,
    name: &RepositoryName,
) -> Result<Option<RepositoryEntry>, UiError> {
    let query = IndexQuery::new().with(Filter::repository(name));
    Ok(ui.store().query(&query).await?.into_iter().next())
}

/// `os/architecture`.
pub fn platform(image: &ImageEntry) -> String {
    format!("{}/{}", image.os, image.architecture)
}

fn sorted_tags(tags: &[String]) -> Vec<String> {
    let mut tags = tags.to_vec();
    newest_first(&mut tags);
    tags
}
