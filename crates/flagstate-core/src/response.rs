//! The JSON answer of the registry index protocol (`/index/*`), and its deterministic writer.
//!
//! Field names and omission rules follow the protocol exactly: `Annotations` and `Labels`
//! are left out when empty, `Images` and `Lists` are always present, `MediaType` and `OS`
//! are always written. [`RepositoryEntry::normalize`] sorts everything bytewise so that the
//! same data always serialises to the same bytes (and so the same ETag).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The whole answer to an index query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexResponse {
    /// The public registry URL clients resolve manifests against (may be relative).
    #[serde(rename = "Registry")]
    pub registry: String,
    /// Matching repositories, sorted by name.
    #[serde(rename = "Results")]
    pub results: Vec<RepositoryEntry>,
}

/// One repository with its matching images and lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepositoryEntry {
    /// Repository name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Matching images tagged directly in the repository, sorted by digest.
    #[serde(rename = "Images", default)]
    pub images: Vec<ImageEntry>,
    /// Image lists with at least one matching child, sorted by digest.
    #[serde(rename = "Lists", default)]
    pub lists: Vec<ListEntryOut>,
}

/// One image in a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageEntry {
    /// Manifest digest.
    #[serde(rename = "Digest")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"))]
    pub digest: Digest,
    /// Manifest media type.
    #[serde(rename = "MediaType")]
    pub media_type: String,
    /// GOOS value.
    #[serde(rename = "OS")]
    pub os: String,
    /// GOARCH value.
    #[serde(rename = "Architecture")]
    pub architecture: String,
    /// Manifest annotations; omitted when empty.
    #[serde(
        rename = "Annotations",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Config labels; omitted when empty.
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Tags of the image in this repository, sorted; absent for images inside a list.
    #[serde(rename = "Tags", default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// One image list in a response, showing only its matching children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListEntryOut {
    /// List digest.
    #[serde(rename = "Digest")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"))]
    pub digest: Digest,
    /// List media type.
    #[serde(rename = "MediaType")]
    pub media_type: String,
    /// Matching children (without `Tags`), sorted by digest.
    #[serde(rename = "Images")]
    pub images: Vec<ImageEntry>,
    /// Tags of the list in this repository, sorted.
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
}

impl RepositoryEntry {
    /// Sorts images and lists by digest, tags bytewise, and drops duplicate entries.
    pub fn normalize(&mut self) {
        for image in &mut self.images {
            if let Some(tags) = &mut image.tags {
                tags.sort_unstable();
                tags.dedup();
            }
        }
        self.images.sort_by(|a, b| a.digest.cmp(&b.digest));
        self.images.dedup_by(|a, b| a.digest == b.digest);
        for list in &mut self.lists {
            list.tags.sort_unstable();
            list.tags.dedup();
            list.images.sort_by(|a, b| a.digest.cmp(&b.digest));
            list.images.dedup_by(|a, b| a.digest == b.digest);
        }
        self.lists.sort_by(|a, b| a.digest.cmp(&b.digest));
        self.lists.dedup_by(|a, b| a.digest == b.digest);
    }

    /// Whether the entry shows nothing.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.lists.is_empty()
    }
}

impl IndexResponse {
    /// Builds a response, normalising and sorting `results` so the output is deterministic.
    pub fn new(registry: impl Into<String>, mut results: Vec<RepositoryEntry>) -> Self {
        results.iter_mut().for_each(RepositoryEntry::normalize);
        results.retain(|r| !r.is_empty());
        results.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        results.dedup_by(|a, b| a.name == b.name);
        IndexResponse {
            registry: registry.into(),
            results,
        }
    }

    /// Serialises compactly. Deterministic for a normalised response: all maps are
    /// `BTreeMap`s and all lists are sorted. The same bytes as a [`ResponseWriter`] fed
    /// with `results`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut writer = match ResponseWriter::new(Vec::new(), &self.registry) {
            Ok(writer) => writer,
            // Writing into a Vec cannot fail.
            Err(_) => return Vec::new(),
        };
        for entry in &self.results {
            if writer.write_entry(entry).is_err() {
                return Vec::new();
            }
        }
        writer.finish().unwrap_or_default()
    }
}

/// Why a [`ResponseWriter`] could not take an entry.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The output failed.
    #[error("writing the index answer failed: {0}")]
    Io(#[from] std::io::Error),
    /// Entries must come in strictly increasing bytewise name order.
    #[error("repository {name:?} came after {previous:?}: entries must be in bytewise name order")]
    OutOfOrder {
        /// The name that came too late.
        name: String,
        /// The name before it.
        previous: String,
    },
}

/// Writes an index answer one repository at a time, so an answer of any size is written
/// in the memory of one repository entry. Given the entries of a response in bytewise
/// name order, it writes exactly the bytes of [`IndexResponse::to_json`] (that function
/// is built on it): each entry is normalised and empty ones are left out.
#[derive(Debug)]
pub struct ResponseWriter<W: std::io::Write> {
    out: W,
    previous: Option<String>,
    written: bool,
}

impl<W: std::io::Write> ResponseWriter<W> {
    /// Starts an answer naming `registry`.
    pub fn new(mut out: W, registry: &str) -> Result<Self, WriteError> {
        out.write_all(b"{\"Registry\":")?;
        serde_json::to_writer(&mut out, registry).map_err(std::io::Error::from)?;
        out.write_all(b",\"Results\":[")?;
        Ok(ResponseWriter {
            out,
            previous: None,
            written: false,
        })
    }

    /// Adds one repository: normalised, and left out when it shows nothing. Its name
    /// must sort (bytewise) after the previous entry's.
    pub fn push(&mut self, mut entry: RepositoryEntry) -> Result<(), WriteError> {
        entry.normalize();
        if entry.is_empty() {
            return Ok(());
        }
        if let Some(previous) = &self.previous
            && previous.as_bytes() >= entry.name.as_bytes()
        {
            return Err(WriteError::OutOfOrder {
                name: entry.name,
                previous: previous.clone(),
            });
        }
        self.write_entry(&entry)?;
        self.previous = Some(entry.name);
        Ok(())
    }

    /// Writes an entry as it is (a built [`IndexResponse`] is already in order).
    fn write_entry(&mut self, entry: &RepositoryEntry) -> Result<(), WriteError> {
        if self.written {
            self.out.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.out, entry).map_err(std::io::Error::from)?;
        self.written = true;
        Ok(())
    }

    /// Ends the answer and hands back the output.
    pub fn finish(mut self) -> Result<W, WriteError> {
        self.out.write_all(b"]}")?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(d: &[u8], tags: Option<Vec<&str>>) -> ImageEntry {
        ImageEntry {
            digest: Digest::sha256_of(d),
            media_type: crate::model::OCI_MANIFEST.to_owned(),
            os: "linux".into(),
            architecture: "amd64".into(),
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            tags: tags.map(|t| t.into_iter().map(String::from).collect()),
        }
    }

    #[test]
    fn field_names_and_omissions() {
        let resp = IndexResponse::new(
            "/",
            vec![RepositoryEntry {
                name: "a".into(),
                images: vec![image(b"1", Some(vec!["b", "a"]))],
                lists: vec![],
            }],
        );
        let v: serde_json::Value = serde_json::from_slice(&resp.to_json()).unwrap();
        let img = &v["Results"][0]["Images"][0];
        assert_eq!(img["Tags"], serde_json::json!(["a", "b"]));
        assert!(img.get("Labels").is_none() && img.get("Annotations").is_none());
        assert_eq!(img["OS"], "linux");
        assert_eq!(v["Results"][0]["Lists"], serde_json::json!([]));
        assert_eq!(v["Registry"], "/");
    }

    #[test]
    fn writer_gives_the_bytes_of_to_json_and_refuses_disorder() {
        let entry = |name: &str, tags: Vec<&str>| RepositoryEntry {
            name: name.into(),
            images: vec![image(name.as_bytes(), Some(tags))],
            lists: vec![],
        };
        let empty = RepositoryEntry {
            name: "b-empty".into(),
            images: vec![],
            lists: vec![],
        };
        let entries = vec![entry("a", vec!["z", "y"]), empty, entry("c\"q", vec!["1"])];
        let whole = IndexResponse::new("https://r.example/\u{e9}", entries.clone()).to_json();
        let mut writer = ResponseWriter::new(Vec::new(), "https://r.example/\u{e9}").unwrap();
        for e in entries {
            writer.push(e).unwrap();
        }
        assert_eq!(writer.finish().unwrap(), whole);
        assert_eq!(
            ResponseWriter::new(Vec::new(), "/")
                .unwrap()
                .finish()
                .unwrap(),
            IndexResponse::new("/", vec![]).to_json()
        );

        let mut writer = ResponseWriter::new(Vec::new(), "/").unwrap();
        writer.push(entry("b", vec![])).unwrap();
        for name in ["b", "a"] {
            let err = writer.push(entry(name, vec![])).unwrap_err();
            assert!(matches!(err, WriteError::OutOfOrder { .. }), "{err}");
        }
    }

    #[test]
    fn order_is_bytewise_and_empty_repositories_dropped() {
        let names = ["a0", "a.z", "a-c", "a/b", "a", "B", "empty"];
        let results = names
            .iter()
            .map(|n| RepositoryEntry {
                name: (*n).into(),
                images: if *n == "empty" {
                    vec![]
                } else {
                    vec![image(b"x", Some(vec![]))]
                },
                lists: vec![],
            })
            .collect();
        let resp = IndexResponse::new("/", results);
        let got: Vec<_> = resp.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(got, ["B", "a", "a-c", "a.z", "a/b", "a0"]);
    }
}
