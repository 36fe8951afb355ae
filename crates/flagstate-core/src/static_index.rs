//! Static index files: one JSON file per configured index, written atomically and only
//! when its content changed (the regindexer model, served by any web server).
//!
//! An [`IndexSpec`] says which images an index holds (tag globs, required labels and
//! annotations, architectures) and how to present them (drop `org.flatpak.*` /
//! `org.freedesktop.*` keys, extract icons). The answer itself comes from the same query
//! engine as the server, so the files are byte-for-byte what `/index/static` would say.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::flatpak;
use crate::icons::{IconError, IconReport, IconStore};
use crate::query::{Filter, IndexQuery, Pattern, QueryError};
use crate::response::{ImageEntry, IndexResponse};
use crate::store::{Store, StoreError};

/// What one static index contains and how it is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexSpec {
    /// Name of the index (for messages).
    pub name: String,
    /// Where the JSON file is written.
    pub output: PathBuf,
    /// The `Registry` value written into the file.
    pub registry_public: String,
    /// Tag globs (`*`, `?`, anchored); an image is included when one of its tags (or its
    /// list's) matches one. Empty = every tag.
    pub tags: Vec<String>,
    /// Labels an image must carry (each ANDed).
    pub required_labels: Vec<String>,
    /// Annotations an image must carry (each ANDed).
    pub required_annotations: Vec<String>,
    /// Architectures to include (ORed). Empty = all.
    pub architectures: Vec<String>,
    /// Drop `org.flatpak.*` / `org.freedesktop.*` labels from the output.
    pub skip_flatpak_labels: bool,
    /// Drop `org.flatpak.*` / `org.freedesktop.*` annotations from the output.
    pub skip_flatpak_annotations: bool,
    /// Extract `data:` icons into the icon store.
    pub extract_icons: bool,
    /// Also write `<output>.gz` for web servers that serve precompressed files.
    pub gzip: bool,
}

/// Errors building or writing a static index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StaticIndexError {
    /// The spec translates into an invalid query (e.g. an empty label name).
    #[error("index {index}: {source}")]
    Query {
        /// Index name.
        index: String,
        /// The query error.
        source: QueryError,
    },
    /// The store failed.
    #[error("index {index}: {source}")]
    Store {
        /// Index name.
        index: String,
        /// The store error.
        source: StoreError,
    },
    /// `extract_icons` is set but no icon store is configured.
    #[error("index {index}: extract_icons needs icons_dir")]
    NoIconStore {
        /// Index name.
        index: String,
    },
    /// Writing icons failed.
    #[error(transparent)]
    Icons(#[from] IconError),
    /// Writing the file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A built index: the bytes to write and what icon extraction did.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    /// The JSON file content.
    pub json: Vec<u8>,
    /// Icon extraction report (empty when icons are not extracted).
    pub icons: IconReport,
}

/// Whether a file was rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The content changed (or the file was new) and was written.
    Written,
    /// The file already had this content and was not touched.
    Unchanged,
}

impl IndexSpec {
    /// The index query this spec stands for. An empty label, annotation or
    /// architecture is an error; the tag globs come from the configuration, so they are
    /// trusted and not held to the [`QueryLimits`](crate::query::QueryLimits) of
    /// untrusted queries.
    pub fn query(&self) -> Result<IndexQuery, QueryError> {
        let mut query = IndexQuery::new();
        for glob in &self.tags {
            query = query.with(Filter::tag_matches(Pattern::new(glob)));
        }
        for label in &self.required_labels {
            query = query.with(Filter::label_exists(label.as_str())?);
        }
        for annotation in &self.required_annotations {
            query = query.with(Filter::annotation_exists(annotation.as_str())?);
        }
        for architecture in &self.architectures {
            query = query.with(Filter::architecture(architecture.as_str())?);
        }
        Ok(query)
    }

    /// Runs the spec's query against `store` and renders the file content, extracting
    /// icons into `icons` when the spec asks for it.
    pub async fn build(
        &self,
        store: &dyn Store,
        icons: Option<&IconStore>,
    ) -> Result<BuiltIndex, StaticIndexError> {
        let query = self.query().map_err(|source| StaticIndexError::Query {
            index: self.name.clone(),
            source,
        })?;
        let results = store
            .query(&query)
            .await
            .map_err(|source| StaticIndexError::Store {
                index: self.name.clone(),
                source,
            })?;
        let mut response = IndexResponse::new(self.registry_public.clone(), results);
        let mut report = IconReport::default();
        if self.extract_icons {
            let icons = icons.ok_or_else(|| StaticIndexError::NoIconStore {
                index: self.name.clone(),
            })?;
            report = icons.rewrite(&mut response)?;
        }
        if self.skip_flatpak_labels || self.skip_flatpak_annotations {
            for repository in &mut response.results {
                let images = repository.images.iter_mut().chain(
                    repository
                        .lists
                        .iter_mut()
                        .flat_map(|l| l.images.iter_mut()),
                );
                images.for_each(|image| self.drop_flatpak_keys(image));
            }
        }
        Ok(BuiltIndex {
            json: response.to_json(),
            icons: report,
        })
    }

    fn drop_flatpak_keys(&self, image: &mut ImageEntry) {
        let keep = |key: &String, _: &mut String| {
            !flatpak::KEY_PREFIXES.iter().any(|p| key.starts_with(p))
        };
        if self.skip_flatpak_labels {
            image.labels.retain(keep);
        }
        if self.skip_flatpak_annotations {
            image.annotations.retain(keep);
        }
    }

    /// Writes the built file (and `.gz` when asked) unless the content is unchanged.
    pub fn write(&self, built: &BuiltIndex) -> Result<WriteOutcome, StaticIndexError> {
        let outcome = write_if_changed(&self.output, &built.json)?;
        if self.gzip {
            let gz_path = gz_path(&self.output);
            // Compare with the uncompressed content: gzip output embeds no timestamp here,
            // but comparing the source keeps the .gz untouched whenever the JSON is.
            if outcome == WriteOutcome::Written || !gz_path.is_file() {
                let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
                encoder
                    .write_all(&built.json)
                    .and_then(|_| encoder.finish())
                    .map_err(|source| StaticIndexError::Io {
                        path: gz_path.clone(),
                        source,
                    })
                    .and_then(|gz| write_if_changed(&gz_path, &gz))?;
            }
        }
        Ok(outcome)
    }
}

fn gz_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync,
/// rename, fsync of the directory), unless the file already holds exactly these bytes —
/// then it is not touched, so web servers keep its mtime and ETag.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<WriteOutcome, StaticIndexError> {
    let io = |source| StaticIndexError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(existing) if existing == bytes => return Ok(WriteOutcome::Unchanged),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    crate::files::write_atomically(path, bytes).map_err(io)?;
    Ok(WriteOutcome::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_query() {
        let spec = IndexSpec {
            tags: vec!["latest".into(), "latest-*".into()],
            required_labels: vec!["org.flatpak.ref".into()],
            architectures: vec!["amd64".into()],
            ..IndexSpec::default()
        };
        assert_eq!(
            spec.query().unwrap().canonical(),
            "architecture=amd64&label%3Aorg.flatpak.ref%3Aexists=1&tag%3Amatches=latest&tag%3Amatches=latest-*"
        );
        let bad = IndexSpec {
            required_labels: vec![String::new()],
            ..IndexSpec::default()
        };
        assert!(bad.query().is_err());
    }

    #[test]
    fn unchanged_files_are_not_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/index.json");
        assert_eq!(
            write_if_changed(&path, b"{}").unwrap(),
            WriteOutcome::Written
        );
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            write_if_changed(&path, b"{}").unwrap(),
            WriteOutcome::Unchanged
        );
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        assert_eq!(
            write_if_changed(&path, b"[]").unwrap(),
            WriteOutcome::Written
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"[]");
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files left behind");
    }
}
