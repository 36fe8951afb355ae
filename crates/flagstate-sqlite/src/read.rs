//! Read-only operations: listings, manifest lookups and index queries.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use flagstate_core::{Digest, IndexQuery, Manifest, RepositoryEntry, RepositoryName, Tag};
use rusqlite::{Connection, OptionalExtension};

use crate::candidates;
use crate::error::{Error, Result};
use crate::write::repository_id;

/// Decodes a stored manifest body.
pub(crate) fn decode(digest: &impl std::fmt::Display, body: &str) -> Result<Manifest> {
    serde_json::from_str(body).map_err(|source| Error::Decode {
        digest: digest.to_string(),
        source,
    })
}

pub(crate) fn parse_digest(value: String) -> Result<Digest> {
    Digest::parse(&value).map_err(|source| Error::BadDigest { value, source })
}

/// All repository names, bytewise.
pub(crate) fn repositories(conn: &Connection) -> Result<Vec<RepositoryName>> {
    let mut stmt = conn.prepare_cached("SELECT name FROM repositories")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let mut names = names
        .into_iter()
        .map(RepositoryName::parse)
        .collect::<Result<Vec<_>, _>>()?;
    // `RepositoryName` orders bytewise.
    names.sort_unstable();
    Ok(names)
}

/// The tag → digest map of a repository.
pub(crate) fn repository_tags(
    conn: &Connection,
    name: &RepositoryName,
) -> Result<Option<BTreeMap<Tag, Digest>>> {
    let Some(id) = repository_id(conn, name)? else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT t.tag, m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id
         WHERE t.repository_id = ?1",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut tags = BTreeMap::new();
    for row in rows {
        let (tag, digest) = row?;
        tags.insert(Tag::parse(tag)?, parse_digest(digest)?);
    }
    Ok(Some(tags))
}

/// Which of `digests` are stored with everything they reference.
pub(crate) fn known_manifests(conn: &Connection, digests: &[Digest]) -> Result<BTreeSet<Digest>> {
    // A manifest without a size (stored before sizes were kept) counts as unknown, so
    // the scan reads it again and fills the size in.
    let mut find = conn.prepare_cached(
        "SELECT id, is_list FROM manifests WHERE digest = ?1 AND size IS NOT NULL",
    )?;
    // The list_entries foreign key already forbids dangling children; checking costs one
    // index probe and keeps this answer honest if that ever changes.
    let mut dangling = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM list_entries e LEFT JOIN manifests c ON c.id = e.child_id
                        WHERE e.list_id = ?1 AND (c.id IS NULL OR c.size IS NULL))",
    )?;
    let mut known = BTreeSet::new();
    for digest in digests {
        let row: Option<(i64, bool)> = find
            .query_row([digest.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let complete = match row {
            Some((_, false)) => true,
            Some((id, true)) => !dangling.query_row([id], |r| r.get::<_, bool>(0))?,
            None => false,
        };
        if complete {
            known.insert(digest.clone());
        }
    }
    Ok(known)
}

/// One stored manifest.
pub(crate) fn manifest(conn: &Connection, digest: &Digest) -> Result<Option<Manifest>> {
    let body: Option<String> = conn
        .prepare_cached(
            "SELECT b.body FROM manifests m JOIN manifest_bodies b ON b.manifest_id = m.id
             WHERE m.digest = ?1",
        )?
        .query_row([digest.as_str()], |r| r.get(0))
        .optional()?;
    body.map(|b| decode(digest, &b)).transpose()
}

/// The candidate rows of one repository.
#[derive(Default)]
struct RepositoryRows {
    /// Tag → manifest id.
    tags: BTreeMap<String, i64>,
    /// For a list whose candidates are only some of its children: those children.
    children: HashMap<i64, HashSet<i64>>,
}

/// Manifests loaded for one repository, by row id and by digest.
#[derive(Default)]
struct Loaded {
    digests: HashMap<i64, Digest>,
    manifests: HashMap<Digest, Manifest>,
}

impl Loaded {
    fn body(conn: &Connection, id: i64) -> Result<Manifest> {
        let (digest, body): (String, String) = conn
            .prepare_cached(
                "SELECT m.digest, b.body FROM manifests m
                 JOIN manifest_bodies b ON b.manifest_id = m.id WHERE m.id = ?1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        decode(&digest, &body)
    }

    /// Loads a manifest unless already loaded and returns its digest. For a list, loads
    /// the children in `wanted` (all children when `None`).
    fn load(
        &mut self,
        conn: &Connection,
        id: i64,
        wanted: Option<&HashSet<i64>>,
    ) -> Result<Digest> {
        if let Some(digest) = self.digests.get(&id) {
            return Ok(digest.clone());
        }
        let manifest = Self::body(conn, id)?;
        let digest = manifest.digest().clone();
        if matches!(manifest, Manifest::List(_)) {
            let children: Vec<i64> = conn
                .prepare_cached("SELECT child_id FROM list_entries WHERE list_id = ?1")?
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for child in children {
                if wanted.is_none_or(|w| w.contains(&child)) {
                    self.load(conn, child, None)?;
                }
            }
        }
        self.digests.insert(id, digest.clone());
        self.manifests.insert(digest.clone(), manifest);
        Ok(digest)
    }
}

/// Builds one repository's entry from its candidate rows and hands it to `sink`
/// (nothing when nothing matches); `false` when the sink wants no more. Manifests are
/// loaded for this repository only and dropped with it.
fn build_entry(
    conn: &Connection,
    query: &IndexQuery,
    repository: String,
    rows: RepositoryRows,
    sink: &mut dyn FnMut(RepositoryEntry) -> bool,
) -> Result<bool> {
    let repository = RepositoryName::parse(repository)?;
    let mut loaded = Loaded::default();
    let mut tags = BTreeMap::new();
    for (tag, manifest_id) in rows.tags {
        let wanted = rows.children.get(&manifest_id);
        tags.insert(Tag::parse(tag)?, loaded.load(conn, manifest_id, wanted)?);
    }
    // `tags` holds only candidate manifests, but every tag of each, which is all
    // evaluate_repository looks at for that manifest.
    Ok(
        match query.evaluate_repository(&repository, &tags, |d| loaded.manifests.get(d)) {
            Some(entry) => sink(entry),
            None => true,
        },
    )
}

/// Runs an index query: SQL narrows to candidate tags, the reference semantics decide.
pub(crate) fn query(conn: &Connection, query: &IndexQuery) -> Result<Vec<RepositoryEntry>> {
    let mut results = Vec::new();
    query_each(conn, query, &mut |entry| {
        results.push(entry);
        true
    })?;
    Ok(results)
}

/// Runs an index query, handing each entry to `sink` in bytewise name order as soon as
/// it is built, until `sink` answers `false`. Everything is read in one read transaction,
/// so the entries come from one snapshot however long the consumer takes.
pub(crate) fn query_each(
    conn: &Connection,
    query: &IndexQuery,
    sink: &mut dyn FnMut(RepositoryEntry) -> bool,
) -> Result<()> {
    let snapshot = conn.unchecked_transaction()?;
    let sql = candidates::candidate_tags(query);
    // Candidates come in bytewise name order (SQLite compares TEXT with memcmp), so each
    // repository is built and handed over as soon as its rows are read: neither the
    // candidate rows of the whole answer nor its entries are ever held at once.
    let text = format!("{} ORDER BY 1", sql.text);
    let mut stmt = conn.prepare_cached(&text)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(&sql.params))?;
    let mut current: Option<(String, RepositoryRows)> = None;
    while let Some(row) = rows.next()? {
        let repository: String = row.get(0)?;
        let tag: String = row.get(1)?;
        let manifest_id: i64 = row.get(2)?;
        let child_id: Option<i64> = row.get(3)?;
        if let Some((name, _)) = &current
            && *name != repository
            && let Some((name, done)) = current.take()
            && !build_entry(conn, query, name, done, sink)?
        {
            return Ok(());
        }
        let (_, rows) = current.get_or_insert_with(|| (repository, RepositoryRows::default()));
        rows.tags.insert(tag, manifest_id);
        if let Some(child_id) = child_id {
            rows.children
                .entry(manifest_id)
                .or_default()
                .insert(child_id);
        }
    }
    if let Some((name, done)) = current {
        build_entry(conn, query, name, done, sink)?;
    }
    drop(rows);
    drop(stmt);
    snapshot.finish()?;
    Ok(())
}
