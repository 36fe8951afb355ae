//! Fixture data and request helpers shared by the web UI tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use flagstate_core::model::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use flagstate_core::{
    Digest, Image, ImageList, ListEntry, Manifest, MemoryStore, Platform, RepositorySnapshot, Store,
};
use flagstate_http::ui::{UiContext, routes};
use tower::ServiceExt;

/// The value planted in labels to check escaping.
pub const SCRIPT: &str = "<script>alert(1)</script>";
/// A 1×1 transparent PNG as a data: URI.
pub const ICON: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";
/// Number of filler repositories (`bulk/repo-NN`), enough for two home pages.
pub const BULK: usize = 30;

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn image(
    seed: &str,
    arch: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> Image {
    Image {
        digest: Digest::sha256_of(seed.as_bytes()),
        media_type: OCI_MANIFEST.to_owned(),
        platform: Platform::new("linux", arch),
        labels: map(labels),
        annotations: map(annotations),
        created: Some("2026-01-02T03:04:05Z".to_owned()),
        config_digest: Some(Digest::sha256_of(format!("config {seed}").as_bytes())),
        size: Some(500),
    }
}

pub fn appdata(name: &str, summary: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><component type="desktop-application"><id>org.example.Viewer</id><name xml:lang="fr">Visionneuse</name><name>{name}</name><summary>{summary}</summary><developer_name>Example Team</developer_name></component>"#
    )
}

/// `text` as the templates escape it (numeric character references).
pub fn esc(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '&' => out.push_str("&#38;"),
            '<' => out.push_str("&#60;"),
            '>' => out.push_str("&#62;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the fixture store holds, for assertions.
pub struct Fixture {
    pub store: Arc<MemoryStore>,
    pub viewer_list: Digest,
    pub viewer_amd64: Digest,
    pub viewer_arm64: Digest,
    pub evil: Digest,
    pub base: Digest,
}

/// A store with a Flatpak app in an image list, a repository whose labels carry markup
/// and unicode, a plain base image with several tags, an empty repository, and
/// [`BULK`] filler repositories.
pub async fn fixture() -> Fixture {
    let store = Arc::new(MemoryStore::new());
    let app_labels = |arch: &'static str| {
        vec![
            (
                "org.flatpak.ref",
                if arch == "amd64" {
                    "app/org.example.Viewer/x86_64/stable"
                } else {
                    "app/org.example.Viewer/aarch64/stable"
                },
            ),
            ("org.freedesktop.appstream.icon-64", ICON),
            ("org.flatpak.download-size", "5242880"),
        ]
    };
    let xml = appdata("Photo Viewer &amp; Co", "Look at pictures quickly");
    let mut amd = app_labels("amd64");
    amd.push(("org.freedesktop.appstream.appdata", &xml));
    let mut arm = app_labels("arm64");
    arm.push(("org.freedesktop.appstream.appdata", &xml));
    let viewer_amd64 = image("viewer-amd64", "amd64", &amd, &[]);
    let viewer_arm64 = image("viewer-arm64", "arm64", &arm, &[]);
    let list = ImageList {
        digest: Digest::sha256_of(b"viewer-list"),
        media_type: OCI_INDEX.to_owned(),
        annotations: map(&[
            ("org.opencontainers.image.title", "Photo Viewer"),
            (
                "org.opencontainers.image.description",
                "A fast photo viewer for the desktop",
            ),
        ]),
        entries: vec![
            ListEntry {
                digest: viewer_amd64.digest.clone(),
                platform: Some(Platform::new("linux", "amd64")),
            },
            ListEntry {
                digest: viewer_arm64.digest.clone(),
                platform: Some(Platform::new("linux", "arm64")),
            },
        ],
        size: Some(500),
    };
    let viewer_list = list.digest.clone();
    store
        .replace_repository(&RepositorySnapshot {
            artifacts: Default::default(),
            name: "apps/viewer".parse().unwrap(),
            tags: BTreeMap::from([
                ("latest".parse().unwrap(), viewer_list.clone()),
                ("1.0".parse().unwrap(), viewer_list.clone()),
            ]),
            manifests: vec![
                Manifest::Image(viewer_amd64.clone()),
                Manifest::Image(viewer_arm64.clone()),
                Manifest::List(list),
            ],
            at: flagstate_core::Timestamp::now(),
        })
        .await
        .unwrap();

    let evil = image(
        "evil",
        "amd64",
        &[
            ("org.opencontainers.image.title", SCRIPT),
            (
                "org.opencontainers.image.description",
                "Ünïcødé ✓ 日本語 \"quoted\" & <b>bold</b>",
            ),
            ("x-attr", "\" onmouseover=\"alert(2)"),
            ("org.freedesktop.appstream.icon-64", "javascript:alert(3)"),
        ],
        &[("note", SCRIPT)],
    );
    let evil_digest = evil.digest.clone();
    store
        .replace_repository(&RepositorySnapshot {
            artifacts: Default::default(),
            name: "evil".parse().unwrap(),
            tags: BTreeMap::from([("latest".parse().unwrap(), evil_digest.clone())]),
            manifests: vec![Manifest::Image(evil)],
            at: flagstate_core::Timestamp::now(),
        })
        .await
        .unwrap();

    let mut base = image(
        "base",
        "arm64",
        &[
            ("io.k8s.display-name", "Base OS"),
            ("summary", "Minimal operating system userland"),
        ],
        &[],
    );
    base.media_type = DOCKER_MANIFEST.to_owned();
    let base_digest = base.digest.clone();
    store
        .replace_repository(&RepositorySnapshot {
            artifacts: Default::default(),
            name: "base/os".parse().unwrap(),
            tags: ["1.9", "1.10", "latest", "2"]
                .iter()
                .map(|t| (t.parse().unwrap(), base_digest.clone()))
                .collect(),
            manifests: vec![Manifest::Image(base)],
            at: flagstate_core::Timestamp::now(),
        })
        .await
        .unwrap();

    store
        .replace_repository(&RepositorySnapshot {
            artifacts: Default::default(),
            name: "empty".parse().unwrap(),
            tags: BTreeMap::new(),
            manifests: Vec::new(),
            at: flagstate_core::Timestamp::now(),
        })
        .await
        .unwrap();

    for n in 0..BULK {
        let img = image(
            &format!("bulk {n}"),
            "amd64",
            &[("name", &format!("Filler {n:02}"))],
            &[],
        );
        store
            .replace_repository(&RepositorySnapshot {
                artifacts: Default::default(),
                name: format!("bulk/repo-{n:02}").parse().unwrap(),
                tags: BTreeMap::from([("v1".parse().unwrap(), img.digest.clone())]),
                manifests: vec![Manifest::Image(img)],
                at: flagstate_core::Timestamp::now(),
            })
            .await
            .unwrap();
    }
    Fixture {
        store,
        viewer_list,
        viewer_amd64: viewer_amd64.digest,
        viewer_arm64: viewer_arm64.digest,
        evil: evil_digest,
        base: base_digest,
    }
}

/// The UI router over `store`, with a registry URL and a 60 s page max-age.
pub fn app(store: Arc<dyn Store>, registry: &str) -> Router {
    app_with(store, registry, |ui| ui)
}

/// [`app`] with the context adjusted by `adjust`.
pub fn app_with(
    store: Arc<dyn Store>,
    registry: &str,
    adjust: impl FnOnce(UiContext) -> UiContext,
) -> Router {
    Router::from(routes().with_state(adjust(UiContext::new(
        store,
        registry,
        Duration::from_secs(60),
    ))))
}

/// A response's parts, body as text.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub async fn get(app: &Router, uri: &str) -> Page {
    get_with(app, uri, &[]).await
}

pub async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Page {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Page {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}
