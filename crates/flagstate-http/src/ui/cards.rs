//! Summaries of repositories as the listing pages show them: title, description and icon
//! resolved from labels, the newest tags, and counts.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use flagstate_core::flatpak::{APPDATA_LABEL, AppStream, ICON_KEYS};
use flagstate_core::model::Description;
use flagstate_core::{ImageEntry, RepositoryEntry};

use super::reference::find_icon;

/// Tags shown on a card; the rest are counted.
const CARD_TAGS: usize = 5;
/// Characters of description shown on a card.
const CARD_DESCRIPTION: usize = 240;

/// One repository on a listing page.
#[derive(Debug, Clone)]
pub struct RepoCard {
    /// Repository name.
    pub name: String,
    /// Title from labels/annotations, when any.
    pub title: Option<String>,
    /// Description, shortened for a card.
    pub description: Option<String>,
    /// Icon `src`, when any image has one.
    pub icon: Option<String>,
    /// The newest-looking tags (see [`newest_first`]).
    pub tags: Vec<String>,
    /// Number of tags.
    pub tag_count: usize,
    /// Number of distinct images (tagged directly or inside lists).
    pub image_count: usize,
    /// Number of image lists.
    pub list_count: usize,
    /// Distinct `os/architecture` pairs.
    pub platforms: Vec<String>,
}

impl RepoCard {
    /// Summarises `entry` (the repository's query result; `None` when it has no tags).
    pub fn new(name: &str, entry: Option<&RepositoryEntry>) -> Self {
        let mut card = RepoCard {
            name: name.to_owned(),
            title: None,
            description: None,
            icon: None,
            tags: Vec::new(),
            tag_count: 0,
            image_count: 0,
            list_count: 0,
            platforms: Vec::new(),
        };
        let Some(entry) = entry else {
            return card;
        };
        let mut tags = all_tags(entry);
        newest_first(&mut tags);
        card.tag_count = tags.len();
        card.list_count = entry.lists.len();
        let mut digests = BTreeSet::new();
        let mut platforms = BTreeSet::new();
        for image in images_of(entry) {
            digests.insert(&image.digest);
            platforms.insert(format!("{}/{}", image.os, image.architecture));
        }
        card.image_count = digests.len();
        card.platforms = platforms.into_iter().collect();
        // The newest tag's images speak for the repository; older ones fill gaps.
        let preferred = tags.first().map(String::as_str);
        let mut candidates: Vec<&ImageEntry> = Vec::new();
        candidates.extend(
            entry
                .images
                .iter()
                .filter(|i| has_tag(i.tags.as_deref(), preferred)),
        );
        for list in entry
            .lists
            .iter()
            .filter(|l| has_tag(Some(&l.tags), preferred))
        {
            candidates.extend(&list.images);
        }
        candidates.extend(images_of(entry));
        let described = describe(candidates.iter().copied());
        card.title = described.title;
        card.description = described.description.map(|d| shorten(&d, CARD_DESCRIPTION));
        card.icon = described.icon;
        card.tags = tags.into_iter().take(CARD_TAGS).collect();
        card
    }

    /// First letter or digit of the title (else of the repository name), for the icon
    /// placeholder. The card is headed by the name, with the title beneath it.
    pub fn initial(&self) -> String {
        initial_of(self.title.as_deref().unwrap_or(&self.name))
    }

    /// Tags not shown on the card.
    pub fn more_tags(&self) -> usize {
        self.tag_count.saturating_sub(self.tags.len())
    }
}

/// The first letter or digit of `text`, upper-cased (empty when it has none).
pub fn initial_of(text: &str) -> String {
    text.chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default()
}

/// Title, description and icon resolved over several images: the first image that has
/// each one wins.
#[derive(Debug, Clone, Default)]
pub struct Described {
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Icon `src`.
    pub icon: Option<String>,
}

/// Resolves [`Described`] over `images` in order.
pub fn describe<'a>(images: impl IntoIterator<Item = &'a ImageEntry>) -> Described {
    describe_pairs(images.into_iter().map(|i| (&i.labels, &i.annotations)))
}

/// Resolves [`Described`] over (labels, annotations) pairs in order; the first pair
/// that has each piece wins.
pub fn describe_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a BTreeMap<String, String>, &'a BTreeMap<String, String>)>,
) -> Described {
    let mut out = Described::default();
    for (labels, annotations) in pairs {
        let mut d = Description::resolve(labels, annotations);
        // Flatpak images rarely carry the generic keys; their AppStream data names them.
        if (d.title.is_none() || d.description.is_none())
            && let Some(app) = labels.get(APPDATA_LABEL).and_then(|x| AppStream::parse(x))
        {
            d.title = d.title.or(app.name);
            d.description = d.description.or(app.summary);
        }
        out.title = out.title.or(d.title);
        out.description = out.description.or(d.description);
        // Cards show the smallest icon present.
        out.icon = out
            .icon
            .or_else(|| find_icon(ICON_KEYS, labels, annotations));
        if out.title.is_some() && out.description.is_some() && out.icon.is_some() {
            break;
        }
    }
    out
}

/// Every image of an entry: the directly tagged ones, then the children of lists.
pub fn images_of(entry: &RepositoryEntry) -> impl Iterator<Item = &ImageEntry> {
    entry
        .images
        .iter()
        .chain(entry.lists.iter().flat_map(|l| l.images.iter()))
}

/// Every tag of an entry (images and lists), deduplicated.
pub fn all_tags(entry: &RepositoryEntry) -> Vec<String> {
    let mut tags: BTreeSet<&String> = BTreeSet::new();
    for image in &entry.images {
        tags.extend(image.tags.iter().flatten());
    }
    for list in &entry.lists {
        tags.extend(&list.tags);
    }
    tags.into_iter().cloned().collect()
}

fn has_tag(tags: Option<&[String]>, tag: Option<&str>) -> bool {
    match (tags, tag) {
        (Some(tags), Some(tag)) => tags.iter().any(|t| t == tag),
        _ => false,
    }
}

/// Orders tags newest-looking first (see [`newest_looking_cmp`]), for places that show
/// tags without their times.
pub fn newest_first(tags: &mut [String]) {
    tags.sort_by(|a, b| newest_looking_cmp(a, b));
}

/// `latest` first, then descending natural order (`1.10` before `1.9`): version-like
/// tags sort by age in practice. The repository page orders by the time the index saw
/// each tag and uses this between tags of the same time (those one scan found at once).
pub fn newest_looking_cmp(a: &str, b: &str) -> Ordering {
    match (a == "latest", b == "latest") {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => natural_cmp(b, a),
    }
}

/// Compares with runs of ASCII digits taken as numbers. Hand-written: the rule is a dozen
/// lines and the crates offering it pull in more than they save.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    // Leading zeros only decide between otherwise equal strings (`01` vs `1`).
    let mut zeros_tie = Ordering::Equal;
    loop {
        match (a.first(), b.first()) {
            (None, None) => return zeros_tie,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (trim_zeros(&a[..na]), trim_zeros(&b[..nb]));
                let order = da.len().cmp(&db.len()).then(da.cmp(db));
                if order != Ordering::Equal {
                    return order;
                }
                zeros_tie = zeros_tie.then(na.cmp(&nb));
                (a, b) = (&a[na..], &b[nb..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

/// `text` cut to at most `max` characters at a word boundary, with an ellipsis.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(i) if i > max / 2 => &cut[..i],
        _ => &cut,
    };
    format!("{}…", cut.trim_end())
}

/// Labels or annotations as table rows; long values are folded by the templates.
pub fn rows(map: &BTreeMap<String, String>) -> Vec<KeyValue> {
    map.iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// One label or annotation.
#[derive(Debug, Clone)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

impl KeyValue {
    /// Values longer than this are folded behind a `<details>` element.
    const FOLD: usize = 160;

    /// Whether the value is long enough to fold.
    pub fn is_long(&self) -> bool {
        self.value.len() > Self::FOLD || self.value.contains('\n')
    }

    /// Size of the value, for the folded summary.
    pub fn size(&self) -> String {
        let n = self.value.chars().count();
        format!("{n} characters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut tags: Vec<String> = ["1.9", "latest", "1.10", "2", "1.10-rc1", "01.9", "beta"]
            .map(String::from)
            .to_vec();
        newest_first(&mut tags);
        assert_eq!(
            tags,
            ["latest", "beta", "2", "1.10-rc1", "1.10", "01.9", "1.9"]
        );
        assert_eq!(natural_cmp("a01", "a1"), Ordering::Greater);
        assert_eq!(natural_cmp("v2", "v10"), Ordering::Less);
        assert_eq!(natural_cmp("x", "x"), Ordering::Equal);
    }

    #[test]
    fn shorten_at_words() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("one two three four", 12), "one two…");
        assert_eq!(shorten("ééééééé", 3), "ééé…");
    }
}
