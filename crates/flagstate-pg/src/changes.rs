//! Reading and pruning the change log (`flagstate_core::changes`, migration 5): a range
//! scan of `change_log`'s primary key after a cursor, the filter in SQL, all reads of one
//! call in one snapshot; and the webhook endpoints' delivery cursors (`deliveries`,
//! migration 6).

use flagstate_core::changes::{
    ChangeCursor, ChangeFilter, ChangeKind, ChangePage, ChangeRecord, ChangeRetention,
};
use flagstate_core::{StoreError, Timestamp};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use crate::error::{PgError, SqlContext};
use crate::read::{QUERY_TRANSACTION, parse_digest, parse_name, parse_tag};

type Row = (
    i64,
    i32,
    i64,
    i16,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn floor(conn: &mut PgConnection) -> Result<ChangeCursor, StoreError> {
    let (generation, position): (i64, i64) =
        sqlx::query_as("SELECT change_floor_generation, change_floor_position FROM meta")
            .fetch_one(&mut *conn)
            .await
            .during("reading the change log's floor")?;
    Ok(ChangeCursor::from_columns(generation, position))
}

async fn last(conn: &mut PgConnection) -> Result<Option<ChangeCursor>, StoreError> {
    let last: Option<(i64, i32)> = sqlx::query_as(
        "SELECT generation, position FROM change_log ORDER BY generation DESC, position DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .during("reading the change log's end")?;
    Ok(last.map(|(g, p)| ChangeCursor::from_columns(g, i64::from(p))))
}

/// See [`Store::changes_since`](flagstate_core::Store::changes_since).
pub(crate) async fn changes_since(
    pool: &PgPool,
    after: ChangeCursor,
    filter: &ChangeFilter,
    limit: usize,
) -> Result<ChangePage, StoreError> {
    let mut tx = pool
        .begin_with(QUERY_TRANSACTION)
        .await
        .during("starting to read changes")?;
    let mut page = ChangePage {
        records: Vec::new(),
        next: after,
        oldest: floor(&mut tx).await?,
    };
    if limit == 0 {
        return Ok(page);
    }
    let (generation, position) = after.columns();
    let mut b: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT generation, position, time, kind, repository, tag, digest, previous_digest, \
         media_type, subject, artifact_type FROM change_log WHERE (generation, position) > (",
    );
    b.push_bind(generation);
    b.push(", ");
    b.push_bind(position);
    b.push(")");
    if let Some(repository) = &filter.repository {
        b.push(" AND repository = ");
        b.push_bind(repository.to_string());
    }
    if let Some(namespace) = &filter.namespace {
        // Names under `NS/` are exactly those in ["NS/", "NS0") in bytewise order.
        b.push(" AND repository >= ");
        b.push_bind(format!("{namespace}/"));
        b.push(" AND repository < ");
        b.push_bind(format!("{namespace}0"));
    }
    if !filter.kinds.is_empty() {
        let kinds: Vec<i16> = filter
            .kinds
            .iter()
            .map(|k| i16::try_from(k.code()).unwrap_or(i16::MAX))
            .collect();
        b.push(" AND kind = ANY(");
        b.push_bind(kinds);
        b.push(")");
    }
    b.push(" ORDER BY generation, position LIMIT ");
    b.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let rows: Vec<Row> = b
        .build_query_as()
        .fetch_all(&mut *tx)
        .await
        .during("reading changes")?;
    for (
        generation,
        position,
        time,
        kind,
        repository,
        tag,
        digest,
        previous,
        media,
        subject,
        artifact_type,
    ) in rows
    {
        let kind = ChangeKind::from_code(i64::from(kind))
            .ok_or_else(|| PgError::Corrupt(format!("change log holds an unknown kind {kind}")))?;
        page.records.push(ChangeRecord {
            cursor: ChangeCursor::from_columns(generation, i64::from(position)),
            time: Timestamp::from_millis(time),
            kind,
            repository: parse_name(repository)?,
            tag: tag.map(parse_tag).transpose()?,
            digest: digest.as_deref().map(parse_digest).transpose()?,
            previous_digest: previous.as_deref().map(parse_digest).transpose()?,
            media_type: media,
            subject: subject.as_deref().map(parse_digest).transpose()?,
            artifact_type,
        });
    }
    // A full page ends at its last record; a short one read the log to its end.
    page.next = match page.records.last() {
        Some(last) if page.records.len() == limit => last.cursor,
        _ => last(&mut tx)
            .await?
            .filter(|end| *end > after)
            .unwrap_or(after),
    };
    Ok(page)
}

/// See [`Store::prune_changes`](flagstate_core::Store::prune_changes): the log is cut
/// after the newest record either rule drops (both drop a prefix), and the floor moves
/// there, in one transaction.
pub(crate) async fn prune_changes(
    pool: &PgPool,
    retention: &ChangeRetention,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await.during("starting to prune changes")?;
    let max = i64::try_from(retention.max_records).unwrap_or(i64::MAX);
    let by_count: Option<(i64, i32)> = sqlx::query_as(
        "SELECT generation, position FROM change_log ORDER BY generation DESC, position DESC \
         OFFSET $1 LIMIT 1",
    )
    .bind(max)
    .fetch_optional(&mut *tx)
    .await
    .during("finding where the change log's count ends")?;
    let mut cut = by_count.map(|(g, p)| ChangeCursor::from_columns(g, i64::from(p)));
    if let Some(horizon) = retention.horizon(now) {
        // The prefix of old records ends before the first young one.
        let young: Option<(i64, i32)> = sqlx::query_as(
            "SELECT generation, position FROM change_log WHERE time >= $1 \
             ORDER BY generation, position LIMIT 1",
        )
        .bind(horizon.as_millis())
        .fetch_optional(&mut *tx)
        .await
        .during("finding the change log's first young record")?;
        let old: Option<(i64, i32)> = match young {
            Some((g, p)) => sqlx::query_as(
                "SELECT generation, position FROM change_log \
                 WHERE (generation, position) < ($1, $2) \
                 ORDER BY generation DESC, position DESC LIMIT 1",
            )
            .bind(g)
            .bind(p)
            .fetch_optional(&mut *tx)
            .await
            .during("finding the change log's last old record")?,
            None => sqlx::query_as(
                "SELECT generation, position FROM change_log \
                 ORDER BY generation DESC, position DESC LIMIT 1",
            )
            .fetch_optional(&mut *tx)
            .await
            .during("finding the change log's end")?,
        };
        cut = cut.max(old.map(|(g, p)| ChangeCursor::from_columns(g, i64::from(p))));
    }
    let Some(cut) = cut else {
        return Ok(0);
    };
    let (generation, position) = cut.columns();
    let dropped = sqlx::query("DELETE FROM change_log WHERE (generation, position) <= ($1, $2)")
        .bind(generation)
        .bind(position)
        .execute(&mut *tx)
        .await
        .during("pruning changes")?
        .rows_affected();
    sqlx::query("UPDATE meta SET change_floor_generation = $1, change_floor_position = $2")
        .bind(generation)
        .bind(position)
        .execute(&mut *tx)
        .await
        .during("moving the change log's floor")?;
    tx.commit().await.during("committing pruned changes")?;
    Ok(dropped)
}

/// See [`Store::delivery_cursor`](flagstate_core::Store::delivery_cursor).
pub(crate) async fn delivery_cursor(
    pool: &PgPool,
    endpoint: &str,
) -> Result<Option<ChangeCursor>, StoreError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT generation, position FROM deliveries WHERE endpoint = $1")
            .bind(endpoint)
            .fetch_optional(pool)
            .await
            .during("reading a delivery cursor")?;
    Ok(row.map(|(g, p)| ChangeCursor::from_columns(g, p)))
}

/// See [`Store::set_delivery_cursor`](flagstate_core::Store::set_delivery_cursor): one
/// upsert, touching no `meta` row (the generation stays).
pub(crate) async fn set_delivery_cursor(
    pool: &PgPool,
    endpoint: &str,
    cursor: ChangeCursor,
) -> Result<(), StoreError> {
    let (generation, position) = cursor.columns();
    sqlx::query(
        "INSERT INTO deliveries (endpoint, generation, position) VALUES ($1, $2, $3) \
         ON CONFLICT (endpoint) DO UPDATE SET \
         generation = excluded.generation, position = excluded.position",
    )
    .bind(endpoint)
    .bind(generation)
    .bind(position)
    .execute(pool)
    .await
    .during("storing a delivery cursor")?;
    Ok(())
}
