//! Writing the index. Each method is one transaction that validates, stores new
//! manifests, changes tags, records the discovery times and tag history, rebuilds the
//! repository's search document and bumps the generation — the bump only when the
//! repository's tag map changed or it is new.
//!
//! Times follow the change, never the write: a tag added or moved gets the change's time
//! as its `updated` and a history entry from then; a tag whose digest is unchanged keeps
//! both (a rescan changes no time); a removed tag loses its row but keeps its history; the
//! repository's `updated` becomes the latest time of any change that bumps the generation
//! (it never goes back: events may arrive out of order).
//!
//! Locking: writers take `ROW EXCLUSIVE` on `tags` first and garbage collection takes
//! `SHARE`, so collection never runs while a writer relies on a manifest it found stored
//! (and writers do not interleave with a collection). Writers of the same repository
//! serialise on its row (`FOR UPDATE`); the generation row serialises the bumps.

use std::collections::{BTreeMap, BTreeSet};

use flagstate_core::changes::{
    ChangeKind, NewChange, PushedFacts, artifact_tagged, describe_artifacts, manifest_deleted,
    tag_changes, untagged_pushed,
};
use flagstate_core::discovery::HistoryRetention;
use flagstate_core::model::{
    Description, ImageList, Manifest, RepositorySnapshot, TagChange, check_list_entry,
};
use flagstate_core::{
    Digest, GcStats, Generation, PushedManifest, RepositoryName, StoreError, Tag, Timestamp,
};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::error::{PgError, SqlContext};
use crate::search;
use crate::watch::generation_from_db;

/// Starts a write transaction (see the module docs for the lock).
async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await.during("starting a write")?;
    sqlx::query("LOCK TABLE tags IN ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .during("locking for a write")?;
    Ok(tx)
}

async fn bump(conn: &mut PgConnection) -> Result<Generation, StoreError> {
    let (generation,): (i64,) =
        sqlx::query_as("UPDATE meta SET generation = generation + 1 RETURNING generation")
            .fetch_one(&mut *conn)
            .await
            .during("bumping the generation")?;
    Ok(generation_from_db(generation))
}

async fn current_generation(conn: &mut PgConnection) -> Result<Generation, StoreError> {
    let (generation,): (i64,) = sqlx::query_as("SELECT generation FROM meta")
        .fetch_one(&mut *conn)
        .await
        .during("reading the generation")?;
    Ok(generation_from_db(generation))
}

/// Locks an existing repository's row; `None` when it does not exist.
async fn lock_repository(conn: &mut PgConnection, name: &str) -> Result<Option<i64>, StoreError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM repositories WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .during("locking a repository")?;
    Ok(row.map(|(id,)| id))
}

/// Locks a repository's row, creating it if needed (created and updated `at`). Returns its
/// id and whether it is new.
async fn lock_or_create_repository(
    conn: &mut PgConnection,
    name: &str,
    at: Timestamp,
) -> Result<(i64, bool), StoreError> {
    if let Some(id) = lock_repository(conn, name).await? {
        return Ok((id, false));
    }
    let inserted: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO repositories (name, created, updated) VALUES ($1, $2, $2) \
         ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(name)
    .bind(at.as_millis())
    .fetch_optional(&mut *conn)
    .await
    .during("creating a repository")?;
    if let Some((id,)) = inserted {
        return Ok((id, true));
    }
    // Another writer created it between the two statements; its row is committed now.
    match lock_repository(conn, name).await? {
        Some(id) => Ok((id, false)),
        None => Err(PgError::ConcurrentRemoval(name.to_owned()).into()),
    }
}

/// Which of a repository's tags: those pointing at images and lists (table `tags`), or
/// at artifacts the repository holds by digest (table `artifact_tags`).
#[derive(Clone, Copy)]
enum TagKind {
    Image,
    Artifact,
}

impl TagKind {
    /// The table that keeps tags of this kind (a fixed name, safe to splice into SQL).
    fn table(self) -> &'static str {
        match self {
            TagKind::Image => "tags",
            TagKind::Artifact => "artifact_tags",
        }
    }
}

/// Points `tags` of `kind` at `digests` (pairwise) in repository `id`, for tags that are
/// new or point elsewhere now, and starts their history: each gets `updated = at` and a
/// history entry from `at`. A tag already at its digest is left alone, keeping its time
/// and history. Returns how many tags were set. The caller removes tags of the same
/// names of the other kind.
async fn set_tags(
    conn: &mut PgConnection,
    kind: TagKind,
    id: i64,
    tags: &[&str],
    digests: &[&str],
    at: Timestamp,
) -> Result<u64, StoreError> {
    // One statement: the history rows are exactly the tag rows the upsert wrote.
    let table = kind.table();
    let sql = format!(
        "WITH set AS (\
             INSERT INTO {table} (repository_id, name, digest, updated) \
             SELECT $1, n, d, $4 FROM UNNEST($2::text[], $3::text[]) AS u(n, d) \
             ON CONFLICT (repository_id, name) \
                 DO UPDATE SET digest = EXCLUDED.digest, updated = EXCLUDED.updated \
                 WHERE {table}.digest <> EXCLUDED.digest \
             RETURNING repository_id, name, digest, updated) \
         INSERT INTO tag_history (repository_id, tag, digest, since) \
         SELECT repository_id, name, digest, updated FROM set ORDER BY name"
    );
    let set = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(tags)
        .bind(digests)
        .bind(at.as_millis())
        .execute(&mut *conn)
        .await
        .during("setting tags")?
        .rows_affected();
    Ok(set)
}

/// Removes `tag` of repository `id` if it is of `kind`.
async fn remove_tag(
    conn: &mut PgConnection,
    kind: TagKind,
    id: i64,
    tag: &str,
) -> Result<(), StoreError> {
    let sql = format!(
        "DELETE FROM {} WHERE repository_id = $1 AND name = $2",
        kind.table()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(tag)
        .execute(&mut *conn)
        .await
        .during("removing a tag")?;
    Ok(())
}

/// The digest `tag` of repository `id` points at, image or artifact.
async fn tag_target(
    conn: &mut PgConnection,
    id: i64,
    tag: &str,
) -> Result<Option<Digest>, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT digest FROM tags WHERE repository_id = $1 AND name = $2 \
         UNION ALL \
         SELECT digest FROM artifact_tags WHERE repository_id = $1 AND name = $2",
    )
    .bind(id)
    .bind(tag)
    .fetch_optional(&mut *conn)
    .await
    .during("reading a tag")?;
    row.map(|(d,)| crate::read::parse_digest(&d)).transpose()
}

/// Holds `manifest` in repository `id` by digest, keeping the first push's facts when it
/// holds it already; whether it is new.
async fn hold(
    conn: &mut PgConnection,
    id: i64,
    manifest: &PushedManifest,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO pushed_manifests (repository_id, digest, media_type, size, pushed, \
             artifact_type, subject, annotations) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(manifest.digest.as_str())
    .bind(&manifest.media_type)
    .bind(size_column(manifest.size))
    .bind(manifest.pushed.as_millis())
    .bind(manifest.artifact_type.as_deref())
    .bind(manifest.subject.as_ref().map(Digest::as_str))
    .bind(
        serde_json::to_string(&manifest.annotations)
            .map_err(|e| PgError::Corrupt(e.to_string()))?,
    )
    .execute(&mut *conn)
    .await
    .during("recording a manifest held by digest")?
    .rows_affected();
    Ok(inserted > 0)
}

/// Fills in the records of artifact tags among `changes` with what repository `id`
/// holds of their artifacts ([`describe_artifacts`]).
async fn describe_held(
    conn: &mut PgConnection,
    id: i64,
    changes: &mut [NewChange],
) -> Result<(), StoreError> {
    let digests: Vec<&str> = changes
        .iter()
        .filter_map(|c| c.digest.as_ref().map(Digest::as_str))
        .collect();
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT p.digest, p.media_type, p.artifact_type, p.subject FROM pushed_manifests p \
         WHERE p.repository_id = $1 AND p.digest = ANY($2) \
           AND EXISTS (SELECT 1 FROM artifact_tags a \
                       WHERE a.repository_id = $1 AND a.digest = p.digest)",
    )
    .bind(id)
    .bind(&digests)
    .fetch_all(&mut *conn)
    .await
    .during("reading artifacts held by digest")?;
    let mut held = BTreeMap::new();
    for (digest, media_type, artifact_type, subject) in rows {
        let facts = PushedFacts {
            media_type,
            artifact_type,
            subject: subject
                .as_deref()
                .map(crate::read::parse_digest)
                .transpose()?,
        };
        held.insert(crate::read::parse_digest(&digest)?, facts);
    }
    describe_artifacts(changes, |d| held.get(d).cloned());
    Ok(())
}

/// The tag → digest map of rows `(name, digest)` read from the store.
fn tag_map(rows: &BTreeMap<String, String>) -> Result<BTreeMap<Tag, Digest>, StoreError> {
    let mut map = BTreeMap::new();
    for (tag, digest) in rows {
        let tag = Tag::parse(tag.as_str())
            .map_err(|e| PgError::Corrupt(format!("stored tag {tag:?}: {e}")))?;
        map.insert(tag, crate::read::parse_digest(digest)?);
    }
    Ok(map)
}

/// Records `changes` of `repository` in the change log under `generation` (the one the
/// transaction just bumped to, under the generation row's lock), at `at`; the media type
/// of each new digest is looked up in the same statement.
async fn record(
    conn: &mut PgConnection,
    generation: Generation,
    repository: &str,
    changes: &[NewChange],
    at: Timestamp,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let positions: Vec<i32> = (0..changes.len())
        .map(|i| i32::try_from(i).unwrap_or(i32::MAX))
        .collect();
    let kinds: Vec<i16> = changes
        .iter()
        .map(|c| i16::try_from(c.kind.code()).unwrap_or(i16::MAX))
        .collect();
    let tags: Vec<Option<&str>> = changes
        .iter()
        .map(|c| c.tag.as_ref().map(|t| t.as_str()))
        .collect();
    let digests: Vec<Option<&str>> = changes
        .iter()
        .map(|c| c.digest.as_ref().map(Digest::as_str))
        .collect();
    let previous: Vec<Option<&str>> = changes
        .iter()
        .map(|c| c.previous_digest.as_ref().map(Digest::as_str))
        .collect();
    let media_types: Vec<Option<&str>> = changes.iter().map(|c| c.media_type.as_deref()).collect();
    let subjects: Vec<Option<&str>> = changes
        .iter()
        .map(|c| c.subject.as_ref().map(Digest::as_str))
        .collect();
    let artifact_types: Vec<Option<&str>> =
        changes.iter().map(|c| c.artifact_type.as_deref()).collect();
    sqlx::query(
        "INSERT INTO change_log \
             (generation, position, time, kind, repository, tag, digest, previous_digest, media_type, \
              subject, artifact_type) \
         SELECT $1, u.position, $2, u.kind, $3, u.tag, u.digest, u.previous, \
                coalesce(u.media_type, \
                         (SELECT m.media_type FROM manifests m WHERE m.digest = u.digest)), \
                u.subject, u.artifact_type \
         FROM UNNEST($4::int[], $5::smallint[], $6::text[], $7::text[], $8::text[], $9::text[], \
                     $10::text[], $11::text[]) \
             AS u(position, kind, tag, digest, previous, media_type, subject, artifact_type)",
    )
    .bind(i64::try_from(generation).unwrap_or(i64::MAX))
    .bind(at.as_millis())
    .bind(repository)
    .bind(&positions)
    .bind(&kinds)
    .bind(&tags)
    .bind(&digests)
    .bind(&previous)
    .bind(&media_types)
    .bind(&subjects)
    .bind(&artifact_types)
    .execute(&mut *conn)
    .await
    .during("recording changes")?;
    Ok(())
}

/// Records that repository `id` changed at `at`: its `updated` time becomes the later of
/// the two, so an event delivered late cannot move it back.
async fn touch_repository(
    conn: &mut PgConnection,
    id: i64,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE repositories SET updated = greatest(updated, $2) WHERE id = $1")
        .bind(id)
        .bind(at.as_millis())
        .execute(&mut *conn)
        .await
        .during("recording when a repository changed")?;
    Ok(())
}

/// What the store already holds for a digest.
struct Stored {
    is_list: bool,
    os: String,
    architecture: String,
}

/// A manifest resolved from either side.
enum Resolved<'a> {
    Stored(&'a Stored),
    New(&'a Manifest),
}

impl Resolved<'_> {
    fn is_list(&self) -> bool {
        match self {
            Resolved::Stored(s) => s.is_list,
            Resolved::New(m) => matches!(m, Manifest::List(_)),
        }
    }
}

/// Rejects text PostgreSQL cannot store (`text` and `jsonb` refuse NUL characters).
fn check_storable(repository: &str, manifest: &Manifest) -> Result<(), StoreError> {
    let fields: Vec<&str> = match manifest {
        Manifest::Image(i) => {
            let mut f = vec![
                i.media_type.as_str(),
                i.platform.os.as_str(),
                i.platform.architecture.as_str(),
            ];
            f.extend(i.platform.variant.as_deref());
            f.extend(i.created.as_deref());
            f.extend(i.labels.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]));
            f.extend(
                i.annotations
                    .iter()
                    .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
            );
            f
        }
        Manifest::List(l) => {
            let mut f = vec![l.media_type.as_str()];
            f.extend(
                l.annotations
                    .iter()
                    .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
            );
            for p in l.entries.iter().filter_map(|e| e.platform.as_ref()) {
                f.extend([p.os.as_str(), p.architecture.as_str()]);
                f.extend(p.variant.as_deref());
            }
            f
        }
    };
    if fields.iter().any(|f| f.contains('\0')) {
        return Err(StoreError::Invalid(format!(
            "repository {repository}: manifest {}: contains a NUL character, which cannot be stored",
            manifest.digest()
        )));
    }
    Ok(())
}

/// Checks that `targets` and the entries of every new list resolve (to stored manifests
/// first — they are immutable — then to `supplied`), and stores the supplied manifests
/// that are new. Nothing is written when a check fails. The input itself has been
/// validated already.
async fn admit(
    conn: &mut PgConnection,
    repository: &RepositoryName,
    targets: &[&Digest],
    supplied: &[Manifest],
) -> Result<(), StoreError> {
    let mut new: BTreeMap<&Digest, &Manifest> = BTreeMap::new();
    for manifest in supplied {
        check_storable(repository, manifest)?;
        // First copy wins, as the stored copy wins over any supplied one.
        new.entry(manifest.digest()).or_insert(manifest);
    }
    let mut lookup: BTreeSet<&str> = targets.iter().map(|d| d.as_str()).collect();
    for manifest in new.values() {
        lookup.insert(manifest.digest().as_str());
        lookup.extend(manifest.children().map(Digest::as_str));
    }
    let lookup: Vec<&str> = lookup.into_iter().collect();
    let rows: Vec<(String, bool, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT digest, is_list, os, architecture FROM manifests WHERE digest = ANY($1)",
    )
    .bind(&lookup)
    .fetch_all(&mut *conn)
    .await
    .during("resolving manifests")?;
    let stored: BTreeMap<String, Stored> = rows
        .into_iter()
        .map(|(digest, is_list, os, architecture)| {
            let info = Stored {
                is_list,
                os: os.unwrap_or_default(),
                architecture: architecture.unwrap_or_default(),
            };
            (digest, info)
        })
        .collect();
    fill_sizes(
        conn,
        new.values()
            .copied()
            .filter(|m| stored.contains_key(m.digest().as_str())),
    )
    .await?;
    new.retain(|digest, _| !stored.contains_key(digest.as_str()));

    let resolve = |digest: &Digest| {
        stored
            .get(digest.as_str())
            .map(Resolved::Stored)
            .or_else(|| new.get(digest).map(|m| Resolved::New(m)))
    };
    let missing = |digest: &Digest| StoreError::MissingManifest {
        repository: repository.to_string(),
        digest: digest.clone(),
    };
    // Stored lists were checked when they were stored; new ones are checked here, those a
    // tag points at first.
    let mut lists: Vec<&ImageList> = Vec::new();
    for digest in targets {
        if let Resolved::New(Manifest::List(list)) =
            resolve(digest).ok_or_else(|| missing(digest))?
        {
            lists.push(list);
        }
    }
    lists.extend(new.values().filter_map(|m| match m {
        Manifest::List(list) => Some(list),
        Manifest::Image(_) => None,
    }));
    for list in &lists {
        for child in &list.entries {
            let is_list = resolve(&child.digest).map(|r| r.is_list());
            check_list_entry(repository, &list.digest, &child.digest, is_list)?;
        }
    }
    if new.is_empty() {
        return Ok(());
    }
    let inserted = insert_manifests(conn, new.values().copied()).await?;
    // Lists another writer stored meanwhile already have their entries.
    let new_lists = new.values().filter_map(|m| match m {
        Manifest::List(list) if inserted.contains(list.digest.as_str()) => Some(list),
        _ => None,
    });
    let platform_of = |digest: &Digest| -> (String, String) {
        match resolve(digest) {
            Some(Resolved::Stored(s)) => (s.os.clone(), s.architecture.clone()),
            Some(Resolved::New(Manifest::Image(i))) => {
                (i.platform.os.clone(), i.platform.architecture.clone())
            }
            _ => (String::new(), String::new()),
        }
    };
    insert_entries(conn, new_lists, platform_of).await
}

/// A size as stored (sizes beyond `i64::MAX` cannot occur: no registry serves them).
fn size_column(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// Gives stored manifests without a size (stored before sizes were kept) the size of
/// the supplied copies; the stored copies keep everything else.
async fn fill_sizes<'a>(
    conn: &mut PgConnection,
    supplied: impl Iterator<Item = &'a Manifest>,
) -> Result<(), StoreError> {
    let (digests, sizes): (Vec<&str>, Vec<i64>) = supplied
        .filter_map(|m| Some((m.digest().as_str(), size_column(m.size()?))))
        .unzip();
    if digests.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE manifests m SET size = u.s FROM UNNEST($1::text[], $2::bigint[]) AS u(d, s) \
         WHERE m.digest = u.d AND m.size IS NULL",
    )
    .bind(&digests)
    .bind(&sizes)
    .execute(&mut *conn)
    .await
    .during("filling in manifest sizes")?;
    Ok(())
}

/// Whether a tag of repository `id` reaches `digest`: points at it, or at a list naming
/// it.
async fn is_reached(conn: &mut PgConnection, id: i64, digest: &Digest) -> Result<bool, StoreError> {
    let (reached,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM tags WHERE repository_id = $1 AND digest = $2) \
             OR EXISTS (SELECT 1 FROM artifact_tags WHERE repository_id = $1 AND digest = $2) \
             OR EXISTS (SELECT 1 FROM tags t JOIN list_entries e ON e.list = t.digest \
                        WHERE t.repository_id = $1 AND e.child = $2)",
    )
    .bind(id)
    .bind(digest.as_str())
    .fetch_one(&mut *conn)
    .await
    .during("checking whether a tag reaches a manifest")?;
    Ok(reached)
}

/// Inserts manifests (ignoring digests stored meanwhile); returns the digests inserted.
async fn insert_manifests<'a>(
    conn: &mut PgConnection,
    manifests: impl Iterator<Item = &'a Manifest>,
) -> Result<BTreeSet<String>, StoreError> {
    let mut digest = Vec::new();
    let mut media_type = Vec::new();
    let mut is_list = Vec::new();
    let mut os: Vec<Option<&str>> = Vec::new();
    let mut architecture: Vec<Option<&str>> = Vec::new();
    let mut variant: Vec<Option<&str>> = Vec::new();
    let mut labels = Vec::new();
    let mut annotations = Vec::new();
    let mut created: Vec<Option<&str>> = Vec::new();
    let mut config: Vec<Option<&str>> = Vec::new();
    let mut title: Vec<Option<String>> = Vec::new();
    let mut description: Vec<Option<String>> = Vec::new();
    let mut size: Vec<Option<i64>> = Vec::new();
    let json = |map| serde_json::to_string(map).map_err(|e| PgError::Corrupt(e.to_string()));
    for manifest in manifests {
        digest.push(manifest.digest().as_str());
        media_type.push(manifest.media_type());
        size.push(manifest.size().map(size_column));
        match manifest {
            Manifest::Image(i) => {
                let d = Description::resolve(&i.labels, &i.annotations);
                is_list.push(false);
                os.push(Some(&i.platform.os));
                architecture.push(Some(&i.platform.architecture));
                variant.push(i.platform.variant.as_deref());
                labels.push(json(&i.labels)?);
                annotations.push(json(&i.annotations)?);
                created.push(i.created.as_deref());
                config.push(i.config_digest.as_ref().map(Digest::as_str));
                title.push(d.title);
                description.push(d.description);
            }
            Manifest::List(l) => {
                is_list.push(true);
                os.push(None);
                architecture.push(None);
                variant.push(None);
                labels.push("{}".to_owned());
                annotations.push(json(&l.annotations)?);
                created.push(None);
                config.push(None);
                title.push(None);
                description.push(None);
            }
        }
    }
    let rows: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO manifests (digest, media_type, is_list, os, architecture, variant, \
             labels, annotations, created, config_digest, title, description, size) \
         SELECT d, mt, il, o, a, v, l::jsonb, an::jsonb, c, cd, ti, de, s \
         FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
                     $13::bigint[]) \
              AS u(d, mt, il, o, a, v, l, an, c, cd, ti, de, s) \
         ON CONFLICT (digest) DO NOTHING RETURNING digest",
    )
    .bind(&digest)
    .bind(&media_type)
    .bind(&is_list)
    .bind(&os)
    .bind(&architecture)
    .bind(&variant)
    .bind(&labels)
    .bind(&annotations)
    .bind(&created)
    .bind(&config)
    .bind(&title)
    .bind(&description)
    .bind(&size)
    .fetch_all(&mut *conn)
    .await
    .during("storing manifests")?;
    Ok(rows.into_iter().map(|(d,)| d).collect())
}

/// Inserts the entries of newly stored lists, with the platform queries match each child
/// with. This mirrors `flagstate_core::query::effective_platform`: the list's platform
/// unless it states none or an empty one, else the child's config platform.
async fn insert_entries<'a>(
    conn: &mut PgConnection,
    lists: impl Iterator<Item = &'a ImageList>,
    config_platform: impl Fn(&Digest) -> (String, String),
) -> Result<(), StoreError> {
    let mut list = Vec::new();
    let mut position: Vec<i32> = Vec::new();
    let mut child = Vec::new();
    let mut os: Vec<Option<&str>> = Vec::new();
    let mut architecture: Vec<Option<&str>> = Vec::new();
    let mut variant: Vec<Option<&str>> = Vec::new();
    let mut effective_os = Vec::new();
    let mut effective_architecture = Vec::new();
    for l in lists {
        for (i, entry) in l.entries.iter().enumerate() {
            list.push(l.digest.as_str());
            position.push(i32::try_from(i).map_err(|_| {
                StoreError::Invalid(format!("list {}: has too many entries", l.digest))
            })?);
            child.push(entry.digest.as_str());
            let listed = entry.platform.as_ref();
            os.push(listed.map(|p| p.os.as_str()));
            architecture.push(listed.map(|p| p.architecture.as_str()));
            variant.push(listed.and_then(|p| p.variant.as_deref()));
            let (e_os, e_arch) = match listed {
                Some(p) if !p.os.is_empty() && !p.architecture.is_empty() => {
                    (p.os.clone(), p.architecture.clone())
                }
                _ => config_platform(&entry.digest),
            };
            effective_os.push(e_os);
            effective_architecture.push(e_arch);
        }
    }
    if list.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO list_entries (list, position, child, os, architecture, variant, \
             effective_os, effective_architecture) \
         SELECT * FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::text[], $8::text[])",
    )
    .bind(&list)
    .bind(&position)
    .bind(&child)
    .bind(&os)
    .bind(&architecture)
    .bind(&variant)
    .bind(&effective_os)
    .bind(&effective_architecture)
    .execute(&mut *conn)
    .await
    .during("storing list entries")?;
    Ok(())
}

/// Sets a repository's tags to exactly `snapshot.tags`.
pub(crate) async fn replace_repository(
    pool: &PgPool,
    snapshot: &RepositorySnapshot,
) -> Result<Generation, StoreError> {
    snapshot.validate()?;
    let mut tx = begin(pool).await?;
    let targets: Vec<&Digest> = snapshot.tags.values().collect();
    admit(&mut tx, &snapshot.name, &targets, &snapshot.manifests).await?;
    let (id, created) = lock_or_create_repository(&mut tx, &snapshot.name, snapshot.at).await?;
    let current: Vec<(String, String)> =
        sqlx::query_as("SELECT name, digest FROM tags WHERE repository_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .during("reading current tags")?;
    let current: BTreeMap<String, String> = current.into_iter().collect();
    let current_artifacts: Vec<(String, String)> =
        sqlx::query_as("SELECT name, digest FROM artifact_tags WHERE repository_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .during("reading current artifact tags")?;
    let current_artifacts: BTreeMap<String, String> = current_artifacts.into_iter().collect();
    let removed: Vec<&str> = current
        .keys()
        .filter(|tag| !snapshot.tags.contains_key(tag.as_str()))
        .map(String::as_str)
        .collect();
    let removed_artifacts: Vec<&str> = current_artifacts
        .keys()
        .filter(|tag| !snapshot.artifacts.contains_key(tag.as_str()))
        .map(String::as_str)
        .collect();
    let (changed_tags, changed_digests): (Vec<&str>, Vec<&str>) = snapshot
        .tags
        .iter()
        .filter(|(tag, digest)| {
            current.get(tag.as_str()).map(String::as_str) != Some(digest.as_str())
        })
        .map(|(tag, digest)| (tag.as_str(), digest.as_str()))
        .unzip();
    let (changed_artifacts, changed_artifact_digests): (Vec<&str>, Vec<&str>) = snapshot
        .artifacts
        .iter()
        .filter(|(tag, artifact)| {
            current_artifacts.get(tag.as_str()).map(String::as_str)
                != Some(artifact.digest.as_str())
        })
        .map(|(tag, artifact)| (tag.as_str(), artifact.digest.as_str()))
        .unzip();
    let generation = if created
        || !removed.is_empty()
        || !changed_tags.is_empty()
        || !removed_artifacts.is_empty()
        || !changed_artifacts.is_empty()
    {
        let mut changes = Vec::new();
        if created {
            changes.push(NewChange::of_repository(ChangeKind::RepositoryCreated));
        }
        let mut before = tag_map(&current)?;
        before.extend(tag_map(&current_artifacts)?);
        changes.extend(tag_changes(&before, &snapshot.all_tags()));
        // A tag that moves between image and artifact at the same digest keeps its time
        // and history: its row moves to the other table as it is (and the upsert below
        // leaves it alone).
        for (to, from, tags, digests) in [
            (
                TagKind::Image,
                TagKind::Artifact,
                &changed_tags,
                &changed_digests,
            ),
            (
                TagKind::Artifact,
                TagKind::Image,
                &changed_artifacts,
                &changed_artifact_digests,
            ),
        ] {
            if tags.is_empty() {
                continue;
            }
            let (to, from) = (to.table(), from.table());
            let sql = format!(
                "INSERT INTO {to} (repository_id, name, digest, updated) \
                 SELECT f.repository_id, f.name, f.digest, f.updated FROM {from} f \
                 JOIN UNNEST($2::text[], $3::text[]) AS u(n, d) ON f.name = u.n AND f.digest = u.d \
                 WHERE f.repository_id = $1"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(tags)
                .bind(digests)
                .execute(&mut *tx)
                .await
                .during("moving tags between images and artifacts")?;
        }
        if !removed.is_empty() {
            sqlx::query("DELETE FROM tags WHERE repository_id = $1 AND name = ANY($2)")
                .bind(id)
                .bind(&removed)
                .execute(&mut *tx)
                .await
                .during("removing tags")?;
        }
        if !removed_artifacts.is_empty() {
            sqlx::query("DELETE FROM artifact_tags WHERE repository_id = $1 AND name = ANY($2)")
                .bind(id)
                .bind(&removed_artifacts)
                .execute(&mut *tx)
                .await
                .during("removing artifact tags")?;
        }
        if !changed_tags.is_empty() {
            set_tags(
                &mut tx,
                TagKind::Image,
                id,
                &changed_tags,
                &changed_digests,
                snapshot.at,
            )
            .await?;
        }
        for artifact in snapshot.artifacts.values() {
            if hold(&mut tx, id, artifact).await? {
                changes.extend(untagged_pushed(false, true, artifact));
            }
        }
        if !changed_artifacts.is_empty() {
            set_tags(
                &mut tx,
                TagKind::Artifact,
                id,
                &changed_artifacts,
                &changed_artifact_digests,
                snapshot.at,
            )
            .await?;
        }
        // Only a snapshot with artifact tags has records to describe.
        if !snapshot.artifacts.is_empty() {
            describe_held(&mut tx, id, &mut changes).await?;
        }
        touch_repository(&mut tx, id, snapshot.at).await?;
        search::refresh(&mut tx, id, &snapshot.name).await?;
        let generation = bump(&mut tx).await?;
        record(&mut tx, generation, &snapshot.name, &changes, snapshot.at).await?;
        generation
    } else {
        current_generation(&mut tx).await?
    };
    tx.commit().await.during("committing a repository")?;
    Ok(generation)
}

/// The public registry URL stored with the index, if any.
pub(crate) async fn registry_url(pool: &PgPool) -> Result<Option<String>, StoreError> {
    let (url,): (Option<String>,) = sqlx::query_as("SELECT registry_url FROM meta")
        .fetch_one(pool)
        .await
        .during("reading the registry URL")?;
    Ok(url)
}

/// Stores the public registry URL; bumps the generation iff it changes.
pub(crate) async fn set_registry_url(pool: &PgPool, url: &str) -> Result<Generation, StoreError> {
    let mut tx = pool.begin().await.during("starting a write")?;
    let (stored,): (Option<String>,) = sqlx::query_as("SELECT registry_url FROM meta FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .during("reading the registry URL")?;
    let generation = if stored.as_deref() == Some(url) {
        current_generation(&mut tx).await?
    } else {
        sqlx::query("UPDATE meta SET registry_url = $1")
            .bind(url)
            .execute(&mut *tx)
            .await
            .during("storing the registry URL")?;
        bump(&mut tx).await?
    };
    tx.commit().await.during("committing the registry URL")?;
    Ok(generation)
}

/// Removes a repository with its tags and their history (both cascade from its row).
pub(crate) async fn remove_repository(pool: &PgPool, name: &str) -> Result<Generation, StoreError> {
    let mut tx = begin(pool).await?;
    let removed = sqlx::query("DELETE FROM repositories WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await
        .during("removing a repository")?
        .rows_affected();
    let generation = if removed > 0 {
        let generation = bump(&mut tx).await?;
        let removed = [NewChange::of_repository(ChangeKind::RepositoryDeleted)];
        record(&mut tx, generation, name, &removed, Timestamp::now()).await?;
        generation
    } else {
        current_generation(&mut tx).await?
    };
    tx.commit().await.during("committing a removal")?;
    Ok(generation)
}

/// Applies one incremental change.
pub(crate) async fn apply(pool: &PgPool, change: &TagChange) -> Result<Generation, StoreError> {
    change.validate()?;
    let mut tx = begin(pool).await?;
    let at = change.at();
    let changed = match change {
        TagChange::PutUntagged {
            repository,
            manifest,
        } => {
            let (id, created) = lock_or_create_repository(&mut tx, repository, at).await?;
            if hold(&mut tx, id, manifest).await? {
                let reached = is_reached(&mut tx, id, &manifest.digest).await?;
                let changes = untagged_pushed(created, reached, manifest);
                Some((id, repository, changes))
            } else {
                None
            }
        }
        TagChange::Put {
            repository,
            tag,
            digest,
            manifests,
            at: _,
        } => {
            admit(&mut tx, repository, &[digest], manifests).await?;
            let (id, created) = lock_or_create_repository(&mut tx, repository, at).await?;
            let before = tag_target(&mut tx, id, tag.as_str()).await?;
            // A tag that pointed at an artifact points at an image now.
            remove_tag(&mut tx, TagKind::Artifact, id, tag.as_str()).await?;
            let moved = set_tags(
                &mut tx,
                TagKind::Image,
                id,
                &[tag.as_str()],
                &[digest.as_str()],
                at,
            )
            .await?;
            let mut changes = Vec::new();
            if created {
                changes.push(NewChange::of_repository(ChangeKind::RepositoryCreated));
            }
            if moved > 0 {
                changes.extend(NewChange::of_tag(tag, before.as_ref(), Some(digest)));
            }
            (created || moved > 0).then_some((id, repository, changes))
        }
        TagChange::PutArtifact {
            repository,
            tag,
            manifest,
            at: _,
        } => {
            let (id, created) = lock_or_create_repository(&mut tx, repository, at).await?;
            let held = hold(&mut tx, id, manifest).await?;
            let before = tag_target(&mut tx, id, tag.as_str()).await?;
            if before.as_ref() != Some(&manifest.digest) {
                // A tag that pointed at an image points at an artifact now.
                remove_tag(&mut tx, TagKind::Image, id, tag.as_str()).await?;
                set_tags(
                    &mut tx,
                    TagKind::Artifact,
                    id,
                    &[tag.as_str()],
                    &[manifest.digest.as_str()],
                    at,
                )
                .await?;
                let mut changes = artifact_tagged(created, held, tag, before.as_ref(), manifest);
                describe_held(&mut tx, id, &mut changes).await?;
                Some((id, repository, changes))
            } else {
                None
            }
        }
        TagChange::DeleteTag {
            repository,
            tag,
            at: _,
        } => match lock_repository(&mut tx, repository).await? {
            Some(id) => {
                let mut removed: Option<(String,)> = sqlx::query_as(
                    "DELETE FROM tags WHERE repository_id = $1 AND name = $2 RETURNING digest",
                )
                .bind(id)
                .bind(tag.as_str())
                .fetch_optional(&mut *tx)
                .await
                .during("deleting a tag")?;
                if removed.is_none() {
                    removed = sqlx::query_as(
                        "DELETE FROM artifact_tags WHERE repository_id = $1 AND name = $2 \
                         RETURNING digest",
                    )
                    .bind(id)
                    .bind(tag.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .during("deleting an artifact tag")?;
                }
                match removed {
                    Some((previous,)) => {
                        let previous = crate::read::parse_digest(&previous)?;
                        let changes = NewChange::of_tag(tag, Some(&previous), None);
                        Some((id, repository, changes.into_iter().collect()))
                    }
                    None => None,
                }
            }
            None => None,
        },
        TagChange::DeleteManifest {
            repository,
            digest,
            at: _,
        } => match lock_repository(&mut tx, repository).await? {
            Some(id) => {
                let reached = is_reached(&mut tx, id, digest).await?;
                let pushed: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
                    "DELETE FROM pushed_manifests WHERE repository_id = $1 AND digest = $2 \
                     RETURNING media_type, artifact_type, subject",
                )
                .bind(id)
                .bind(digest.as_str())
                .fetch_optional(&mut *tx)
                .await
                .during("deleting a manifest pushed by digest")?;
                let pushed = match pushed {
                    Some((media_type, artifact_type, subject)) => Some(PushedFacts {
                        media_type,
                        artifact_type,
                        subject: subject
                            .as_deref()
                            .map(crate::read::parse_digest)
                            .transpose()?,
                    }),
                    None => None,
                };
                let mut removed: Vec<(String,)> = sqlx::query_as(
                    "DELETE FROM tags WHERE repository_id = $1 AND digest = $2 RETURNING name",
                )
                .bind(id)
                .bind(digest.as_str())
                .fetch_all(&mut *tx)
                .await
                .during("deleting a manifest's tags")?;
                let artifact_tags: Vec<(String,)> = sqlx::query_as(
                    "DELETE FROM artifact_tags WHERE repository_id = $1 AND digest = $2 \
                     RETURNING name",
                )
                .bind(id)
                .bind(digest.as_str())
                .fetch_all(&mut *tx)
                .await
                .during("deleting an artifact's tags")?;
                removed.extend(artifact_tags);
                let mut tags = Vec::new();
                for (name,) in removed {
                    tags.push(
                        flagstate_core::Tag::parse(name.as_str())
                            .map_err(|e| PgError::Corrupt(format!("stored tag {name:?}: {e}")))?,
                    );
                }
                let changed = !tags.is_empty() || pushed.is_some();
                let changes = manifest_deleted(digest, tags, pushed.as_ref(), reached);
                changed.then_some((id, repository, changes))
            }
            None => None,
        },
    };
    let generation = match changed {
        Some((id, repository, changes)) => {
            touch_repository(&mut tx, id, at).await?;
            // Untagged manifests are not searched: only tag changes alter the document.
            if !matches!(change, TagChange::PutUntagged { .. }) {
                search::refresh(&mut tx, id, repository).await?;
            }
            let generation = bump(&mut tx).await?;
            record(&mut tx, generation, repository, &changes, at).await?;
            generation
        }
        None => current_generation(&mut tx).await?,
    };
    tx.commit().await.during("committing a change")?;
    Ok(generation)
}

/// Drops the history entries `retention` does not keep at `now` and returns how many;
/// bumps the generation iff any were dropped (history answers change).
///
/// Per tag, entries are ranked newest first by `seq` (the order they were written in):
/// an entry goes when its rank is beyond `max_entries`, or when it started before the
/// horizon and is not the tag's newest — [`HistoryRetention::keep`] in one statement.
/// No table lock is taken: writers never read history, so a write committing meanwhile
/// (its entries invisible to this statement) gives the same result as if it came after.
pub(crate) async fn prune_history(
    pool: &PgPool,
    retention: &HistoryRetention,
    now: Timestamp,
) -> Result<(u64, Generation), StoreError> {
    let max_entries = i64::try_from(retention.max_entries.max(1)).unwrap_or(i64::MAX);
    let horizon = retention.horizon(now).map(Timestamp::as_millis);
    let mut tx = pool.begin().await.during("starting to prune history")?;
    let dropped = sqlx::query(
        "WITH ranked AS (\
             SELECT seq, since, row_number() OVER (\
                 PARTITION BY repository_id, tag ORDER BY seq DESC) AS rank \
             FROM tag_history) \
         DELETE FROM tag_history h USING ranked r \
         WHERE h.seq = r.seq AND (r.rank > $1 OR (r.rank > 1 AND r.since < $2))",
    )
    .bind(max_entries)
    .bind(horizon)
    .execute(&mut *tx)
    .await
    .during("pruning history")?
    .rows_affected();
    let generation = if dropped > 0 {
        bump(&mut tx).await?
    } else {
        current_generation(&mut tx).await?
    };
    tx.commit().await.during("committing pruned history")?;
    Ok((dropped, generation))
}

/// Deletes manifests no tag references, directly or as a child of a referenced list.
pub(crate) async fn collect_garbage(pool: &PgPool) -> Result<GcStats, StoreError> {
    let mut tx = pool.begin().await.during("starting garbage collection")?;
    sqlx::query("LOCK TABLE tags IN SHARE MODE")
        .execute(&mut *tx)
        .await
        .during("locking for garbage collection")?;
    let removed = sqlx::query(
        "WITH live AS (\
             SELECT digest FROM tags \
             UNION SELECT e.child FROM list_entries e JOIN tags t ON t.digest = e.list) \
         DELETE FROM manifests m WHERE NOT EXISTS (SELECT 1 FROM live WHERE live.digest = m.digest)",
    )
    .execute(&mut *tx)
    .await
    .during("collecting garbage")?
    .rows_affected();
    tx.commit().await.during("committing garbage collection")?;
    Ok(GcStats {
        manifests_removed: removed,
    })
}

/// Whether the server accepts the store's writes right now: starts a transaction the
/// way every write does (so a `default_transaction_read_only` in force shows), checks
/// that the server is not in recovery, the transaction is not read-only and the user may
/// update `meta` and insert `tags` and `tag_history` (every tag change writes both), and
/// rolls back.
pub(crate) async fn probe_write(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.during("starting a write transaction")?;
    let (in_recovery, read_only, may_update): (bool, bool, bool) = sqlx::query_as(
        "SELECT pg_is_in_recovery(), \
                current_setting('transaction_read_only') = 'on', \
                has_table_privilege('meta', 'UPDATE') AND has_table_privilege('tags', 'INSERT') \
                AND has_table_privilege('tag_history', 'INSERT')",
    )
    .fetch_one(&mut *tx)
    .await
    .during("checking that writes are possible")?;
    tx.rollback().await.during("ending the write check")?;
    let refusal = if in_recovery {
        "the server is in recovery (a standby accepts no writes)"
    } else if read_only {
        "transactions on this connection are read-only (default_transaction_read_only)"
    } else if !may_update {
        "the database user may not update the store's tables"
    } else {
        return Ok(());
    };
    Err(PgError::NotWritable(refusal).into())
}
