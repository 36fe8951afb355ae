//! Reading the index: repositories, tags, manifests, and index queries (SQL narrows the
//! candidates, [`IndexQuery::evaluate_repository`] builds the answer).

use std::collections::{BTreeMap, BTreeSet};

use flagstate_core::model::{Image, ImageList, ListEntry, Manifest, Platform};
use flagstate_core::response::RepositoryEntry;
use flagstate_core::{Digest, EntrySender, IndexQuery, RepositoryName, StoreError, Tag};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use crate::error::{PgError, SqlContext};
use crate::narrow;

/// Tag → digest map of one repository.
pub(crate) type Tags = BTreeMap<Tag, Digest>;

/// digest, media_type, is_list, os, architecture, variant, labels, annotations, created,
/// config_digest.
type ManifestRow = (
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Json<BTreeMap<String, String>>,
    Json<BTreeMap<String, String>>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// list, child, os, architecture, variant (the platform the list states).
type EntryRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub(crate) fn parse_digest(value: &str) -> Result<Digest, StoreError> {
    Digest::parse(value).map_err(|e| PgError::Corrupt(e.to_string()).into())
}

/// A stored repository name; it was valid when written, so a failure is corruption.
pub(crate) fn parse_name(value: String) -> Result<RepositoryName, StoreError> {
    RepositoryName::parse(value).map_err(|e| PgError::Corrupt(format!("stored {e}")).into())
}

/// A stored tag; it was valid when written, so a failure is corruption.
pub(crate) fn parse_tag(value: String) -> Result<Tag, StoreError> {
    Tag::parse(value).map_err(|e| PgError::Corrupt(format!("stored {e}")).into())
}

/// Every repository name, bytewise.
pub(crate) async fn repositories(pool: &PgPool) -> Result<Vec<RepositoryName>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM repositories ORDER BY name")
        .fetch_all(pool)
        .await
        .during("listing repositories")?;
    rows.into_iter().map(|(name,)| parse_name(name)).collect()
}

/// The tags of one repository, `None` when it is unknown.
pub(crate) async fn repository_tags(
    pool: &PgPool,
    name: &RepositoryName,
) -> Result<Option<Tags>, StoreError> {
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT t.name, t.digest FROM repositories r \
         LEFT JOIN tags t ON t.repository_id = r.id WHERE r.name = $1",
    )
    .bind(name.as_str())
    .fetch_all(pool)
    .await
    .during("reading the tags of a repository")?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut tags = Tags::new();
    for (tag, digest) in rows {
        if let (Some(tag), Some(digest)) = (tag, digest) {
            tags.insert(parse_tag(tag)?, parse_digest(&digest)?);
        }
    }
    Ok(Some(tags))
}

/// Which of `digests` are stored. A stored list is always complete: its entries reference
/// stored manifests through a foreign key.
pub(crate) async fn known_manifests(
    pool: &PgPool,
    digests: &[Digest],
) -> Result<BTreeSet<Digest>, StoreError> {
    let wanted: Vec<&str> = digests.iter().map(Digest::as_str).collect();
    let rows: Vec<(String,)> =
        // A manifest without a size (stored before sizes were kept), or a list with such
        // a child, counts as unknown, so the scan reads it again and fills the size in.
        sqlx::query_as(
            "SELECT m.digest FROM manifests m WHERE m.digest = ANY($1) AND m.size IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM list_entries e JOIN manifests c ON c.digest = e.child \
                               WHERE e.list = m.digest AND c.size IS NULL)",
        )
            .bind(&wanted)
            .fetch_all(pool)
            .await
            .during("looking up known manifests")?;
    rows.iter().map(|(d,)| parse_digest(d)).collect()
}

/// One manifest by digest.
pub(crate) async fn manifest(
    pool: &PgPool,
    digest: &Digest,
) -> Result<Option<Manifest>, StoreError> {
    let mut conn = pool.acquire().await.during("reading a manifest")?;
    let mut found = load_manifests(&mut conn, &[digest.as_str().to_owned()], None).await?;
    Ok(found.remove(digest))
}

/// Loads the manifests `digests` and, for lists, their children: all of them, or with
/// `children` given, only those (a list's entries are always complete; a child that is
/// not loaded is skipped by [`IndexQuery::evaluate_repository`] like one that does not
/// match).
pub(crate) async fn load_manifests(
    conn: &mut PgConnection,
    digests: &[String],
    children: Option<&[String]>,
) -> Result<BTreeMap<Digest, Manifest>, StoreError> {
    // Joins against the unnested array rather than `= ANY($1)`: a generic plan tests
    // `= ANY` element by element, which is quadratic for a full dump.
    let rows: Vec<ManifestRow> = match children {
        None => sqlx::query_as(
            "WITH asked AS (SELECT DISTINCT unnest($1::text[]) AS digest), \
                  wanted AS (SELECT digest FROM asked \
                             UNION SELECT e.child FROM list_entries e \
                                   JOIN asked a ON a.digest = e.list) \
             SELECT m.digest, m.media_type, m.is_list, m.os, m.architecture, m.variant, \
                    m.labels, m.annotations, m.created, m.config_digest, m.size \
             FROM manifests m JOIN wanted w ON w.digest = m.digest",
        )
        .bind(digests),
        Some(children) => sqlx::query_as(
            "WITH wanted AS (SELECT unnest($1::text[]) AS digest \
                             UNION SELECT unnest($2::text[])) \
             SELECT m.digest, m.media_type, m.is_list, m.os, m.architecture, m.variant, \
                    m.labels, m.annotations, m.created, m.config_digest, m.size \
             FROM manifests m JOIN wanted w ON w.digest = m.digest",
        )
        .bind(digests)
        .bind(children),
    }
    .fetch_all(&mut *conn)
    .await
    .during("reading manifests")?;
    let lists: Vec<&str> = rows
        .iter()
        .filter(|row| row.2)
        .map(|row| row.0.as_str())
        .collect();
    let mut entries: BTreeMap<String, Vec<ListEntry>> = BTreeMap::new();
    if !lists.is_empty() {
        let entry_rows: Vec<EntryRow> = sqlx::query_as(
            "SELECT e.list, e.child, e.os, e.architecture, e.variant FROM list_entries e \
             JOIN (SELECT DISTINCT unnest($1::text[]) AS list) a ON a.list = e.list \
             ORDER BY e.list, e.position",
        )
        .bind(&lists)
        .fetch_all(&mut *conn)
        .await
        .during("reading list entries")?;
        for (list, child, os, architecture, variant) in entry_rows {
            let platform = match (os, architecture) {
                (Some(os), Some(architecture)) => Some(Platform {
                    os,
                    architecture,
                    variant,
                }),
                _ => None,
            };
            entries.entry(list).or_default().push(ListEntry {
                digest: parse_digest(&child)?,
                platform,
            });
        }
    }
    let mut out = BTreeMap::new();
    for row in rows {
        let children = entries.remove(&row.0).unwrap_or_default();
        let manifest = decode_manifest(row, children)?;
        out.insert(manifest.digest().clone(), manifest);
    }
    Ok(out)
}

fn decode_manifest(row: ManifestRow, entries: Vec<ListEntry>) -> Result<Manifest, StoreError> {
    let (
        digest,
        media_type,
        is_list,
        os,
        architecture,
        variant,
        labels,
        annotations,
        created,
        config,
        size,
    ) = row;
    let digest = parse_digest(&digest)?;
    let size = size.and_then(|s| u64::try_from(s).ok());
    if is_list {
        return Ok(Manifest::List(ImageList {
            digest,
            media_type,
            annotations: annotations.0,
            entries,
            size,
        }));
    }
    Ok(Manifest::Image(Image {
        digest,
        media_type,
        platform: Platform {
            os: os.unwrap_or_default(),
            architecture: architecture.unwrap_or_default(),
            variant,
        },
        labels: labels.0,
        annotations: annotations.0,
        created,
        config_digest: config.as_deref().map(parse_digest).transpose()?,
        size,
    }))
}

/// Runs an index query inside one read-only snapshot, so tags and manifests agree.
pub(crate) async fn query(
    pool: &PgPool,
    query: &IndexQuery,
) -> Result<Vec<RepositoryEntry>, StoreError> {
    let mut results = Vec::new();
    query_each(pool, query, Sink::Collect(&mut results)).await?;
    Ok(results)
}

/// Where [`query_each`] puts the entries.
pub(crate) enum Sink<'a> {
    /// Into a vector.
    Collect(&'a mut Vec<RepositoryEntry>),
    /// Through a stream's sender.
    Stream(&'a EntrySender),
}

impl Sink<'_> {
    /// Takes an entry; `false` when nobody wants more.
    async fn take(&mut self, entry: RepositoryEntry) -> bool {
        match self {
            Sink::Collect(entries) => {
                entries.push(entry);
                true
            }
            Sink::Stream(sender) => sender.send(Ok(entry)).await.is_ok(),
        }
    }
}

/// How many candidate manifests one round trip of a streamed query loads at most (a
/// repository's are never split): bounds the manifests held at once (a few MB of
/// labels), while keeping a whole-index dump to a few dozen round trips at 100k images
/// (each batch's statement has a fixed cost of planning and of joining list entries).
const MANIFESTS_PER_BATCH: usize = 4096;

/// How a query's transaction starts: one read-only snapshot, so tags and manifests agree,
/// and serial plans. Each statement of an index query reads thousands of rows (a dump goes
/// a batch at a time); a parallel plan starts worker processes that compete with the
/// leader (and with every other query) for the same cores: on the 100,000-image benchmark
/// (docs/performance.md) the candidate statement took 74 ms with them and 48 ms without.
/// Both in one simple-protocol message: no extra round trip.
pub(crate) const QUERY_TRANSACTION: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
                                 SET LOCAL max_parallel_workers_per_gather = 0";

/// Runs an index query inside one read-only snapshot, handing each entry to `sink` in
/// bytewise name order until it answers `false`. Manifests are loaded a batch of
/// repositories at a time, so only one batch of them is held at once.
pub(crate) async fn query_each(
    pool: &PgPool,
    query: &IndexQuery,
    mut sink: Sink<'_>,
) -> Result<(), StoreError> {
    let mut tx = pool
        .begin_with(QUERY_TRANSACTION)
        .await
        .during("starting a query")?;
    let rows: Vec<(String, String, String, Option<String>)> = narrow::candidate_tags(query)
        .build_query_as()
        .fetch_all(&mut *tx)
        .await
        .during("selecting candidate tags")?;
    // BTreeMap iteration over names is bytewise: the order the index needs. Next to each
    // repository's candidate tags, the candidate children of its lists.
    let mut repositories: BTreeMap<RepositoryName, (Tags, BTreeSet<String>)> = BTreeMap::new();
    for (repository, tag, digest, child) in rows {
        let (tags, children) = repositories.entry(parse_name(repository)?).or_default();
        tags.insert(parse_tag(tag)?, parse_digest(&digest)?);
        children.extend(child);
    }
    let named_children = narrow::names_children(query);
    let mut batch: Vec<(RepositoryName, Tags)> = Vec::new();
    let mut digests: BTreeSet<String> = BTreeSet::new();
    let mut children: BTreeSet<String> = BTreeSet::new();
    let mut repositories = repositories.into_iter().peekable();
    while let Some((name, (tags, listed))) = repositories.next() {
        digests.extend(tags.values().map(|d| d.to_string()));
        children.extend(listed);
        batch.push((name, tags));
        if digests.len() + children.len() < MANIFESTS_PER_BATCH && repositories.peek().is_some() {
            continue;
        }
        let wanted: Vec<String> = std::mem::take(&mut digests).into_iter().collect();
        let listed: Vec<String> = std::mem::take(&mut children).into_iter().collect();
        let manifests =
            load_manifests(&mut tx, &wanted, named_children.then_some(&listed[..])).await?;
        for (name, tags) in batch.drain(..) {
            if let Some(entry) = query.evaluate_repository(&name, &tags, |d| manifests.get(d))
                && !sink.take(entry).await
            {
                return Ok(());
            }
        }
    }
    tx.commit().await.during("finishing a query")?;
    Ok(())
}
