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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use percent_encoding::percent_decode_str;

use crate::digest::Digest;
use crate::model::{Image, Manifest, Platform};
use crate::name::{RepositoryName, Tag};
use crate::response::{ImageEntry, ListEntryOut, RepositoryEntry};

/// Longest raw query string accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 8 * 1024;
/// Most `key=value` pairs accepted in one query.
pub const MAX_PARAMETERS: usize = 256;
/// Default of [`QueryLimits::max_pattern_bytes`]: 256 bytes is twice the longest OCI tag
/// (128 characters), ample for any prefix, suffix or infix glob over tags or label
/// values, and keeps the worst case of one comparison (pattern × value) small.
pub const DEFAULT_MAX_PATTERN_BYTES: usize = 256;
/// Default of [`QueryLimits::max_pattern_wildcards`]: real globs use one or two `*`;
/// 16 leaves room for unusual ones while bounding the number of segments searched.
pub const DEFAULT_MAX_PATTERN_WILDCARDS: usize = 16;
/// Default of [`QueryLimits::max_match_cost`]: 16 Mi units. Substring-style globs examine
/// each value byte about once, at memory speed, so this is 16 MiB of tags and values per
/// answer (SQL stores narrow globs in SQL first, so this counts only candidates); the
/// costliest patterns (segments mixing literals and `?`, re-checked at every occurrence
/// of their first literal) run at a few hundred million units a second, so an answer
/// that exhausts the budget has spent some tens of milliseconds of CPU.
pub const DEFAULT_MAX_MATCH_COST: u64 = 16 * 1024 * 1024;

/// Limits on what one query may ask for: the size of its globs (checked when parsing) and
/// the work its glob matching may do (checked while evaluating, see [`CostBudget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest glob (`tag:matches`, `label:K:matches`, `annotation:K:matches`), in bytes.
    pub max_pattern_bytes: usize,
    /// Most `*` in one glob.
    pub max_pattern_wildcards: usize,
    /// Most glob-matching work one evaluation of a query may do, in units of one value
    /// byte (or pattern character) examined, plus one per comparison.
    pub max_match_cost: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_pattern_bytes: DEFAULT_MAX_PATTERN_BYTES,
            max_pattern_wildcards: DEFAULT_MAX_PATTERN_WILDCARDS,
            max_match_cost: DEFAULT_MAX_MATCH_COST,
        }
    }
}

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
    /// A label or annotation equality test on a key ending in `:exists` or `:matches`:
    /// written as a query string it would read as that operator, so only the typed
    /// constructors of [`Filter`] can be asked for it, and they refuse it.
    #[error("parameter {parameter:?} names a key ending in an operator (`:exists`, `:matches`)")]
    OperatorKey {
        /// The parameter name as it would be written.
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
    /// Malformed percent-encoding (a `%` not followed by two hex digits), or
    /// percent-encoding that does not decode to UTF-8.
    #[error("parameter {parameter:?} is not valid percent-encoded UTF-8")]
    InvalidEncoding {
        /// The parameter name: decoded when only the value is malformed, else raw.
        parameter: String,
    },
    /// A glob longer than [`QueryLimits::max_pattern_bytes`].
    #[error("parameter {parameter:?} has a pattern of {length} bytes; the limit is {limit}")]
    PatternTooLong {
        /// The parameter name as decoded.
        parameter: String,
        /// Length of the pattern in bytes.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// A glob with more `*` than [`QueryLimits::max_pattern_wildcards`].
    #[error("parameter {parameter:?} has a pattern with {count} `*`; the limit is {limit}")]
    TooManyWildcards {
        /// The parameter name as decoded.
        parameter: String,
        /// Number of `*` in the pattern.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Evaluating the query's globs needed more work than [`QueryLimits::max_match_cost`].
    #[error(
        "parameter {parameter:?} needs more pattern-matching work than the limit of {limit}; \
         use a more specific pattern"
    )]
    TooExpensive {
        /// The parameter whose matching exhausted the budget.
        parameter: String,
        /// The limit.
        limit: u64,
    },
}

/// Decodes one component of an `application/x-www-form-urlencoded` string strictly: `+`
/// is a space, `%` must be followed by two hex digits, and the result must be UTF-8.
/// `None` when it is malformed.
///
/// The `percent-encoding` and `form_urlencoded` crates decode leniently (a stray `%` is
/// kept as a literal), so the `%` sequences are checked here before they decode.
pub fn decode_component(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + offset;
        let hex = bytes.get(at + 1..at + 3)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        i = at + 3;
    }
    let plus = raw.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Splits a raw query string (the part after `?`) into decoded `(name, value)` pairs,
/// strictly (see [`decode_component`]). Empty pairs (`a=1&&b=2`) are skipped; a pair
/// without `=` has an empty value. Every query-string reader of the server uses this, so
/// malformed encoding is refused the same way everywhere.
pub fn decode_pairs(raw: &str) -> Result<Vec<(String, String)>, QueryError> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode_component(raw_key).ok_or_else(|| QueryError::InvalidEncoding {
                parameter: raw_key.chars().take(100).collect(),
            })?;
            let value = decode_component(raw_value).ok_or_else(|| QueryError::InvalidEncoding {
                parameter: key.chars().take(100).collect(),
            })?;
            Ok((key, value))
        })
        .collect()
}

/// The glob-matching work one query evaluation may still do, shared by every clone of
/// the query it is attached to (see [`IndexQuery::metered`]). Once spent, every further
/// glob test fails without looking at its value, so an evaluation that exhausted it
/// finishes quickly with an incomplete answer, which [`check`](Self::check) turns into
/// [`QueryError::TooExpensive`].
#[derive(Debug, Clone)]
pub struct CostBudget {
    state: Arc<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    limit: u64,
    spent: AtomicU64,
    exhausted_by: OnceLock<String>,
}

impl CostBudget {
    /// A budget of `limit` units.
    pub fn new(limit: u64) -> Self {
        CostBudget {
            state: Arc::new(BudgetState {
                limit,
                spent: AtomicU64::new(0),
                exhausted_by: OnceLock::new(),
            }),
        }
    }

    /// Units spent so far (may exceed the limit by the last comparison's work).
    pub fn spent(&self) -> u64 {
        self.state.spent.load(Ordering::Relaxed)
    }

    /// Whether the budget ran out.
    pub fn is_exhausted(&self) -> bool {
        self.state.exhausted_by.get().is_some()
    }

    /// `Err(TooExpensive)` naming the parameter whose matching exhausted the budget.
    /// Call it after the evaluation: an exhausted evaluation's answer is incomplete.
    pub fn check(&self) -> Result<(), QueryError> {
        match self.state.exhausted_by.get() {
            None => Ok(()),
            Some(parameter) => Err(QueryError::TooExpensive {
                parameter: parameter.clone(),
                limit: self.state.limit,
            }),
        }
    }

    fn remaining(&self) -> u64 {
        self.state.limit.saturating_sub(self.spent())
    }

    fn spend(&self, units: u64) {
        self.state.spent.fetch_add(units, Ordering::Relaxed);
    }

    fn exhaust(&self, parameter: String) {
        let _ = self.state.exhausted_by.set(parameter);
    }
}

/// The work a glob comparison may still do; `Err(Exhausted)` once it is spent.
struct Meter {
    spent: u64,
    limit: u64,
}

/// A comparison ran out of budget.
struct Exhausted;

impl Meter {
    fn new(limit: u64) -> Self {
        Meter { spent: 0, limit }
    }

    fn charge(&mut self, units: usize) -> Result<(), Exhausted> {
        self.spent = self.spent.saturating_add(units as u64);
        if self.spent > self.limit {
            Err(Exhausted)
        } else {
            Ok(())
        }
    }
}

/// A glob over a whole string: `*` matches any run of characters, `?` one character;
/// every other character matches itself. Anchored at both ends.
///
/// Matching splits the pattern at `*` into segments of fixed length (literal runs and
/// `?`): the first is anchored at the start, the last at the end, and each one between is
/// placed at its leftmost occurrence after the previous one (which is exact, because a
/// segment of fixed length placed leftmost leaves the most room for the rest). Literal
/// runs are found with the standard library's linear-time substring search, so the common
/// globs cost one pass over the value. Only segments mixing literals and `?` can need more
/// (a re-check at each occurrence of their first literal), and that work is counted
/// against the query's [`CostBudget`].
///
/// Hand-written because glob crates either backtrack (`wildmatch` takes seconds on
/// `*aaa…ab` against a long value: pattern length × value length) or cannot report the
/// work they do, which the budget needs.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    /// The segments between `*`; one segment when the pattern has no `*`.
    segments: Vec<Segment>,
}

/// A run of the pattern without `*`.
#[derive(Clone, Debug)]
struct Segment {
    pieces: Vec<Piece>,
    /// Length in characters (every piece has a fixed length).
    chars: usize,
}

#[derive(Clone, Debug)]
enum Piece {
    /// Characters that match themselves.
    Literal(String),
    /// This many `?`, each matching one character.
    Any(usize),
}

impl Segment {
    fn new(source: &str) -> Self {
        let mut pieces = Vec::new();
        let mut chars = 0;
        for c in source.chars() {
            chars += 1;
            match (c, pieces.last_mut()) {
                ('?', Some(Piece::Any(n))) => *n += 1,
                ('?', _) => pieces.push(Piece::Any(1)),
                (c, Some(Piece::Literal(s))) => s.push(c),
                (c, _) => pieces.push(Piece::Literal(c.to_string())),
            }
        }
        Segment { pieces, chars }
    }

    /// The end of this segment placed at byte `at` of `value`, if it fits before `end`.
    fn match_at(
        pieces: &[Piece],
        value: &str,
        mut at: usize,
        end: usize,
        meter: &mut Meter,
    ) -> Result<Option<usize>, Exhausted> {
        for piece in pieces {
            match piece {
                Piece::Literal(literal) => {
                    meter.charge(literal.len())?;
                    if !value[at..end].starts_with(literal.as_str()) {
                        return Ok(None);
                    }
                    at += literal.len();
                }
                Piece::Any(n) => {
                    meter.charge(*n)?;
                    match skip_chars(&value[at..end], *n) {
                        Some(len) => at += len,
                        None => return Ok(None),
                    }
                }
            }
        }
        Ok(Some(at))
    }

    /// The end of the leftmost placement of this segment in `value[from..end]`.
    fn find(
        &self,
        value: &str,
        from: usize,
        end: usize,
        meter: &mut Meter,
    ) -> Result<Option<usize>, Exhausted> {
        let mut pieces = self.pieces.as_slice();
        let mut from = from;
        // Leading `?` only shift where the rest may start.
        if let [Piece::Any(n), rest @ ..] = pieces {
            meter.charge(*n)?;
            match skip_chars(&value[from..end], *n) {
                Some(len) => from += len,
                None => return Ok(None),
            }
            pieces = rest;
        }
        let Some((Piece::Literal(first), rest)) = pieces.split_first() else {
            return Ok(Some(from));
        };
        loop {
            let window = &value[from..end];
            let Some(offset) = window.find(first.as_str()) else {
                meter.charge(window.len())?;
                return Ok(None);
            };
            meter.charge(offset + first.len())?;
            let at = from + offset;
            if let Some(done) = Self::match_at(rest, value, at + first.len(), end, meter)? {
                return Ok(Some(done));
            }
            // A literal is valid UTF-8, so it only occurs at character boundaries; the
            // next candidate starts after this occurrence's first character.
            from = at + first.chars().next().map_or(1, char::len_utf8);
        }
    }
}

/// Byte length of the first `n` characters of `s`, if it has that many.
fn skip_chars(s: &str, n: usize) -> Option<usize> {
    // Each character's length is read off its leading byte (`s` is valid UTF-8 and the
    // walk stays on character boundaries): a hot loop of the matcher, several times
    // faster than decoding each character with `char_indices`.
    let bytes = s.as_bytes();
    let mut at = 0;
    for _ in 0..n {
        let lead = *bytes.get(at)?;
        at += match lead {
            0x00..=0x7F => 1,
            0x80..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
    }
    Some(at)
}

impl Pattern {
    /// Compiles a pattern. Every string is a valid pattern.
    pub fn new(source: &str) -> Self {
        Pattern {
            source: source.to_owned(),
            segments: source.split('*').map(Segment::new).collect(),
        }
    }

    /// Whether `value` matches the whole pattern.
    pub fn matches(&self, value: &str) -> bool {
        self.matches_within(value, &mut Meter::new(u64::MAX))
            .unwrap_or(false)
    }

    /// [`matches`](Self::matches), charging the work to `meter`.
    fn matches_within(&self, value: &str, meter: &mut Meter) -> Result<bool, Exhausted> {
        meter.charge(1)?;
        let (first, rest) = match self.segments.split_first() {
            Some(split) => split,
            None => return Ok(value.is_empty()),
        };
        let Some((last, middle)) = rest.split_last() else {
            // No `*`: the one segment is the whole value.
            return Ok(
                Segment::match_at(&first.pieces, value, 0, value.len(), meter)?
                    == Some(value.len()),
            );
        };
        let Some(mut at) = Segment::match_at(&first.pieces, value, 0, value.len(), meter)? else {
            return Ok(false);
        };
        // The last segment ends the value: it starts `last.chars` characters from the end.
        meter.charge(last.chars)?;
        let tail = match last.chars {
            0 => value.len(),
            n => match value.char_indices().nth_back(n - 1) {
                Some((i, _)) => i,
                None => return Ok(false),
            },
        };
        if tail < at || Segment::match_at(&last.pieces, value, tail, value.len(), meter)?.is_none()
        {
            return Ok(false);
        }
        for segment in middle {
            match segment.find(value, at, tail, meter)? {
                Some(end) => at = end,
                None => return Ok(false),
            }
        }
        Ok(true)
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

    /// Number of `*` in the pattern.
    pub fn wildcards(&self) -> usize {
        self.segments.len() - 1
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

/// Typed constructors: the way code (rather than a query string) builds filters.
///
/// Validity rule: a filter made here is one the protocol can write, so a query built from
/// them has a [`canonical`](IndexQuery::canonical) form that parses back to an equal
/// query. Repository names and tags are validated by their types, and every string is a
/// [`Pattern`], so those constructors cannot fail. The ones taking a plain string check
/// what [`IndexQuery::parse`] checks and fail with the error it gives for the same
/// parameter: an empty `os` or `architecture` is [`QueryError::EmptyValue`], an empty
/// label or annotation key is [`QueryError::EmptyKey`]. One more key is refused, for an
/// equality test only: a key ending in `:exists` or `:matches` would be written as that
/// operator ([`QueryError::OperatorKey`]); such a label can still be tested with
/// [`label_exists`](Self::label_exists) or [`label_matches`](Self::label_matches).
///
/// A [`Pattern`] given here is trusted: the size limits of [`QueryLimits`] guard the
/// parsing of untrusted input and are not applied (the budget of
/// [`IndexQuery::metered`] still bounds the work of matching).
impl Filter {
    /// `repository=R`.
    pub fn repository(name: &RepositoryName) -> Filter {
        Filter::Repository(BTreeSet::from([name.as_str().to_owned()]))
    }

    /// `tag=T`.
    pub fn tag(tag: &Tag) -> Filter {
        Filter::Tag(BTreeSet::from([tag.as_str().to_owned()]))
    }

    /// `tag:matches=GLOB`.
    pub fn tag_matches(pattern: Pattern) -> Filter {
        Filter::TagMatches(BTreeSet::from([pattern]))
    }

    /// `os=O`; [`QueryError::EmptyValue`] when `os` is empty.
    pub fn os(os: impl Into<String>) -> Result<Filter, QueryError> {
        Ok(Filter::Os(non_empty("os", os.into())?))
    }

    /// `architecture=A`; [`QueryError::EmptyValue`] when `architecture` is empty.
    pub fn architecture(architecture: impl Into<String>) -> Result<Filter, QueryError> {
        Ok(Filter::Architecture(non_empty(
            "architecture",
            architecture.into(),
        )?))
    }

    /// `label:K=V`: the config label `key` equals `value` (which may be empty).
    pub fn label(key: impl Into<String>, value: impl Into<String>) -> Result<Filter, QueryError> {
        Keyed::Label.filter(key.into(), ValueTest::equals(value.into()))
    }

    /// `label:K:exists=1`: the config label `key` is present.
    pub fn label_exists(key: impl Into<String>) -> Result<Filter, QueryError> {
        Keyed::Label.filter(key.into(), ValueTest::Exists)
    }

    /// `label:K:matches=GLOB`: the config label `key` matches `pattern`.
    pub fn label_matches(key: impl Into<String>, pattern: Pattern) -> Result<Filter, QueryError> {
        Keyed::Label.filter(key.into(), ValueTest::matches(pattern))
    }

    /// `annotation:K=V`: the manifest annotation `key` equals `value` (which may be
    /// empty).
    pub fn annotation(
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Filter, QueryError> {
        Keyed::Annotation.filter(key.into(), ValueTest::equals(value.into()))
    }

    /// `annotation:K:exists=1`: the manifest annotation `key` is present.
    pub fn annotation_exists(key: impl Into<String>) -> Result<Filter, QueryError> {
        Keyed::Annotation.filter(key.into(), ValueTest::Exists)
    }

    /// `annotation:K:matches=GLOB`: the manifest annotation `key` matches `pattern`.
    pub fn annotation_matches(
        key: impl Into<String>,
        pattern: Pattern,
    ) -> Result<Filter, QueryError> {
        Keyed::Annotation.filter(key.into(), ValueTest::matches(pattern))
    }
}

impl ValueTest {
    fn equals(value: String) -> Self {
        ValueTest::Equals(BTreeSet::from([value]))
    }

    fn matches(pattern: Pattern) -> Self {
        ValueTest::Matches(BTreeSet::from([pattern]))
    }
}

/// The two kinds of keyed filter: config labels and manifest annotations.
#[derive(Clone, Copy)]
enum Keyed {
    Label,
    Annotation,
}

impl Keyed {
    /// The filter testing `key` with `test`, if it can be written (see the typed
    /// constructors of [`Filter`]).
    fn filter(self, key: String, test: ValueTest) -> Result<Filter, QueryError> {
        let prefix = match self {
            Keyed::Label => "label",
            Keyed::Annotation => "annotation",
        };
        let key = checked_key(prefix, key, &test)?;
        Ok(match self {
            Keyed::Label => Filter::Label { key, test },
            Keyed::Annotation => Filter::Annotation { key, test },
        })
    }
}

/// A parameter name as errors show it (truncated).
fn shown_parameter(parameter: &str) -> String {
    parameter.chars().take(200).collect()
}

/// `value` as a one-value set, unless it is empty.
fn non_empty(parameter: &str, value: String) -> Result<BTreeSet<String>, QueryError> {
    if value.is_empty() {
        return Err(QueryError::EmptyValue {
            parameter: shown_parameter(parameter),
        });
    }
    Ok(BTreeSet::from([value]))
}

/// `key` if a `prefix:` filter with `test` on it can be written (see the typed
/// constructors of [`Filter`]).
fn checked_key(prefix: &str, key: String, test: &ValueTest) -> Result<String, QueryError> {
    let written = || {
        let op = match test {
            ValueTest::Equals(_) => "",
            ValueTest::Exists => ":exists",
            ValueTest::Matches(_) => ":matches",
        };
        shown_parameter(&format!("{prefix}:{key}{op}"))
    };
    if key.is_empty() {
        return Err(QueryError::EmptyKey {
            parameter: written(),
        });
    }
    if matches!(test, ValueTest::Equals(_))
        && (key.ends_with(":exists") || key.ends_with(":matches"))
    {
        return Err(QueryError::OperatorKey {
            parameter: written(),
        });
    }
    Ok(key)
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
///
/// Built from a query string with [`parse`](Self::parse), or by code from typed filters:
///
/// ```
/// use flagstate_core::{Filter, IndexQuery, Pattern, Tag};
///
/// let tag = Tag::parse("latest").unwrap();
/// let query = IndexQuery::new()
///     .with(Filter::tag(&tag))
///     .with(Filter::label_matches("org.opencontainers.image.title", Pattern::new("Fire*")).unwrap());
/// assert_eq!(
///     query,
///     IndexQuery::parse("tag=latest&label:org.opencontainers.image.title:matches=Fire*").unwrap()
/// );
/// ```
///
/// Invariant: the [`canonical`](Self::canonical) form of every query parses back to an
/// equal query (with the caveats given there). The typed constructors of [`Filter`] keep
/// it; the variants of [`Filter`] are public so that stores can read them, and a filter
/// assembled from them by hand (an empty set of values, an empty key) is not checked.
///
/// Equality compares the filters only; an attached [`CostBudget`] is not part of what the
/// query asks.
#[derive(Debug, Clone, Default)]
pub struct IndexQuery {
    /// One filter per distinct parameter, sorted by parameter name.
    filters: Vec<Filter>,
    /// The glob-matching budget of evaluations, when metered.
    budget: Option<CostBudget>,
}

impl PartialEq for IndexQuery {
    fn eq(&self, other: &Self) -> bool {
        self.filters == other.filters
    }
}
impl Eq for IndexQuery {}

impl IndexQuery {
    /// The query with no filters; the start of a query built with [`with`](Self::with).
    pub const fn new() -> Self {
        IndexQuery {
            filters: Vec::new(),
            budget: None,
        }
    }

    /// The query with no filters (the same as [`new`](Self::new)).
    pub fn all() -> Self {
        IndexQuery::new()
    }

    /// This query and `filter`: ANDed with the filters of other parameters, ORed with an
    /// earlier filter of the same parameter (`tag=a` with `tag=b` asks for either tag).
    /// This is what a query string with both pairs means; parsing builds queries this way.
    pub fn with(mut self, filter: Filter) -> Self {
        let name = filter.parameter();
        match self.filters.binary_search_by(|f| f.parameter().cmp(&name)) {
            Ok(i) => self.filters[i].merge(filter),
            Err(i) => self.filters.insert(i, filter),
        }
        self
    }

    /// Parses a raw query string with the default [`QueryLimits`].
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        Self::parse_with(raw, &QueryLimits::default())
    }

    /// Parses a raw query string (the part after `?`, still percent-encoded; `+` is a
    /// space). Empty pairs (`a=1&&b=2`) are ignored. Malformed percent-encoding anywhere
    /// is an error, and so is a glob over the size limits of `limits`.
    pub fn parse_with(raw: &str, limits: &QueryLimits) -> Result<Self, QueryError> {
        if raw.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong {
                length: raw.len(),
                limit: MAX_QUERY_LEN,
            });
        }
        let count = raw.split('&').filter(|p| !p.is_empty()).count();
        if count > MAX_PARAMETERS {
            return Err(QueryError::TooManyParameters {
                count,
                limit: MAX_PARAMETERS,
            });
        }
        let mut query = IndexQuery::new();
        for (key, value) in decode_pairs(raw)? {
            query = query.and_with(&key, &value, limits)?;
        }
        Ok(query)
    }

    /// Attaches a fresh budget of `limit` units of glob-matching work to this query and
    /// returns it: evaluations of the query (and of its clones) spend it, and once it is
    /// spent every further glob test fails, so check the budget after evaluating.
    pub fn metered(mut self, limit: u64) -> (Self, CostBudget) {
        let budget = CostBudget::new(limit);
        self.budget = Some(budget.clone());
        (self, budget)
    }

    /// The budget attached by [`metered`](Self::metered), if any.
    pub fn budget(&self) -> Option<&CostBudget> {
        self.budget.as_ref()
    }

    /// Adds one decoded `parameter=value` pair (see [`with`](Self::with)); a glob must
    /// be within `limits`.
    fn and_with(
        self,
        parameter: &str,
        value: &str,
        limits: &QueryLimits,
    ) -> Result<Self, QueryError> {
        Ok(self.with(Self::filter_for(parameter, value, limits)?))
    }

    /// The filter of one decoded pair, checked as untrusted input: the typed
    /// constructors of [`Filter`], plus the glob size limits of `limits`.
    fn filter_for(
        parameter: &str,
        value: &str,
        limits: &QueryLimits,
    ) -> Result<Filter, QueryError> {
        let named = shown_parameter;
        let pattern = |v: &str| {
            if v.len() > limits.max_pattern_bytes {
                return Err(QueryError::PatternTooLong {
                    parameter: named(parameter),
                    length: v.len(),
                    limit: limits.max_pattern_bytes,
                });
            }
            let pattern = Pattern::new(v);
            if pattern.wildcards() > limits.max_pattern_wildcards {
                return Err(QueryError::TooManyWildcards {
                    parameter: named(parameter),
                    count: pattern.wildcards(),
                    limit: limits.max_pattern_wildcards,
                });
            }
            Ok(pattern)
        };
        // A query string may name any repository or tag, valid or not (an invalid one
        // matches nothing), so these two are not built from the validated types.
        match parameter {
            "repository" => return Ok(Filter::Repository(non_empty(parameter, value.into())?)),
            "tag" => return Ok(Filter::Tag(non_empty(parameter, value.into())?)),
            "tag:matches" => return Ok(Filter::tag_matches(pattern(value)?)),
            "os" => return Filter::os(value),
            "architecture" => return Filter::architecture(value),
            _ => {}
        }
        let (keyed, rest) = if let Some(rest) = parameter.strip_prefix("label:") {
            (Keyed::Label, rest)
        } else if let Some(rest) = parameter.strip_prefix("annotation:") {
            (Keyed::Annotation, rest)
        } else {
            return Err(QueryError::UnknownParameter {
                parameter: named(parameter),
            });
        };
        // `Keyed::filter` (what the typed constructors call) names the parameter as it
        // is written here, so its errors are the parser's; a key it could refuse as
        // ending in an operator cannot reach it, because the operator was split off.
        if let Some(key) = rest.strip_suffix(":exists") {
            if value != "1" {
                return Err(QueryError::ExistsNotOne {
                    parameter: named(parameter),
                    value: value.chars().take(100).collect(),
                });
            }
            keyed.filter(key.to_owned(), ValueTest::Exists)
        } else if let Some(key) = rest.strip_suffix(":matches") {
            keyed.filter(key.to_owned(), ValueTest::matches(pattern(value)?))
        } else {
            keyed.filter(rest.to_owned(), ValueTest::equals(value.to_owned()))
        }
    }

    /// The filters, one per parameter, sorted by parameter name.
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// The canonical query string: parameters sorted by name, values sorted and
    /// deduplicated, percent-encoded. Equal queries have equal canonical forms, so this
    /// is the cache key; parsing it gives back an equal query. Caveat: parsing bounds
    /// untrusted input, and the canonical form can exceed those bounds. Percent-encoding
    /// can make it longer than the raw query it came from, so a query near
    /// [`MAX_QUERY_LEN`] may have a canonical form that [`parse`](Self::parse) rejects
    /// as too long; a query built by code may be longer still, have more than
    /// [`MAX_PARAMETERS`] values, or hold (trusted) globs beyond the [`QueryLimits`] it
    /// is parsed with.
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

    /// Whether an image in the given context matches every filter. Glob tests spend the
    /// attached budget, if any, and fail once it is spent.
    pub fn matches(&self, ctx: &ImageContext<'_>) -> bool {
        self.filters.iter().all(|f| match f {
            Filter::Repository(s) => s.contains(ctx.repository),
            Filter::Tag(s) => ctx.tags.iter().any(|t| s.contains(t)),
            Filter::TagMatches(p) => ctx.tags.iter().any(|t| self.glob(f, p, t)),
            Filter::Os(s) => s.contains(&ctx.platform.os),
            Filter::Architecture(s) => s.contains(&ctx.platform.architecture),
            Filter::Label { key, test } => self.passes(f, test, ctx.labels.get(key)),
            Filter::Annotation { key, test } => self.passes(f, test, ctx.annotations.get(key)),
        })
    }

    /// [`ValueTest::passes`], with globs metered.
    fn passes(&self, filter: &Filter, test: &ValueTest, value: Option<&String>) -> bool {
        match (test, value) {
            (ValueTest::Matches(patterns), Some(value)) => self.glob(filter, patterns, value),
            (test, value) => test.passes(value.map(String::as_str)),
        }
    }

    /// Whether `value` matches one of `patterns` (of `filter`), spending the budget.
    fn glob(&self, filter: &Filter, patterns: &BTreeSet<Pattern>, value: &str) -> bool {
        let Some(budget) = &self.budget else {
            return patterns.iter().any(|p| p.matches(value));
        };
        if budget.is_exhausted() {
            return false;
        }
        let mut meter = Meter::new(budget.remaining());
        let mut result = Ok(false);
        for pattern in patterns {
            match pattern.matches_within(value, &mut meter) {
                Ok(false) => {}
                done => {
                    result = done;
                    break;
                }
            }
        }
        budget.spend(meter.spent);
        match result {
            Ok(matched) => matched,
            Err(Exhausted) => {
                budget.exhaust(filter.parameter());
                false
            }
        }
    }

    /// Evaluates the query over one repository: `tags` maps each tag to its digest and
    /// `resolve` finds manifests by digest. Returns the repository's entry with only the
    /// matching images and lists (normalised), or `None` when nothing matches.
    ///
    /// This is the reference semantics. A store may narrow candidates first (in SQL), but
    /// must produce exactly what this function produces for the same data. When the
    /// query is [`metered`](Self::metered) and its budget runs out, the answer is
    /// incomplete: check the budget afterwards.
    pub fn evaluate_repository<'m>(
        &self,
        repository: &RepositoryName,
        tags: &BTreeMap<Tag, Digest>,
        resolve: impl Fn(&Digest) -> Option<&'m Manifest>,
    ) -> Option<RepositoryEntry> {
        if !self.admits_repository(repository)
            || self.budget.as_ref().is_some_and(CostBudget::is_exhausted)
        {
            return None;
        }
        let mut by_digest: BTreeMap<&Digest, Vec<String>> = BTreeMap::new();
        for (tag, digest) in tags {
            by_digest.entry(digest).or_default().push(tag.to_string());
        }
        let mut entry = RepositoryEntry {
            name: repository.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(t: &str) -> Tag {
        Tag::parse(t).unwrap()
    }

    fn repository(r: &str) -> RepositoryName {
        RepositoryName::parse(r).unwrap()
    }

    #[test]
    fn new_is_the_empty_query() {
        assert_eq!(IndexQuery::new(), IndexQuery::all());
        assert_eq!(IndexQuery::new(), IndexQuery::parse("").unwrap());
        assert_eq!(IndexQuery::new().canonical(), "");
    }

    #[test]
    fn typed_queries_equal_parsed_ones() {
        let built = IndexQuery::new()
            .with(Filter::tag(&tag("latest")))
            .with(Filter::label("org.example.kind", "app").unwrap());
        assert_eq!(
            built,
            IndexQuery::parse("tag=latest&label:org.example.kind=app").unwrap()
        );
        let built = IndexQuery::new()
            .with(Filter::repository(&repository("fedora/app")))
            .with(Filter::tag_matches(Pattern::new("1.*")))
            .with(Filter::os("linux").unwrap())
            .with(Filter::architecture("arm64").unwrap())
            .with(Filter::label_exists("a:b").unwrap())
            .with(Filter::label_matches("t", Pattern::new("F?re*")).unwrap())
            .with(Filter::annotation("k", "").unwrap())
            .with(Filter::annotation_exists("k").unwrap())
            .with(Filter::annotation_matches("k", Pattern::new("*")).unwrap());
        let parsed = IndexQuery::parse(
            "architecture=arm64&os=linux&repository=fedora/app&tag:matches=1.*\
             &label:a:b:exists=1&label:t:matches=F%3Fre*\
             &annotation:k=&annotation:k:exists=1&annotation:k:matches=*",
        )
        .unwrap();
        assert_eq!(built, parsed);
        assert_eq!(built.canonical(), parsed.canonical());
        // The order filters are added in does not matter.
        let reversed = IndexQuery::new()
            .with(Filter::label("org.example.kind", "app").unwrap())
            .with(Filter::tag(&tag("latest")));
        assert_eq!(
            reversed,
            IndexQuery::new()
                .with(Filter::tag(&tag("latest")))
                .with(Filter::label("org.example.kind", "app").unwrap())
        );
    }

    #[test]
    fn the_same_parameter_is_ored() {
        let built = IndexQuery::new()
            .with(Filter::tag(&tag("a")))
            .with(Filter::os("linux").unwrap())
            .with(Filter::tag(&tag("b")))
            .with(Filter::label("k", "1").unwrap())
            .with(Filter::label("k", "2").unwrap())
            .with(Filter::label_exists("k").unwrap())
            .with(Filter::tag(&tag("a")));
        assert_eq!(
            built,
            IndexQuery::parse("tag=b&label:k=2&os=linux&tag=a&label:k=1&label:k:exists=1").unwrap()
        );
        assert_eq!(built.filters().len(), 4);
        assert_eq!(
            built.filters().iter().find(|f| matches!(f, Filter::Tag(_))),
            Some(&Filter::Tag(BTreeSet::from(["a".into(), "b".into()])))
        );
        // `label:k` and `label:k:exists` are different parameters, ANDed.
        assert!(
            built
                .filters()
                .iter()
                .any(|f| f.parameter() == "label:k:exists")
        );
    }

    #[test]
    fn typed_canonical_parses_back_equal() {
        let built = IndexQuery::new()
            .with(Filter::repository(&repository("a/b")))
            .with(Filter::label("k:with:colons", "a&b=c+d %e é").unwrap())
            .with(Filter::label_exists("x:exists").unwrap())
            .with(Filter::label_matches("y:matches", Pattern::new("*&*")).unwrap())
            .with(Filter::annotation("exists", "1").unwrap())
            .with(Filter::os("linux").unwrap())
            .with(Filter::os("freebsd").unwrap());
        let canonical = built.canonical();
        let parsed = IndexQuery::parse(&canonical).unwrap();
        assert_eq!(parsed, built, "{canonical}");
        assert_eq!(parsed.canonical(), canonical);
    }

    #[test]
    fn typed_constructors_refuse_what_cannot_be_written() {
        assert_eq!(
            Filter::os(""),
            Err(QueryError::EmptyValue {
                parameter: "os".into()
            })
        );
        assert_eq!(
            Filter::architecture(String::new()),
            Err(QueryError::EmptyValue {
                parameter: "architecture".into()
            })
        );
        // The errors are the parser's for the same parameter.
        for (built, raw) in [
            (Filter::label("", "v"), "label:=v"),
            (Filter::label_exists(""), "label::exists=1"),
            (
                Filter::label_matches("", Pattern::new("x")),
                "label::matches=x",
            ),
            (Filter::annotation("", "v"), "annotation:=v"),
            (Filter::annotation_exists(""), "annotation::exists=1"),
            (
                Filter::annotation_matches("", Pattern::new("x")),
                "annotation::matches=x",
            ),
            (Filter::os(""), "os="),
            (Filter::architecture(""), "architecture="),
        ] {
            assert_eq!(built.err(), IndexQuery::parse(raw).err(), "{raw}");
        }
        // An equality test on a key ending in an operator would be written as it.
        for key in ["a:exists", "a:matches", ":exists"] {
            assert_eq!(
                Filter::label(key, "v"),
                Err(QueryError::OperatorKey {
                    parameter: format!("label:{key}")
                })
            );
            assert!(matches!(
                Filter::annotation(key, "v"),
                Err(QueryError::OperatorKey { .. })
            ));
        }
        // Other tests on such keys can be written.
        assert!(Filter::label_exists("a:matches").is_ok());
        assert!(Filter::label_matches("a:exists", Pattern::new("*")).is_ok());
        assert!(Filter::label("exists", "1").is_ok());
    }

    #[test]
    fn typed_patterns_are_trusted() {
        let long = "a".repeat(DEFAULT_MAX_PATTERN_BYTES + 1);
        let built = IndexQuery::new().with(Filter::tag_matches(Pattern::new(&long)));
        assert!(matches!(
            IndexQuery::parse(&built.canonical()),
            Err(QueryError::PatternTooLong { .. })
        ));
        let limits = QueryLimits {
            max_pattern_bytes: usize::MAX,
            ..QueryLimits::default()
        };
        assert_eq!(
            IndexQuery::parse_with(&built.canonical(), &limits).unwrap(),
            built
        );
    }
}
