//! Icon extraction: moving `data:` URI icons out of index answers into content-addressed
//! files.
//!
//! Flatpak images carry their AppStream icons as `data:image/png;base64,…` values of the
//! `org.freedesktop.appstream.icon-64` / `-128` labels (or annotations), the
//! [`ICON_KEYS`] of [`crate::flatpak`]. Inlined, they make
//! every index download large; extracted, each icon is written once as
//! `<dir>/<hh>/<rest-of-sha256>.png` and the value becomes `<uri><hh>/<rest>.png`, which
//! clients resolve against the index URL and cache forever (the name is the content).
//!
//! Files no answer references any more are deleted by [`IconStore::retain`] (given the
//! referenced set, as `flagstate index` knows it from the files it wrote) or by
//! [`IconStore::collect`] (which works the set out from a [`Store`], for a server that
//! extracts icons answer by answer).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::query::IndexQuery;
use crate::response::{ImageEntry, IndexResponse, RepositoryEntry};
use crate::store::{Store, StoreError};

/// Label and annotation keys whose values may be extracted (Flatpak's icon keys).
pub use crate::flatpak::ICON_KEYS;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const DATA_PREFIX: &str = "data:image/png;base64,";

/// Errors writing or cleaning the icon directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IconError {
    /// Filesystem failure, naming the path.
    #[error("icon store {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The store could not tell which icons are referenced.
    #[error("icon store: {0}")]
    Store(#[from] StoreError),
    /// The blocking task doing the file work ended abnormally.
    #[error("icon store: {0}")]
    Stopped(String),
}

/// What one [`IconStore::collect`] pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IconCollection {
    /// This many unreferenced icon files were deleted.
    Removed(u64),
    /// The store changed while the referenced icons were being listed, so nothing was
    /// deleted (an answer for the new content may already need a file the list lacks).
    StoreChanged,
}

/// Why one icon value could not be extracted; the value is then left out of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IconWarning {
    /// Digest of the image carrying the value.
    pub image: String,
    /// The label or annotation key.
    pub key: String,
    /// What was wrong.
    pub reason: String,
}

impl std::fmt::Display for IconWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "image {} {}: {}", self.image, self.key, self.reason)
    }
}

/// What one rewrite pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IconReport {
    /// Relative paths (`hh/rest.png`) of every icon the answer now references.
    pub referenced: BTreeSet<String>,
    /// Values that were left out.
    pub warnings: Vec<IconWarning>,
    /// Icon files newly written.
    pub written: u64,
}

/// A directory of content-addressed icons and the URI prefix it is published under.
/// Clones share a gate: [`rewrite`](Self::rewrite) writes files under its shared side,
/// deletions happen under its exclusive side, so a file is never deleted between a
/// rewrite finding it present and the answer being published.
#[derive(Debug, Clone)]
pub struct IconStore {
    dir: PathBuf,
    uri: String,
    gate: Arc<RwLock<()>>,
}

/// Decodes a `data:image/png;base64,` value into PNG bytes. `Ok(None)` for values that are
/// not `data:` URIs (plain URLs pass through untouched).
pub fn decode_data_uri(value: &str) -> Result<Option<Vec<u8>>, String> {
    let Some(rest) = value.strip_prefix("data:") else {
        return Ok(None);
    };
    let Some(payload) = value.strip_prefix(DATA_PREFIX) else {
        let kind = rest.split([',', ';']).next().unwrap_or_default();
        return Err(format!("data: URI is {kind:?}, not base64 image/png"));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| format!("invalid base64: {e}"))?;
    if !bytes.starts_with(PNG_MAGIC) {
        return Err("payload is not a PNG image".to_owned());
    }
    Ok(Some(bytes))
}

/// The content-addressed relative path of PNG `bytes`: `hh/rest.png`.
pub fn icon_path(bytes: &[u8]) -> String {
    let hex = hex::encode(Sha256::digest(bytes));
    format!("{}/{}.png", &hex[..2], &hex[2..])
}

/// Whether `relative` has the shape [`icon_path`] produces (two hex digits, a slash, 62
/// hex digits, `.png`). Servers use it to refuse anything else.
pub fn is_icon_path(relative: &str) -> bool {
    let Some((dir, file)) = relative.split_once('/') else {
        return false;
    };
    let Some(stem) = file.strip_suffix(".png") else {
        return false;
    };
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    dir.len() == 2 && stem.len() == 62 && hex(dir) && hex(stem)
}

impl IconStore {
    /// An icon store writing into `dir` and publishing under `uri` (a `/` is appended if
    /// missing, so `uri` + relative path is the icon's URL).
    pub fn new(dir: impl Into<PathBuf>, uri: impl Into<String>) -> Self {
        let mut uri = uri.into();
        if !uri.ends_with('/') {
            uri.push('/');
        }
        IconStore {
            dir: dir.into(),
            uri,
            gate: Arc::new(RwLock::new(())),
        }
    }

    /// The directory icons are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URI prefix icons are published under.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Rewrites every icon `data:` value in `response` (labels and annotations of images
    /// and list children) into a URL under [`uri`](Self::uri), writing each icon file once.
    /// Values that cannot be decoded are removed and reported; plain URLs stay.
    pub fn rewrite(&self, response: &mut IndexResponse) -> Result<IconReport, IconError> {
        let mut report = IconReport::default();
        for repository in &mut response.results {
            self.rewrite_entry(repository, &mut report)?;
        }
        Ok(report)
    }

    /// Like [`rewrite`](Self::rewrite), for one repository entry of an answer written a
    /// repository at a time; `report` collects across calls.
    pub fn rewrite_entry(
        &self,
        repository: &mut RepositoryEntry,
        report: &mut IconReport,
    ) -> Result<(), IconError> {
        let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let images = repository.images.iter_mut().chain(
            repository
                .lists
                .iter_mut()
                .flat_map(|l| l.images.iter_mut()),
        );
        for image in images {
            self.rewrite_image(image, report)?;
        }
        Ok(())
    }

    fn rewrite_image(
        &self,
        image: &mut ImageEntry,
        report: &mut IconReport,
    ) -> Result<(), IconError> {
        let digest = image.digest.to_string();
        for map in [&mut image.labels, &mut image.annotations] {
            for key in ICON_KEYS {
                self.rewrite_value(map, key, &digest, report)?;
            }
        }
        Ok(())
    }

    fn rewrite_value(
        &self,
        map: &mut BTreeMap<String, String>,
        key: &str,
        digest: &str,
        report: &mut IconReport,
    ) -> Result<(), IconError> {
        let Some(value) = map.get(key) else {
            return Ok(());
        };
        match decode_data_uri(value) {
            Ok(None) => {}
            Ok(Some(bytes)) => {
                let relative = icon_path(&bytes);
                if self.write_icon(&relative, &bytes)? {
                    report.written += 1;
                }
                map.insert(key.to_owned(), format!("{}{}", self.uri, relative));
                report.referenced.insert(relative);
            }
            Err(reason) => {
                map.remove(key);
                report.warnings.push(IconWarning {
                    image: digest.to_owned(),
                    key: key.to_owned(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Writes one icon atomically unless it exists. Returns whether it was written.
    fn write_icon(&self, relative: &str, bytes: &[u8]) -> Result<bool, IconError> {
        let path = self.dir.join(relative);
        if path.is_file() {
            return Ok(false);
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| IconError::Io { path, source }
        };
        crate::files::write_atomically(&path, bytes).map_err(io(&path))?;
        Ok(true)
    }

    /// Deletes icon files (only names of the [`icon_path`] shape) not in `keep`, and then
    /// empty fan-out directories. Returns how many files were deleted.
    pub fn retain(&self, keep: &BTreeSet<String>) -> Result<u64, IconError> {
        let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.retain_gated(keep)
    }

    /// Deletes the icon files no answer of `store` references: the `data:` icons of every
    /// tagged image (labels and annotations, list children included) are the ones kept.
    /// The deletion happens only if the store's generation is still the one the list was
    /// made from, checked under the exclusive side of the gate; otherwise the pass
    /// reports [`IconCollection::StoreChanged`] and the next one tries again.
    ///
    /// It reads the whole index (`IndexQuery::all()`), so run it on the scale of the
    /// manifest garbage collection, not per request.
    pub async fn collect(&self, store: &Arc<dyn Store>) -> Result<IconCollection, IconError> {
        let generation = store.generation().await?;
        let mut keep = BTreeSet::new();
        let mut entries = store.query_stream(&IndexQuery::all()).await?;
        while let Some(repository) = entries.next().await {
            let repository = repository?;
            let images = repository
                .images
                .iter()
                .chain(repository.lists.iter().flat_map(|l| l.images.iter()));
            for image in images {
                for map in [&image.labels, &image.annotations] {
                    for key in ICON_KEYS {
                        if let Some(Ok(Some(bytes))) = map.get(key).map(|v| decode_data_uri(v)) {
                            keep.insert(icon_path(&bytes));
                        }
                    }
                }
            }
        }
        let this = self.clone();
        let store = store.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _exclusive = this.gate.write().unwrap_or_else(PoisonError::into_inner);
            if runtime.block_on(store.generation())? != generation {
                return Ok(IconCollection::StoreChanged);
            }
            this.retain_gated(&keep).map(IconCollection::Removed)
        })
        .await
        .map_err(|e| IconError::Stopped(e.to_string()))?
    }

    fn retain_gated(&self, keep: &BTreeSet<String>) -> Result<u64, IconError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| IconError::Io { path, source }
        };
        let top = match std::fs::read_dir(&self.dir) {
            Ok(top) => top,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut removed = 0;
        for sub in top {
            let sub = sub.map_err(io(&self.dir))?.path();
            let Some(dir_name) = sub.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if !sub.is_dir() || dir_name.len() != 2 {
                continue;
            }
            for file in std::fs::read_dir(&sub).map_err(io(&sub))? {
                let file = file.map_err(io(&sub))?.path();
                let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let relative = format!("{dir_name}/{name}");
                if is_icon_path(&relative) && !keep.contains(&relative) {
                    std::fs::remove_file(&file).map_err(io(&file))?;
                    removed += 1;
                }
            }
            // Only succeeds when the directory is now empty; a non-empty one stays.
            let _ = std::fs::remove_dir(&sub);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::RepositoryEntry;

    /// A valid 1×1 PNG.
    pub(crate) const TINY_PNG: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f,
        0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8,
        0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00,
        0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];

    fn data_uri(bytes: &[u8]) -> String {
        format!(
            "{DATA_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    fn response(values: &[(&str, String)]) -> IndexResponse {
        let images = values
            .iter()
            .enumerate()
            .map(|(i, (key, value))| ImageEntry {
                digest: crate::Digest::sha256_of(&[i as u8]),
                media_type: crate::model::OCI_MANIFEST.into(),
                os: "linux".into(),
                architecture: "amd64".into(),
                annotations: BTreeMap::new(),
                labels: BTreeMap::from([((*key).to_owned(), value.clone())]),
                tags: Some(vec!["latest".into()]),
            })
            .collect();
        IndexResponse::new(
            "/",
            vec![RepositoryEntry {
                name: "app".into(),
                images,
                lists: vec![],
            }],
        )
    }

    #[test]
    fn extracts_dedups_and_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = IconStore::new(dir.path(), "/icons");
        let uri = data_uri(TINY_PNG);
        let mut resp = response(&[(ICON_KEYS[0], uri.clone()), (ICON_KEYS[1], uri)]);
        let report = store.rewrite(&mut resp).unwrap();
        let relative = icon_path(TINY_PNG);
        assert_eq!(report.written, 1, "same bytes are written once");
        assert_eq!(report.referenced, BTreeSet::from([relative.clone()]));
        assert!(is_icon_path(&relative));
        assert_eq!(std::fs::read(dir.path().join(&relative)).unwrap(), TINY_PNG);
        for image in &resp.results[0].images {
            let value = image.labels.values().next().unwrap();
            assert_eq!(value, &format!("/icons/{relative}"));
        }
        // A second pass writes nothing new.
        let mut again = response(&[(ICON_KEYS[0], data_uri(TINY_PNG))]);
        assert_eq!(store.rewrite(&mut again).unwrap().written, 0);
    }

    #[test]
    fn bad_values_are_left_out_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let store = IconStore::new(dir.path(), "/icons/");
        let mut resp = response(&[
            (ICON_KEYS[0], format!("{DATA_PREFIX}!!!not-base64")),
            (ICON_KEYS[1], data_uri(b"GIF89a not a png")),
            (ICON_KEYS[0], "https://example.org/icon.png".to_owned()),
        ]);
        let report = store.rewrite(&mut resp).unwrap();
        assert_eq!(report.warnings.len(), 2);
        // Images are ordered by digest, so look the warnings up by content.
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.reason.contains("invalid base64"))
        );
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.reason.contains("not a PNG"))
        );
        let images = &resp.results[0].images;
        assert_eq!(images.iter().filter(|i| i.labels.is_empty()).count(), 2);
        assert!(
            images
                .iter()
                .any(|i| i.labels.values().any(|v| v.starts_with("https://")))
        );
    }

    #[test]
    fn retain_deletes_only_unreferenced_icon_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = IconStore::new(dir.path(), "/icons/");
        let mut resp = response(&[(ICON_KEYS[0], data_uri(TINY_PNG))]);
        let keep = store.rewrite(&mut resp).unwrap().referenced;
        let mut other = TINY_PNG.to_vec();
        other.push(0);
        let stale = icon_path(&other);
        store.write_icon(&stale, &other).unwrap();
        std::fs::write(dir.path().join("README"), "not an icon").unwrap();
        assert_eq!(store.retain(&keep).unwrap(), 1);
        assert!(!dir.path().join(&stale).exists());
        assert!(dir.path().join(keep.iter().next().unwrap()).exists());
        assert!(
            dir.path().join("README").exists(),
            "foreign files are never touched"
        );
    }

    #[test]
    fn icon_path_shape() {
        assert!(!is_icon_path("../etc/passwd"));
        assert!(!is_icon_path("ab/cd.png"));
        assert!(!is_icon_path(&icon_path(b"x").replace(".png", ".svg")));
    }
}
