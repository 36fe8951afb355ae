//! The discovery reads: repository and tag listings in name or time order, paged by
//! position, and tag history.
//!
//! The order and paging rules are [`flagstate_core::discovery`]'s ([`Listing::select`]
//! is the reference); this module states them in SQL so that a page reads only the rows
//! it returns, from the indexes of migration 4: the position is a keyset condition, the
//! order an `ORDER BY` the index delivers, the size a `LIMIT`. Names and tags are
//! `COLLATE "C"` columns, so every comparison and sort on them is bytewise, exactly
//! Rust's `as_bytes()` order (a bound parameter takes the column's collation).
//!
//! Each read is one statement, hence one snapshot: a listing and whether its repository
//! exists, or a history and whether its repository exists, always agree.

use flagstate_core::discovery::{
    HistoryEntry, ListOrder, Listing, ManifestInfo, ManifestListing, Position, RepositoryInfo,
    RepositoryListing, TagInfo, TagListing, Untagged,
};
use std::collections::BTreeMap;

use flagstate_core::{
    Digest, Platform, PushedManifest, RepositoryName, StoreError, Tag, Timestamp,
};
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::error::{PgError, SqlContext};
use crate::read::{parse_digest, parse_name, parse_tag};

/// `text` as far as PostgreSQL can hold it: up to its first NUL character.
///
/// Positions come from clients (the `last=` of a page link) and may contain a NUL, which
/// a `text` parameter refuses. No stored name or tag contains one, and against such
/// strings "greater than `text`" and "greater than `text` cut at its first NUL" select
/// exactly the same ones, so the cut keeps the reference semantics.
fn comparable(text: &str) -> &str {
    text.split('\0').next().unwrap_or_default()
}

/// Appends ` AND <strictly after the listing's position>` over the columns `updated` and
/// `name` (nothing without a position).
fn push_after(b: &mut QueryBuilder<Postgres>, listing: &Listing, updated: &str, name: &str) {
    match (&listing.after, listing.order) {
        (None, _) => {}
        (Some(Position::Name(last)), _) => {
            b.push(format_args!(" AND {name} > "));
            b.push_bind(comparable(last).to_owned());
        }
        (
            Some(Position::Time {
                updated: at,
                name: last,
            }),
            ListOrder::NewestFirst,
        ) => {
            // The first bound is implied by the second; it lets the index scan start at
            // the position instead of filtering everything newer.
            b.push(format_args!(" AND {updated} <= "));
            b.push_bind(at.as_millis());
            b.push(format_args!(" AND ({updated} < "));
            b.push_bind(at.as_millis());
            b.push(format_args!(" OR {name} > "));
            b.push_bind(comparable(last).to_owned());
            b.push(")");
        }
        (
            Some(Position::Time {
                updated: at,
                name: last,
            }),
            _,
        ) => {
            // A row comparison: one range of the `(…, updated, name)` index.
            b.push(format_args!(" AND ({updated}, {name}) > ("));
            b.push_bind(at.as_millis());
            b.push(", ");
            b.push_bind(comparable(last).to_owned());
            b.push(")");
        }
    }
}

/// Appends ` ORDER BY` in the listing's order over `updated` and `name`.
fn push_order(b: &mut QueryBuilder<Postgres>, order: ListOrder, updated: &str, name: &str) {
    match order {
        ListOrder::Name => b.push(format_args!(" ORDER BY {name}")),
        ListOrder::Updated => b.push(format_args!(" ORDER BY {updated}, {name}")),
        ListOrder::NewestFirst => b.push(format_args!(" ORDER BY {updated} DESC, {name}")),
    };
}

/// Appends ` LIMIT` with the listing's size; `usize::MAX` (or anything beyond `bigint`)
/// means no limit.
fn push_limit(b: &mut QueryBuilder<Postgres>, listing: &Listing) {
    b.push(" LIMIT ");
    b.push_bind(i64::try_from(listing.limit).unwrap_or(i64::MAX));
}

/// name, number of tags, created, updated.
type RepositoryRow = (String, i64, i64, i64);

/// One page of the repository listing (see
/// [`Store::list_repositories`](flagstate_core::Store::list_repositories)).
pub(crate) async fn list_repositories(
    pool: &PgPool,
    request: &RepositoryListing,
) -> Result<Vec<RepositoryInfo>, StoreError> {
    let listing = &request.listing;
    listing.validate()?;
    let mut b = QueryBuilder::new(
        "SELECT r.name, (SELECT count(*) FROM tags t WHERE t.repository_id = r.id) \
                    + (SELECT count(*) FROM artifact_tags a WHERE a.repository_id = r.id), \
                r.created, r.updated \
         FROM repositories r WHERE true",
    );
    if let Some(namespace) = &request.namespace {
        if namespace.contains('\0') {
            // No repository name contains a NUL, so none is in this namespace.
            return Ok(Vec::new());
        }
        // Names under `NS/` are exactly those in ["NS/", "NS0") bytewise: '0' follows
        // '/'. A range of the name index, with no LIKE pattern to escape.
        b.push(" AND r.name >= ");
        b.push_bind(format!("{namespace}/"));
        b.push(" AND r.name < ");
        b.push_bind(format!("{namespace}0"));
    }
    push_after(&mut b, listing, "r.updated", "r.name");
    push_order(&mut b, listing.order, "r.updated", "r.name");
    push_limit(&mut b, listing);
    let rows: Vec<RepositoryRow> = b
        .build_query_as()
        .fetch_all(pool)
        .await
        .during("listing repositories")?;
    rows.into_iter()
        .map(|(name, tags, created, updated)| {
            Ok(RepositoryInfo {
                name: parse_name(name)?,
                tags: u64::try_from(tags).unwrap_or_default(),
                created: Timestamp::from_millis(created),
                updated: Timestamp::from_millis(updated),
            })
        })
        .collect()
}

/// tag, digest, media type, updated, created, artifact type; all NULL in the one row of
/// a known repository whose page is empty.
type TagRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// One page of a repository's tags, `None` when the repository is unknown (see
/// [`Store::list_tags`](flagstate_core::Store::list_tags)).
pub(crate) async fn list_tags(
    pool: &PgPool,
    repository: &RepositoryName,
    request: &TagListing,
) -> Result<Option<Vec<TagInfo>>, StoreError> {
    let listing = &request.listing;
    listing.validate()?;
    // The page is a lateral subquery of the repository's row, so one statement tells an
    // unknown repository (no row) from an empty page (one row of NULLs). It merges the
    // page's worth of image tags and of artifact tags, each read from its own
    // `(repository, updated, name)` index. Manifests are joined to the page, not to the
    // tags it is cut from: one lookup per listed image tag.
    let mut b = QueryBuilder::new(
        "SELECT page.name, page.digest, coalesce(m.media_type, page.media_type), page.updated, \
                m.created, page.artifact_type \
         FROM repositories r LEFT JOIN LATERAL (SELECT * FROM ((\
             SELECT t.name, t.digest, t.updated, NULL::text AS media_type, \
                    NULL::text AS artifact_type, false AS artifact \
             FROM tags t WHERE t.repository_id = r.id AND ",
    );
    b.push_bind(request.artifact_type.is_none());
    push_after(&mut b, listing, "t.updated", "t.name");
    push_order(&mut b, listing.order, "t.updated", "t.name");
    push_limit(&mut b, listing);
    b.push(
        ") UNION ALL (\
             SELECT a.name, a.digest, a.updated, p.media_type, p.artifact_type, true \
             FROM artifact_tags a JOIN pushed_manifests p \
                 ON p.repository_id = a.repository_id AND p.digest = a.digest \
             WHERE a.repository_id = r.id",
    );
    if let Some(artifact_type) = &request.artifact_type {
        b.push(" AND p.artifact_type = ");
        b.push_bind(comparable(artifact_type).to_owned());
    }
    push_after(&mut b, listing, "a.updated", "a.name");
    push_order(&mut b, listing.order, "a.updated", "a.name");
    push_limit(&mut b, listing);
    b.push(") ) AS merged");
    push_order(&mut b, listing.order, "merged.updated", "merged.name");
    push_limit(&mut b, listing);
    b.push(
        ") page ON true LEFT JOIN manifests m ON m.digest = page.digest AND NOT page.artifact \
         WHERE r.name = ",
    );
    b.push_bind(repository.as_str().to_owned());
    // A join keeps no order by itself; sorting the page again is sorting `limit` rows.
    push_order(&mut b, listing.order, "page.updated", "page.name");
    let rows: Vec<TagRow> = b
        .build_query_as()
        .fetch_all(pool)
        .await
        .during("listing tags")?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut page = Vec::with_capacity(rows.len());
    for (tag, digest, media_type, updated, created, artifact_type) in rows {
        let Some(tag) = tag else {
            // The one row of an empty page.
            continue;
        };
        // A tag's digest references a stored manifest (a foreign key), whose media type
        // is never NULL: anything missing is corruption, not an empty field.
        let (Some(digest), Some(media_type), Some(updated)) = (digest, media_type, updated) else {
            return Err(PgError::Corrupt(format!(
                "tag {tag} of {repository} has no manifest or time"
            ))
            .into());
        };
        page.push(TagInfo {
            tag: parse_tag(tag)?,
            digest: parse_digest(&digest)?,
            media_type,
            updated: Timestamp::from_millis(updated),
            created,
            artifact_type,
        });
    }
    Ok(Some(page))
}

/// repository id, digest, tag, media type, size, os, architecture, variant, artifact
/// type, pushed.
type ManifestRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// One page of a repository's manifests (see
/// [`Store::list_manifests`](flagstate_core::Store::list_manifests)): its tags, and the
/// manifests pushed to it by digest that no tag reaches (directly or through a tagged
/// list), by digest and tag (an untagged entry, with its empty tag, first), after the
/// position. One statement: the repository's row joined to the page (one row of NULLs
/// for an empty page, none for an unknown repository).
pub(crate) async fn list_manifests(
    pool: &PgPool,
    repository: &RepositoryName,
    listing: &ManifestListing,
) -> Result<Option<Vec<ManifestInfo>>, StoreError> {
    let (after_digest, after_tag) = match &listing.after {
        Some(position) => (
            position.digest.to_string(),
            position
                .tag
                .as_ref()
                .map_or_else(String::new, Tag::to_string),
        ),
        None => (String::new(), String::new()),
    };
    let rows: Vec<ManifestRow> = sqlx::query_as(
        "WITH r AS (SELECT id FROM repositories WHERE name = $1), \
         entries AS (\
             SELECT t.digest, t.name AS tag, m.media_type, m.size, \
                    CASE WHEN m.is_list THEN NULL ELSE m.os END AS os, \
                    CASE WHEN m.is_list THEN NULL ELSE m.architecture END AS architecture, \
                    CASE WHEN m.is_list THEN NULL ELSE m.variant END AS variant, \
                    NULL::text AS artifact_type, NULL::bigint AS pushed \
             FROM r JOIN tags t ON t.repository_id = r.id JOIN manifests m ON m.digest = t.digest \
             WHERE $2 \
             UNION ALL \
             SELECT a.digest, a.name, p.media_type, p.size, NULL, NULL, NULL, \
                    p.artifact_type, p.pushed \
             FROM r JOIN artifact_tags a ON a.repository_id = r.id \
             JOIN pushed_manifests p ON p.repository_id = a.repository_id AND p.digest = a.digest \
             WHERE $2 \
             UNION ALL \
             SELECT p.digest, NULL, p.media_type, p.size, m.os, m.architecture, m.variant, \
                    p.artifact_type, p.pushed \
             FROM r JOIN pushed_manifests p ON p.repository_id = r.id \
             LEFT JOIN manifests m ON m.digest = p.digest AND NOT m.is_list \
             WHERE $3 \
               AND NOT EXISTS (SELECT 1 FROM artifact_tags a \
                               WHERE a.repository_id = r.id AND a.digest = p.digest) \
               AND NOT EXISTS (SELECT 1 FROM tags t \
                               WHERE t.repository_id = r.id AND t.digest = p.digest) \
               AND NOT EXISTS (SELECT 1 FROM tags t JOIN list_entries e ON e.list = t.digest \
                               WHERE t.repository_id = r.id AND e.child = p.digest)), \
         page AS (\
             SELECT * FROM entries \
             WHERE (digest, coalesce(tag, '') COLLATE \"C\") > ($4, $5) \
             ORDER BY digest, coalesce(tag, '') COLLATE \"C\" LIMIT $6) \
         SELECT r.id, page.digest, page.tag, page.media_type, page.size, page.os, \
                page.architecture, page.variant, page.artifact_type, page.pushed \
         FROM r LEFT JOIN page ON true \
         ORDER BY page.digest, coalesce(page.tag, '') COLLATE \"C\"",
    )
    .bind(repository.as_str())
    .bind(listing.untagged != Untagged::Only)
    .bind(listing.untagged != Untagged::Exclude)
    .bind(comparable(&after_digest).to_owned())
    .bind(comparable(&after_tag).to_owned())
    .bind(i64::try_from(listing.limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .during("listing manifests")?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut page = Vec::with_capacity(rows.len());
    for (_, digest, tag, media_type, size, os, architecture, variant, artifact_type, pushed) in rows
    {
        let Some(digest) = digest else {
            // The one row of an empty page.
            continue;
        };
        let media_type = media_type
            .ok_or_else(|| PgError::Corrupt(format!("manifest {digest} has no media type")))?;
        let platform = Platform::from_columns(os, architecture, variant);
        page.push(ManifestInfo {
            digest: parse_digest(&digest)?,
            media_type,
            size: size.and_then(|s| u64::try_from(s).ok()),
            platform,
            tag: tag.map(parse_tag).transpose()?,
            artifact_type,
            pushed: pushed.map(Timestamp::from_millis),
        });
    }
    Ok(Some(page))
}

/// The referrers of `subject` in `repository`, by digest (see
/// [`Store::list_referrers`](flagstate_core::Store::list_referrers)); one statement, the
/// repository's row joined to its referrers.
pub(crate) async fn list_referrers(
    pool: &PgPool,
    repository: &RepositoryName,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Option<Vec<PushedManifest>>, StoreError> {
    type Row = (
        i64,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<sqlx::types::Json<BTreeMap<String, String>>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.id, p.digest, p.media_type, p.size, p.pushed, p.artifact_type, p.annotations \
         FROM repositories r LEFT JOIN pushed_manifests p \
           ON p.repository_id = r.id AND p.subject = $2 \
              AND ($3::text IS NULL OR p.artifact_type = $3) \
         WHERE r.name = $1 ORDER BY p.digest",
    )
    .bind(repository.as_str())
    .bind(comparable(subject.as_str()).to_owned())
    .bind(artifact_type.map(|t| comparable(t).to_owned()))
    .fetch_all(pool)
    .await
    .during("listing referrers")?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut referrers = Vec::new();
    for (_, digest, media_type, size, pushed, artifact_type, annotations) in rows {
        let (Some(digest), Some(media_type), Some(size), Some(pushed)) =
            (digest, media_type, size, pushed)
        else {
            // The one row of a repository nothing refers into.
            continue;
        };
        referrers.push(PushedManifest {
            digest: parse_digest(&digest)?,
            media_type,
            size: u64::try_from(size).unwrap_or_default(),
            pushed: Timestamp::from_millis(pushed),
            artifact_type,
            subject: Some(subject.clone()),
            annotations: annotations.map(|a| a.0).unwrap_or_default(),
        });
    }
    Ok(Some(referrers))
}

/// The history of one tag, oldest first; `None` when the repository is unknown (see
/// [`Store::tag_history`](flagstate_core::Store::tag_history)). Entries are in the order
/// they were written (`seq`), which entries of the same millisecond need.
pub(crate) async fn tag_history(
    pool: &PgPool,
    repository: &RepositoryName,
    tag: &Tag,
) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
    let rows: Vec<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT h.digest, h.since FROM repositories r \
         LEFT JOIN tag_history h ON h.repository_id = r.id AND h.tag = $2 \
         WHERE r.name = $1 ORDER BY h.seq",
    )
    .bind(repository.as_str())
    .bind(tag.as_str())
    .fetch_all(pool)
    .await
    .during("reading the history of a tag")?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut history = Vec::with_capacity(rows.len());
    for (digest, since) in rows {
        if let (Some(digest), Some(since)) = (digest, since) {
            history.push(HistoryEntry {
                digest: parse_digest(&digest)?,
                since: Timestamp::from_millis(since),
            });
        }
    }
    Ok(Some(history))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_cut_at_their_first_nul() {
        assert_eq!(comparable("apps/a"), "apps/a");
        assert_eq!(comparable("a\0b"), "a");
        assert_eq!(comparable("\0"), "");
        // The cut selects the same names: those after "a\0b" are those after "a".
        for name in ["a", "a0", "ab", "b", "0"] {
            assert_eq!(
                name.as_bytes() > "a\0b".as_bytes(),
                name.as_bytes() > comparable("a\0b").as_bytes(),
                "{name}"
            );
        }
    }

    fn sql(listing: &Listing) -> String {
        let mut b = QueryBuilder::new("SELECT 1 FROM x WHERE true");
        push_after(&mut b, listing, "u", "n");
        push_order(&mut b, listing.order, "u", "n");
        push_limit(&mut b, listing);
        b.sql().as_str().to_owned()
    }

    #[test]
    fn keyset_conditions_follow_the_order() {
        let at = |order, after| Listing {
            order,
            after: Some(after),
            limit: usize::MAX,
        };
        let time = || Position::Time {
            updated: Timestamp::from_millis(5),
            name: "a".into(),
        };
        assert_eq!(
            sql(&Listing::first(ListOrder::Name, 3)),
            "SELECT 1 FROM x WHERE true ORDER BY n LIMIT $1"
        );
        assert_eq!(
            sql(&at(ListOrder::Name, Position::Name("a".into()))),
            "SELECT 1 FROM x WHERE true AND n > $1 ORDER BY n LIMIT $2"
        );
        assert_eq!(
            sql(&at(ListOrder::Updated, time())),
            "SELECT 1 FROM x WHERE true AND (u, n) > ($1, $2) ORDER BY u, n LIMIT $3"
        );
        assert_eq!(
            sql(&at(ListOrder::NewestFirst, time())),
            "SELECT 1 FROM x WHERE true AND u <= $1 AND (u < $2 OR n > $3) \
             ORDER BY u DESC, n LIMIT $4"
        );
    }
}
