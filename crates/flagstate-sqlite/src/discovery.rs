//! The discovery reads: repository and tag listings in name or time order, paged by
//! position, and tag history. The order and paging rules are
//! `flagstate_core::discovery`'s; this module states them in SQL (keyset conditions on
//! the `(updated, name)` indexes) so a page reads only the rows it returns.

use flagstate_core::discovery::{
    HistoryEntry, ListOrder, Listing, ManifestInfo, ManifestListing, Position, RepositoryInfo,
    RepositoryListing, TagInfo, TagListing, Untagged,
};
use flagstate_core::{Digest, Platform, PushedManifest, RepositoryName, Tag, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use crate::error::{Error, Result};
use crate::read::parse_digest;
use crate::write::repository_id;

/// The `WHERE` condition (after the position) and `ORDER BY` of `listing` over the
/// columns `updated` and `name`, with the parameters the condition binds.
fn keyset(listing: &Listing, updated: &str, name: &str) -> (String, String, Vec<Value>) {
    let order = match listing.order {
        ListOrder::Name => name.to_owned(),
        ListOrder::Updated => format!("{updated}, {name}"),
        ListOrder::NewestFirst => format!("{updated} DESC, {name}"),
    };
    let (condition, values) = match &listing.after {
        None => ("1".to_owned(), Vec::new()),
        Some(Position::Name(last)) => (format!("{name} > ?"), vec![Value::Text(last.clone())]),
        Some(Position::Time {
            updated: at,
            name: last,
        }) => {
            // The first bound is implied by the rest; it gives SQLite an index range to
            // start from instead of scanning from the end of the order (measured in
            // docs/performance.md: a deep page in half the time).
            let values = vec![
                Value::Integer(at.as_millis()),
                Value::Integer(at.as_millis()),
                Value::Integer(at.as_millis()),
                Value::Text(last.clone()),
            ];
            let condition = match listing.order {
                ListOrder::NewestFirst => {
                    format!("{updated} <= ? AND ({updated} < ? OR ({updated} = ? AND {name} > ?))")
                }
                _ => {
                    format!("{updated} >= ? AND ({updated} > ? OR ({updated} = ? AND {name} > ?))")
                }
            };
            (condition, values)
        }
    };
    (condition, order, values)
}

fn limit(listing: &Listing) -> Value {
    Value::Integer(i64::try_from(listing.limit).unwrap_or(i64::MAX))
}

/// See [`Store::list_repositories`](flagstate_core::Store::list_repositories).
pub(crate) fn list_repositories(
    conn: &Connection,
    request: &RepositoryListing,
) -> Result<Vec<RepositoryInfo>> {
    let (after, order, mut values) = keyset(&request.listing, "r.updated", "r.name");
    // Names under `NS/` are exactly those in ["NS/", "NS0"): '0' follows '/' in bytes.
    let namespace = match &request.namespace {
        Some(namespace) => {
            values.push(Value::Text(format!("{namespace}/")));
            values.push(Value::Text(format!("{namespace}0")));
            "r.name >= ? AND r.name < ?"
        }
        None => "1",
    };
    values.push(limit(&request.listing));
    let sql = format!(
        "SELECT r.name, r.created, r.updated,
                (SELECT count(*) FROM tags t WHERE t.repository_id = r.id)
                + (SELECT count(*) FROM artifact_tags a WHERE a.repository_id = r.id)
         FROM repositories r
         WHERE {after} AND {namespace}
         ORDER BY {order} LIMIT ?"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut page = Vec::new();
    for row in rows {
        let (name, created, updated, tags) = row?;
        page.push(RepositoryInfo {
            name: RepositoryName::parse(name)?,
            tags: u64::try_from(tags).unwrap_or_default(),
            created: Timestamp::from_millis(created),
            updated: Timestamp::from_millis(updated),
        });
    }
    Ok(page)
}

/// See [`Store::list_tags`](flagstate_core::Store::list_tags): image tags and artifact
/// tags, each arm reading its own `(repository, updated, tag)` index in the listing's
/// order, merged by the compound `ORDER BY`.
pub(crate) fn list_tags(
    conn: &Connection,
    repository: &RepositoryName,
    request: &TagListing,
) -> Result<Option<Vec<TagInfo>>> {
    let Some(id) = repository_id(conn, repository)? else {
        return Ok(None);
    };
    let listing = &request.listing;
    let (images_after, _, image_values) = keyset(listing, "t.updated", "t.tag");
    let (artifacts_after, _, artifact_values) = keyset(listing, "a.updated", "a.tag");
    let (_, order, _) = keyset(listing, "updated", "tag");
    let artifact_type = request
        .artifact_type
        .clone()
        .map_or(Value::Null, Value::Text);
    let mut values = vec![
        Value::Integer(id),
        Value::Integer(i64::from(request.artifact_type.is_none())),
    ];
    values.extend(image_values);
    values.extend([Value::Integer(id), artifact_type.clone(), artifact_type]);
    values.extend(artifact_values);
    values.push(limit(listing));
    let sql = format!(
        "SELECT t.tag AS tag, m.digest, m.media_type, t.updated AS updated, m.created,
                NULL AS artifact_type
         FROM tags t JOIN manifests m ON m.id = t.manifest_id
         WHERE t.repository_id = ? AND ? AND {images_after}
         UNION ALL
         SELECT a.tag, a.digest, p.media_type, a.updated, NULL, p.artifact_type
         FROM artifact_tags a
         JOIN pushed_manifests p ON p.repository_id = a.repository_id AND p.digest = a.digest
         WHERE a.repository_id = ? AND (? IS NULL OR p.artifact_type = ?) AND {artifacts_after}
         ORDER BY {order} LIMIT ?"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut page = Vec::new();
    for row in rows {
        let (tag, digest, media_type, updated, created, artifact_type) = row?;
        let media_type = media_type
            .ok_or_else(|| Error::Invalid(format!("manifest {digest} has no media type stored")))?;
        page.push(TagInfo {
            tag: Tag::parse(tag)?,
            digest: parse_digest(digest)?,
            media_type,
            updated: Timestamp::from_millis(updated),
            created,
            artifact_type,
        });
    }
    Ok(Some(page))
}

/// See [`Store::list_manifests`](flagstate_core::Store::list_manifests): the tagged
/// entries and the pushed manifests no tag reaches (directly or through a tagged list),
/// by digest and tag (an untagged entry, with its empty tag, first), after the position.
pub(crate) fn list_manifests(
    conn: &Connection,
    repository: &RepositoryName,
    listing: &ManifestListing,
) -> Result<Option<Vec<ManifestInfo>>> {
    let Some(id) = repository_id(conn, repository)? else {
        return Ok(None);
    };
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
    let values = vec![
        Value::Integer(id),
        Value::Integer(i64::from(listing.untagged != Untagged::Only)),
        Value::Integer(i64::from(listing.untagged != Untagged::Exclude)),
        Value::Text(after_digest),
        Value::Text(after_tag),
        Value::Integer(i64::try_from(listing.limit).unwrap_or(i64::MAX)),
    ];
    let mut stmt = conn.prepare_cached(
        "SELECT digest, tag, media_type, size, os, architecture, variant, artifact_type,
                pushed FROM (
             SELECT m.digest AS digest, t.tag AS tag, m.media_type AS media_type,
                    m.size AS size, m.is_list AS is_list, m.os AS os,
                    m.architecture AS architecture, m.id AS manifest_id,
                    NULL AS artifact_type, NULL AS pushed
             FROM tags t JOIN manifests m ON m.id = t.manifest_id
             WHERE t.repository_id = ?1 AND ?2
             UNION ALL
             SELECT a.digest, a.tag, p.media_type, p.size, NULL, NULL, NULL, NULL,
                    p.artifact_type, p.pushed
             FROM artifact_tags a
             JOIN pushed_manifests p ON p.repository_id = a.repository_id AND p.digest = a.digest
             WHERE a.repository_id = ?1 AND ?2
             UNION ALL
             SELECT p.digest, NULL, p.media_type, p.size, m.is_list, m.os, m.architecture, m.id,
                    p.artifact_type, p.pushed
             FROM pushed_manifests p LEFT JOIN manifests m ON m.digest = p.digest
             WHERE p.repository_id = ?1 AND ?3
               AND NOT EXISTS (SELECT 1 FROM artifact_tags a
                               WHERE a.repository_id = ?1 AND a.digest = p.digest)
               AND NOT EXISTS (SELECT 1 FROM tags t JOIN manifests tm ON tm.id = t.manifest_id
                               WHERE t.repository_id = ?1 AND tm.digest = p.digest)
               AND NOT EXISTS (SELECT 1 FROM tags t
                               JOIN list_entries e ON e.list_id = t.manifest_id
                               JOIN manifests c ON c.id = e.child_id
                               WHERE t.repository_id = ?1 AND c.digest = p.digest)
         ) AS entries
         LEFT JOIN (SELECT manifest_id,
                           json_extract(body, '$.platform.variant') AS variant
                    FROM manifest_bodies) AS v
           ON v.manifest_id = entries.manifest_id AND NOT entries.is_list
         WHERE (digest, coalesce(tag, '')) > (?4, ?5)
         ORDER BY digest, coalesce(tag, '') LIMIT ?6",
    )?;
    let rows = stmt.query_map(params_from_iter(values), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, Option<String>>(7)?,
            r.get::<_, Option<i64>>(8)?,
        ))
    })?;
    let mut page = Vec::new();
    for row in rows {
        let (digest, tag, media_type, size, os, architecture, variant, artifact_type, pushed) =
            row?;
        let media_type = media_type
            .ok_or_else(|| Error::Invalid(format!("manifest {digest} has no media type stored")))?;
        let platform = Platform::from_columns(os, architecture, variant);
        page.push(ManifestInfo {
            digest: parse_digest(digest)?,
            media_type,
            size: size.and_then(|s| u64::try_from(s).ok()),
            platform,
            tag: tag.map(Tag::parse).transpose()?,
            artifact_type,
            pushed: pushed.map(Timestamp::from_millis),
        });
    }
    Ok(Some(page))
}

/// See [`Store::list_referrers`](flagstate_core::Store::list_referrers).
pub(crate) fn list_referrers(
    conn: &Connection,
    repository: &RepositoryName,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Option<Vec<PushedManifest>>> {
    let Some(id) = repository_id(conn, repository)? else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT digest, media_type, size, pushed, artifact_type, annotations
         FROM pushed_manifests
         WHERE repository_id = ?1 AND subject = ?2 AND (?3 IS NULL OR artifact_type = ?3)
         ORDER BY digest",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![id, subject.as_str(), artifact_type],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
            ))
        },
    )?;
    let mut referrers = Vec::new();
    for row in rows {
        let (digest, media_type, size, pushed, artifact_type, annotations) = row?;
        let annotations = serde_json::from_str(&annotations)
            .map_err(|e| Error::Invalid(format!("annotations of {digest}: {e}")))?;
        referrers.push(PushedManifest {
            digest: parse_digest(digest)?,
            media_type,
            size: u64::try_from(size).unwrap_or_default(),
            pushed: Timestamp::from_millis(pushed),
            artifact_type,
            subject: Some(subject.clone()),
            annotations,
        });
    }
    Ok(Some(referrers))
}

/// See [`Store::tag_history`](flagstate_core::Store::tag_history).
pub(crate) fn tag_history(
    conn: &Connection,
    repository: &RepositoryName,
    tag: &Tag,
) -> Result<Option<Vec<HistoryEntry>>> {
    let Some(id) = repository_id(conn, repository)? else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT digest, since FROM tag_history WHERE repository_id = ?1 AND tag = ?2 ORDER BY id",
    )?;
    let rows = stmt.query_map(rusqlite::params![id, tag.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut history = Vec::new();
    for row in rows {
        let (digest, since) = row?;
        history.push(HistoryEntry {
            digest: parse_digest(digest)?,
            since: Timestamp::from_millis(since),
        });
    }
    Ok(Some(history))
}
