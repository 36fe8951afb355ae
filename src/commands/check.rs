//! `flagstate check`: compares what the store holds with what the registry serves, tag
//! by tag, and lists every difference. Useful to verify that notifications arrive, and
//! as a monitoring probe (exit status 1 when the index is out of date).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::ExitCode;

use futures::{StreamExt, TryStreamExt};

use flagstate_core::registry::{RegistryClient, RegistryError};
use flagstate_core::{Digest, ListOrder, Listing, NameError, RepositoryName, TagListing};

use crate::config::Config;
use crate::error::CliError;
use crate::setup;

/// How one repository's tags differ between the index and the registry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RepositoryDiff {
    /// In the registry, not in the index: tag → registry digest.
    pub missing: BTreeMap<String, Digest>,
    /// In the index, not in the registry: tag → indexed digest.
    pub extra: BTreeMap<String, Digest>,
    /// In both with different digests: tag → (indexed, registry).
    pub moved: BTreeMap<String, (Digest, Digest)>,
}

impl RepositoryDiff {
    /// Compares two tag → digest maps.
    pub fn between(index: &BTreeMap<String, Digest>, registry: &BTreeMap<String, Digest>) -> Self {
        let mut diff = RepositoryDiff::default();
        for (tag, digest) in registry {
            match index.get(tag) {
                None => {
                    diff.missing.insert(tag.clone(), digest.clone());
                }
                Some(indexed) if indexed != digest => {
                    diff.moved
                        .insert(tag.clone(), (indexed.clone(), digest.clone()));
                }
                Some(_) => {}
            }
        }
        for (tag, digest) in index {
            if !registry.contains_key(tag) {
                diff.extra.insert(tag.clone(), digest.clone());
            }
        }
        diff
    }

    /// Whether both sides agree.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.moved.is_empty()
    }

    /// The difference as indented lines.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (tag, digest) in &self.missing {
            let _ = writeln!(
                out,
                "  missing {tag} -> {digest} (in the registry, not indexed)"
            );
        }
        for (tag, digest) in &self.extra {
            let _ = writeln!(
                out,
                "  extra   {tag} -> {digest} (indexed, gone from the registry)"
            );
        }
        for (tag, (indexed, actual)) in &self.moved {
            let _ = writeln!(out, "  moved   {tag}: indexed {indexed}, registry {actual}");
        }
        out
    }
}

/// Runs the command.
pub async fn run(config: &Config) -> Result<ExitCode, CliError> {
    let store = setup::open_existing_store(config).await?;
    let client = setup::registry_client(config)?;
    let (listed, invalid) = registry_repositories(&client).await?;
    // With configured repositories the scan indexes (and removes) only those, so only
    // those are compared; with the catalog, an indexed repository the catalog lacks is
    // stale.
    let indexed = if client.configured_repositories().is_empty() {
        store.repositories().await?
    } else {
        Vec::new()
    };
    let all: BTreeSet<RepositoryName> = listed.iter().chain(&indexed).cloned().collect();
    let total = all.len() + invalid.len();

    let (mut differing, mut failed, mut tags_seen) = (0usize, 0usize, 0usize);
    let (mut missing, mut extra, mut moved) = (0usize, 0usize, 0usize);
    for (name, e) in &invalid {
        println!("{name}: cannot read from the registry: {e}");
        failed += 1;
    }
    for repository in &all {
        let in_registry = if listed.contains(repository) {
            match registry_tags(&client, repository, config.registry.max_concurrency).await {
                Ok(tags) => tags,
                Err(e) => {
                    println!("{repository}: cannot read from the registry: {e}");
                    failed += 1;
                    continue;
                }
            }
        } else {
            BTreeMap::new()
        };
        // Every tag the index keeps: those of images and those of artifacts.
        let every_tag = TagListing::all(Listing::first(ListOrder::Name, usize::MAX));
        let in_index: BTreeMap<String, Digest> = (store.list_tags(repository, &every_tag).await?)
            .unwrap_or_default()
            .into_iter()
            .map(|tag| (tag.tag.into_string(), tag.digest))
            .collect();
        tags_seen += in_registry.len();
        let diff = RepositoryDiff::between(&in_index, &in_registry);
        if !diff.is_empty() {
            differing += 1;
            missing += diff.missing.len();
            extra += diff.extra.len();
            moved += diff.moved.len();
            print!("{repository}:\n{}", diff.describe());
        }
    }
    if differing == 0 && failed == 0 {
        println!("in sync: {total} repositories, {tags_seen} tags");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "out of sync: {differing} of {total} repositories differ ({missing} missing, {extra} extra, {moved} moved tags); {failed} could not be read"
    );
    Ok(ExitCode::FAILURE)
}

/// Listed strings that are not repository names, with why.
type InvalidNames = Vec<(String, NameError)>;

/// The repositories to compare: the configured list, else the catalog (with the names
/// it lists that are not repository names).
async fn registry_repositories(
    client: &RegistryClient,
) -> Result<(BTreeSet<RepositoryName>, InvalidNames), CliError> {
    let configured = client.configured_repositories();
    if !configured.is_empty() {
        return Ok((configured.iter().cloned().collect(), Vec::new()));
    }
    let catalog = client.catalog().await?;
    let mut invalid = catalog.invalid;
    invalid.sort_by(|a, b| a.0.cmp(&b.0));
    invalid.dedup_by(|a, b| a.0 == b.0);
    Ok((catalog.valid.into_iter().collect(), invalid))
}

/// The tag → digest map the registry serves for one repository. A tag deleted between
/// listing and `HEAD` is left out, as is everything of an unknown repository, and (as
/// the scan does) a listed string that is not a tag.
async fn registry_tags(
    client: &RegistryClient,
    repository: &RepositoryName,
    concurrency: usize,
) -> Result<BTreeMap<String, Digest>, RegistryError> {
    let tags = match client.tags(repository).await {
        Ok(tags) => tags,
        Err(e) if e.is_not_found() => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    futures::stream::iter(tags.valid)
        .map(|tag| async move {
            let head = client.head_manifest(repository, &tag).await?;
            Ok::<_, RegistryError>(head.map(|(digest, _)| (tag.into_string(), digest)))
        })
        .buffer_unordered(concurrency.max(1))
        .try_filter_map(|found| async move { Ok(found) })
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, Digest> {
        entries
            .iter()
            .map(|(t, c)| ((*t).to_owned(), d(c)))
            .collect()
    }

    #[test]
    fn classifies_missing_extra_and_moved_tags() {
        let index = map(&[("same", "a"), ("old", "b"), ("moving", "c")]);
        let registry = map(&[("same", "a"), ("new", "d"), ("moving", "e")]);
        let diff = RepositoryDiff::between(&index, &registry);
        assert_eq!(diff.missing, map(&[("new", "d")]));
        assert_eq!(diff.extra, map(&[("old", "b")]));
        assert_eq!(diff.moved.len(), 1);
        assert_eq!(diff.moved["moving"], (d("c"), d("e")));
        let text = diff.describe();
        assert!(
            text.contains("missing new") && text.contains("extra   old"),
            "{text}"
        );
        assert!(RepositoryDiff::between(&index, &index).is_empty());
    }
}
