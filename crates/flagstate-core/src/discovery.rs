//! The content discovery model: listings of repositories and tags in name or time
//! order, paged by position, and the digests a tag has pointed at.
//!
//! The ordering and paging rules live here once: [`Listing::select`] is the reference
//! every store's listing must equal (the in-memory store uses it directly; the SQL stores
//! express the same order in SQL and are checked against it by the conformance suite).
//!
//! Paging is by position, never by offset: a page names the last item it holds
//! ([`Listing::position_of`]) and the next page starts strictly after it, so items added
//! or removed elsewhere in the order between two pages neither repeat nor push others out
//! of the walk.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::digest::Digest;
use crate::model::{Manifest, Platform, PushedManifest};
use crate::name::{RepositoryName, Tag};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

/// The order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ListOrder {
    /// By name, bytewise (`sort=name`).
    #[default]
    Name,
    /// Oldest change first: by `updated`, ties by name (`sort=updated`).
    Updated,
    /// Newest change first: by `updated` descending, ties by name ascending
    /// (`sort=-updated`).
    NewestFirst,
}

impl ListOrder {
    /// The order a `sort` parameter names: `name`, `updated` or `-updated`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "name" => Some(ListOrder::Name),
            "updated" => Some(ListOrder::Updated),
            "-updated" => Some(ListOrder::NewestFirst),
            _ => None,
        }
    }

    /// The `sort` parameter naming this order.
    pub fn as_str(self) -> &'static str {
        match self {
            ListOrder::Name => "name",
            ListOrder::Updated => "updated",
            ListOrder::NewestFirst => "-updated",
        }
    }

    /// Whether the order is by time.
    pub fn is_by_time(self) -> bool {
        self != ListOrder::Name
    }
}

/// Where a page ends: the key of its last item in the listing's order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// In name order: the last name.
    Name(String),
    /// In time order: the last item's `updated` time and name.
    Time {
        /// The item's `updated` time.
        updated: Timestamp,
        /// The item's name.
        name: String,
    },
}

/// The separator of a time position's cursor text; neither a repository name nor a tag
/// can contain it.
const CURSOR_SEPARATOR: char = '~';

impl Position {
    /// The opaque cursor text of a time position (`last=` of the next page's link).
    pub fn to_cursor(&self) -> String {
        match self {
            Position::Name(name) => name.clone(),
            Position::Time { updated, name } => {
                format!("{}{CURSOR_SEPARATOR}{name}", updated.as_millis())
            }
        }
    }

    /// Reads `last=` for `order`: a name in name order, a cursor made by
    /// [`to_cursor`](Self::to_cursor) in time order. `None` when the text is not one.
    pub fn from_cursor(order: ListOrder, text: &str) -> Option<Self> {
        if text.is_empty() {
            return None;
        }
        if !order.is_by_time() {
            return Some(Position::Name(text.to_owned()));
        }
        let (millis, name) = text.split_once(CURSOR_SEPARATOR)?;
        let millis: i64 = millis.parse().ok()?;
        if name.is_empty() || name.contains(CURSOR_SEPARATOR) {
            return None;
        }
        Some(Position::Time {
            updated: Timestamp::from_millis(millis),
            name: name.to_owned(),
        })
    }
}

/// An item of a listing: what its order and position are made of.
pub trait Listed {
    /// The item's name (repository name or tag).
    fn name(&self) -> &str;
    /// When the item last changed.
    fn updated(&self) -> Timestamp;
}

/// Which page of a listing to give: its order, where the previous page ended, and how
/// many items at most.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listing {
    /// The order.
    pub order: ListOrder,
    /// Start strictly after this position; `None` starts at the beginning.
    pub after: Option<Position>,
    /// At most this many items.
    pub limit: usize,
}

impl Listing {
    /// The first `limit` items in `order`.
    pub fn first(order: ListOrder, limit: usize) -> Self {
        Listing {
            order,
            after: None,
            limit,
        }
    }

    /// The store contract's check: a position must be of the order's kind.
    pub fn validate(&self) -> Result<(), StoreError> {
        match (&self.after, self.order.is_by_time()) {
            (None, _) | (Some(Position::Name(_)), false) | (Some(Position::Time { .. }), true) => {
                Ok(())
            }
            _ => Err(StoreError::Invalid(format!(
                "a position of another order cannot continue a listing by {}",
                self.order.as_str()
            ))),
        }
    }

    /// Whether `item` comes strictly after the listing's position in its order (every
    /// item does when there is no position).
    pub fn is_after(&self, name: &str, updated: Timestamp) -> bool {
        match (&self.after, self.order) {
            (None, _) => true,
            (Some(Position::Name(last)), _) => name.as_bytes() > last.as_bytes(),
            (
                Some(Position::Time {
                    updated: at,
                    name: last,
                }),
                ListOrder::NewestFirst,
            ) => updated < *at || (updated == *at && name.as_bytes() > last.as_bytes()),
            (
                Some(Position::Time {
                    updated: at,
                    name: last,
                }),
                _,
            ) => updated > *at || (updated == *at && name.as_bytes() > last.as_bytes()),
        }
    }

    /// Sorts `items` in the listing's order.
    pub fn sort<T: Listed>(&self, items: &mut [T]) {
        match self.order {
            ListOrder::Name => items.sort_by(|a, b| a.name().as_bytes().cmp(b.name().as_bytes())),
            ListOrder::Updated => items.sort_by(|a, b| {
                (a.updated(), a.name().as_bytes()).cmp(&(b.updated(), b.name().as_bytes()))
            }),
            ListOrder::NewestFirst => items.sort_by(|a, b| {
                b.updated()
                    .cmp(&a.updated())
                    .then_with(|| a.name().as_bytes().cmp(b.name().as_bytes()))
            }),
        }
    }

    /// The reference page: the items after the position, in order, at most `limit`.
    pub fn select<T: Listed>(&self, items: impl IntoIterator<Item = T>) -> Vec<T> {
        let mut kept: Vec<T> = items
            .into_iter()
            .filter(|item| self.is_after(item.name(), item.updated()))
            .collect();
        self.sort(&mut kept);
        kept.truncate(self.limit);
        kept
    }

    /// The position of `item` in this listing's order: where a page ending with it ends.
    pub fn position_of<T: Listed>(&self, item: &T) -> Position {
        match self.order {
            ListOrder::Name => Position::Name(item.name().to_owned()),
            ListOrder::Updated | ListOrder::NewestFirst => Position::Time {
                updated: item.updated(),
                name: item.name().to_owned(),
            },
        }
    }
}

/// A page of the repository listing: [`Listing`] plus an optional namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepositoryListing {
    /// Only repositories under `NAMESPACE/` (at any depth); `None` lists all.
    pub namespace: Option<String>,
    /// Order, position and size of the page.
    pub listing: Listing,
}

impl RepositoryListing {
    /// Whether `name` is in the listing's namespace.
    pub fn includes(&self, name: &str) -> bool {
        match &self.namespace {
            None => true,
            Some(namespace) => name
                .strip_prefix(namespace.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
        }
    }

    /// The reference page over `repositories`.
    pub fn select(
        &self,
        repositories: impl IntoIterator<Item = RepositoryInfo>,
    ) -> Vec<RepositoryInfo> {
        self.listing.select(
            repositories
                .into_iter()
                .filter(|repository| self.includes(repository.name.as_str())),
        )
    }
}

/// One repository of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryInfo {
    /// The repository's name.
    pub name: RepositoryName,
    /// How many tags it has now.
    pub tags: u64,
    /// When the index first saw it.
    pub created: Timestamp,
    /// When it last changed: a tag added, moved or removed (its creation at first).
    pub updated: Timestamp,
}

impl Listed for RepositoryInfo {
    fn name(&self) -> &str {
        self.name.as_str()
    }
    fn updated(&self) -> Timestamp {
        self.updated
    }
}

/// One tag of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    /// The tag.
    pub tag: Tag,
    /// The digest it points at.
    pub digest: Digest,
    /// The media type of that manifest.
    pub media_type: String,
    /// When the index first saw the tag at this digest.
    pub updated: Timestamp,
    /// The image config's `created` time, verbatim, when the tag names an image whose
    /// config states one.
    pub created: Option<String>,
    /// For a tag that points at an artifact ([`RepositorySnapshot::artifacts`](crate::RepositorySnapshot::artifacts)):
    /// its artifact type (its `artifactType`, else its config's media type). `None` for
    /// images and image lists.
    pub artifact_type: Option<String>,
}

/// A page of a repository's tag listing: [`Listing`] plus an optional artifact type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagListing {
    /// Only tags pointing at artifacts of this type (`artifactType=`); `None` lists
    /// every tag. Images and image lists have no artifact type, so a filter leaves them
    /// out.
    pub artifact_type: Option<String>,
    /// Order, position and size of the page.
    pub listing: Listing,
}

impl TagListing {
    /// Every tag, in `listing`'s order and page.
    pub fn all(listing: Listing) -> Self {
        TagListing {
            artifact_type: None,
            listing,
        }
    }

    /// Whether a tag of artifact type `artifact_type` is in the listing.
    pub fn includes(&self, artifact_type: Option<&str>) -> bool {
        self.artifact_type
            .as_deref()
            .is_none_or(|wanted| artifact_type == Some(wanted))
    }

    /// The reference page over `tags`.
    pub fn select(&self, tags: impl IntoIterator<Item = TagInfo>) -> Vec<TagInfo> {
        self.listing.select(
            tags.into_iter()
                .filter(|tag| self.includes(tag.artifact_type.as_deref())),
        )
    }
}

impl Listed for TagInfo {
    fn name(&self) -> &str {
        self.tag.as_str()
    }
    fn updated(&self) -> Timestamp {
        self.updated
    }
}

/// Which manifests a manifest listing holds (`untagged=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Untagged {
    /// Tagged and untagged manifests (`untagged=include`).
    #[default]
    Include,
    /// Only manifests no tag reaches (`untagged=only`).
    Only,
    /// Only tagged manifests (`untagged=exclude`).
    Exclude,
}

impl Untagged {
    /// The choice an `untagged` parameter names: `include`, `only` or `exclude`.
    pub fn parse(text: &str) -> Option<Self> {
        [Untagged::Include, Untagged::Only, Untagged::Exclude]
            .into_iter()
            .find(|u| u.as_str() == text)
    }

    /// The `untagged` parameter naming this choice.
    pub fn as_str(self) -> &'static str {
        match self {
            Untagged::Include => "include",
            Untagged::Only => "only",
            Untagged::Exclude => "exclude",
        }
    }

    /// Whether an entry with (`Some`) or without (`None`) a tag is listed.
    pub fn admits(self, tag: Option<&Tag>) -> bool {
        match self {
            Untagged::Include => true,
            Untagged::Only => tag.is_none(),
            Untagged::Exclude => tag.is_some(),
        }
    }
}

/// Where a page of a manifest listing ends: the last entry's digest and tag (`None` for
/// an untagged manifest, which sorts before the tags of the same digest).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManifestPosition {
    /// The entry's digest.
    pub digest: Digest,
    /// The entry's tag.
    pub tag: Option<Tag>,
}

impl ManifestPosition {
    /// The opaque cursor text (`last=` of the next page's link): the digest, the
    /// separator, and the tag (empty for an untagged entry).
    pub fn to_cursor(&self) -> String {
        let tag = self.tag.as_ref().map_or("", Tag::as_str);
        format!("{}{CURSOR_SEPARATOR}{tag}", self.digest)
    }

    /// Reads a cursor made by [`to_cursor`](Self::to_cursor); `None` when the text is
    /// not one.
    pub fn from_cursor(text: &str) -> Option<Self> {
        let (digest, tag) = text.split_once(CURSOR_SEPARATOR)?;
        let digest = Digest::parse(digest).ok()?;
        let tag = match tag {
            "" => None,
            tag => Some(Tag::parse(tag).ok()?),
        };
        Some(ManifestPosition { digest, tag })
    }
}

/// Which page of a repository's manifests to give: every (digest, tag) pair of its tags
/// and every manifest pushed by digest that no tag reaches, by digest then tag (an
/// untagged entry first), after a position, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestListing {
    /// Which entries.
    pub untagged: Untagged,
    /// Start strictly after this position; `None` starts at the beginning.
    pub after: Option<ManifestPosition>,
    /// At most this many entries.
    pub limit: usize,
}

impl ManifestListing {
    /// The reference page over every entry of a repository (see
    /// [`manifest_entries`]).
    pub fn select(&self, entries: impl IntoIterator<Item = ManifestInfo>) -> Vec<ManifestInfo> {
        let mut kept: Vec<ManifestInfo> = entries
            .into_iter()
            .filter(|e| self.untagged.admits(e.tag.as_ref()))
            .filter(|e| {
                self.after
                    .as_ref()
                    .is_none_or(|after| e.position() > *after)
            })
            .collect();
        kept.sort_by_key(ManifestInfo::position);
        kept.truncate(self.limit);
        kept
    }
}

/// One entry of a manifest listing: a descriptor of the manifest and the tag naming it
/// (`None`: no tag reaches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes; `None` for a manifest indexed before sizes were kept, until the
    /// next scan fills it in.
    pub size: Option<u64>,
    /// The platform of an image the index holds.
    pub platform: Option<Platform>,
    /// The tag, for a tagged entry.
    pub tag: Option<Tag>,
    /// The artifact type (its `artifactType`, else its config's media type) of a
    /// manifest the repository holds by digest — an untagged entry, or a tag pointing at
    /// an artifact — when its bytes told one; `None` for images and image lists.
    pub artifact_type: Option<String>,
    /// When a manifest the repository holds by digest was first pushed
    /// ([`PushedManifest::pushed`]); `None` for images and image lists.
    pub pushed: Option<Timestamp>,
}

impl ManifestInfo {
    /// The entry's position in a manifest listing.
    pub fn position(&self) -> ManifestPosition {
        ManifestPosition {
            digest: self.digest.clone(),
            tag: self.tag.clone(),
        }
    }
}

/// The reference entries of a repository's manifest listing, unpaged: one per tag (with
/// what `manifest` says of its digest), one per artifact tag (with what the repository
/// holds of the artifact, in `pushed`), and one per manifest in `pushed` that no tag
/// reaches, directly or as a child of a tagged list. `manifest` looks a digest up among
/// the stored manifests.
pub fn manifest_entries<'a>(
    tags: impl IntoIterator<Item = (&'a Tag, &'a Digest)>,
    artifact_tags: impl IntoIterator<Item = (&'a Tag, &'a Digest)>,
    pushed: impl IntoIterator<Item = &'a PushedManifest>,
    manifest: impl Fn(&Digest) -> Option<&'a Manifest>,
) -> Vec<ManifestInfo> {
    let pushed: BTreeMap<&Digest, &PushedManifest> =
        pushed.into_iter().map(|p| (&p.digest, p)).collect();
    let mut reached: BTreeSet<&Digest> = BTreeSet::new();
    let mut entries = Vec::new();
    for (tag, digest) in artifact_tags {
        reached.insert(digest);
        let Some(artifact) = pushed.get(digest) else {
            continue;
        };
        entries.push(ManifestInfo {
            tag: Some(tag.clone()),
            ..untagged_entry(artifact, None)
        });
    }
    for (tag, digest) in tags {
        let stored = manifest(digest);
        reached.extend(reached_by(digest, stored));
        entries.push(ManifestInfo {
            digest: digest.clone(),
            media_type: stored.map_or_else(String::new, |m| m.media_type().to_owned()),
            size: stored.and_then(Manifest::size),
            platform: stored.and_then(Manifest::platform).cloned(),
            tag: Some(tag.clone()),
            artifact_type: None,
            pushed: None,
        });
    }
    for pushed in pushed.values() {
        if reached.contains(&pushed.digest) {
            continue;
        }
        let stored = manifest(&pushed.digest);
        entries.push(untagged_entry(pushed, stored));
    }
    entries
}

/// The entry of a manifest the repository holds by digest, untagged; `stored` is the
/// manifest the index holds under the same digest, if any (it gives the platform).
fn untagged_entry(pushed: &PushedManifest, stored: Option<&Manifest>) -> ManifestInfo {
    ManifestInfo {
        digest: pushed.digest.clone(),
        media_type: pushed.media_type.clone(),
        size: Some(pushed.size),
        platform: stored.and_then(Manifest::platform).cloned(),
        tag: None,
        artifact_type: pushed.artifact_type.clone(),
        pushed: Some(pushed.pushed),
    }
}

/// Whether a tag of `tags` reaches `digest`: points at it, or at a list naming it.
pub fn is_reached<'a>(
    digest: &Digest,
    tags: impl IntoIterator<Item = &'a Digest>,
    manifest: impl Fn(&Digest) -> Option<&'a Manifest>,
) -> bool {
    tags.into_iter()
        .any(|tagged| reached_by(tagged, manifest(tagged)).any(|d| d == digest))
}

/// What a tag pointing at `tagged` reaches: `tagged` itself and, when the stored
/// manifest is a list, its children.
fn reached_by<'a>(
    tagged: &'a Digest,
    stored: Option<&'a Manifest>,
) -> impl Iterator<Item = &'a Digest> {
    std::iter::once(tagged).chain(stored.into_iter().flat_map(Manifest::children))
}

/// One entry of a tag's history: a digest the tag pointed at, from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The digest.
    pub digest: Digest,
    /// When the tag started pointing at it (as [`TagInfo::updated`] said then).
    pub since: Timestamp,
}

/// How much tag history a store keeps, applied by
/// [`Store::prune_history`](crate::Store::prune_history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRetention {
    /// At most this many entries per tag, the newest (at least 1).
    pub max_entries: usize,
    /// Entries that started longer ago than this are dropped, except each tag's newest;
    /// `None` keeps them however old.
    pub max_age: Option<Duration>,
}

impl Default for HistoryRetention {
    /// 100 entries per tag, however old.
    fn default() -> Self {
        HistoryRetention {
            max_entries: 100,
            max_age: None,
        }
    }
}

impl HistoryRetention {
    /// The reference rule over one tag's history, oldest first: the entries it keeps.
    pub fn keep(&self, history: &mut Vec<HistoryEntry>, now: Timestamp) {
        let max = self.max_entries.max(1);
        if history.len() > max {
            history.drain(..history.len() - max);
        }
        if let Some(horizon) = self.horizon(now) {
            let newest = history.len().saturating_sub(1);
            let mut index = 0;
            history.retain(|entry| {
                let keep = index == newest || entry.since >= horizon;
                index += 1;
                keep
            });
        }
    }

    /// The oldest `since` that [`max_age`](Self::max_age) keeps at `now`.
    pub fn horizon(&self, now: Timestamp) -> Option<Timestamp> {
        let age = self.max_age?;
        let millis = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        Some(Timestamp::from_millis(
            now.as_millis().saturating_sub(millis),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Item(&'static str, i64);

    impl Listed for Item {
        fn name(&self) -> &str {
            self.0
        }
        fn updated(&self) -> Timestamp {
            Timestamp::from_millis(self.1)
        }
    }

    fn items() -> Vec<Item> {
        vec![Item("b", 2), Item("a", 3), Item("c", 2), Item("d", 1)]
    }

    fn walk(order: ListOrder, limit: usize) -> Vec<&'static str> {
        let mut listing = Listing::first(order, limit);
        let mut seen = Vec::new();
        loop {
            let page = listing.select(items());
            let Some(last) = page.last() else {
                return seen;
            };
            listing.after = Some(listing.position_of(last));
            seen.extend(page.iter().map(|i| i.0));
        }
    }

    #[test]
    fn walks_visit_every_item_once_in_each_order() {
        for limit in [1, 2, 3, 10] {
            assert_eq!(walk(ListOrder::Name, limit), ["a", "b", "c", "d"]);
            assert_eq!(walk(ListOrder::Updated, limit), ["d", "b", "c", "a"]);
            assert_eq!(walk(ListOrder::NewestFirst, limit), ["a", "b", "c", "d"]);
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_malformed_text() {
        let time = Position::Time {
            updated: Timestamp::from_millis(42),
            name: "apps/x".into(),
        };
        assert_eq!(time.to_cursor(), "42~apps/x");
        assert_eq!(
            Position::from_cursor(ListOrder::NewestFirst, "42~apps/x"),
            Some(time)
        );
        for bad in ["", "42", "x~a", "42~", "1~a~b"] {
            assert_eq!(
                Position::from_cursor(ListOrder::Updated, bad),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            Position::from_cursor(ListOrder::Name, "a"),
            Some(Position::Name("a".into()))
        );
        let mixed = Listing {
            order: ListOrder::Updated,
            after: Some(Position::Name("a".into())),
            limit: 1,
        };
        assert!(mixed.validate().is_err());
    }

    #[test]
    fn namespaces_match_whole_path_components() {
        let listing = RepositoryListing {
            namespace: Some("apps".into()),
            listing: Listing::first(ListOrder::Name, 10),
        };
        assert!(listing.includes("apps/a"));
        assert!(listing.includes("apps/a/b"));
        assert!(!listing.includes("apps"));
        assert!(!listing.includes("appsx/a"));
    }

    #[test]
    fn retention_keeps_the_newest_entries_and_always_the_current_one() {
        let entry = |n: i64| HistoryEntry {
            digest: Digest::sha256_of(&n.to_le_bytes()),
            since: Timestamp::from_millis(n * 1000),
        };
        let mut history: Vec<HistoryEntry> = (1..=5).map(entry).collect();
        HistoryRetention {
            max_entries: 3,
            max_age: None,
        }
        .keep(&mut history, Timestamp::from_millis(10_000));
        assert_eq!(history, vec![entry(3), entry(4), entry(5)]);
        let by_age = HistoryRetention {
            max_entries: 10,
            max_age: Some(Duration::from_secs(1)),
        };
        by_age.keep(&mut history, Timestamp::from_millis(100_000));
        assert_eq!(
            history,
            vec![entry(5)],
            "the current entry stays however old"
        );
    }
}
