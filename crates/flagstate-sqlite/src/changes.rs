//! Reading the change log (`flagstate_core::changes`): a range scan of `change_log`'s
//! primary key after a cursor, with the filter in SQL; and the webhook endpoints'
//! delivery cursors (`deliveries`).

use flagstate_core::changes::{ChangeCursor, ChangeFilter, ChangeKind, ChangePage, ChangeRecord};
use flagstate_core::{RepositoryName, Tag, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use crate::error::{Error, Result};
use crate::read::parse_digest;

/// See [`Store::changes_since`](flagstate_core::Store::changes_since).
pub(crate) fn changes_since(
    conn: &Connection,
    after: ChangeCursor,
    filter: &ChangeFilter,
    limit: usize,
) -> Result<ChangePage> {
    // One snapshot for the records, the log's end and the floor: a record committed
    // between two of the reads must not be skipped by `next`.
    let tx = conn.unchecked_transaction()?;
    let conn = &*tx;
    let floor = conn
        .prepare_cached(
            "SELECT change_floor_generation, change_floor_position FROM meta WHERE id = 1",
        )?
        .query_row([], |r| Ok(ChangeCursor::from_columns(r.get(0)?, r.get(1)?)))?;
    let mut page = ChangePage {
        records: Vec::new(),
        next: after,
        oldest: floor,
    };
    if limit == 0 {
        return Ok(page);
    }
    let (generation, position) = after.columns();
    let mut conditions = vec!["(generation, position) > (?, ?)".to_owned()];
    let mut values = vec![Value::Integer(generation), Value::Integer(position)];
    if let Some(repository) = &filter.repository {
        conditions.push("repository = ?".into());
        values.push(Value::Text(repository.to_string()));
    }
    if let Some(namespace) = &filter.namespace {
        // Names under `NS/` are exactly those in ["NS/", "NS0").
        conditions.push("repository >= ? AND repository < ?".into());
        values.push(Value::Text(format!("{namespace}/")));
        values.push(Value::Text(format!("{namespace}0")));
    }
    if !filter.kinds.is_empty() {
        let marks = vec!["?"; filter.kinds.len()].join(", ");
        conditions.push(format!("kind IN ({marks})"));
        values.extend(filter.kinds.iter().map(|k| Value::Integer(k.code())));
    }
    values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT generation, position, time, kind, repository, tag, digest, previous_digest,
                media_type, subject, artifact_type
         FROM change_log WHERE {} ORDER BY generation, position LIMIT ?",
        conditions.join(" AND ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), |r| {
        Ok((
            (
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ),
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
            (
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ),
            (
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
            ),
        ))
    })?;
    for row in rows {
        let (
            (generation, position, time),
            kind,
            repository,
            tag,
            (digest, previous),
            (media, subject, artifact_type),
        ) = row?;
        let kind = ChangeKind::from_code(kind)
            .ok_or_else(|| Error::Invalid(format!("change log holds an unknown kind {kind}")))?;
        page.records.push(ChangeRecord {
            cursor: ChangeCursor::from_columns(generation, position),
            time: Timestamp::from_millis(time),
            kind,
            repository: RepositoryName::parse(repository)?,
            tag: tag.map(Tag::parse).transpose()?,
            digest: digest.map(parse_digest).transpose()?,
            previous_digest: previous.map(parse_digest).transpose()?,
            media_type: media,
            subject: subject.map(parse_digest).transpose()?,
            artifact_type,
        });
    }
    // A full page ends at its last record; a short one read the log to its end.
    page.next = match page.records.last() {
        Some(last) if page.records.len() == limit => last.cursor,
        _ => conn
            .prepare_cached(
                "SELECT generation, position FROM change_log
                 ORDER BY generation DESC, position DESC LIMIT 1",
            )?
            .query_row([], |r| Ok(ChangeCursor::from_columns(r.get(0)?, r.get(1)?)))
            .optional()?
            .filter(|last| *last > after)
            .unwrap_or(after),
    };
    Ok(page)
}

/// See [`Store::delivery_cursor`](flagstate_core::Store::delivery_cursor).
pub(crate) fn delivery_cursor(conn: &Connection, endpoint: &str) -> Result<Option<ChangeCursor>> {
    Ok(conn
        .prepare_cached("SELECT generation, position FROM deliveries WHERE endpoint = ?1")?
        .query_row([endpoint], |r| {
            Ok(ChangeCursor::from_columns(r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// See [`Store::set_delivery_cursor`](flagstate_core::Store::set_delivery_cursor). Touches
/// no `meta` row: the generation stays.
pub(crate) fn set_delivery_cursor(
    conn: &mut Connection,
    endpoint: &str,
    cursor: ChangeCursor,
) -> Result<()> {
    let (generation, position) = cursor.columns();
    conn.prepare_cached(
        "INSERT INTO deliveries (endpoint, generation, position) VALUES (?1, ?2, ?3)
         ON CONFLICT (endpoint) DO UPDATE SET
             generation = excluded.generation, position = excluded.position",
    )?
    .execute(rusqlite::params![endpoint, generation, position])?;
    Ok(())
}
