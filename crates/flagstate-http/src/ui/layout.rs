//! What every page shares: the layout data the base template needs, and the stylesheet.
//!
//! The stylesheet's URL contains a hash of its content, so it can be cached for a year
//! and still change the moment a new build ships a different one.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flagstate_core::indexer::IndexerStatus;
use sha2::{Digest as _, Sha256};

use super::response::security_headers;
use crate::conditional::{Validators, if_none_match};

/// The hand-written stylesheet, compiled into the binary.
const STYLE: &str = include_str!("../../static/style.css");

/// `style-<first 16 hex digits of its SHA-256>.css`.
static STYLE_FILE: LazyLock<String> = LazyLock::new(|| {
    let hash = hex::encode(Sha256::digest(STYLE.as_bytes()));
    format!("style-{}.css", &hash[..16])
});

/// The site section a page belongs to, for marking the current navigation entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Repository list and repository pages.
    Repositories,
    /// The Flatpak apps view.
    Apps,
    /// Search.
    Search,
    /// Pages reached only by link (image details, errors).
    Other,
}

/// What every page says about the indexer when the index may not show the registry as
/// it is: the last scan failed (the registry unreachable, or repositories that could not
/// be read), or the first scan has not finished.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScanNotice {
    /// Whether the last scan failed (else the first scan is still running).
    pub failed: bool,
    /// What happened, in one sentence.
    pub message: String,
    /// When the last full scan completed, RFC 3339 in UTC; `None` when none has.
    pub last_scan: Option<String>,
}

impl ScanNotice {
    /// The notice for an indexer in state `status`; `None` when its last scan was clean.
    pub fn from_status(status: &IndexerStatus) -> Option<Self> {
        let last_scan = status
            .last_scan_finished_at
            .map(|t| humantime::format_rfc3339_seconds(t).to_string());
        if let Some(error) = &status.last_scan_error {
            return Some(ScanNotice {
                failed: true,
                message: format!("The last scan of the registry failed: {error}"),
                last_scan,
            });
        }
        if !status.first_scan_done {
            let message = if status.repositories_total > 0 {
                format!(
                    "The first scan of the registry is running: {} of {} repositories done.",
                    status.repositories_done, status.repositories_total
                )
            } else {
                "The first scan of the registry is running.".to_owned()
            };
            return Some(ScanNotice {
                failed: false,
                message,
                last_scan,
            });
        }
        None
    }
}

/// Data the base template needs on every page.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Path of the stylesheet.
    pub style_href: String,
    /// Current section.
    pub section: Section,
    /// Text for the header's search box.
    pub query: String,
    /// The indexer's state, when the index may not show the registry as it is.
    pub notice: Option<ScanNotice>,
}

impl Layout {
    /// The layout for a page of `section`.
    pub fn new(section: Section) -> Self {
        Layout {
            style_href: format!("/static/{}", *STYLE_FILE),
            section,
            query: String::new(),
            notice: None,
        }
    }

    /// Shows `notice` at the top of the page.
    pub fn with_notice(mut self, notice: Option<ScanNotice>) -> Self {
        self.notice = notice;
        self
    }

    /// Pre-fills the header's search box.
    pub fn with_query(mut self, query: &str) -> Self {
        self.query = query.to_owned();
        self
    }

    /// `aria-current="page"` marker for a navigation entry, as template text.
    pub fn current(&self, section: &str) -> &'static str {
        let this = match self.section {
            Section::Repositories => "repositories",
            Section::Apps => "apps",
            Section::Search => "search",
            Section::Other => "",
        };
        if this == section { "page" } else { "false" }
    }
}

/// `GET /static/{file}`: the stylesheet under its content-hashed name, else 404.
#[utoipa::path(
    get,
    path = "/static/{file}",
    operation_id = "ui_stylesheet",
    tag = "ui",
    params(("file" = String, Path, description = "`style-<hash>.css`, as the pages link it.")),
    responses(
        (status = 200, description = "The stylesheet.", content_type = "text/css", body = String,
            headers(
                ("ETag" = String, description = "The stylesheet's hash."),
                ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`: the name changes with the content."),
            )),
        (status = 304, description = "Not modified.",
            headers(("ETag" = String, description = "The stylesheet's hash."))),
        (status = 404, description = "No such file.", content_type = "text/plain", body = String),
    )
)]
pub async fn stylesheet(file: Result<Path<String>, PathRejection>, headers: HeaderMap) -> Response {
    // A name that does not even decode is as absent as any other unknown file.
    if !file.is_ok_and(|Path(file)| file == *STYLE_FILE) {
        return (StatusCode::NOT_FOUND, "no such static file\n").into_response();
    }
    let opaque = &STYLE_FILE["style-".len()..STYLE_FILE.len() - 4];
    let validators = Validators::quoted(opaque).cache_control(HeaderValue::from_static(
        "public, max-age=31536000, immutable",
    ));
    let mut response = if if_none_match(&headers, |tag| tag == opaque) {
        validators.not_modified()
    } else {
        validators
            .apply(([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response())
    };
    security_headers(response.headers_mut());
    response
}
