//! Small builders shared by this crate's tests.

#![allow(dead_code)]

use std::collections::BTreeMap;

use flagstate_core::model::{OCI_INDEX, OCI_MANIFEST};
use flagstate_core::{Digest, Image, ImageList, ListEntry, Manifest, Platform, RepositorySnapshot};

/// An amd64/linux image whose digest derives from `seed`, with `labels`.
pub fn image(seed: &str, labels: &[(&str, &str)]) -> Image {
    Image {
        digest: Digest::sha256_of(seed.as_bytes()),
        media_type: OCI_MANIFEST.to_owned(),
        platform: Platform::new("linux", "amd64"),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        annotations: BTreeMap::new(),
        created: None,
        config_digest: None,
        size: Some(500),
    }
}

/// A list of `children` whose digest derives from `seed`.
pub fn list(seed: &str, children: &[&Image]) -> ImageList {
    ImageList {
        digest: Digest::sha256_of(seed.as_bytes()),
        media_type: OCI_INDEX.to_owned(),
        annotations: BTreeMap::new(),
        entries: children
            .iter()
            .map(|c| ListEntry {
                digest: c.digest.clone(),
                platform: None,
            })
            .collect(),
        size: Some(500),
    }
}

/// A snapshot of `name` tagging each image with its tag, carrying all manifests.
pub fn snapshot(name: &str, tagged: &[(&str, &Image)]) -> RepositorySnapshot {
    RepositorySnapshot {
        artifacts: Default::default(),
        name: name.parse().unwrap(),
        tags: tagged
            .iter()
            .map(|(t, i)| (t.parse().unwrap(), i.digest.clone()))
            .collect(),
        manifests: tagged
            .iter()
            .map(|(_, i)| Manifest::Image((*i).clone()))
            .collect(),
        at: flagstate_core::Timestamp::now(),
    }
}
