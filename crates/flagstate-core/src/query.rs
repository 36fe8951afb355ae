//! The query model: parsing `/index/*` query strings into a typed [`IndexQuery`], its
//! canonical form (the cache key), and the reference semantics every store must follow.
//!
//! Semantics: filters with different parameter names are ANDed; repeated values of the
//! same parameter are ORed. `label:K`, `label:K:exists` and `label:K:matches` are three
//! different parameters. A label or annotation key may itself contain `:`; a key ending
//! in `:exists` or `:matches` is read as that operator.
//!
//! Platform rule: an image inside a list is matched (and shown) with the platform the
//! list states for it in `manifests[].platform`, falling back to its config's platform
//! when the list states none. A directly tagged image uses its config's platform. The
//! list's platform is what `podman pull --platform` resolves with, so it is the one a
//! client selecting by architecture means.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use percent_encoding::percent_decode_str;
use wildmatch::WildMatch;

use crate::digest::Digest;
use crate::index::{ImageEntry, ListEntryOut, RepositoryEntry};
use crate::model::{Image, Manifest, Platform};

/// Longest raw query string accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 8 * 1024;
/// Most `key=value` pairs accepted in one query.
pub const MAX_PARAMETERS: usize = 256;

/// Why a query string was rejected. Every variant names the offending parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The raw query is longer than [`MAX_QUERY_LEN`].
    #[error("query is {length} bytes long; the limit is {limit}")]
    TooLong {
        /// Length of the raw query.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// More than [`MAX_PARAMETERS`] pairs.
    #[error("query has {count} parameters; the limit is {limit}")]
    TooManyParameters {
        /// Number of pairs.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A parameter this protocol does not define.
    #[error("unknown parameter {parameter:?}")]
    UnknownParameter {
        /// The parameter name as decoded.
        parameter: String,
    },
    /// `label:` / `annotation:` with an empty key.
    #[error("parameter {parameter:?} names an empty key")]
    EmptyKey {
        /// The parameter name as decoded.
        parameter: String,
    },
    /// A parameter that needs a value got none.
    #[error("parameter {parameter:?} has an empty value")]
    EmptyValue {
        /// The parameter name as decoded.
        parameter: String,
    },
    /// `:exists` with a value other than `1` (undefined by the protocol).
    #[error("parameter {parameter:?} must be 1, got {value:?}")]
    ExistsNotOne {
        /// The parameter name as decoded.
        parameter: String,
        /// The value given.
        value: String,
    },
    /// Percent-encoding that does not decode to UTF-8.
    #[error("parameter {parameter:?} is not valid percent-encoded UTF-8")]
    InvalidEncoding {
        /// The raw (undecoded) parameter name.
        parameter: String,
    },
}

/// A glob over a whole string: `*` matches any run of characters, `?` one character;
/// every other character matches itself. Anchored at both ends.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    compiled: WildMatch,
}

impl Pattern {
    /// Compiles a pattern. Every string is a valid pattern.
    pub fn new(source: &str) -> Self {
        Pattern {
            source: source.to_owned(),
            compiled: WildMatch::new(source),
        }
    }

    /// Whether `value` matches the whole pattern.
    pub fn matches(&self, value: &str) -> bool {
        self.compiled.matches(value)
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has no wildcard (it then matches only itself).
    pub fn is_literal(&self) -> bool {
        !self.source.contains(['*', '?'])
    }

    /// The literal text before the first wildcard; useful for index range scans.
    pub fn literal_prefix(&self) -> &str {
        let end = self.source.find(['*', '?']).unwrap_or(self.source.len());
        &self.source[..end]
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Pattern {}
impl PartialOrd for Pattern {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pattern {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.source.cmp(&other.source)
    }
}

/// The test applied to one label or annotation key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ValueTest {
    /// The value equals one of these (`label:K=V`, repeated values ORed).
    Equals(BTreeSet<String>),
    /// The key is present (`label:K:exists=1`).
    Exists,
    /// The value matches one of these globs (`label:K:matches=GLOB`).
    Matches(BTreeSet<Pattern>),
}

impl ValueTest {
    /// Whether a key's value (or its absence) passes.
    pub fn passes(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (_, None) => false,
            (ValueTest::Exists, Some(_)) => true,
            (ValueTest::Equals(set), Some(v)) => set.contains(v),
            (ValueTest::Matches(pats), Some(v)) => pats.iter().any(|p| p.matches(v)),
        }
    }
}

/// One parameter of a query with all its values (ORed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filter {
    /// `repository=R`: the repository is one of these.
    Repository(BTreeSet<String>),
    /// `tag=T`: tagged with one of these (a list's children inherit the list's tags).
    Tag(BTreeSet<String>),
    /// `tag:matches=GLOB`: some tag matches one of these.
    TagMatches(BTreeSet<Pattern>),
    /// `os=O`.
    Os(BTreeSet<String>),
    /// `architecture=A`.
    Architecture(BTreeSet<String>),
    /// `label:K…`: a config label test.
    Label {
        /// Label key.
        key: String,
        /// The test.
        test: ValueTest,
    },
    /// `annotation:K…`: a manifest annotation test.
    Annotation {
        /// Annotation key.
        key: String,
        /// The test.
        test: ValueTest,
    },
}

impl Filter {
    /// The parameter name this filter is written as.
    pub fn parameter(&self) -> String {
        let keyed = |prefix: &str, key: &str, test: &ValueTest| match test {
            ValueTest::Equals(_) => format!("{prefix}:{key}"),
            ValueTest::Exists => format!("{prefix}:{key}:exists"),
            ValueTest::Matches(_) => format!("{prefix}:{key}:matches"),
        };
        match self {
            Filter::Repository(_) => "repository".into(),
            Filter::Tag(_) => "tag".into(),
            Filter::TagMatches(_) => "tag:matches".into(),
            Filter::Os(_) => "os".into(),
            Filter::Architecture(_) => "architecture".into(),
            Filter::Label { key, test } => keyed("label", key, test),
            Filter::Annotation { key, test } => keyed("annotation", key, test),
        }
    }

    fn values(&self) -> Vec<&str> {
        fn strs(s: &BTreeSet<String>) -> Vec<&str> {
            s.iter().map(String::as_str).collect()
        }
        fn pats(s: &BTreeSet<Pattern>) -> Vec<&str> {
            s.iter().map(Pattern::as_str).collect()
        }
        match self {
            Filter::Repository(s) | Filter::Tag(s) | Filter::Os(s) | Filter::Architecture(s) => {
                strs(s)
            }
            Filter::TagMatches(p) => pats(p),
            Filter::Label { test, .. } | Filter::Annotation { test, .. } => match test {
                ValueTest::Equals(s) => strs(s),
                ValueTest::Exists => vec!["1"],
                ValueTest::Matches(p) => pats(p),
            },
        }
    }

    /// ORs another filter of the same parameter into this one.
    fn merge(&mut self, other: Filter) {
        match (self, other) {
            (Filter::Repository(a), Filter::Repository(b))
            | (Filter::Tag(a), Filter::Tag(b))
            | (Filter::Os(a), Filter::Os(b))
            | (Filter::Architecture(a), Filter::Architecture(b)) => a.extend(b),
            (Filter::TagMatches(a), Filter::TagMatches(b)) => a.extend(b),
            (Filter::Label { test: a, .. }, Filter::Label { test: b, .. })
            | (Filter::Annotation { test: a, .. }, Filter::Annotation { test: b, .. }) => {
                match (a, b) {
                    (ValueTest::Equals(a), ValueTest::Equals(b)) => a.extend(b),
                    (ValueTest::Matches(a), ValueTest::Matches(b)) => a.extend(b),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// What a query sees of one image in one context (directly tagged, or inside a list).
#[derive(Debug, Clone, Copy)]
pub struct ImageContext<'a> {
    /// Repository name.
    pub repository: &'a str,
    /// The tags that apply: the image's own, or the containing list's.
    pub tags: &'a [String],
    /// The effective platform (see the module docs).
    pub platform: &'a Platform,
    /// Config labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Manifest annotations.
    pub annotations: &'a BTreeMap<String, String>,
}

/// A parsed, normalised index query. The empty query matches every tagged image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexQuery {
    /// One filter per distinct parameter, sorted by parameter name.
    filters: Vec<Filter>,
}

fn decode(raw: &str) -> Option<String> {
    let plus = raw.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

impl IndexQuery {
    /// The query with no filters.
    pub fn all() -> Self {
        IndexQuery::default()
    }

    /// Parses a raw query string (the part after `?`, still percent-encoded; `+` is a
    /// space). Empty pairs (`a=1&&b=2`) are ignored.
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        if raw.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong {
                length: raw.len(),
                limit: MAX_QUERY_LEN,
            });
        }
        let pairs: Vec<&str> = raw.split('&').filter(|p| !p.is_empty()).collect();
        if pairs.len() > MAX_PARAMETERS {
            return Err(QueryError::TooManyParameters {
                count: pairs.len(),
                limit: MAX_PARAMETERS,
            });
        }
        let mut query = IndexQuery::default();
        for pair in pairs {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(raw_key).ok_or_else(|| QueryError::InvalidEncoding {
                parameter: raw_key.chars().take(100).collect(),
            })?;
            let value = decode(raw_value).ok_or_else(|| QueryError::InvalidEncoding {
                parameter: key.chars().take(100).collect(),
            })?;
            query = query.and(&key, &value)?;
        }
        Ok(query)
    }

    /// Adds one decoded `parameter=value` pair (ANDed with other parameters, ORed with
    /// earlier values of the same parameter).
    pub fn and(mut self, parameter: &str, value: &str) -> Result<Self, QueryError> {
        let filter = Self::filter_for(parameter, value)?;
        let name = filter.parameter();
        match self.filters.binary_search_by(|f| f.parameter().cmp(&name)) {
            Ok(i) => self.filters[i].merge(filter),
            Err(i) => self.filters.insert(i, filter),
        }
        Ok(self)
    }

    fn filter_for(parameter: &str, value: &str) -> Result<Filter, QueryError> {
        let named = |p: &str| p.chars().take(200).collect::<String>();
        let non_empty = |v: &str| {
            if v.is_empty() {
                Err(QueryError::EmptyValue {
                    parameter: named(parameter),
                })
            } else {
                Ok(BTreeSet::from([v.to_owned()]))
            }
        };
        match parameter {
            "repository" => return Ok(Filter::Repository(non_empty(value)?)),
            "tag" => return Ok(Filter::Tag(non_empty(value)?)),
            "tag:matches" => {
                return Ok(Filter::TagMatches(BTreeSet::from([Pattern::new(value)])));
            }
            "os" => return Ok(Filter::Os(non_empty(value)?)),
            "architecture" => return Ok(Filter::Architecture(non_empty(value)?)),
            _ => {}
        }
        let (is_label, rest) = if let Some(rest) = parameter.strip_prefix("label:") {
            (true, rest)
        } else if let Some(rest) = parameter.strip_prefix("annotation:") {
            (false, rest)
        } else {
            return Err(QueryError::UnknownParameter {
                parameter: named(parameter),
            });
        };
        let (key, test) = if let Some(key) = rest.strip_suffix(":exists") {
            if value != "1" {
                return Err(QueryError::ExistsNotOne {
                    parameter: named(parameter),
                    value: value.chars().take(100).collect(),
                });
            }
            (key, ValueTest::Exists)
        } else if let Some(key) = rest.strip_suffix(":matches") {
            (
                key,
                ValueTest::Matches(BTreeSet::from([Pattern::new(value)])),
            )
        } else {
            (rest, ValueTest::Equals(BTreeSet::from([value.to_owned()])))
        };
        if key.is_empty() {
            return Err(QueryError::EmptyKey {
                parameter: named(parameter),
            });
        }
        let key = key.to_owned();
        Ok(if is_label {
            Filter::Label { key, test }
        } else {
            Filter::Annotation { key, test }
        })
    }

    /// The filters, one per parameter, sorted by parameter name.
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// The canonical query string: parameters sorted by name, values sorted and
    /// deduplicated, percent-encoded. Equal queries have equal canonical forms, so this
    /// is the cache key; parsing it gives back an equal query. (Percent-encoding can make
    /// it longer than the raw query it came from, so a query near [`MAX_QUERY_LEN`] may
    /// have a canonical form that [`parse`](Self::parse) rejects as too long.)
    pub fn canonical(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for filter in &self.filters {
            let name = filter.parameter();
            for value in filter.values() {
                out.append_pair(&name, value);
            }
        }
        out.finish()
    }

    /// The repositories named by `repository=`, if the query restricts them.
    pub fn repositories(&self) -> Option<&BTreeSet<String>> {
        self.filters.iter().find_map(|f| match f {
            Filter::Repository(s) => Some(s),
            _ => None,
        })
    }

    /// Whether the repository filter (if any) admits `repository`.
    pub fn admits_repository(&self, repository: &str) -> bool {
        self.repositories().is_none_or(|s| s.contains(repository))
    }

    /// Whether an image in the given context matches every filter.
    pub fn matches(&self, ctx: &ImageContext<'_>) -> bool {
        self.filters.iter().all(|f| match f {
            Filter::Repository(s) => s.contains(ctx.repository),
            Filter::Tag(s) => ctx.tags.iter().any(|t| s.contains(t)),
            Filter::TagMatches(p) => ctx.tags.iter().any(|t| p.iter().any(|p| p.matches(t))),
            Filter::Os(s) => s.contains(&ctx.platform.os),
            Filter::Architecture(s) => s.contains(&ctx.platform.architecture),
            Filter::Label { key, test } => test.passes(ctx.labels.get(key).map(String::as_str)),
            Filter::Annotation { key, test } => {
                test.passes(ctx.annotations.get(key).map(String::as_str))
            }
        })
    }

    /// Evaluates the query over one repository: `tags` maps each tag to its digest and
    /// `resolve` finds manifests by digest. Returns the repository's entry with only the
    /// matching images and lists (normalised), or `None` when nothing matches.
    ///
    /// This is the reference semantics. A store may narrow candidates first (in SQL), but
    /// must produce exactly what this function produces for the same data.
    pub fn evaluate_repository<'m>(
        &self,
        repository: &str,
        tags: &BTreeMap<String, Digest>,
        resolve: impl Fn(&Digest) -> Option<&'m Manifest>,
    ) -> Option<RepositoryEntry> {
        if !self.admits_repository(repository) {
            return None;
        }
        let mut by_digest: BTreeMap<&Digest, Vec<String>> = BTreeMap::new();
        for (tag, digest) in tags {
            by_digest.entry(digest).or_default().push(tag.clone());
        }
        let mut entry = RepositoryEntry {
            name: repository.to_owned(),
            images: Vec::new(),
            lists: Vec::new(),
        };
        for (digest, digest_tags) in by_digest {
            match resolve(digest) {
                Some(Manifest::Image(image)) => {
                    let ctx = image_context(repository, &digest_tags, &image.platform, image);
                    if self.matches(&ctx) {
                        entry
                            .images
                            .push(image_entry(image, &image.platform, Some(digest_tags)));
                    }
                }
                Some(Manifest::List(list)) => {
                    let mut children = Vec::new();
                    for child in &list.entries {
                        let Some(Manifest::Image(image)) = resolve(&child.digest) else {
                            continue;
                        };
                        let platform = effective_platform(child.platform.as_ref(), image);
                        let ctx = image_context(repository, &digest_tags, platform, image);
                        if self.matches(&ctx) {
                            children.push(image_entry(image, platform, None));
                        }
                    }
                    if !children.is_empty() {
                        entry.lists.push(ListEntryOut {
                            digest: list.digest.clone(),
                            media_type: list.media_type.clone(),
                            images: children,
                            tags: digest_tags,
                        });
                    }
                }
                None => {}
            }
        }
        entry.normalize();
        (!entry.is_empty()).then_some(entry)
    }
}

/// The platform an image has inside a list: the list's, unless it states none (or an
/// empty one), then the config's.
pub fn effective_platform<'a>(listed: Option<&'a Platform>, image: &'a Image) -> &'a Platform {
    match listed {
        Some(p) if !p.os.is_empty() && !p.architecture.is_empty() => p,
        _ => &image.platform,
    }
}

fn image_context<'a>(
    repository: &'a str,
    tags: &'a [String],
    platform: &'a Platform,
    image: &'a Image,
) -> ImageContext<'a> {
    ImageContext {
        repository,
        tags,
        platform,
        labels: &image.labels,
        annotations: &image.annotations,
    }
}

fn image_entry(image: &Image, platform: &Platform, tags: Option<Vec<String>>) -> ImageEntry {
    ImageEntry {
        digest: image.digest.clone(),
        media_type: image.media_type.clone(),
        os: platform.os.clone(),
        architecture: platform.architecture.clone(),
        annotations: image.annotations.clone(),
        labels: image.labels.clone(),
        tags,
    }
}

impl fmt::Display for IndexQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl std::str::FromStr for IndexQuery {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IndexQuery::parse(s)
    }
}
