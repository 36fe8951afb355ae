//! Write transactions: replacing repositories, incremental tag changes, removal and
//! garbage collection.
//!
//! Every public function here runs in one `IMMEDIATE` transaction (taking the write lock
//! up front, so a transaction never fails half-way on a lock upgrade) that also updates
//! the search index and the generation, so a crash at any point leaves either the old or
//! the new state — never tags without their generation bump.

use std::collections::{BTreeMap, BTreeSet};

use flagstate_core::RepositoryName;
use flagstate_core::changes::{
    ChangeKind, NewChange, PushedFacts, artifact_tagged, describe_artifacts, manifest_deleted,
    tag_changes, untagged_pushed,
};
use flagstate_core::model::{Description, check_list_entry};
use flagstate_core::query::effective_platform;
use flagstate_core::{
    Digest, GcStats, Generation, HistoryRetention, Image, ImageList, Manifest, PushedManifest,
    StoreError, Timestamp,
};
use flagstate_core::{RepositorySnapshot, Tag, TagChange};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::{Error, Result};
use crate::search;

/// `properties.kind` of a config label.
pub(crate) const LABEL: i64 = 0;
/// `properties.kind` of a manifest annotation.
pub(crate) const ANNOTATION: i64 = 1;

/// A store contract check's refusal (`flagstate_core::model`'s checks produce only
/// these two variants) as the crate's error, which converts back to the same
/// [`StoreError`].
fn refused(error: StoreError) -> Error {
    match error {
        StoreError::MissingManifest { repository, digest } => {
            Error::MissingManifest { repository, digest }
        }
        StoreError::Invalid(message) => Error::Invalid(message),
        other => Error::Invalid(other.to_string()),
    }
}

fn begin(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// The current generation.
pub(crate) fn generation(conn: &Connection) -> Result<Generation> {
    let value: i64 = conn
        .prepare_cached("SELECT generation FROM meta WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    Ok(Generation::try_from(value).unwrap_or_default())
}

/// The public registry URL stored with the index, if any.
pub(crate) fn registry_url(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT registry_url FROM meta WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// See [`Store::set_registry_url`](flagstate_core::Store::set_registry_url).
pub(crate) fn set_registry_url(conn: &mut Connection, url: &str) -> Result<Generation> {
    let tx = begin(conn)?;
    let generation = if registry_url(&tx)?.as_deref() == Some(url) {
        generation(&tx)?
    } else {
        tx.prepare_cached("UPDATE meta SET registry_url = ?1 WHERE id = 1")?
            .execute([url])?;
        bump(&tx)?
    };
    tx.commit()?;
    Ok(generation)
}

fn bump(tx: &Transaction<'_>) -> Result<Generation> {
    let value: i64 = tx
        .prepare_cached(
            "UPDATE meta SET generation = generation + 1 WHERE id = 1 RETURNING generation",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(Generation::try_from(value).unwrap_or_default())
}

/// Records `changes` of `repository` in the change log under `generation` (the one the
/// transaction just bumped to), at `at`.
fn record(
    tx: &Transaction<'_>,
    generation: Generation,
    repository: &str,
    changes: &[NewChange],
    at: Timestamp,
) -> Result<()> {
    let generation = i64::try_from(generation).unwrap_or(i64::MAX);
    let mut insert = tx.prepare_cached(
        "INSERT INTO change_log
             (generation, position, time, kind, repository, tag, digest, previous_digest, media_type,
              subject, artifact_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
                 coalesce(?9, (SELECT media_type FROM manifests WHERE digest = ?7)), ?10, ?11)",
    )?;
    for (position, change) in changes.iter().enumerate() {
        insert.execute(params![
            generation,
            i64::try_from(position).unwrap_or(i64::MAX),
            at.as_millis(),
            change.kind.code(),
            repository,
            change.tag.as_ref().map(Tag::as_str),
            change.digest.as_ref().map(Digest::as_str),
            change.previous_digest.as_ref().map(Digest::as_str),
            change.media_type,
            change.subject.as_ref().map(Digest::as_str),
            change.artifact_type,
        ])?;
    }
    Ok(())
}

/// The whole tag → digest map of a stored repository: its image tags and its artifact
/// tags.
fn stored_digests(tx: &Transaction<'_>, repository_id: i64) -> Result<BTreeMap<Tag, Digest>> {
    let mut stmt = tx.prepare_cached(
        "SELECT t.tag, m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id
         WHERE t.repository_id = ?1
         UNION ALL
         SELECT tag, digest FROM artifact_tags WHERE repository_id = ?1",
    )?;
    let rows = stmt.query_map([repository_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut tags = BTreeMap::new();
    for row in rows {
        let (tag, digest) = row?;
        tags.insert(Tag::parse(tag)?, crate::read::parse_digest(digest)?);
    }
    Ok(tags)
}

/// The stored row of a manifest: id and whether it is a list.
fn find_manifest(conn: &Connection, digest: &Digest) -> Result<Option<(i64, bool)>> {
    Ok(conn
        .prepare_cached("SELECT id, is_list FROM manifests WHERE digest = ?1")?
        .query_row([digest.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

fn encode(manifest: &Manifest) -> Result<String> {
    serde_json::to_string(manifest).map_err(|source| Error::Encode {
        digest: manifest.digest().to_string(),
        source,
    })
}

fn insert_image(tx: &Transaction<'_>, image: &Image, body: &str) -> Result<()> {
    let description = Description::resolve(&image.labels, &image.annotations);
    let id: i64 = tx
        .prepare_cached(
            "INSERT INTO manifests
                 (digest, is_list, os, architecture, title, description, media_type, created, size)
             VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        )?
        .query_row(
            params![
                image.digest.as_str(),
                image.platform.os,
                image.platform.architecture,
                description.title,
                description.description,
                image.media_type,
                image.created,
                image.size.map(size_column),
            ],
            |r| r.get(0),
        )?;
    insert_body(tx, id, body)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO properties (manifest_id, kind, key, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (key, value) in &image.labels {
        insert.execute(params![id, LABEL, key, value])?;
    }
    for (key, value) in &image.annotations {
        insert.execute(params![id, ANNOTATION, key, value])?;
    }
    Ok(())
}

fn insert_body(tx: &Transaction<'_>, id: i64, body: &str) -> Result<()> {
    tx.prepare_cached("INSERT INTO manifest_bodies (manifest_id, body) VALUES (?1, ?2)")?
        .execute(params![id, body])?;
    Ok(())
}

fn insert_list_row(tx: &Transaction<'_>, list: &ImageList, body: &str) -> Result<i64> {
    let id = tx
        .prepare_cached(
            "INSERT INTO manifests (digest, is_list, media_type, size)
             VALUES (?1, 1, ?2, ?3) RETURNING id",
        )?
        .query_row(
            params![
                list.digest.as_str(),
                list.media_type,
                list.size.map(size_column)
            ],
            |r| r.get(0),
        )?;
    insert_body(tx, id, body)?;
    Ok(id)
}

/// Links a stored list to its children, which must all be stored images.
fn insert_list_entries(
    tx: &Transaction<'_>,
    repository: &RepositoryName,
    list_id: i64,
    list: &ImageList,
) -> Result<()> {
    let mut child_stmt = tx.prepare_cached(
        "SELECT m.id, m.is_list, b.body FROM manifests m
         JOIN manifest_bodies b ON b.manifest_id = m.id WHERE m.digest = ?1",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO list_entries (list_id, position, child_id, os, architecture)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (position, entry) in list.entries.iter().enumerate() {
        let child: Option<(i64, bool, String)> = child_stmt
            .query_row([entry.digest.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let decoded = match child {
            Some((id, is_list, body)) => {
                Some((id, is_list, crate::read::decode(&entry.digest, &body)?))
            }
            None => None,
        };
        // A row is a list when it is marked as one or its body is one.
        let entry_is_list = decoded
            .as_ref()
            .map(|(_, is_list, m)| *is_list || matches!(m, Manifest::List(_)));
        check_list_entry(repository, &list.digest, &entry.digest, entry_is_list)
            .map_err(refused)?;
        // The check refused everything but a stored image.
        let Some((child_id, _, Manifest::Image(image))) = decoded else {
            continue;
        };
        let platform = effective_platform(entry.platform.as_ref(), &image);
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        insert.execute(params![
            list_id,
            position,
            child_id,
            platform.os,
            platform.architecture
        ])?;
    }
    Ok(())
}

/// Stores the supplied manifests that are not stored yet (the stored copy of a digest
/// always wins; within one call the first copy wins) and checks that every new list's
/// entries are stored images. The input itself has been validated already.
fn store_manifests(
    tx: &Transaction<'_>,
    repository: &RepositoryName,
    supplied: &[Manifest],
) -> Result<()> {
    let mut seen = BTreeSet::new();
    let mut new = Vec::new();
    for manifest in supplied {
        if !seen.insert(manifest.digest()) {
            continue;
        }
        match find_manifest(tx, manifest.digest())? {
            None => new.push(manifest),
            Some((id, _)) => fill_size(tx, id, manifest.size())?,
        }
    }
    // Images first, then every list row, then list entries: entries can then resolve
    // against anything supplied, and a list naming another list is recognised as such.
    let mut lists = Vec::new();
    for manifest in new {
        let body = encode(manifest)?;
        match manifest {
            Manifest::Image(image) => insert_image(tx, image, &body)?,
            Manifest::List(list) => lists.push((insert_list_row(tx, list, &body)?, list)),
        }
    }
    for (id, list) in lists {
        insert_list_entries(tx, repository, id, list)?;
    }
    Ok(())
}

/// A size as stored (sizes beyond `i64::MAX` cannot occur: no registry serves them).
fn size_column(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// Gives stored manifest `id` the `size` of a supplied copy when it has none (it was
/// stored before sizes were kept); the stored copy keeps everything else.
fn fill_size(tx: &Transaction<'_>, id: i64, size: Option<u64>) -> Result<()> {
    let Some(size) = size.map(size_column) else {
        return Ok(());
    };
    let filled = tx
        .prepare_cached("UPDATE manifests SET size = ?2 WHERE id = ?1 AND size IS NULL")?
        .execute(params![id, size])?;
    if filled > 0 {
        tx.prepare_cached(
            "UPDATE manifest_bodies SET body = json_set(body, '$.size', ?2) WHERE manifest_id = ?1",
        )?
        .execute(params![id, size])?;
    }
    Ok(())
}

/// A pushed manifest's annotations as stored (a JSON object).
fn annotations_json(annotations: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(annotations).map_err(|e| Error::Invalid(format!("annotations: {e}")))
}

/// Whether a tag of repository `repository_id` reaches `digest`: points at it, or at a
/// list naming it.
fn is_reached(tx: &Transaction<'_>, repository_id: i64, digest: &Digest) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM tags t JOIN manifests m ON m.id = t.manifest_id
                            WHERE t.repository_id = ?1 AND m.digest = ?2)
                 OR EXISTS (SELECT 1 FROM artifact_tags
                            WHERE repository_id = ?1 AND digest = ?2)
                 OR EXISTS (SELECT 1 FROM tags t
                            JOIN list_entries e ON e.list_id = t.manifest_id
                            JOIN manifests c ON c.id = e.child_id
                            WHERE t.repository_id = ?1 AND c.digest = ?2)",
        )?
        .query_row(params![repository_id, digest.as_str()], |r| r.get(0))?)
}

/// The id of a stored manifest a tag may point at.
fn resolve(tx: &Transaction<'_>, repository: &str, digest: &Digest) -> Result<i64> {
    find_manifest(tx, digest)?
        .map(|(id, _)| id)
        .ok_or_else(|| Error::MissingManifest {
            repository: repository.to_owned(),
            digest: digest.clone(),
        })
}

/// The repository's id, and whether it was just created (then at `at`).
fn ensure_repository(tx: &Transaction<'_>, name: &str, at: Timestamp) -> Result<(i64, bool)> {
    if let Some(id) = repository_id(tx, name)? {
        return Ok((id, false));
    }
    let id = tx
        .prepare_cached(
            "INSERT INTO repositories (name, created, updated) VALUES (?1, ?2, ?2) RETURNING id",
        )?
        .query_row(params![name, at.as_millis()], |r| r.get(0))?;
    Ok((id, true))
}

/// The repository changed at `at`: its `updated` time moves there, never back.
fn touch(tx: &Transaction<'_>, repository_id: i64, at: Timestamp) -> Result<()> {
    tx.prepare_cached("UPDATE repositories SET updated = max(updated, ?2) WHERE id = ?1")?
        .execute(params![repository_id, at.as_millis()])?;
    Ok(())
}

/// The id of a known repository.
pub(crate) fn repository_id(conn: &Connection, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

fn stored_tags(tx: &Transaction<'_>, repository_id: i64) -> Result<BTreeMap<String, i64>> {
    let mut stmt =
        tx.prepare_cached("SELECT tag, manifest_id FROM tags WHERE repository_id = ?1")?;
    let rows = stmt.query_map([repository_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Points `tag` at a new manifest since `at`, and records that in its history. The
/// caller removes an artifact tag of the same name.
fn set_tag(
    tx: &Transaction<'_>,
    repository_id: i64,
    tag: &str,
    (manifest_id, digest): (i64, &Digest),
    at: Timestamp,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO tags (repository_id, tag, manifest_id, updated) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repository_id, tag)
         DO UPDATE SET manifest_id = excluded.manifest_id, updated = excluded.updated",
    )?
    .execute(params![repository_id, tag, manifest_id, at.as_millis()])?;
    record_history(tx, repository_id, tag, digest, at)
}

/// Points `tag` at the artifact `digest` (which the repository holds) since `at`, and
/// records that in its history. The caller removes an image tag of the same name.
fn set_artifact_tag(
    tx: &Transaction<'_>,
    repository_id: i64,
    tag: &str,
    digest: &Digest,
    at: Timestamp,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO artifact_tags (repository_id, tag, digest, updated) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repository_id, tag)
         DO UPDATE SET digest = excluded.digest, updated = excluded.updated",
    )?
    .execute(params![repository_id, tag, digest.as_str(), at.as_millis()])?;
    record_history(tx, repository_id, tag, digest, at)
}

/// Records in `tag`'s history that it points at `digest` since `at`.
fn record_history(
    tx: &Transaction<'_>,
    repository_id: i64,
    tag: &str,
    digest: &Digest,
    at: Timestamp,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO tag_history (repository_id, tag, digest, since) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![repository_id, tag, digest.as_str(), at.as_millis()])?;
    Ok(())
}

/// The artifact tags of a stored repository: tag → digest.
fn stored_artifact_tags(
    tx: &Transaction<'_>,
    repository_id: i64,
) -> Result<BTreeMap<String, String>> {
    let mut stmt =
        tx.prepare_cached("SELECT tag, digest FROM artifact_tags WHERE repository_id = ?1")?;
    let rows = stmt.query_map([repository_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The digest `tag` of the repository points at, image or artifact.
fn tag_target(tx: &Transaction<'_>, repository_id: i64, tag: &str) -> Result<Option<Digest>> {
    tx.prepare_cached(
        "SELECT m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id
         WHERE t.repository_id = ?1 AND t.tag = ?2
         UNION ALL
         SELECT digest FROM artifact_tags WHERE repository_id = ?1 AND tag = ?2",
    )?
    .query_row(params![repository_id, tag], |r| r.get::<_, String>(0))
    .optional()?
    .map(crate::read::parse_digest)
    .transpose()
}

/// Holds `manifest` in the repository by digest, keeping the first push's facts when it
/// holds it already; whether it is new.
fn hold(tx: &Transaction<'_>, repository_id: i64, manifest: &PushedManifest) -> Result<bool> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO pushed_manifests (repository_id, digest, media_type, size, pushed,
                                           artifact_type, subject, annotations)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            repository_id,
            manifest.digest.as_str(),
            manifest.media_type,
            size_column(manifest.size),
            manifest.pushed.as_millis(),
            manifest.artifact_type,
            manifest.subject.as_ref().map(Digest::as_str),
            annotations_json(&manifest.annotations)?,
        ])?;
    Ok(inserted > 0)
}

/// What the repository holds of `digest` by digest, if it does.
fn held_facts(
    tx: &Transaction<'_>,
    repository_id: i64,
    digest: &Digest,
) -> Result<Option<PushedFacts>> {
    let row: Option<(String, Option<String>, Option<String>)> = tx
        .prepare_cached(
            "SELECT media_type, artifact_type, subject FROM pushed_manifests
             WHERE repository_id = ?1 AND digest = ?2",
        )?
        .query_row(params![repository_id, digest.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    row.map(|(media_type, artifact_type, subject)| {
        Ok(PushedFacts {
            media_type,
            artifact_type,
            subject: subject.map(crate::read::parse_digest).transpose()?,
        })
    })
    .transpose()
}

/// Fills in the records of artifact tags among `changes` with what the repository holds
/// of their artifacts ([`describe_artifacts`]).
fn describe_held(
    tx: &Transaction<'_>,
    repository_id: i64,
    changes: &mut [NewChange],
) -> Result<()> {
    let artifacts: BTreeSet<Digest> = stored_artifact_tags(tx, repository_id)?
        .into_values()
        .map(crate::read::parse_digest)
        .collect::<Result<_>>()?;
    // Only the artifacts' records are looked up: a repository of images costs one read.
    let mut held = BTreeMap::new();
    for digest in changes.iter().filter_map(|c| c.digest.as_ref()) {
        if artifacts.contains(digest)
            && !held.contains_key(digest)
            && let Some(facts) = held_facts(tx, repository_id, digest)?
        {
            held.insert(digest.clone(), facts);
        }
    }
    describe_artifacts(changes, |d| held.get(d).cloned());
    Ok(())
}

/// See [`Store::replace_repository`](flagstate_core::Store::replace_repository).
pub(crate) fn replace_repository(
    conn: &mut Connection,
    snapshot: &RepositorySnapshot,
) -> Result<Generation> {
    snapshot.validate().map_err(refused)?;
    let tx = begin(conn)?;
    store_manifests(&tx, &snapshot.name, &snapshot.manifests)?;
    let mut wanted = BTreeMap::new();
    for (tag, digest) in &snapshot.tags {
        wanted.insert(tag.to_string(), resolve(&tx, &snapshot.name, digest)?);
    }
    let wanted_artifacts: BTreeMap<String, String> = snapshot
        .artifacts
        .iter()
        .map(|(tag, artifact)| (tag.to_string(), artifact.digest.to_string()))
        .collect();
    let (repository_id, created) = ensure_repository(&tx, &snapshot.name, snapshot.at)?;
    let current = stored_tags(&tx, repository_id)?;
    let current_artifacts = stored_artifact_tags(&tx, repository_id)?;
    let generation = if created || current != wanted || current_artifacts != wanted_artifacts {
        let mut changes = Vec::new();
        if created {
            changes.push(NewChange::of_repository(ChangeKind::RepositoryCreated));
        }
        changes.extend(tag_changes(
            &stored_digests(&tx, repository_id)?,
            &snapshot.all_tags(),
        ));
        // A tag that moves between image and artifact at the same digest keeps its time
        // and history: its row moves to the other table as it is.
        let mut moved = BTreeSet::new();
        for (tag, digest) in &snapshot.tags {
            if current_artifacts.get(tag.as_str()).map(String::as_str) == Some(digest.as_str()) {
                tx.prepare_cached(
                    "INSERT INTO tags (repository_id, tag, manifest_id, updated)
                     SELECT repository_id, tag, ?3, updated FROM artifact_tags
                     WHERE repository_id = ?1 AND tag = ?2",
                )?
                .execute(params![
                    repository_id,
                    tag.as_str(),
                    wanted[tag.as_str()]
                ])?;
                moved.insert(tag.as_str());
            }
        }
        for (tag, artifact) in &snapshot.artifacts {
            let image = current.get(tag.as_str());
            if image.is_some()
                && find_manifest(&tx, &artifact.digest)?
                    .map(|(id, _)| id)
                    .as_ref()
                    == image
            {
                tx.prepare_cached(
                    "INSERT INTO artifact_tags (repository_id, tag, digest, updated)
                     SELECT repository_id, tag, ?3, updated FROM tags
                     WHERE repository_id = ?1 AND tag = ?2",
                )?
                .execute(params![
                    repository_id,
                    tag.as_str(),
                    artifact.digest.as_str()
                ])?;
                moved.insert(tag.as_str());
            }
        }
        let mut delete =
            tx.prepare_cached("DELETE FROM tags WHERE repository_id = ?1 AND tag = ?2")?;
        for tag in current.keys().filter(|t| !wanted.contains_key(*t)) {
            delete.execute(params![repository_id, tag.as_str()])?;
        }
        let mut delete =
            tx.prepare_cached("DELETE FROM artifact_tags WHERE repository_id = ?1 AND tag = ?2")?;
        for tag in current_artifacts
            .keys()
            .filter(|t| !wanted_artifacts.contains_key(*t))
        {
            delete.execute(params![repository_id, tag.as_str()])?;
        }
        for (tag, digest) in &snapshot.tags {
            let id = wanted[tag.as_str()];
            if current.get(tag.as_str()) != Some(&id) && !moved.contains(tag.as_str()) {
                set_tag(&tx, repository_id, tag, (id, digest), snapshot.at)?;
            }
        }
        for (tag, artifact) in &snapshot.artifacts {
            if hold(&tx, repository_id, artifact)? {
                changes.extend(untagged_pushed(false, true, artifact));
            }
            if current_artifacts.get(tag.as_str()) != wanted_artifacts.get(tag.as_str())
                && !moved.contains(tag.as_str())
            {
                set_artifact_tag(&tx, repository_id, tag, &artifact.digest, snapshot.at)?;
            }
        }
        // Only a snapshot with artifact tags has records to describe.
        if !snapshot.artifacts.is_empty() {
            describe_held(&tx, repository_id, &mut changes)?;
        }
        touch(&tx, repository_id, snapshot.at)?;
        search::refresh(&tx, repository_id, &snapshot.name)?;
        let generation = bump(&tx)?;
        record(&tx, generation, &snapshot.name, &changes, snapshot.at)?;
        generation
    } else {
        generation(&tx)?
    };
    tx.commit()?;
    Ok(generation)
}

/// See [`Store::remove_repository`](flagstate_core::Store::remove_repository).
pub(crate) fn remove_repository(conn: &mut Connection, name: &str) -> Result<Generation> {
    let tx = begin(conn)?;
    let removed: Option<i64> = tx
        .prepare_cached("DELETE FROM repositories WHERE name = ?1 RETURNING id")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    let generation = match removed {
        Some(id) => {
            search::forget(&tx, id)?;
            let generation = bump(&tx)?;
            let removed = [NewChange::of_repository(ChangeKind::RepositoryDeleted)];
            record(&tx, generation, name, &removed, Timestamp::now())?;
            generation
        }
        None => generation(&tx)?,
    };
    tx.commit()?;
    Ok(generation)
}

/// See [`Store::apply`](flagstate_core::Store::apply).
pub(crate) fn apply(conn: &mut Connection, change: &TagChange) -> Result<Generation> {
    change.validate().map_err(refused)?;
    let tx = begin(conn)?;
    // The repository a change touched, and what it recorded.
    let changed: Option<(i64, &RepositoryName, Vec<NewChange>)> = match change {
        TagChange::PutUntagged {
            repository,
            manifest,
        } => {
            let (repository_id, created) = ensure_repository(&tx, repository, manifest.pushed)?;
            if hold(&tx, repository_id, manifest)? {
                let reached = is_reached(&tx, repository_id, &manifest.digest)?;
                let changes = untagged_pushed(created, reached, manifest);
                Some((repository_id, repository, changes))
            } else {
                None
            }
        }
        TagChange::Put {
            repository,
            tag,
            digest,
            manifests,
            at,
        } => {
            store_manifests(&tx, repository, manifests)?;
            let manifest_id = resolve(&tx, repository, digest)?;
            let (repository_id, created) = ensure_repository(&tx, repository, *at)?;
            let before = tag_target(&tx, repository_id, tag)?;
            if created || before.as_ref() != Some(digest) {
                // A tag that pointed at an artifact points at an image now.
                tx.prepare_cached(
                    "DELETE FROM artifact_tags WHERE repository_id = ?1 AND tag = ?2",
                )?
                .execute(params![repository_id, tag.as_str()])?;
                set_tag(&tx, repository_id, tag, (manifest_id, digest), *at)?;
                let mut changes = Vec::new();
                if created {
                    changes.push(NewChange::of_repository(ChangeKind::RepositoryCreated));
                }
                changes.extend(NewChange::of_tag(tag, before.as_ref(), Some(digest)));
                Some((repository_id, repository, changes))
            } else {
                None
            }
        }
        TagChange::PutArtifact {
            repository,
            tag,
            manifest,
            at,
        } => {
            let (repository_id, created) = ensure_repository(&tx, repository, *at)?;
            let held = hold(&tx, repository_id, manifest)?;
            let before = tag_target(&tx, repository_id, tag)?;
            if before.as_ref() != Some(&manifest.digest) {
                // A tag that pointed at an image points at an artifact now.
                tx.prepare_cached("DELETE FROM tags WHERE repository_id = ?1 AND tag = ?2")?
                    .execute(params![repository_id, tag.as_str()])?;
                set_artifact_tag(&tx, repository_id, tag, &manifest.digest, *at)?;
                let mut changes = artifact_tagged(created, held, tag, before.as_ref(), manifest);
                describe_held(&tx, repository_id, &mut changes)?;
                Some((repository_id, repository, changes))
            } else {
                None
            }
        }
        TagChange::DeleteTag {
            repository, tag, ..
        } => match repository_id(&tx, repository)? {
            Some(repository_id) => {
                let mut deleted: Option<String> = tx
                    .prepare_cached(
                        "DELETE FROM tags WHERE repository_id = ?1 AND tag = ?2
                         RETURNING (SELECT digest FROM manifests WHERE id = manifest_id)",
                    )?
                    .query_row(params![repository_id, tag.as_str()], |r| r.get(0))
                    .optional()?;
                if deleted.is_none() {
                    deleted = tx
                        .prepare_cached(
                            "DELETE FROM artifact_tags WHERE repository_id = ?1 AND tag = ?2
                             RETURNING digest",
                        )?
                        .query_row(params![repository_id, tag.as_str()], |r| r.get(0))
                        .optional()?;
                }
                match deleted {
                    Some(previous) => {
                        let previous = crate::read::parse_digest(previous)?;
                        let changes = NewChange::of_tag(tag, Some(&previous), None);
                        Some((repository_id, repository, changes.into_iter().collect()))
                    }
                    None => None,
                }
            }
            None => None,
        },
        TagChange::DeleteManifest {
            repository, digest, ..
        } => match repository_id(&tx, repository)? {
            Some(repository_id) => {
                let reached = is_reached(&tx, repository_id, digest)?;
                let pushed: Option<(String, Option<String>, Option<String>)> = tx
                    .prepare_cached(
                        "DELETE FROM pushed_manifests WHERE repository_id = ?1 AND digest = ?2
                         RETURNING media_type, artifact_type, subject",
                    )?
                    .query_row(params![repository_id, digest.as_str()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                let pushed = pushed
                    .map(|(media_type, artifact_type, subject)| {
                        Ok::<_, crate::error::Error>(PushedFacts {
                            media_type,
                            artifact_type,
                            subject: subject.map(crate::read::parse_digest).transpose()?,
                        })
                    })
                    .transpose()?;
                let mut tags = Vec::new();
                if let Some((manifest_id, _)) = find_manifest(&tx, digest)? {
                    let mut stmt = tx.prepare_cached(
                        "DELETE FROM tags WHERE repository_id = ?1 AND manifest_id = ?2 RETURNING tag",
                    )?;
                    tags = stmt
                        .query_map(params![repository_id, manifest_id], |r| {
                            r.get::<_, String>(0)
                        })?
                        .collect::<rusqlite::Result<Vec<String>>>()?
                        .into_iter()
                        .map(Tag::parse)
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                }
                let artifact_tags: Vec<String> = tx
                    .prepare_cached(
                        "DELETE FROM artifact_tags WHERE repository_id = ?1 AND digest = ?2
                         RETURNING tag",
                    )?
                    .query_map(params![repository_id, digest.as_str()], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                for tag in artifact_tags {
                    tags.push(Tag::parse(tag)?);
                }
                let changed = !tags.is_empty() || pushed.is_some();
                let changes = manifest_deleted(digest, tags, pushed.as_ref(), reached);
                changed.then_some((repository_id, repository, changes))
            }
            None => None,
        },
    };
    let generation = match changed {
        Some((repository_id, name, changes)) => {
            touch(&tx, repository_id, change.at())?;
            // Untagged manifests are not searched: only tag changes alter the document.
            if !matches!(change, TagChange::PutUntagged { .. }) {
                search::refresh(&tx, repository_id, name)?;
            }
            let generation = bump(&tx)?;
            record(&tx, generation, name, &changes, change.at())?;
            generation
        }
        None => generation(&tx)?,
    };
    tx.commit()?;
    Ok(generation)
}

/// See [`Store::collect_garbage`](flagstate_core::Store::collect_garbage).
pub(crate) fn collect_garbage(conn: &mut Connection) -> Result<GcStats> {
    let tx = begin(conn)?;
    // One statement deletes unreachable lists together with their unreachable children,
    // so the list_entries foreign key is satisfied when the statement ends.
    let removed = tx.execute(
        "DELETE FROM manifests
         WHERE id NOT IN (SELECT manifest_id FROM tags)
           AND id NOT IN (SELECT e.child_id FROM tags t
                          JOIN list_entries e ON e.list_id = t.manifest_id)",
        [],
    )?;
    tx.commit()?;
    Ok(GcStats {
        manifests_removed: u64::try_from(removed).unwrap_or_default(),
    })
}

/// See [`Store::prune_history`](flagstate_core::Store::prune_history).
pub(crate) fn prune_history(
    conn: &mut Connection,
    retention: &HistoryRetention,
    now: Timestamp,
) -> Result<(u64, Generation)> {
    let tx = begin(conn)?;
    let max_entries = i64::try_from(retention.max_entries.max(1)).unwrap_or(i64::MAX);
    let horizon = retention.horizon(now).map(Timestamp::as_millis);
    // Rank 1 is each tag's newest entry (highest rowid), which the age rule keeps.
    let dropped = tx
        .prepare_cached(
            "DELETE FROM tag_history WHERE id IN (
                 SELECT id FROM (
                     SELECT id, since, row_number() OVER (
                         PARTITION BY repository_id, tag ORDER BY id DESC) AS rank
                     FROM tag_history)
                 WHERE rank > ?1 OR (rank > 1 AND since < ?2))",
        )?
        .execute(params![max_entries, horizon])?;
    let generation = if dropped > 0 {
        bump(&tx)?
    } else {
        generation(&tx)?
    };
    tx.commit()?;
    Ok((u64::try_from(dropped).unwrap_or_default(), generation))
}

/// See [`Store::prune_changes`](flagstate_core::Store::prune_changes): the log is cut
/// after the newest record that either rule drops (both drop a prefix), and the floor
/// moves there.
pub(crate) fn prune_changes(
    conn: &mut Connection,
    retention: &flagstate_core::ChangeRetention,
    now: Timestamp,
) -> Result<u64> {
    let tx = begin(conn)?;
    let count: i64 = tx.query_row("SELECT count(*) FROM change_log", [], |r| r.get(0))?;
    let max = i64::try_from(retention.max_records).unwrap_or(i64::MAX);
    let mut cut: Option<(i64, i64)> = None;
    if count > max {
        cut = tx
            .query_row(
                "SELECT generation, position FROM change_log
                 ORDER BY generation, position LIMIT 1 OFFSET ?1",
                [count - max - 1],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
    }
    if let Some(horizon) = retention.horizon(now) {
        // The prefix of old records ends before the first young one.
        let young: Option<(i64, i64)> = tx
            .query_row(
                "SELECT generation, position FROM change_log WHERE time >= ?1
                 ORDER BY generation, position LIMIT 1",
                [horizon.as_millis()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let old: Option<(i64, i64)> = match young {
            Some((g, p)) => tx
                .query_row(
                    "SELECT generation, position FROM change_log
                     WHERE (generation, position) < (?1, ?2)
                     ORDER BY generation DESC, position DESC LIMIT 1",
                    [g, p],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
            None => tx
                .query_row(
                    "SELECT generation, position FROM change_log
                     ORDER BY generation DESC, position DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
        };
        cut = cut.max(old);
    }
    let Some((generation, position)) = cut else {
        return Ok(0);
    };
    let dropped = tx
        .prepare_cached("DELETE FROM change_log WHERE (generation, position) <= (?1, ?2)")?
        .execute([generation, position])?;
    tx.prepare_cached(
        "UPDATE meta SET change_floor_generation = ?1, change_floor_position = ?2 WHERE id = 1",
    )?
    .execute([generation, position])?;
    tx.commit()?;
    Ok(u64::try_from(dropped).unwrap_or_default())
}
