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

fn parse_digest(value: String) -> Result<Digest> {
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
    let mut find = conn.prepare_cached("SELECT id, is_list FROM manifests WHERE digest = ?1")?;
    // The list_entries foreign key already forbids dangling children; checking costs one
    // index probe and keeps this answer honest if that ever changes.
    let mut dangling = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM list_entries e LEFT JOIN manifests c ON c.id = e.child_id
                        WHERE e.list_id = ?1 AND c.id IS NULL)",
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
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(&sql.params), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })?;
    // BTreeMap over String orders bytewise, the order the index needs.
    let mut by_repository: BTreeMap<String, RepositoryRows> = BTreeMap::new();
    for row in rows {
        let (repository, tag, manifest_id, child_id) = row?;
        let rows = by_repository.entry(repository).or_default();
        rows.tags.insert(tag, manifest_id);
        if let Some(child_id) = child_id {
            rows.children
                .entry(manifest_id)
                .or_default()
                .insert(child_id);
        }
    }
    drop(stmt);
    // Manifests are loaded per repository and dropped once its entry is built, so a
    // whole-index dump holds one repository's manifests at a time, and its entry until
    // the sink takes it.
    for (repository, rows) in by_repository {
        let repository = RepositoryName::parse(repository)?;
        let mut loaded = Loaded::default();
        let mut tags = BTreeMap::new();
        for (tag, manifest_id) in rows.tags {
            let wanted = rows.children.get(&manifest_id);
            tags.insert(Tag::parse(tag)?, loaded.load(conn, manifest_id, wanted)?);
        }
        // `tags` holds only candidate manifests, but every tag of each, which is all
        // evaluate_repository looks at for that manifest.
        if let Some(entry) =
            query.evaluate_repository(&repository, &tags, |d| loaded.manifests.get(d))
            && !sink(entry)
        {
            break;
        }
    }
    snapshot.finish()?;
    Ok(())
}
