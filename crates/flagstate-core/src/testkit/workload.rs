//! The synthetic registry of the store benchmarks (SQLite's and PostgreSQL's use the same
//! data, so their figures compare), built directly as snapshots with no registry. Ten
//! images per repository; every tenth repository is a Flatpak application (real-sized
//! metadata, appdata and icon labels) whose `latest` is a two-platform list on half of
//! them and a direct amd64 image on the others; the rest are services with six direct
//! images and one four-platform list.

use std::collections::BTreeMap;

use crate::Digest;
use crate::model::{
    Image, ImageList, ListEntry, Manifest, OCI_INDEX, OCI_MANIFEST, Platform, RepositorySnapshot,
};
use crate::name::{RepositoryName, Tag};

/// Images in every repository.
pub const IMAGES_PER_REPOSITORY: usize = 10;

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn image(seed: &str, arch: &str, labels: BTreeMap<String, String>) -> Image {
    Image {
        digest: Digest::sha256_of(seed.as_bytes()),
        media_type: OCI_MANIFEST.to_owned(),
        platform: Platform::new("linux", arch),
        labels,
        annotations: labels_for_annotations(seed),
        created: Some("2024-05-01T12:00:00Z".to_owned()),
        config_digest: Some(Digest::sha256_of(format!("config {seed}").as_bytes())),
        size: Some(1_000 + seed.len() as u64),
    }
}

fn labels_for_annotations(seed: &str) -> BTreeMap<String, String> {
    labels(&[
        (
            "org.opencontainers.image.created",
            "2024-05-01T12:00:00Z".to_owned(),
        ),
        (
            "org.opencontainers.image.revision",
            format!("{:x}", seed.len() * 7919),
        ),
    ])
}

/// A Flatpak application image with labels shaped like real ones (metadata, appdata
/// and an icon data URI of typical size).
fn flatpak_image(repo: usize, version: usize, arch: &str) -> Image {
    let app = format!("org.example.App{repo}");
    let flatpak_arch = if arch == "amd64" { "x86_64" } else { "aarch64" };
    let metadata = format!(
        "[Application]\nname={app}\nruntime=org.freedesktop.Platform/{flatpak_arch}/23.08\nsdk=org.freedesktop.Sdk/{flatpak_arch}/23.08\ncommand=app\n\n[Context]\nshared=network;ipc;\nsockets=x11;wayland;pulseaudio;\ndevices=dri;\nfilesystems=xdg-documents;\n"
    );
    let appdata = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><components version=\"0.8\"><component type=\"desktop\"><id>{app}</id><name>Example App {repo}</name><summary>An example application number {repo}</summary><description><p>{}</p></description><releases><release version=\"1.{version}\" timestamp=\"1700000000\"/></releases></component></components>",
        "This application does useful things. ".repeat(12)
    );
    let icon = format!(
        "data:image/png;base64,{}",
        "iVBORw0KGgoAAAANSUhEUgAA".repeat(80)
    );
    image(
        &format!("flatpak {repo} {version} {arch}"),
        arch,
        labels(&[
            (
                "org.flatpak.ref",
                format!("app/{app}/{flatpak_arch}/stable"),
            ),
            ("org.flatpak.metadata", metadata),
            ("org.flatpak.download-size", "31457280".to_owned()),
            ("org.flatpak.installed-size", "94371840".to_owned()),
            ("org.freedesktop.appstream.appdata", appdata),
            ("org.freedesktop.appstream.icon-64", icon),
        ]),
    )
}

fn plain_image(repo: usize, n: usize, arch: &str) -> Image {
    image(
        &format!("plain {repo} {n} {arch}"),
        arch,
        labels(&[
            ("name", format!("service-{repo}")),
            ("summary", format!("Service number {repo}, build {n}")),
            ("vendor", "Example Corp".to_owned()),
            ("version", format!("{n}.0")),
            ("license", "MIT".to_owned()),
        ]),
    )
}

fn image_list(seed: &str, children: &[&Image]) -> ImageList {
    ImageList {
        digest: Digest::sha256_of(seed.as_bytes()),
        media_type: OCI_INDEX.to_owned(),
        annotations: BTreeMap::new(),
        size: Some(300 + 120 * children.len() as u64),
        entries: children
            .iter()
            .map(|c| ListEntry {
                digest: c.digest.clone(),
                platform: Some(c.platform.clone()),
            })
            .collect(),
    }
}

/// Parses a generated name or tag; they follow the grammar by construction.
fn generated<T>(value: String, parse: fn(String) -> Result<T, crate::NameError>) -> T {
    parse(value).unwrap_or_else(|e| panic!("generated name: {e}"))
}

/// Repository `i` of the synthetic registry: exactly 10 images.
pub fn repository(i: usize) -> RepositorySnapshot {
    let mut tags = BTreeMap::new();
    let mut manifests = Vec::new();
    let mut tag = |tag: String, manifest: &Manifest| {
        tags.insert(generated(tag, Tag::parse), manifest.digest().clone());
    };
    if i.is_multiple_of(10) {
        // Flatpak application: `latest` is an image list (amd64 + arm64) on even
        // repositories and a direct amd64 image on odd ones; older versions are direct.
        let name = format!("apps/org.example.app{i}");
        let amd = flatpak_image(i, 9, "amd64");
        if i.is_multiple_of(20) {
            let arm = flatpak_image(i, 9, "arm64");
            let lst = Manifest::List(image_list(&format!("flatpak list {i}"), &[&amd, &arm]));
            tag("latest".to_owned(), &lst);
            manifests.extend([lst, Manifest::Image(amd), Manifest::Image(arm)]);
            for v in 0..8 {
                let m = Manifest::Image(flatpak_image(i, v, "amd64"));
                tag(format!("1.{v}"), &m);
                manifests.push(m);
            }
        } else {
            let m = Manifest::Image(amd);
            tag("latest".to_owned(), &m);
            manifests.push(m);
            for v in 0..9 {
                let m = Manifest::Image(flatpak_image(i, v, "amd64"));
                tag(format!("1.{v}"), &m);
                manifests.push(m);
            }
        }
        return RepositorySnapshot {
            artifacts: Default::default(),
            name: generated(name, RepositoryName::parse),
            tags,
            manifests,
            at: generated_time(i),
        };
    }
    // A service: six direct images and one list of four platforms.
    for n in 0..6 {
        let m = Manifest::Image(plain_image(i, n, "amd64"));
        tag(format!("v{n}"), &m);
        if n == 5 {
            tag("latest".to_owned(), &m);
        }
        manifests.push(m);
    }
    let children: Vec<Image> = ["amd64", "arm64", "ppc64le", "s390x"]
        .iter()
        .map(|arch| plain_image(i, 100, arch))
        .collect();
    let lst = Manifest::List(image_list(
        &format!("plain list {i}"),
        &children.iter().collect::<Vec<_>>(),
    ));
    tag("multi".to_owned(), &lst);
    tag("stable".to_owned(), &lst);
    manifests.push(lst);
    manifests.extend(children.into_iter().map(Manifest::Image));
    RepositorySnapshot {
        artifacts: Default::default(),
        name: generated(
            format!("services/team{}/service{i}", i % 37),
            RepositoryName::parse,
        ),
        tags,
        manifests,
        at: generated_time(i),
    }
}

/// When repository `i` was "scanned": one second apart from 2026-01-01, so time orders
/// are deterministic and differ from name order.
fn generated_time(i: usize) -> crate::Timestamp {
    let seconds = i64::try_from(i).unwrap_or(i64::MAX);
    crate::Timestamp::from_millis(
        1_767_225_600_000_i64.saturating_add(seconds.saturating_mul(1000)),
    )
}
