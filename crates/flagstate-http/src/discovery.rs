//! The content discovery extension: what the distribution API cannot list, served from
//! the index as a registered-style extension under `/v2/`, so a reverse proxy can mount
//! it beside the registry.
//!
//! - `GET /v2/_oci/ext/discover`, `GET /v2/<name>/_oci/ext/discover`: the extension
//!   document of the distribution spec's extensions proposal;
//! - `GET /v2/_flagstate/repositories?n=&last=&namespace=&sort=`: repositories with their
//!   tag count and times;
//! - `GET /v2/<name>/_flagstate/tags?n=&last=&sort=`: a repository's tags with digest,
//!   media type and times (`sort=-updated&n=1` is the newest tag);
//! - `GET /v2/<name>/_flagstate/manifests?untagged=include|only|exclude&n=&last=`: the
//!   repository's manifests as one OCI image index: a descriptor per (digest, tag), with
//!   the tag in `org.opencontainers.image.ref.name`, and one without it per manifest
//!   pushed by digest that no tag reaches;
//! - `GET /v2/<name>/_flagstate/history/<tag>`: every digest the tag pointed at;
//! - `GET /v2/<name>/referrers/<digest>?artifactType=`: the OCI 1.1 referrers API,
//!   answered from the index for registries without it: an image index of the manifests
//!   pushed to the repository by digest whose `subject` is `<digest>`
//!   (`OCI-Filters-Applied: artifactType` when filtered; an empty index when none).
//!
//! Listings page like `/v2/_catalog`: at most `n` (default 100, at most 1000, `0` gives
//! an empty page), and a relative `Link: <…>; rel="next"` while more remain, whose `last`
//! is the position of the page's last item (a name in name order, an opaque cursor in
//! time order; the rules are `flagstate_core::discovery`'s). Answers carry a strong ETag
//! and are answered `304` and compressed like index answers. Errors use the
//! distribution format, `{"errors":[{"code","message"}]}`, since clients of `/v2/` read
//! that one.
//!
//! Repository names contain slashes, so the per-repository endpoints share one route,
//! `/v2/{*path}`, and are told apart by their suffix.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::BTreeMap;

use flagstate_core::discovery::{
    HistoryEntry, ListOrder, Listing, ManifestInfo, ManifestListing, ManifestPosition, Position,
    RepositoryInfo, RepositoryListing, TagInfo, TagListing, Untagged,
};
use flagstate_core::{Digest, PushedManifest, RepositoryName, StoreError, Tag};
use serde::Serialize;
use utoipa::ToSchema;

use crate::cache::CachedBody;
use crate::error::HttpError;
use crate::params::{QueryParams, Repeated};
use crate::search::{DEFAULT_CATALOG_PAGE, MAX_CATALOG_PAGE};
use crate::state::AppState;

/// The extension's name in discovery documents and paths.
pub const EXTENSION: &str = "_flagstate";

/// A distribution-format error: status, code and message.
#[derive(Debug)]
pub struct RegistryError {
    status: StatusCode,
    code: &'static str,
    message: String,
    detail: Option<serde_json::Value>,
}

impl RegistryError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RegistryError {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub(crate) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        RegistryError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Adds the error's `detail` (the distribution format's structured extra).
    pub(crate) fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    fn unknown_repository(name: &str) -> Self {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository {name:?} is not known to the index"),
        )
    }
}

/// The body of a distribution-format error.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryErrors {
    /// One error.
    pub errors: Vec<RegistryErrorDetail>,
}

/// One error of [`RegistryErrors`].
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryErrorDetail {
    /// The distribution spec's code: `NAME_UNKNOWN`, `NAME_INVALID`, `MANIFEST_UNKNOWN`,
    /// `PAGINATION_NUMBER_INVALID`, `UNSUPPORTED`, `UNAVAILABLE`, `TOOMANYREQUESTS` or
    /// `UNKNOWN`; and this extension's `CURSOR_EXPIRED` (a change cursor retention passed).
    #[schema(example = "NAME_UNKNOWN")]
    pub code: String,
    /// What is wrong, in words; names the offending parameter when there is one.
    pub message: String,
    /// Structured detail, where there is some (e.g. `{"oldest": CURSOR}` for
    /// `CURSOR_EXPIRED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

impl From<HttpError> for RegistryError {
    fn from(error: HttpError) -> Self {
        let status = error.status();
        let code = match status {
            StatusCode::BAD_REQUEST => "UNSUPPORTED",
            StatusCode::SERVICE_UNAVAILABLE if matches!(error, HttpError::Overloaded(_)) => {
                "TOOMANYREQUESTS"
            }
            StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
            _ => "UNKNOWN",
        };
        if status.is_server_error() {
            tracing::warn!(error = %error, status = status.as_u16(), "request failed");
        }
        RegistryError::new(status, code, error.to_string())
    }
}

impl From<StoreError> for RegistryError {
    fn from(error: StoreError) -> Self {
        match error {
            // The only invalid input a listing can carry is its position.
            StoreError::Invalid(message) => RegistryError::bad("UNSUPPORTED", message),
            other => HttpError::Store(other).into(),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = RegistryErrors {
            errors: vec![RegistryErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                detail: self.detail,
            }],
        };
        // Strings in structs always serialise.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.code == "TOOMANYREQUESTS" {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::limits::RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

type Answer = Result<Response, RegistryError>;

/// The `n` of a page: default 100, from `min` to 1000 (the catalog's bounds), else
/// `PAGINATION_NUMBER_INVALID`.
pub(crate) fn page_size(params: &QueryParams, min: usize) -> Result<usize, RegistryError> {
    match params.get("n") {
        None | Some("") => Ok(DEFAULT_CATALOG_PAGE),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (min..=MAX_CATALOG_PAGE).contains(&n) => Ok(n),
            _ => Err(RegistryError::bad(
                "PAGINATION_NUMBER_INVALID",
                format!(
                    "parameter \"n\" must be a whole number from {min} to {MAX_CATALOG_PAGE}, got {text:?}"
                ),
            )),
        },
    }
}

/// The paging parameters every listing takes.
struct Page {
    order: ListOrder,
    after: Option<Position>,
    n: usize,
}

impl Page {
    fn parse(params: &QueryParams) -> Result<Self, RegistryError> {
        let n = page_size(params, 0)?;
        let order = match params.get("sort") {
            None | Some("") => ListOrder::Name,
            Some(text) => ListOrder::parse(text).ok_or_else(|| {
                RegistryError::bad(
                    "UNSUPPORTED",
                    format!(
                        "parameter \"sort\" must be \"name\", \"updated\" or \"-updated\", got {text:?}"
                    ),
                )
            })?,
        };
        let after = match params.get("last") {
            None | Some("") => None,
            Some(text) => Some(Position::from_cursor(order, text).ok_or_else(|| {
                RegistryError::bad(
                    "UNSUPPORTED",
                    format!(
                        "parameter \"last\" is not a position of a listing by {}: {text:?} (pass on the `last` of the previous page's Link)",
                        order.as_str()
                    ),
                )
            })?),
        };
        Ok(Page { order, after, n })
    }

    /// The store's listing: one item more than the page, to learn whether more remain.
    fn listing(&self) -> Listing {
        Listing {
            order: self.order,
            after: self.after.clone(),
            limit: self.n.saturating_add(1),
        }
    }

    /// Cuts `items` to the page and returns the `Link` header value of the next page
    /// (`path?…` with `extra` parameters first) when more remain.
    fn finish<T: flagstate_core::discovery::Listed>(
        &self,
        items: &mut Vec<T>,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Option<HeaderValue> {
        if items.len() <= self.n {
            return None;
        }
        items.truncate(self.n);
        let last = items.last()?;
        let position = self.listing().position_of(last).to_cursor();
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in extra {
            query.append_pair(key, value);
        }
        if self.order != ListOrder::Name {
            query.append_pair("sort", self.order.as_str());
        }
        let query = query
            .append_pair("n", &self.n.to_string())
            .append_pair("last", &position)
            .finish();
        next_link(path, &query)
    }
}

/// The `Link` header value of a listing's next page, `path?query`.
fn next_link(path: &str, query: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("<{path}?{query}>; rel=\"next\"")).ok()
}

fn params(raw: Option<&str>) -> Result<QueryParams, RegistryError> {
    QueryParams::parse(raw, Repeated::Last)
        .map_err(|e| RegistryError::bad("UNSUPPORTED", e.to_string()))
}

/// A JSON answer with a strong ETag, `304` and compression, and `link` when given.
async fn respond(
    state: &AppState,
    headers: &HeaderMap,
    body: &impl Serialize,
    link: Option<HeaderValue>,
) -> Answer {
    respond_as(state, headers, body, link, "application/json").await
}

/// [`respond`] with another JSON media type.
async fn respond_as(
    state: &AppState,
    headers: &HeaderMap,
    body: &impl Serialize,
    link: Option<HeaderValue>,
    media_type: &'static str,
) -> Answer {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| HttpError::Internal(format!("encoding the answer failed: {e}")))?;
    let body = CachedBody::new(0, Bytes::from(bytes));
    let mut response = body
        .respond(
            headers,
            HeaderValue::from_static(media_type),
            state.index_cache_control().clone(),
        )
        .await?;
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// One repository of [`Repositories`].
#[derive(Debug, Serialize, ToSchema)]
pub struct RepositoryOut {
    /// The repository's name.
    pub name: String,
    /// How many tags it has.
    pub tags: u64,
    /// When the index first saw it (RFC 3339, UTC).
    pub created: String,
    /// When a tag of it was last added, moved or removed (RFC 3339, UTC).
    pub updated: String,
}

/// The body of `GET /v2/_flagstate/repositories`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Repositories {
    /// This page, in the requested order.
    pub repositories: Vec<RepositoryOut>,
}

/// One tag of [`Tags`].
#[derive(Debug, Serialize, ToSchema)]
pub struct TagOut {
    /// The tag.
    pub name: String,
    /// The digest it points at.
    pub digest: String,
    /// The media type of that manifest.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// When the index first saw the tag at this digest (RFC 3339, UTC).
    pub updated: String,
    /// The image config's `created`, verbatim, for an image whose config states one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// For a tag pointing at an artifact (a Helm chart, a signature, an SBOM — anything
    /// that is not an image or image list): its `artifactType`, else its config's media
    /// type.
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// The body of `GET /v2/<name>/_flagstate/tags`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tags {
    /// The repository.
    pub name: String,
    /// This page, in the requested order.
    pub tags: Vec<TagOut>,
}

/// One entry of [`History`].
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryOut {
    /// A digest the tag pointed at.
    pub digest: String,
    /// When it started to (RFC 3339, UTC).
    #[serde(rename = "updateTimestamp")]
    pub update_timestamp: String,
}

/// The body of `GET /v2/<name>/_flagstate/history/<tag>` (the shape of the tag-history
/// extension other registries serve).
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// The repository.
    pub name: String,
    /// The tag.
    pub tag: String,
    /// Oldest first; the last entry is the current digest while the tag exists.
    pub history: Vec<HistoryOut>,
}

/// What `GET /v2/{path}` answers, by endpoint (described for OpenAPI; each handler
/// serialises its own type).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RepositoryAnswer {
    /// `<name>/_flagstate/tags`.
    Tags(Tags),
    /// `<name>/_flagstate/manifests`.
    Manifests(ManifestIndex),
    /// `<name>/_flagstate/history/<tag>`.
    History(History),
    /// `<name>/_oci/ext/discover`.
    Extensions(Extensions),
}

/// One extension of [`Extensions`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ExtensionOut {
    /// `_flagstate`.
    pub name: String,
    /// What it offers.
    pub description: String,
    /// Its documentation: this server's OpenAPI description.
    pub url: String,
    /// Its endpoints at this level, relative to `/v2/` (registry level) or
    /// `/v2/<name>/` (repository level).
    pub endpoints: Vec<String>,
}

/// The body of the `_oci/ext/discover` endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct Extensions {
    /// The extensions served here.
    pub extensions: Vec<ExtensionOut>,
}

fn extensions(endpoints: &[&str]) -> Extensions {
    Extensions {
        extensions: vec![ExtensionOut {
            name: EXTENSION.to_owned(),
            description: "Content discovery from the index: repositories by namespace and \
                time, tags newest first, every manifest (untagged too) as an OCI image \
                index, tag history."
                .to_owned(),
            url: "/openapi.json".to_owned(),
            endpoints: endpoints
                .iter()
                .map(|e| format!("{EXTENSION}/{e}"))
                .collect(),
        }],
    }
}

/// `GET /v2/_oci/ext/discover`: the extensions this server offers at registry level.
#[utoipa::path(
    get,
    path = "/v2/_oci/ext/discover",
    operation_id = "discover_extensions",
    tag = "discovery",
    responses(
        (status = 200, description = "The registry-level extension endpoints.", body = Extensions),
    )
)]
pub async fn discover(State(state): State<AppState>, headers: HeaderMap) -> Answer {
    respond(&state, &headers, &extensions(&["repositories"]), None).await
}

/// `GET /v2/_flagstate/repositories`: a page of the repositories.
#[utoipa::path(
    get,
    path = "/v2/_flagstate/repositories",
    operation_id = "discover_repositories",
    tag = "discovery",
    params(
        ("n" = Option<u64>, Query, maximum = 1000, description = "Repositories per page (default 100, at most 1000; 0 gives an empty page)."),
        ("last" = Option<String>, Query, description = "Start after this position (the `last` of the previous page's `Link`)."),
        ("sort" = Option<String>, Query, description = "`name` (default, bytewise), `updated` (oldest change first) or `-updated` (newest first)."),
        ("namespace" = Option<String>, Query, description = "Only repositories under `namespace/`, at any depth."),
    ),
    responses(
        (status = 200, description = "One page of repositories.", body = Repositories,
            headers(
                ("Link" = String, description = "`</v2/_flagstate/repositories?…&last=…>; rel=\"next\"` while more follow."),
                ("ETag" = String, description = "Strong validator of the body."),
                ("Flagstate-Cursor" = String, description = "The change cursor the listing reflects: follow `/v2/_flagstate/changes?since=` from it to miss nothing after it."),
            )),
        (status = 304, description = "`If-None-Match` names the current body."),
        (status = 400, description = "A malformed parameter, named in the message.", body = RegistryErrors),
        (status = 503, description = "The store is unavailable (`UNAVAILABLE`).", body = RegistryErrors),
    )
)]
pub async fn repositories(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let params = params(raw.as_deref())?;
    let page = Page::parse(&params)?;
    let namespace = match params.get("namespace") {
        None | Some("") => None,
        Some(text) => Some(
            RepositoryName::parse(text)
                .map_err(|e| {
                    RegistryError::bad("NAME_INVALID", format!("parameter \"namespace\": {e}"))
                })?
                .to_string(),
        ),
    };
    // Read before the listing: changes after it are in the feed from this cursor on.
    let cursor = crate::changes::now(state.store().as_ref()).await?;
    let mut found = if page.n == 0 {
        Vec::new()
    } else {
        let listing = RepositoryListing {
            namespace: namespace.clone(),
            listing: page.listing(),
        };
        state.store().list_repositories(&listing).await?
    };
    let extra: Vec<(&str, &str)> = namespace
        .iter()
        .map(|ns| ("namespace", ns.as_str()))
        .collect();
    let link = page.finish(&mut found, "/v2/_flagstate/repositories", &extra);
    let body = Repositories {
        repositories: found.into_iter().map(repository_out).collect(),
    };
    Ok(crate::changes::with_cursor(
        respond(&state, &headers, &body, link).await?,
        cursor,
    ))
}

fn repository_out(r: RepositoryInfo) -> RepositoryOut {
    RepositoryOut {
        name: r.name.to_string(),
        tags: r.tags,
        created: r.created.to_rfc3339(),
        updated: r.updated.to_rfc3339(),
    }
}

fn tag_out(t: TagInfo) -> TagOut {
    TagOut {
        name: t.tag.to_string(),
        digest: t.digest.to_string(),
        media_type: t.media_type,
        updated: t.updated.to_rfc3339(),
        created: t.created,
        artifact_type: t.artifact_type,
    }
}

/// The media type of the manifest listing: an OCI image index.
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The annotation naming a descriptor's tag.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The platform of a [`DescriptorOut`].
#[derive(Debug, Serialize, ToSchema)]
pub struct PlatformOut {
    /// `architecture` (GOARCH).
    pub architecture: String,
    /// `os` (GOOS).
    pub os: String,
    /// The CPU variant, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// One manifest of [`ManifestIndex`]: an OCI content descriptor.
#[derive(Debug, Serialize, ToSchema)]
pub struct DescriptorOut {
    /// The manifest's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes. Absent only for a manifest indexed before sizes were kept,
    /// until the next scan fills it in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The platform of an image the index holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformOut>,
    /// A referrer's or an untagged manifest's artifact type (its `artifactType`, else its
    /// config's media type), where known.
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifest listing: `org.opencontainers.image.ref.name`, the tag of a tagged
    /// entry. Referrers: the referrer manifest's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The body of `GET /v2/<name>/_flagstate/manifests`: an OCI image index.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManifestIndex {
    /// `2`.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// `application/vnd.oci.image.index.v1+json`.
    #[serde(rename = "mediaType")]
    pub media_type: &'static str,
    /// One descriptor per (digest, tag), and one without a tag per untagged manifest, by
    /// digest then tag.
    pub manifests: Vec<DescriptorOut>,
}

fn descriptor_out(m: ManifestInfo) -> DescriptorOut {
    DescriptorOut {
        media_type: m.media_type,
        digest: m.digest.to_string(),
        size: m.size,
        platform: m.platform.map(|p| PlatformOut {
            architecture: p.architecture,
            os: p.os,
            variant: p.variant,
        }),
        artifact_type: m.artifact_type,
        annotations: m
            .tag
            .map(|tag| BTreeMap::from([(REF_NAME.to_owned(), tag.to_string())]))
            .unwrap_or_default(),
    }
}

fn referrer_out(m: PushedManifest) -> DescriptorOut {
    DescriptorOut {
        media_type: m.media_type,
        digest: m.digest.to_string(),
        size: Some(m.size),
        platform: None,
        artifact_type: m.artifact_type,
        annotations: m.annotations,
    }
}

/// The parameters of the manifest listing.
fn manifest_listing(params: &QueryParams) -> Result<(ManifestListing, usize), RegistryError> {
    let n = page_size(params, 0)?;
    let untagged = match params.get("untagged") {
        None | Some("") => Untagged::Include,
        Some(text) => Untagged::parse(text).ok_or_else(|| {
            RegistryError::bad(
                "UNSUPPORTED",
                format!(
                    "parameter \"untagged\" must be \"include\", \"only\" or \"exclude\", got {text:?}"
                ),
            )
        })?,
    };
    let after = match params.get("last") {
        None | Some("") => None,
        Some(text) => Some(ManifestPosition::from_cursor(text).ok_or_else(|| {
            RegistryError::bad(
                "UNSUPPORTED",
                format!(
                    "parameter \"last\" is not a position of the manifest listing: {text:?} (pass on the `last` of the previous page's Link)"
                ),
            )
        })?),
    };
    // One entry more than the page, to learn whether more remain.
    let listing = ManifestListing {
        untagged,
        after,
        limit: n.saturating_add(1),
    };
    Ok((listing, n))
}

/// What a `/v2/{*path}` path names.
enum Target<'a> {
    Discover(&'a str),
    Tags(&'a str),
    Manifests(&'a str),
    Referrers(&'a str, &'a str),
    History(&'a str, &'a str),
}

fn target(path: &str) -> Option<Target<'_>> {
    if let Some(name) = path.strip_suffix("/_oci/ext/discover") {
        return Some(Target::Discover(name));
    }
    if let Some(name) = path.strip_suffix("/_flagstate/tags") {
        return Some(Target::Tags(name));
    }
    if let Some(name) = path.strip_suffix("/_flagstate/manifests") {
        return Some(Target::Manifests(name));
    }
    if let Some((name, digest)) = path.rsplit_once("/referrers/") {
        return Some(Target::Referrers(name, digest));
    }
    let (name, tag) = path.rsplit_once("/_flagstate/history/")?;
    Some(Target::History(name, tag))
}

/// `GET /v2/{path}`: the per-repository endpoints (`<name>/_oci/ext/discover`,
/// `<name>/_flagstate/tags`, `<name>/_flagstate/history/<tag>`).
#[utoipa::path(
    get,
    path = "/v2/{*path}",
    operation_id = "discover_repository",
    tag = "discovery",
    params(
        ("path" = String, Path, description = "`<name>/_flagstate/tags`, `<name>/_flagstate/manifests`, `<name>/_flagstate/history/<tag>`, `<name>/referrers/<digest>` or `<name>/_oci/ext/discover`; `<name>` is a repository name (it may contain `/`)."),
        ("n" = Option<u64>, Query, maximum = 1000, description = "Tags, manifests: per page (default 100, at most 1000; 0 gives an empty page)."),
        ("last" = Option<String>, Query, description = "Tags, manifests: start after this position (the `last` of the previous page's `Link`)."),
        ("sort" = Option<String>, Query, description = "Tags: `name` (default), `updated` or `-updated` (newest first; with `n=1` the newest tag)."),
        ("untagged" = Option<String>, Query, description = "Manifests: `include` (default), `only` (only manifests no tag reaches) or `exclude`."),
        ("artifactType" = Option<String>, Query, description = "Tags: only tags pointing at artifacts of this type (images and image lists have none). Referrers: only referrers of this artifact type (the answer then says `OCI-Filters-Applied: artifactType`)."),
    ),
    responses(
        (status = 200, description = "`_flagstate/tags`: a page of the repository's tags (`Tags`); `_flagstate/manifests`: a page of its manifests as an OCI image index (`ManifestIndex`, `application/vnd.oci.image.index.v1+json`); `referrers/<digest>`: the referrers of `<digest>`, an OCI image index too; `_flagstate/history/<tag>`: the tag's history (`History`); `_oci/ext/discover`: the repository-level extension endpoints (`Extensions`).",
            content(
                (RepositoryAnswer = "application/json"),
                (ManifestIndex = "application/vnd.oci.image.index.v1+json"),
            ),
            headers(
                ("Link" = String, description = "Tags, manifests: `</v2/<name>/_flagstate/…?…&last=…>; rel=\"next\"` while more follow."),
                ("ETag" = String, description = "Strong validator of the body."),
            )),
        (status = 304, description = "`If-None-Match` names the current body."),
        (status = 400, description = "A malformed parameter or name, named in the message.", body = RegistryErrors),
        (status = 404, description = "An unknown repository (`NAME_UNKNOWN`), a tag without history (`MANIFEST_UNKNOWN`), or a path that names no endpoint (`UNSUPPORTED`).", body = RegistryErrors),
        (status = 503, description = "The store is unavailable (`UNAVAILABLE`).", body = RegistryErrors),
    )
)]
pub async fn repository(
    State(state): State<AppState>,
    Path(path): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let Some(target) = target(&path) else {
        // Registry clients read errors under `/v2/` in the distribution format.
        return Err(RegistryError::new(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            format!("no such endpoint: /v2/{path}"),
        ));
    };
    let name_of = |name: &str| {
        RepositoryName::parse(name).map_err(|e| {
            RegistryError::bad("NAME_INVALID", format!("repository name {name:?}: {e}"))
        })
    };
    let store = state.store();
    match target {
        Target::Discover(name) => {
            let name = name_of(name)?;
            let listing = TagListing::all(Listing::first(ListOrder::Name, 0));
            if store.list_tags(&name, &listing).await?.is_none() {
                return Err(RegistryError::unknown_repository(name.as_str()));
            }
            let endpoints = extensions(&["tags", "manifests", "history"]);
            respond(&state, &headers, &endpoints, None).await
        }
        Target::Referrers(name, digest) => {
            let name = name_of(name)?;
            let subject = Digest::parse(digest).map_err(|e| {
                RegistryError::bad("DIGEST_INVALID", format!("digest {digest:?}: {e}"))
            })?;
            let params = params(raw.as_deref())?;
            let artifact_type = params.get("artifactType").filter(|t| !t.is_empty());
            let cursor = crate::changes::now(store.as_ref()).await?;
            let found = store
                .list_referrers(&name, &subject, artifact_type)
                .await?
                .ok_or_else(|| RegistryError::unknown_repository(name.as_str()))?;
            let body = ManifestIndex {
                schema_version: 2,
                media_type: OCI_INDEX,
                manifests: found.into_iter().map(referrer_out).collect(),
            };
            let mut response = respond_as(&state, &headers, &body, None, OCI_INDEX).await?;
            if artifact_type.is_some() {
                response.headers_mut().insert(
                    "oci-filters-applied",
                    HeaderValue::from_static("artifactType"),
                );
            }
            Ok(crate::changes::with_cursor(response, cursor))
        }
        Target::Manifests(name) => {
            let name = name_of(name)?;
            let (listing, n) = manifest_listing(&params(raw.as_deref())?)?;
            let cursor = crate::changes::now(store.as_ref()).await?;
            let mut found = store
                .list_manifests(&name, &listing)
                .await?
                .ok_or_else(|| RegistryError::unknown_repository(name.as_str()))?;
            let mut link = None;
            if found.len() > n {
                found.truncate(n);
                if let Some(last) = found.last() {
                    let query = form_urlencoded::Serializer::new(String::new())
                        .append_pair("untagged", listing.untagged.as_str())
                        .append_pair("n", &n.to_string())
                        .append_pair("last", &last.position().to_cursor())
                        .finish();
                    link = next_link(&format!("/v2/{name}/_flagstate/manifests"), &query);
                }
            }
            let body = ManifestIndex {
                schema_version: 2,
                media_type: OCI_INDEX,
                manifests: found.into_iter().map(descriptor_out).collect(),
            };
            Ok(crate::changes::with_cursor(
                respond_as(&state, &headers, &body, link, OCI_INDEX).await?,
                cursor,
            ))
        }
        Target::Tags(name) => {
            let name = name_of(name)?;
            let params = params(raw.as_deref())?;
            let page = Page::parse(&params)?;
            let artifact_type = params.get("artifactType").filter(|t| !t.is_empty());
            let listing = TagListing {
                artifact_type: artifact_type.map(str::to_owned),
                listing: page.listing(),
            };
            let cursor = crate::changes::now(store.as_ref()).await?;
            // With n=0 the store is still asked, with a limit of 1: it tells whether the
            // repository exists.
            let mut found = store
                .list_tags(&name, &listing)
                .await?
                .ok_or_else(|| RegistryError::unknown_repository(name.as_str()))?;
            let extra: Vec<(&str, &str)> = artifact_type
                .map(|t| ("artifactType", t))
                .into_iter()
                .collect();
            let link = page.finish(&mut found, &format!("/v2/{name}/_flagstate/tags"), &extra);
            let body = Tags {
                name: name.to_string(),
                tags: found.into_iter().map(tag_out).collect(),
            };
            Ok(crate::changes::with_cursor(
                respond(&state, &headers, &body, link).await?,
                cursor,
            ))
        }
        Target::History(name, tag) => {
            let name = name_of(name)?;
            let tag = Tag::parse(tag)
                .map_err(|e| RegistryError::bad("UNSUPPORTED", format!("tag {tag:?}: {e}")))?;
            let cursor = crate::changes::now(store.as_ref()).await?;
            let history = store
                .tag_history(&name, &tag)
                .await?
                .ok_or_else(|| RegistryError::unknown_repository(name.as_str()))?;
            if history.is_empty() {
                return Err(RegistryError::new(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    format!("tag {tag:?} of {name} has no history in the index"),
                ));
            }
            let body = History {
                name: name.to_string(),
                tag: tag.to_string(),
                history: history
                    .into_iter()
                    .map(|HistoryEntry { digest, since }| HistoryOut {
                        digest: digest.to_string(),
                        update_timestamp: since.to_rfc3339(),
                    })
                    .collect(),
            };
            Ok(crate::changes::with_cursor(
                respond(&state, &headers, &body, None).await?,
                cursor,
            ))
        }
    }
}
